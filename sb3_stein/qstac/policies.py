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
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_stein.common.constraints import BoxAugmentedLagrangian
from sb3_stein.common.critics import (
    ParticleCritic,
    StackedLayers,
    min_over_critics,
    q_values_detached,
    relu_mlp_values_and_input_grads,
    stacked_critic_layers,
)
from sb3_stein.common.distributions import diag_normal_log_prob, tanh_log_det, truncated_standard_normal
from sb3_stein.common.svgd import svgd
from sb3_stein.s2ac.policies import ParticleSample, S2ACPolicy


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
        # Diagnostics of the sampler, accumulated between reads (see QSTAC.train).
        # Bounded: acting alone (e.g. a long rl_zoo3.enjoy) must not grow them without end.
        self.stats: dict[str, deque[float]] = {
            name: deque(maxlen=10_000)
            for name in ("rollout_ms", "score_ms", "multiplier_abs", "outside", "sequence_entropy")
        }

    @property
    def particle_dim(self) -> int:
        return self.horizon * super().particle_dim

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

    def to_env_units(self, actions: th.Tensor) -> th.Tensor:
        """SB3's ``[-1, 1]`` actions -> the environment's Box, as ``unscale_action``: the one place
        where a model rollout converts units."""
        return self.action_low + 0.5 * (actions + 1.0) * (self.action_high - self.action_low)

    def rollout(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """States ``x_0 .. x_{H-1}`` ``(B, m, H, obs_dim)`` visited by controls ``(B, m, H, A)``."""
        state = obs.unsqueeze(1).expand(-1, actions.shape[1], -1)  # x_0: (B, m, obs_dim)
        states = [state]
        env_actions = self.to_env_units(actions).unbind(2)
        for h in range(self.horizon - 1):  # sequential by nature: x_{h+1} = f(x_h, u_h)
            state = self.dynamics(state, env_actions[h])
            states.append(state)
        return th.stack(states, dim=2)

    def sequence_score(
        self,
        obs: th.Tensor,
        u: th.Tensor,
        mean: th.Tensor,
        log_std: th.Tensor,
        alpha: th.Tensor,
        layers: StackedLayers | None = None,
    ) -> th.Tensor:
        """Score of the log-posterior (Eq. 11) in pre-tanh units, scaled by ``alpha`` like S²AC's.

        ``alpha * grad_U [sum_h gamma_h^h Q(x_h, tanh u_h) / alpha + w log q0(U)
        + (1 - w) log|det J_tanh(U)|]`` for particles ``u`` ``(B, m, H * A)``. The posterior is over
        action sequences, with the prior the tanh image of the Gaussian: in pre-tanh units its log-
        determinant cancels the Jacobian of the change of variables, which remains only for the part
        ``1 - w`` without prior (``w = 0``, ``H = 1`` is S²AC's target exactly).

        The gradient of the Q sum flows through the model rollout, with a graph when ``u`` carries
        one (the actor loss). With ``layers`` (ReLU critics on flat observations) the critics'
        input gradients come in closed form (:func:`relu_mlp_values_and_input_grads`, exact: their
        Hessian vanishes) and autograd only runs the vector-Jacobian product through tanh and the
        dynamics model; otherwise autograd differentiates the critics too (``create_graph``).
        """
        batch, m, _ = u.shape
        act_dim = self.particle_dim // self.horizon
        start = time.perf_counter()
        with th.enable_grad():
            leaf = u if u.requires_grad else u.detach().requires_grad_(True)
            actions = th.tanh(leaf).view(batch, m, self.horizon, act_dim)
            states = self.rollout(obs, actions)  # (B, m, H, obs_dim)
            rolled_out = time.perf_counter()
            weights = self.horizon_discount ** th.arange(self.horizon, dtype=u.dtype, device=u.device)
            if layers is not None:
                with th.no_grad():
                    rows = th.cat([states, actions], dim=-1).view(batch * m * self.horizon, -1)
                    _, grad = min_over_critics(*relu_mlp_values_and_input_grads(layers, rows))
                    assert grad is not None
                    grad = grad.view(batch, m, self.horizon, -1) * weights.unsqueeze(-1)
                obs_dim = states.shape[-1]
                outputs, grad_outputs = [actions], [grad[..., obs_dim:]]
                if states.requires_grad:  # H > 1: later states depend on earlier controls
                    outputs.append(states)
                    grad_outputs.append(grad[..., :obs_dim])
                (grad_q,) = th.autograd.grad(outputs, leaf, grad_outputs, create_graph=u.requires_grad)
            else:
                q = q_values_detached(self.critic, states, actions).min(0).values  # (B, m, H)
                (grad_q,) = th.autograd.grad((q * weights).sum(), leaf, create_graph=u.requires_grad)
        # Host wall time (on CUDA without a synchronize: mostly kernel launches).
        self.stats["rollout_ms"].append(1e3 * (rolled_out - start))
        self.stats["score_ms"].append(1e3 * (time.perf_counter() - start))
        std = log_std.exp().unsqueeze(1)
        prior = -(u - mean.unsqueeze(1)) / std.pow(2)  # grad log N(u; mu, sigma^2)
        jacobian = -2.0 * th.tanh(u)  # grad log|det J_tanh(u)|
        return grad_q + alpha * (self.prior_weight * prior + (1.0 - self.prior_weight) * jacobian)

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
        (``alpha = 1``, floor ``0.63`` against ``init_std = 0.5``) is every state. The floored
        Gaussian is the prior everywhere: sampling, ``log q0``, the score and the bounds.
        """
        if self.prior_weight == 0.0:
            return log_std
        min_var = self.svgd_step_size * float(self.alpha) * self.prior_weight / 0.25
        return 0.5 * th.logaddexp(2.0 * log_std, th.full_like(log_std, math.log(max(min_var, 1e-12))))

    def closed_form_layers(self) -> StackedLayers | None:
        """The critics' stacked weights when their input gradients have a closed form (ReLU MLPs on
        flat observations), else ``None``."""
        if not isinstance(self.critic.features_extractor, FlattenExtractor):
            return None
        return stacked_critic_layers(self.critic)

    def sample(
        self,
        obs: PyTorchObs,
        with_log_prob: bool = True,
        n_particles: int | None = None,
        fixed_noise: bool = False,
        critic: ParticleCritic | None = None,
        steps: int | None = None,
    ) -> ParticleSample:
        """``m`` control sequences per state from the prior, ``L`` constrained SVGD steps (Algorithm 1).

        :param steps: ``L`` for this call (``None``: ``svgd_steps``).
        :param critic: ``self.critic`` bound to ``obs``; only its stacked weights are used (the critic
            is evaluated at the rolled-out states).
        :return: a :class:`ParticleSample` whose ``actions`` are the *first* controls ``(B, m, A)`` and
            ``log_prob`` their log-density ``(B, m)``: the first horizon step's block of the flow's
            log-likelihood (prior term plus that block's share of the Theorem 3.3 trace) with the tanh
            correction. ``pre_tanh``, ``init_mean`` and ``init_std`` cover whole sequences ``(.., H * A)``.
        """
        assert isinstance(obs, th.Tensor)
        m = self.n_particles if n_particles is None else n_particles
        act_dim = self.particle_dim // self.horizon
        mean, log_std = self.actor(obs)  # (B, H * A) each
        log_std = self.stable_log_std(log_std)
        batch = mean.shape[0]
        if fixed_noise and m == self.n_particles:
            noise = self.eval_noise.unsqueeze(0).expand(batch, -1, -1)
        else:
            noise = truncated_standard_normal((batch, m, self.particle_dim), self.bound_std, mean)
        std = log_std.exp()
        u0 = mean.unsqueeze(1) + std.unsqueeze(1) * noise  # (B, m, H * A)
        log_q0 = None
        if with_log_prob:  # per horizon step: (B, m, H)
            log_q0 = diag_normal_log_prob(
                noise.view(batch, m, self.horizon, act_dim),
                log_std.view(batch, 1, self.horizon, act_dim),
                self.bound_std,
            )
        bounds = None
        if self.constraint and self.bound_std is not None:
            width = self.bound_std * std.detach().unsqueeze(1)
            center = mean.detach().unsqueeze(1)
            bounds = BoxAugmentedLagrangian(
                center - width, center + width, self.constraint_penalty, self.multiplier_step
            )
        alpha = self.alpha

        # One copy of the weights for all L steps (a bound critic brings its own, cached when acting).
        layers = self.closed_form_layers()
        if layers is not None and critic is not None and critic.layers is not None:
            layers = critic.layers

        def score_fn(u: th.Tensor) -> th.Tensor:
            score = self.sequence_score(obs, u, mean, log_std, alpha, layers)
            return score if bounds is None else score + bounds.force(u)

        result = svgd(
            u0,
            score_fn,
            steps=self.svgd_steps if steps is None else steps,
            step_size=self.svgd_step_size,
            bandwidth=self.kernel_bandwidth,
            repulsion_weight=alpha,
            log_q0=log_q0,
            owner="QSTAC",
        )
        u = result.particles
        first = u[..., :act_dim]
        if bounds is not None:
            self.stats["outside"].append(bounds.outside_share(u))
            if bounds.multiplier is not None:
                self.stats["multiplier_abs"].append(float(bounds.multiplier.abs().mean()))
        log_prob = None
        if result.log_prob is not None:
            log_prob = result.log_prob[..., 0] - tanh_log_det(first)
            with th.no_grad():
                sequence_log_prob = result.log_prob.sum(-1) - tanh_log_det(u)
                self.stats["sequence_entropy"].append(-float(sequence_log_prob.mean()))
        return ParticleSample(th.tanh(first), u, log_prob, result.bandwidth, std, mean, result.floored)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        # The score needs autograd through the model rollout: no inference_mode here.
        critic = self.critic_at(observation, cache_weights=True)
        sample = self.sample(
            observation,
            with_log_prob=False,
            fixed_noise=deterministic,
            critic=critic,
            steps=self.act_svgd_steps,
        )
        return self.select(critic, sample.actions, deterministic)


MlpPolicy = QSTACPolicy
