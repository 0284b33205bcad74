"""Q-STAC policy: Stein-variational MPC over H-step control sequences, guided by the soft Q.

Shapes: ``B`` states, ``m`` particles, ``H`` horizon steps, ``A`` action dimensions. A particle is a
control sequence ``U`` of shape ``(H, A)`` in pre-tanh units; the controls are ``a_h = tanh(u_h)`` in
SB3's ``[-1, 1]`` units, the units the critic sees and the replay buffer stores. The SVGD core runs on
the flattened ``(B, m, H * A)`` particles (shared with S²AC, which is the case ``H = 1``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_stein.common.constraints import BoxAugmentedLagrangian
from sb3_stein.common.critics import ParticleCritic
from sb3_stein.common.distributions import tanh_log_det
from sb3_stein.common.svgd import SVGDResult
from sb3_stein.s2ac.policies import S2ACPolicy


class QSTACPolicy(S2ACPolicy):
    """Policy of :class:`sb3_stein.QSTAC`: per-step Gaussian prior, twin critics, Stein MPC.

    Parameters of :class:`~sb3_stein.s2ac.policies.S2ACPolicy` (except ``amortized``), plus:

    :param horizon: ``H >= 1``, control steps per particle.
    :param dynamics_model: the known dynamics (see :mod:`sb3_stein.common.dynamics`); its parameters,
        if any, are frozen (``requires_grad_(False)``).
    :param constraint: keep particles inside ``mu +- bound_std * sigma`` with the augmented
        Lagrangian (Eq. 12-15).
    :param constraint_penalty: ``c > 0`` of Eq. 14, in Q units (the score's scale).
    :param multiplier_step: ``eta > 0`` of the multiplier update (default: ``c``).
    :param prior_weight: weight ``w`` of ``log q0(U)`` in the log-posterior (Eq. 11: 1).
    :param horizon_discount: weight ``gamma_h^h`` of ``Q(x_h, u_h)`` in the sum of Eq. 11 (paper: 1).
    :param act_svgd_steps: SVGD steps when acting (``predict``); ``None``: ``svgd_steps`` (the paper).
    """

    action_low: th.Tensor
    action_high: th.Tensor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        *args: Any,
        horizon: int = 5,
        dynamics_model: nn.Module | None = None,
        constraint: bool = True,
        constraint_penalty: float = 1.0,
        multiplier_step: float | None = None,
        prior_weight: float = 1.0,
        horizon_discount: float = 1.0,
        act_svgd_steps: int | None = None,
        **kwargs: Any,
    ):
        if dynamics_model is None:
            raise ValueError("QSTACPolicy needs a dynamics_model (QSTAC resolves it from its env)")
        self.horizon = horizon
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)
        # The model is known, not learned here: no gradients accumulate in its parameters.
        self.dynamics = dynamics_model.requires_grad_(False)
        self.constraint = constraint
        self.constraint_penalty = constraint_penalty
        self.multiplier_step = constraint_penalty if multiplier_step is None else multiplier_step
        self.prior_weight = prior_weight
        self.horizon_discount = horizon_discount
        self.act_svgd_steps = act_svgd_steps
        self.register_buffer("action_low", th.as_tensor(action_space.low, dtype=th.float32), persistent=False)
        self.register_buffer(
            "action_high", th.as_tensor(action_space.high, dtype=th.float32), persistent=False
        )
        self._masked_shares: list[th.Tensor] = []  # per score call of the current sample
        # Diagnostics of the sampler, accumulated between reads (see QSTAC.train).
        # Bounded: acting alone (e.g. a long rl_zoo3.enjoy) must not grow them without end.
        self.stats: dict[str, deque[float]] = {
            name: deque(maxlen=10_000)
            for name in (
                "rollout_ms",
                "score_ms",
                "multiplier_abs",
                "outside",
                "sequence_entropy",
                "terminal_masked",
            )
        }

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                horizon=self.horizon,
                dynamics_model=self.dynamics,
                constraint=self.constraint,
                constraint_penalty=self.constraint_penalty,
                multiplier_step=self.multiplier_step,
                prior_weight=self.prior_weight,
                horizon_discount=self.horizon_discount,
                act_svgd_steps=self.act_svgd_steps,
            )
        )
        return data

    @property
    def owner(self) -> str:
        return "QSTAC"

    def to_env_units(self, actions: th.Tensor) -> th.Tensor:
        """SB3's ``[-1, 1]`` actions -> the environment's Box, as ``unscale_action``: the one place
        where a model rollout converts units."""
        low, high = self.action_low.to(actions.dtype), self.action_high.to(actions.dtype)
        return low + 0.5 * (actions + 1.0) * (high - low)

    def rollout(self, obs: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor | None]:
        """States ``x_0 .. x_{H-1}`` ``(B, m, H, obs_dim)`` visited by controls ``(B, m, H, A)``.

        :return: the states and, for a model with ``is_terminal``, the mask ``(B, m, H)`` of steps
            before the rollout reached a terminal state (1 up to and including the last non-terminal
            state, 0 from the first terminal state on), else ``None``. An episode ends at a terminal
            state: no control is applied there, so its Q-value is not part of the plan's objective.
        :raises ValueError: if the model returns a next state of the wrong shape or dtype (the
            construction probe checks one small batch; real batches are checked here, for free).
        """
        state = obs.to(actions.dtype).unsqueeze(1).expand(-1, actions.shape[1], -1)  # x_0: (B, m, obs_dim)
        states = [state]
        env_actions = self.to_env_units(actions).unbind(2)
        for h in range(self.horizon - 1):  # sequential by nature: x_{h+1} = f(x_h, u_h)
            next_state = self.dynamics(state, env_actions[h])
            if next_state.shape != state.shape or next_state.dtype != state.dtype:
                raise ValueError(
                    f"QSTAC: dynamics_model {type(self.dynamics).__name__} returned a next state of shape "
                    f"{tuple(next_state.shape)} and dtype {next_state.dtype} for states {tuple(state.shape)} "
                    f"({state.dtype}) and actions {tuple(env_actions[h].shape)}; it must return "
                    "(..., obs_dim) in the dtype of its inputs for any leading batch shape."
                )
            state = next_state
            states.append(state)
        stacked = th.stack(states, dim=2)
        is_terminal = getattr(self.dynamics, "is_terminal", None)
        if is_terminal is None or self.horizon == 1:
            return stacked, None
        with th.no_grad():
            terminal = is_terminal(stacked[:, :, 1:].detach()).to(actions.dtype)  # (B, m, H - 1)
            alive = th.cumprod(1.0 - terminal, dim=-1)
            alive = th.cat([th.ones_like(alive[..., :1]), alive], dim=-1)
        return stacked, alive

    def q_score(self, obs: PyTorchObs, u: th.Tensor, critic: ParticleCritic) -> th.Tensor:
        """``grad_U sum_h gamma_h^h Q(x_h, tanh u_h)`` (Eq. 11's Q part), ``(B, m, H * A)``.

        The gradient flows through the model rollout, with a graph when ``u`` carries one (the
        actor loss). For ReLU critics on flat observations the critics' input gradients come in closed
        form (:meth:`ParticleCritic.closed_form_input_grads`) and autograd runs only the
        vector-Jacobian product through tanh and the dynamics model; otherwise autograd differentiates
        the critics too (:meth:`ParticleCritic.min_q_at`, ``create_graph`` for the actor loss).
        ``H = 1`` is S²AC's score: no model, the states
        are the bound observations. Steps after a terminal state (models with ``is_terminal``) get
        weight 0.
        """
        if self.horizon == 1:
            return super().q_score(obs, u, critic)
        assert isinstance(obs, th.Tensor)
        batch, m, _ = u.shape
        start = time.perf_counter()
        with th.enable_grad():
            leaf = u if u.requires_grad else u.detach().requires_grad_(True)
            actions = th.tanh(leaf).view(batch, m, self.horizon, self.action_dim)
            states, alive = self.rollout(obs, actions)  # (B, m, H, obs_dim), (B, m, H) or None
            rolled_out = time.perf_counter()
            weights = self.horizon_discount ** th.arange(self.horizon, dtype=u.dtype, device=u.device)
            weights = weights.expand(batch, m, -1) if alive is None else alive * weights
            if alive is not None:  # read once per sample (record_sample), not a sync per step
                self._masked_shares.append(1.0 - alive.mean())
            closed_form = critic.closed_form_input_grads(states, actions)
            if closed_form is not None:
                grad_states, grad_actions = closed_form
                outputs, grad_outputs = [actions], [grad_actions * weights.unsqueeze(-1)]
                if states.requires_grad:  # later states depend on earlier controls
                    outputs.append(states)
                    grad_outputs.append(grad_states * weights.unsqueeze(-1))
                (grad_q,) = th.autograd.grad(outputs, leaf, grad_outputs, create_graph=u.requires_grad)
            else:
                q = critic.min_q_at(states, actions)  # (B, m, H)
                (grad_q,) = th.autograd.grad((q * weights).sum(), leaf, create_graph=u.requires_grad)
        # Host wall time (on CUDA without a synchronize: mostly kernel launches).
        self.stats["rollout_ms"].append(1e3 * (rolled_out - start))
        self.stats["score_ms"].append(1e3 * (time.perf_counter() - start))
        return grad_q

    def stable_log_std(self, log_std: th.Tensor) -> th.Tensor:
        """The prior's log-std with a variance floor that keeps the SVGD step stable.

        The prior term ``-alpha w (u - mu) / sigma^2`` of the score contracts each coordinate by
        ``kappa = eps alpha w / sigma^2`` per step: beyond 1 the explicit step overshoots the mean,
        beyond 2 it diverges, and long before that the closed-form log-likelihood leaves Theorem 3.1's
        domain (``eps ||grad h|| << 1``). Without a floor the prior network can shrink ``sigma`` until
        the flow diverges (seen on Pendulum-v1: NaN log-likelihood after 3-6k steps on every seed).
        The floor holds ``kappa <= 0.25`` as S²AC's bandwidth floor does, and is *added* to the
        variance, ``sigma^2 = exp(2 log_std) + eps alpha w / 0.25``, rather than clamped: a clamp gives
        the prior's std head no gradient while the floor lies above it, which at the start of training
        (``alpha = 1``, floor ``0.63`` against our Pendulum entry's ``init_std = 0.5``) is every
        state. The floored Gaussian is the prior everywhere: sampling, ``log q0``, the score and the bounds.
        """
        if self.prior_weight == 0.0:
            return log_std
        min_var = self.svgd_step_size * float(self.alpha) * self.prior_weight / 0.25
        return 0.5 * th.logaddexp(2.0 * log_std, th.full_like(log_std, math.log(max(min_var, 1e-12))))

    def prior(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """The per-step Gaussian prior ``(mu_h, sigma_h)`` (Eq. 9), ``(B, H * A)`` each, floored."""
        mean, log_std = self.initial_distribution(obs)
        return mean, self.stable_log_std(log_std)

    def particle_bounds(self, mean: th.Tensor, std: th.Tensor) -> BoxAugmentedLagrangian | None:
        """The augmented-Lagrangian bounds ``mu +- bound_std * sigma`` (Eq. 12-15), detached from the
        prior network: the constraint shapes the flow, it is not a training signal for ``mu, sigma``."""
        if not self.constraint or self.bound_std is None:
            return None
        width = self.bound_std * std.detach().unsqueeze(1)
        center = mean.detach().unsqueeze(1)
        return BoxAugmentedLagrangian(
            center - width, center + width, self.constraint_penalty, self.multiplier_step
        )

    def record_sample(self, result: SVGDResult, bounds: BoxAugmentedLagrangian | None) -> None:
        if self._masked_shares and result.log_prob is not None:
            self.stats["terminal_masked"].append(float(th.stack(self._masked_shares).mean()))
        self._masked_shares.clear()
        u = result.particles
        if bounds is not None:
            self.stats["outside"].append(bounds.outside_share(u))
            if bounds.multiplier is not None:
                self.stats["multiplier_abs"].append(float(bounds.multiplier.abs().mean()))
        if result.log_prob is not None and self.horizon > 1:
            with th.no_grad():
                sequence_log_prob = result.log_prob.sum(-1) - tanh_log_det(u)
                self.stats["sequence_entropy"].append(-float(sequence_log_prob.mean()))

    @property
    def acting_steps(self) -> int | None:
        return self.act_svgd_steps

    @property
    def acting_needs_autograd(self) -> bool:
        # The score's vector-Jacobian product through the model rollout runs on autograd.
        return self.horizon > 1


MlpPolicy = QSTACPolicy
