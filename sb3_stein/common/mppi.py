"""Batched infinite-horizon MPPI with a free-energy output (MPQ, Bhardwaj et al. 2020, §3.2, App. A).

One planner serves acting and the Q targets of MPQ: :meth:`MPPI.plan` optimises the mean ``U`` of a
Gaussian over ``H`` controls for a batch of start states at once. With samples ``A_n = U + E_n``,
``E_n ~ N(0, Sigma)`` per step (Eq. 11), one iteration is::

    S_n  = -[sum_{t=0}^{H-2} gamma^t r(s_t, a_t) + gamma^{H-1} Q(s_{H-1}, a_{H-1})]   (Eq. 16, 23; c = -r)
           + lambda * sum_{t=0}^{H-1} 1/2 u_t^T Sigma^-1 (u_t + 2 eps_t)    (control cost: log pi_U / pi_bar)
    w_n  = exp(-S_n / lambda) / eta,   eta = sum_n exp(-S_n / lambda)       (Eq. 16-17)
    u_t <- u_t + alpha * sum_n w_n eps_t^n                                  (Eq. 18)

and the free energy of the start state is estimated from the same samples (Eq. 7 with the
expectation over the prior ``pi_bar = N(0, Sigma)`` rewritten by importance sampling over ``pi_U``,
which is what Eq. 19's expectation over ``pi*`` with its ``log pi*/pi_bar`` term amounts to)::

    F(s) = -lambda * log( (1/N) sum_n exp(-S_n / lambda) ),      soft value V(s) = -F(s)

``V`` is in reward units (SB3's convention: the planner maximises rewards; the paper writes costs).
Without a terminal value (plain MPPI) the last step's reward replaces ``Q``: the return is
``sum_{t=0}^{H-1} gamma^t r_t`` over ``H`` model steps. With ``H = 1`` and a terminal ``Q`` the value
is ``lambda log E_{N(0, Sigma)}[exp(Q(s, a) / lambda)]``, the soft value of soft Q-learning with the
prior as reference (the paper's remark after Eq. 7).

Choices where the paper is silent (documented and tested):

* **Discounting** (App. A): ``gamma^t`` on the rewards, ``gamma^{H-1}`` on ``Q``, the control cost
  undiscounted (Eq. 21-23: the upper bound the paper optimises).
* **Action bounds**: a sample ``U + E_n`` is clipped to the Box before the rollout, and its noise is
  taken as the clipped one, ``E'_n = clip(U + E_n) - U``, both in the update (so ``U`` stays inside the
  Box: the update is a convex combination for ``alpha <= 1``) and in the control cost. A clipped sample
  is thus weighed as if drawn at the clipped value, as pytorch_mppi does.
* **Terminal states** (models with ``is_terminal``): rewards after a terminal state and the terminal
  ``Q`` of a rollout that ended are dropped (the episode is over there).
* **The free energy comes from the last iteration's samples**: after ``k`` iterations the estimate
  uses the ``k``-th proposal (``k - 1`` updates), the samples that also made the last update. The
  free energy does not depend on the proposal; the iterations only make the estimate less noisy.
* **Numerics**: weights and free energy go through ``logsumexp``, so costs far above ``lambda`` never
  give ``0 / 0``. ``underflow`` counts the states where the naive ``exp(-S / lambda)`` would have
  vanished for every sample. A cost of ``+inf`` (an infinitely bad sample) gets weight 0; a state
  whose every sample is ``+inf`` keeps its mean, and its value is ``-inf`` (``infeasible``). A NaN
  cost is a model error and raises.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch as th
from torch import nn

#: ``(obs, action, next_obs) -> reward``, batched, environment units.
RewardModel = Callable[[th.Tensor, th.Tensor, th.Tensor], th.Tensor]
#: ``(states (..., obs_dim), actions (..., act_dim) in environment units) -> Q (...)``, reward units.
TerminalValue = Callable[[th.Tensor, th.Tensor], th.Tensor]


@dataclass
class MPPIResult:
    """What one :meth:`MPPI.plan` call returns (``B`` start states).

    :param mean: the optimised control sequences ``(B, H, act_dim)``, environment units.
    :param value: soft value ``V(s) = -F(s)`` of each start state ``(B,)`` (reward units).
    :param ess: effective sample size ``1 / sum_n w_n^2`` of the last iteration's weights ``(B,)``.
    :param underflow: ``(B,)`` bool, the naive weights ``exp(-S_n / lambda)`` would all have underflowed
        (handled by ``logsumexp``; in reward units of order 10 and ``lambda = 0.15`` this is common).
    :param collapsed: ``(B,)`` bool, every weight but the best sample's is zero in the working precision
        (``ess == 1``): the update copies one sample.
    :param infeasible: ``(B,)`` bool, every sample cost ``+inf`` (mean kept, value ``-inf``).
    :param rollout_ms: wall time spent in model rollouts and the terminal value, all iterations.
    """

    mean: th.Tensor
    value: th.Tensor
    ess: th.Tensor
    underflow: th.Tensor
    collapsed: th.Tensor
    infeasible: th.Tensor
    rollout_ms: float


def noise_cholesky(noise_sigma: float | th.Tensor, act_dim: int) -> th.Tensor:
    """Lower Cholesky factor ``(A, A)`` of the per-step noise covariance ``Sigma``.

    :param noise_sigma: a variance (``Sigma = s I``, the paper's Table 3 form), per-dimension
        variances ``(A,)`` or a full matrix ``(A, A)``.
    :raises ValueError: naming ``noise_sigma`` unless it is a positive definite covariance of that size.
    """
    sigma = th.as_tensor(noise_sigma, dtype=th.float64)
    if sigma.ndim == 0:
        sigma = sigma * th.eye(act_dim, dtype=th.float64)
    elif sigma.ndim == 1:
        if sigma.shape[0] != act_dim:
            raise ValueError(f"noise_sigma has {sigma.shape[0]} variances for act_dim={act_dim}")
        sigma = th.diag(sigma)
    elif sigma.shape != (act_dim, act_dim):
        raise ValueError(
            f"noise_sigma must be a scalar, ({act_dim},) or ({act_dim}, {act_dim}); got {tuple(sigma.shape)}"
        )
    if not bool(th.isfinite(sigma).all()) or not bool(th.allclose(sigma, sigma.T)):
        raise ValueError(f"noise_sigma must be a finite symmetric covariance, got {sigma.tolist()}")
    cholesky, info = th.linalg.cholesky_ex(sigma)
    if int(info) != 0:
        raise ValueError(f"noise_sigma must be positive definite, got {sigma.tolist()}")
    return cholesky


class MPPI:
    """Batched infinite-horizon MPPI (module docstring for the equations and choices).

    :param dynamics: ``f(obs, action) -> next_obs`` in environment units (the dynamics-model protocol
        of :mod:`sb3_stein.common.dynamics`); ``is_terminal`` is used if it has one. A *simulator
        model* instead has ``rollout_sequence(obs (B, N, obs_dim), actions (B, N, T, A)) -> (next_obs
        (B, N, T, obs_dim), rewards (B, N, T))`` (torch tensors, no gradient; e.g. a second MuJoCo
        model rolled out by ``mujoco.rollout``): the planner then calls it once per iteration and
        uses its rewards, not ``reward_model``.
    :param reward_model: ``r(obs, action, next_obs)`` batched, environment units.
    :param horizon: ``H >= 1`` controls per sequence.
    :param n_samples: ``N >= 2`` sampled sequences per start state (Table 3: 24 or 36).
    :param noise_sigma: per-step covariance ``Sigma`` (Table 3: 3.0-4.0), see :func:`noise_cholesky`.
    :param temperature: ``lambda > 0`` (Table 3: 0.01-0.15).
    :param step_size: ``alpha`` in ``(0, 1]`` of Eq. 18 (Table 3: 0.5-0.55).
    :param gamma: discount in ``(0, 1]`` (Table 3: 0.9).
    :param action_low: lower bounds of the Box ``(A,)``, environment units.
    :param action_high: upper bounds ``(A,)``.
    :param terminal_value: ``Q(s_{H-1}, a_{H-1})`` in reward units, or ``None`` (plain MPPI; needs
        ``H`` model steps instead of ``H - 1``). ``H = 1`` needs one.
    """

    def __init__(
        self,
        dynamics: nn.Module | Callable[[th.Tensor, th.Tensor], th.Tensor],
        reward_model: RewardModel,
        horizon: int,
        n_samples: int,
        noise_sigma: float | th.Tensor,
        temperature: float,
        step_size: float,
        gamma: float,
        action_low: th.Tensor,
        action_high: th.Tensor,
        terminal_value: TerminalValue | None = None,
    ):
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
        if not isinstance(n_samples, int) or n_samples < 2:
            raise ValueError(
                f"n_samples must be an integer >= 2 (weights need several samples), got {n_samples!r}"
            )
        if not temperature > 0 or not math.isfinite(temperature):
            raise ValueError(f"temperature (lambda) must be a finite number > 0, got {temperature!r}")
        if not 0 < step_size <= 1:
            raise ValueError(f"step_size (alpha of Eq. 18) must lie in (0, 1], got {step_size!r}")
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must lie in (0, 1], got {gamma!r}")
        if horizon == 1 and terminal_value is None:
            raise ValueError("horizon=1 plans on the terminal value alone: pass terminal_value")
        self.dynamics, self.reward_model, self.terminal_value = dynamics, reward_model, terminal_value
        self.horizon, self.n_samples = horizon, n_samples
        self.temperature, self.step_size, self.gamma = float(temperature), float(step_size), float(gamma)
        self.action_low = th.as_tensor(action_low, dtype=th.float32)
        self.action_high = th.as_tensor(action_high, dtype=th.float32)
        self.act_dim = int(self.action_low.shape[0])
        self.noise_chol = noise_cholesky(noise_sigma, self.act_dim).float()  # (A, A)
        self.noise_precision = th.cholesky_inverse(self.noise_chol.double()).float()  # Sigma^-1 (A, A)

    def initial_mean(self, batch: int, like: th.Tensor) -> th.Tensor:
        """The prior's mean, the zero control sequence ``(B, H, A)`` (passive dynamics)."""
        return like.new_zeros(batch, self.horizon, self.act_dim)

    @staticmethod
    def shift(mean: th.Tensor) -> th.Tensor:
        """Warm start for the next time step: drop the executed control, append the prior's (zero)."""
        return th.cat([mean[:, 1:], th.zeros_like(mean[:, :1])], dim=1)

    def sample_noise(
        self, shape: tuple[int, ...], like: th.Tensor, generator: th.Generator | None
    ) -> th.Tensor:
        """``E ~ N(0, Sigma)`` per step, ``(*shape, A)``."""
        z = th.randn((*shape, self.act_dim), generator=generator, dtype=like.dtype, device=like.device)
        return z @ self.noise_chol.to(like).T

    def returns(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """Discounted return of each sequence ``(B, N)`` from start states ``obs (B, obs_dim)``, actions
        ``(B, N, H, A)`` in environment units: rewards of steps ``0..H-2`` plus ``gamma^{H-1} Q`` (or
        the last step's reward without a terminal value), steps after a terminal state dropped."""
        batch, n, horizon, _ = actions.shape
        state = obs.unsqueeze(1).expand(batch, n, obs.shape[-1])
        is_terminal = getattr(self.dynamics, "is_terminal", None)
        alive = th.ones(batch, n, dtype=actions.dtype, device=actions.device)
        total = th.zeros(batch, n, dtype=actions.dtype, device=actions.device)
        reward_steps = horizon - 1 if self.terminal_value is not None else horizon
        rollout_sequence = getattr(self.dynamics, "rollout_sequence", None)
        if rollout_sequence is not None and reward_steps > 0:
            # A simulator model rolls whole sequences at once and brings its own rewards.
            next_states, rewards = rollout_sequence(state, actions[:, :, :reward_steps])
            if next_states.shape != (batch, n, reward_steps, obs.shape[-1]) or rewards.shape != (
                batch,
                n,
                reward_steps,
            ):
                raise ValueError(
                    f"rollout_sequence returned states {tuple(next_states.shape)} and rewards "
                    f"{tuple(rewards.shape)} for {(batch, n, reward_steps)} controls; expected "
                    f"{(batch, n, reward_steps, obs.shape[-1])} and {(batch, n, reward_steps)}"
                )
            next_states, rewards = next_states.to(actions), rewards.to(actions)
        for t in range(reward_steps):  # sequential by nature: s_{t+1} = f(s_t, a_t)
            if rollout_sequence is not None:
                next_state, reward = next_states[:, :, t], rewards[:, :, t]
            else:
                next_state = self.dynamics(state, actions[:, :, t])
                reward = self.reward_model(state, actions[:, :, t], next_state)
            if reward.shape != (batch, n):
                raise ValueError(
                    f"reward_model returned shape {tuple(reward.shape)} for a batch of {(batch, n)} "
                    "transitions; it must map (obs, action, next_obs) of shape (..., dim) to rewards (...)"
                )
            total = total + (self.gamma**t) * alive * reward
            if is_terminal is not None:
                alive = alive * (~is_terminal(next_state)).to(alive.dtype)
            state = next_state
        if self.terminal_value is not None:
            q = self.terminal_value(state, actions[:, :, horizon - 1])
            total = total + (self.gamma ** (horizon - 1)) * alive * q
        return total

    @th.no_grad()
    def plan(
        self,
        obs: th.Tensor,
        mean: th.Tensor | None = None,
        iterations: int = 1,
        generator: th.Generator | None = None,
    ) -> MPPIResult:
        """``iterations`` MPPI updates (Eq. 18) of ``mean`` for every start state, and the free energy.

        :param obs: start states ``(B, obs_dim)``, environment units.
        :param mean: initial control sequences ``(B, H, A)`` (a warm start, see :meth:`shift`);
            ``None``: the zero sequence.
        :param iterations: ``>= 1``.
        :param generator: torch generator for the noise (fixed noise for deterministic acting).
        :raises ValueError: if a sample's cost is NaN (the reward model or the terminal value).
        """
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        batch = obs.shape[0]
        u = self.initial_mean(batch, obs) if mean is None else mean.to(obs.dtype)
        low, high = self.action_low.to(obs), self.action_high.to(obs)
        precision = self.noise_precision.to(obs)
        lam, n = self.temperature, self.n_samples
        rollout_s = 0.0
        for _ in range(iterations):
            noise = self.sample_noise((batch, n, self.horizon), obs, generator)  # (B, N, H, A)
            actions = th.maximum(th.minimum(u.unsqueeze(1) + noise, high), low)
            noise = actions - u.unsqueeze(1)  # the clipped noise (module docstring)
            start = time.perf_counter()
            ret = self.returns(obs, actions)  # (B, N)
            rollout_s += time.perf_counter() - start
            # lambda * sum_t 1/2 u_t^T Sigma^-1 (u_t + 2 eps_t): (B, N)
            control = 0.5 * th.einsum("bha,ac,bnhc->bn", u, precision, u.unsqueeze(1) + 2.0 * noise)
            cost = -ret + lam * control
            if bool(th.isnan(cost).any()):
                raise ValueError(
                    "MPPI: a sampled sequence has a NaN cost: the reward model or the terminal value "
                    "returned NaN (check the model on these states, and the observations for NaN)"
                )
            log_w = -cost / lam  # (B, N), +inf cost -> -inf
            log_eta = th.logsumexp(log_w, dim=1, keepdim=True)  # (B, 1)
            infeasible = th.isneginf(log_eta.squeeze(1))
            weights = th.where(infeasible.unsqueeze(1), th.zeros_like(log_w), th.exp(log_w - log_eta))
            u = u + self.step_size * th.einsum("bn,bnha->bha", weights, noise)
            # A convex combination of in-Box points, up to float rounding (seen: 2 + 2e-7 for a bound of 2).
            u = th.maximum(th.minimum(u, high), low)
        tiny = math.log(th.finfo(obs.dtype).tiny)
        value = lam * (log_eta.squeeze(1) - math.log(n))  # -F: reward units; -inf where infeasible
        ess = th.where(infeasible, th.zeros_like(value), 1.0 / weights.pow(2).sum(1).clamp_min(1e-30))
        return MPPIResult(
            mean=u,
            value=value,
            ess=ess,
            underflow=log_w.max(dim=1).values < tiny,
            collapsed=(weights > 0).sum(1) <= 1,
            infeasible=infeasible,
            rollout_ms=1e3 * rollout_s,
        )
