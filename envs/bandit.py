"""One-step tasks whose soft-optimal policies are multimodal (issue 12: does a sampler keep the modes?).

The S²AC paper's case for a Stein sampler over SAC's Gaussian (shared/papers/002_7b60a202b120fb81.txt,
§1, §3, Fig. 4) is a soft-Q with several modes. A one-step task isolates it: with one step the
critic's target is the reward itself, so ``Q(a) = r(a)`` and the soft-optimal policy at temperature
``alpha`` is known exactly, ``pi*(a) ∝ exp(r(a) / alpha)`` on the action box (maximum-entropy RL's
one-step solution). A Gaussian cannot follow it; the question is whether the sampler does.

:class:`MultiModalBanditEnv`:

* observation: a constant ``(1,)`` zero vector (``float32``): one state;
* action: ``(action_dim,)`` in ``[-1, 1]`` (SB3's units, so the policy's action is the task's);
* reward: the log of a Gaussian-mixture density without its normalising constants,

      ``r(a) = log sum_k w_k exp(-||a - c_k||^2 / (2 width^2))``,

  ``0`` at a centre of an equally weighted, well-separated mixture; so ``exp(r / alpha)`` is the
  mixture to the power ``1 / alpha``: modes at the centres ``c_k``, each of standard deviation about
  ``width * sqrt(alpha)``, mode weights ``∝ w_k^(1 / alpha)`` (exactly for separated modes);
* every episode ends after its one step (``terminated=True``; registered without a time limit, so
  ``truncated`` stays ``False``).

Centres: in 1-D, ``n_modes`` evenly spaced points ``separation`` apart, centred on 0 (two modes:
``±separation / 2``); in more dimensions, on a circle of diameter ``separation`` in the first two
coordinates (the other coordinates 0), the first at ``(separation / 2, 0, ...)``. So two modes are
always ``separation`` apart. Centres must lie inside the box.

:meth:`MultiModalBanditEnv.soft_optimal` integrates ``pi*`` for a temperature (mode weights and the
share of mass near a mode, the numbers a trained policy's samples are compared to), and
:meth:`MultiModalBanditEnv.mode_summary` measures the same for sampled actions.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class MultiModalBanditEnv(gym.Env):
    """A one-step task with ``n_modes`` equally good (or weighted) actions.

    :param n_modes: number of mixture components ``K >= 2`` (at most 6).
    :param separation: distance between neighbouring centres (> 0), in action units.
    :param width: standard deviation of each component (> 0), in action units.
    :param action_dim: dimension of the action (1 to 3; 1-D places at most ``K`` centres on a line).
    :param weights: mixture weights ``w_k`` (``K`` positive numbers, normalised here; default equal).
    :param render_mode: unused (no rendering); accepted for gymnasium's interface.
    :raises ValueError: for parameters outside these ranges or centres outside ``[-1, 1]``.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        n_modes: int = 2,
        separation: float = 1.2,
        width: float = 0.15,
        action_dim: int = 1,
        weights: list[float] | None = None,
        render_mode: str | None = None,
    ):
        if isinstance(n_modes, bool) or not isinstance(n_modes, int) or not 2 <= n_modes <= 6:
            raise ValueError(f"n_modes must be an integer from 2 to 6, got {n_modes!r}")
        if isinstance(action_dim, bool) or not isinstance(action_dim, int) or not 1 <= action_dim <= 3:
            raise ValueError(f"action_dim must be 1, 2 or 3, got {action_dim!r}")
        for name, value in (("separation", separation), ("width", width)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite positive number, got {value!r}")
        if weights is None:
            weights = [1.0] * n_modes
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n_modes,) or not np.all(np.isfinite(w)) or not np.all(w > 0):
            raise ValueError(f"weights must be {n_modes} positive numbers (one per mode), got {weights!r}")
        self.n_modes, self.action_dim = n_modes, action_dim
        self.separation, self.width = float(separation), float(width)
        self.weights = w / w.sum()
        self.centers = self._place_centers()
        if np.abs(self.centers).max() > 1.0:
            raise ValueError(
                f"separation={separation} puts the centres outside the action box [-1, 1] "
                f"(largest |coordinate| {np.abs(self.centers).max():.3f}); use a smaller separation"
            )
        self.render_mode = render_mode
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(action_dim,), dtype=np.float32)

    def _place_centers(self) -> np.ndarray:
        k, d, sep = self.n_modes, self.action_dim, self.separation
        centers = np.zeros((k, d))
        if d == 1:
            centers[:, 0] = sep * (np.arange(k) - (k - 1) / 2)
        else:  # a regular K-gon whose neighbouring vertices are `sep` apart (K = 2: a diameter)
            radius = sep / 2 if k == 2 else sep / (2 * math.sin(math.pi / k))
            angles = 2 * math.pi * np.arange(k) / k
            centers[:, 0], centers[:, 1] = radius * np.cos(angles), radius * np.sin(angles)
        return centers

    def reward(self, actions: np.ndarray) -> np.ndarray:
        """``r(a)`` for actions ``(..., action_dim)``; returns ``(...)``."""
        sq = ((actions[..., None, :] - self.centers) ** 2).sum(-1)  # (..., K)
        logits = np.log(self.weights) - sq / (2 * self.width**2)
        top = logits.max(-1, keepdims=True)
        return (top + np.log(np.exp(logits - top).sum(-1, keepdims=True)))[..., 0]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(self.action_dim), -1.0, 1.0)
        info = {"mode": int(np.argmin(((a - self.centers) ** 2).sum(-1)))}
        return np.zeros(1, dtype=np.float32), float(self.reward(a)), True, False, info

    def near_radius(self, alpha: float) -> float:
        """Radius of "near a mode": two tempered standard deviations, ``2 width sqrt(alpha)``, capped
        at a quarter of the separation so that the regions of two modes never touch."""
        return min(2.0 * self.width * math.sqrt(alpha), self.separation / 4)

    def mode_summary(self, actions: np.ndarray, alpha: float) -> dict[str, Any]:
        """Where sampled actions ``(n, action_dim)`` sit relative to the modes.

        :return: ``near`` (share within :meth:`near_radius` of a centre), ``shares`` (per mode: share
            of the actions near that mode, among all actions), ``weights`` (``shares`` normalised to
            sum to 1 over the modes; zeros if no action is near any), ``std`` (per coordinate).
        """
        actions = np.asarray(actions, dtype=np.float64).reshape(-1, self.action_dim)
        dist = np.sqrt(((actions[:, None, :] - self.centers) ** 2).sum(-1))  # (n, K)
        nearest = dist.argmin(-1)
        near = dist[np.arange(len(actions)), nearest] <= self.near_radius(alpha)
        shares = np.array([(near & (nearest == k)).mean() for k in range(self.n_modes)])
        total = shares.sum()
        return {
            "near": float(near.mean()),
            "shares": shares.round(4).tolist(),
            "weights": (shares / total if total > 0 else shares).round(4).tolist(),
            "std": actions.std(0).round(4).tolist(),
        }

    def soft_optimal(self, alpha: float, grid: int | None = None) -> dict[str, Any]:
        """The soft-optimal policy ``pi* ∝ exp(r / alpha)`` on ``[-1, 1]^d``, integrated on a grid.

        :param alpha: temperature (> 0).
        :param grid: points per coordinate (default: 4001 in 1-D, 801 in 2-D, 161 in 3-D).
        :return: ``near`` and ``weights`` as in :meth:`mode_summary` (weights: mass nearest each centre
            within the near radius, normalised), ``mode_mass`` (mass nearest each centre, anywhere)
            and ``entropy`` (differential entropy of ``pi*`` in nats).
        """
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha!r}")
        n = grid or {1: 4001, 2: 801, 3: 161}[self.action_dim]
        axis = np.linspace(-1.0, 1.0, n)
        cell = (axis[1] - axis[0]) ** self.action_dim
        mesh = np.meshgrid(*[axis] * self.action_dim, indexing="ij")
        points = np.stack(mesh, -1).reshape(-1, self.action_dim)
        log_p = self.reward(points) / alpha
        log_p -= log_p.max()
        p = np.exp(log_p)
        p /= p.sum() * cell
        mass = p * cell
        dist = np.sqrt(((points[:, None, :] - self.centers) ** 2).sum(-1))
        nearest = dist.argmin(-1)
        near = dist[np.arange(len(points)), nearest] <= self.near_radius(alpha)
        shares = np.array([mass[near & (nearest == k)].sum() for k in range(self.n_modes)])
        entropy = -float((mass * np.log(np.maximum(p, 1e-300))).sum())
        return {
            "near": float(shares.sum()),
            "weights": (shares / shares.sum()).round(4).tolist(),
            "mode_mass": np.array([mass[nearest == k].sum() for k in range(self.n_modes)]).round(4).tolist(),
            "entropy": entropy,
        }
