"""2-D point-mass navigation through Gaussian obstacles (Q-STAC paper, §V-A and Fig. 2b).

A point mass under direct force control must reach a target through a field of Gaussian bumps:

* observation ``(x, y, vx, vy)``: position in ``[-10, 10]^2``, velocity in ``[-5, 5]^2`` (``float32``);
* action: force ``(u1, u2)`` in ``[-10, 10]^2``;
* dynamics (double integrator, semi-implicit Euler, ``dt = 0.1``)::

      acc = clip((clip(u, -10, 10) - friction * v) / mass, -10, 10)
      v'  = clip(v + acc * dt, -5, 5)
      p'  = clip(p + v' * dt, -10, 10)

  with ``friction = 0`` by default: the paper's ``x'' = u / m`` (§V-A). Viscous friction (force per unit
  speed) is one of the paper's "configurable parameters" and stays an option. The first version had
  ``friction = 0.1`` by default; the benchmark runs committed under ``benchmarks/results/nav2d*`` and
  ``benchmarks/results/qstac_plans`` were made with it (their ``NOTE.md`` says so; pass
  ``friction=0.1``, rl_zoo3 ``--env-kwargs friction:0.1``, to reproduce them);

* reward of a step ``p -> p'`` (the paper gives no formula; this one is ours)::

      r = progress_coeff * (||p - target|| - ||p' - target||)            progress (telescopes)
          - sum_k A_k exp(-||p' - c_k||^2 / (2 s_k^2))                  Gaussian obstacle bumps
          + success_reward * [||p' - target|| < target_radius]          success bonus

  Progress telescopes over an episode, so every successful path earns the same progress and bonus:
  returns differ by the obstacle cost and, through discounting, by the time taken. Detours are
  free apart from time, so crossing a bump is a deliberate trade-off.
* an episode terminates on success (``info["is_success"]``, ``||p' - target|| < target_radius``) and is
  truncated after 200 steps by the registered ids.

Levels (start ``(-8, -8)`` plus uniform noise of ``start_noise``, target ``(8, 8)``):

* ``"easy"``: one bump on the straight line; going around it either way is a local decision;
* ``"medium"``: five bumps around and on the diagonal; the agent must slalom between them;
* ``"hard"``: a wall of overlapping bumps across the diagonal (along ``y = -x``, ridge height about 60)
  that is open only in the top-left corner, plus bumps before the opening. Local avoidance leads into
  the wall; the agent must choose the long way round (global path choice). The wall is tall enough that
  pushing through it at full speed costs about as much as the whole progress and success bonus (a
  scripted straight run returns about 4, a scripted detour about 307; -1 and 305 with ``friction=0.1``);
  with the first version's amplitude of 20 the straight run still returned 208 and a trained Q-STAC
  agent simply crossed.

``obstacles=`` takes any ``(K, 4)`` array of ``(cx, cy, s, A)`` rows instead; ``mass``, ``friction``,
``target`` and the reward coefficients are constructor arguments too. :class:`Nav2DDynamics` is the matching
``torch`` model (next observation, reward and termination), registered for the three ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import torch
from gymnasium import spaces
from torch import nn

from sb3_stein.common.backends import to_float64

from .raster import blend, draw_segment, pixel_grid

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]

POSITION_BOUND, SPEED_BOUND, ACCELERATION_BOUND, FORCE_BOUND = 10.0, 5.0, 10.0, 10.0
MAX_EPISODE_STEPS = 200


def _wall(xs: Sequence[float], spread: float, amplitude: float) -> list[tuple[float, float, float, float]]:
    return [(x, -x, spread, amplitude) for x in xs]


#: Obstacle rows ``(cx, cy, s, A)`` of each level.
LEVELS: dict[str, list[tuple[float, float, float, float]]] = {
    "easy": [(0.0, 0.0, 1.5, 20.0)],
    "medium": [
        (-4.0, -4.0, 1.2, 20.0),
        (0.0, 0.0, 1.5, 20.0),
        (4.0, 4.0, 1.2, 20.0),
        (-2.5, 2.5, 1.2, 20.0),
        (2.5, -2.5, 1.2, 20.0),
    ],
    "hard": [
        *_wall([-3.0, -1.5, 0.0, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0, 10.5], 0.9, 60.0),
        (-1.0, -5.0, 1.2, 20.0),
        (-5.0, -1.0, 1.2, 20.0),
    ],
}


def resolve_obstacles(level: str, obstacles: npt.ArrayLike | None) -> FloatArray:
    """``(K, 4)`` rows ``(cx, cy, s, A)``: ``obstacles`` if given, else the level's."""
    if obstacles is None:
        if level not in LEVELS:
            raise ValueError(f"level must be one of {tuple(LEVELS)}, got {level!r}")
        return np.asarray(LEVELS[level], dtype=np.float64)
    rows = np.asarray(obstacles, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != 4 or not np.all(np.isfinite(rows)) or np.any(rows[:, 2] <= 0):
        raise ValueError(f"obstacles must be a (K, 4) array of finite (cx, cy, s > 0, A) rows, got {rows!r}")
    return rows


class Nav2DEnv(gym.Env[Float32Array, Float32Array]):
    """Point-mass navigation through Gaussian obstacles (module docstring for the details).

    :param level: ``"easy"``, ``"medium"`` or ``"hard"`` (ignored when ``obstacles`` is given).
    :param obstacles: optional ``(K, 4)`` rows ``(cx, cy, s, A)`` replacing the level's bumps.
    :param target: target position.
    :param start: mean start position.
    :param start_noise: half-width of the uniform start noise per coordinate.
    :param mass: point mass.
    :param friction: viscous friction coefficient (force per unit speed); 0 (default) is the paper's
        ``x'' = u / m``. The committed benchmark runs used 0.1 (module docstring).
    :param dt: time step.
    :param target_radius: success radius.
    :param progress_coeff: reward per unit of distance gained towards the target.
    :param success_reward: bonus on reaching the target.
    :param render_mode: ``None`` or ``"rgb_array"``.
    :param render_size: frame side in pixels.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        level: str = "easy",
        obstacles: npt.ArrayLike | None = None,
        target: Sequence[float] = (8.0, 8.0),
        start: Sequence[float] = (-8.0, -8.0),
        start_noise: float = 0.5,
        mass: float = 1.0,
        friction: float = 0.0,
        dt: float = 0.1,
        target_radius: float = 0.5,
        progress_coeff: float = 10.0,
        success_reward: float = 100.0,
        render_mode: str | None = None,
        render_size: int = 400,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if mass <= 0 or friction < 0 or dt <= 0 or target_radius <= 0 or start_noise < 0:
            raise ValueError("mass, dt and target_radius must be > 0; friction and start_noise >= 0")
        self.level = level
        self.obstacles = resolve_obstacles(level, obstacles)
        self.target = np.asarray(target, dtype=np.float64).reshape(2)
        self.start = np.asarray(start, dtype=np.float64).reshape(2)
        self.start_noise = float(start_noise)
        self.mass, self.friction, self.dt = float(mass), float(friction), float(dt)
        self.target_radius = float(target_radius)
        self.progress_coeff, self.success_reward = float(progress_coeff), float(success_reward)
        self.render_mode, self.render_size = render_mode, int(render_size)
        high = np.array([POSITION_BOUND, POSITION_BOUND, SPEED_BOUND, SPEED_BOUND], dtype=np.float32)
        self.observation_space = spaces.Box(-high, high, dtype=np.float32)
        self.action_space = spaces.Box(-FORCE_BOUND, FORCE_BOUND, shape=(2,), dtype=np.float32)
        self._state = np.zeros(4, dtype=np.float64)
        self._path: list[FloatArray] = []
        self._background: FloatArray | None = None

    def dynamics_model(self) -> Nav2DDynamics:
        """A :class:`Nav2DDynamics` with this environment's parameters."""
        return Nav2DDynamics(
            obstacles=self.obstacles,
            target=self.target,
            mass=self.mass,
            friction=self.friction,
            dt=self.dt,
            target_radius=self.target_radius,
            progress_coeff=self.progress_coeff,
            success_reward=self.success_reward,
        )

    def obstacle_cost(self, positions: npt.ArrayLike) -> FloatArray:
        """``sum_k A_k exp(-||p - c_k||^2 / (2 s_k^2))`` for positions ``(..., 2)``."""
        p = np.asarray(positions, dtype=np.float64)[..., None, :]
        sq = ((p - self.obstacles[:, :2]) ** 2).sum(-1)
        return (self.obstacles[:, 3] * np.exp(-sq / (2 * self.obstacles[:, 2] ** 2))).sum(-1)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Float32Array, dict[str, Any]]:
        super().reset(seed=seed)
        noise = self.np_random.uniform(-self.start_noise, self.start_noise, size=2)
        self._state = np.concatenate(
            [np.clip(self.start + noise, -POSITION_BOUND, POSITION_BOUND), np.zeros(2)]
        )
        self._path = [self._state[:2].copy()]
        return self._state.astype(np.float32), {"is_success": False}

    def step(self, action: npt.ArrayLike) -> tuple[Float32Array, float, bool, bool, dict[str, Any]]:
        u = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -FORCE_BOUND, FORCE_BOUND)
        p, v = self._state[:2], self._state[2:]
        acc = np.clip((u - self.friction * v) / self.mass, -ACCELERATION_BOUND, ACCELERATION_BOUND)
        v_next = np.clip(v + acc * self.dt, -SPEED_BOUND, SPEED_BOUND)
        p_next = np.clip(p + v_next * self.dt, -POSITION_BOUND, POSITION_BOUND)
        distance = float(np.linalg.norm(p_next - self.target))
        success = distance < self.target_radius
        obstacle = float(self.obstacle_cost(p_next))
        progress = self.progress_coeff * (float(np.linalg.norm(p - self.target)) - distance)
        reward = progress - obstacle + (self.success_reward if success else 0.0)
        self._state = np.concatenate([p_next, v_next])
        self._path.append(p_next.copy())
        info = {"is_success": success, "distance": distance, "obstacle_cost": obstacle}
        return self._state.astype(np.float32), float(reward), success, False, info

    # ------------------------------------------------------------ rendering
    def render(self) -> npt.NDArray[np.uint8] | None:  # type: ignore[override]
        """An ``(H, W, 3)`` ``uint8`` frame: obstacle field (darker = costlier), target, path, agent."""
        if self.render_mode is None:
            gym.logger.warn('Call gymnasium.make(..., render_mode="rgb_array") to render.')
            return None
        return self.render_trajectories([np.array(self._path)], agent=self._state[:2])

    def render_trajectories(
        self,
        trajectories: Sequence[npt.ArrayLike],
        colors: Sequence[tuple[int, int, int]] | None = None,
        agent: npt.ArrayLike | None = None,
        widths: Sequence[float] | None = None,
    ) -> npt.NDArray[np.uint8]:
        """Draw ``(T_i, 2)`` position paths (e.g. a planner's particle rollouts) over the obstacle field."""
        if self._background is None:
            self._background = self._draw_background(self.render_size)
        img = self._background.copy()
        xs, px = pixel_grid(self.render_size, POSITION_BOUND)
        for i, path in enumerate(trajectories):
            points = np.asarray(path, dtype=np.float64).reshape(-1, 2)
            color = np.asarray((30, 80, 220) if colors is None else colors[i], dtype=np.float64)
            width = 0.06 if widths is None else widths[i]
            for j in range(max(points.shape[0] - 1, 0)):
                draw_segment(img, xs, xs, points[j], points[j + 1], width, color, px)
        if agent is not None:
            a = np.asarray(agent, dtype=np.float64).reshape(2)
            draw_segment(img, xs, xs, a, a, 0.3, np.array([10.0, 30.0, 120.0]), px)
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

    def _draw_background(self, size: int) -> FloatArray:
        xs, px = pixel_grid(size, POSITION_BOUND)
        gx, gy = np.meshgrid(xs, xs[::-1])
        cost = self.obstacle_cost(np.stack([gx, gy], -1))
        img = np.empty((size, size, 3), dtype=np.float64)
        img[:] = (250.0, 250.0, 250.0)
        full = (slice(0, size), slice(0, size))
        peak = max(float(self.obstacles[:, 3].max()), 1e-9) if len(self.obstacles) else 1.0
        blend(img, 0.85 * np.clip(cost / peak, 0.0, 1.0), np.array([120.0, 60.0, 30.0]), *full)
        dist = np.hypot(gx - self.target[0], gy - self.target[1])
        blend(
            img,
            np.clip((self.target_radius - dist) / px + 0.5, 0.0, 1.0),
            np.array([20.0, 170.0, 60.0]),
            *full,
        )
        b = POSITION_BOUND
        corners = np.array([[-b, -b], [b, -b], [b, b], [-b, b]])
        for i in range(4):
            draw_segment(
                img, xs, xs, corners[i], corners[(i + 1) % 4], 0.5 * px, np.array([60.0, 60.0, 60.0]), px
            )
        return img


class Nav2DDynamics(nn.Module):
    """Known dynamics and reward of :class:`Nav2DEnv` in ``torch``.

    ``forward(obs, action)`` maps ``(..., 4)`` observations and ``(..., 2)`` forces (environment units) to
    the next observation, exactly as :meth:`Nav2DEnv.step` (clipping and any ``friction`` included);
    :meth:`reward` and :meth:`is_terminal` are the step's reward and termination.

    Parameters as for :class:`Nav2DEnv` (``friction`` 0 by default, as there).
    """

    obstacles: torch.Tensor
    target: torch.Tensor

    def __init__(
        self,
        level: str = "easy",
        obstacles: npt.ArrayLike | None = None,
        target: Sequence[float] | npt.ArrayLike = (8.0, 8.0),
        mass: float = 1.0,
        friction: float = 0.0,
        dt: float = 0.1,
        target_radius: float = 0.5,
        progress_coeff: float = 10.0,
        success_reward: float = 100.0,
    ) -> None:
        super().__init__()
        rows = resolve_obstacles(level, obstacles)
        self.register_buffer("obstacles", torch.as_tensor(rows, dtype=torch.float32), persistent=False)
        # float64, so that is_terminal compares as the environment does; reward() casts to the input's dtype.
        self.register_buffer(
            "target", torch.as_tensor(np.asarray(target, dtype=np.float64).reshape(2)), persistent=False
        )
        self.mass, self.friction, self.dt = float(mass), float(friction), float(dt)
        self.target_radius = float(target_radius)
        self.progress_coeff, self.success_reward = float(progress_coeff), float(success_reward)

    @classmethod
    def from_env(cls, env: Any = None) -> Nav2DDynamics:
        """The model of ``env`` (a :class:`Nav2DEnv` or a wrapper of one; ``None``: the easy level)."""
        env = getattr(env, "unwrapped", env)
        return env.dynamics_model() if isinstance(env, Nav2DEnv) else cls()

    def extra_repr(self) -> str:
        n = self.obstacles.shape[0]
        return f"num_obstacles={n}, mass={self.mass}, friction={self.friction}, dt={self.dt}"

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        p, v = obs[..., :2], obs[..., 2:]
        u = action.clamp(-FORCE_BOUND, FORCE_BOUND)
        acc = ((u - self.friction * v) / self.mass).clamp(-ACCELERATION_BOUND, ACCELERATION_BOUND)
        v_next = (v + acc * self.dt).clamp(-SPEED_BOUND, SPEED_BOUND)
        p_next = (p + v_next * self.dt).clamp(-POSITION_BOUND, POSITION_BOUND)
        return torch.cat([p_next, v_next], dim=-1)

    @torch.no_grad()
    def is_terminal(self, obs: torch.Tensor) -> torch.Tensor:
        """Whether observations ``(..., 4)`` end the episode, bool ``(...)``: the position within
        ``target_radius`` of the target (success), :meth:`Nav2DEnv.step`'s rule.

        Compared in float64, as the environment compares its float64 state; on a float32 observation
        the verdict can differ from the environment's only within the observation's rounding (~1e-6).
        """
        position = to_float64(obs[..., :2])
        distance = torch.linalg.vector_norm(position - self.target.to(position), dim=-1)
        return distance < self.target_radius

    def obstacle_cost(self, positions: torch.Tensor) -> torch.Tensor:
        """Sum of the Gaussian bumps at positions ``(..., 2)``."""
        obstacles = self.obstacles.to(positions.dtype)
        sq = (positions.unsqueeze(-2) - obstacles[:, :2]).pow(2).sum(-1)
        return (obstacles[:, 3] * torch.exp(-sq / (2 * obstacles[:, 2] ** 2))).sum(-1)

    def reward(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """The environment's reward of the transition ``obs -> next_obs``."""
        del action
        target = self.target.to(obs.dtype)
        distance = (next_obs[..., :2] - target).norm(dim=-1)
        progress = self.progress_coeff * ((obs[..., :2] - target).norm(dim=-1) - distance)
        bonus = self.success_reward * (distance < self.target_radius).to(obs.dtype)
        return progress - self.obstacle_cost(next_obs[..., :2]) + bonus
