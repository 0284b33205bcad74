"""S²AC policy: an SVGD sampler of ``exp(Q / alpha)`` started from a learned Gaussian.

Shapes: ``B`` states, ``m`` particles, ``A`` action dimensions. Particles live in the pre-tanh
space ``u``; actions are ``a = tanh(u)`` in SB3's ``[-1, 1]`` units, the units the critic sees.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy, ContinuousCritic
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    FlattenExtractor,
    create_mlp,
    get_actor_critic_arch,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_stein.common.constraints import BoxAugmentedLagrangian
from sb3_stein.common.critics import ParticleCritic
from sb3_stein.common.distributions import (
    PAPER_INIT_STD,
    diag_normal_log_prob,
    tanh_log_det,
    truncated_standard_normal,
)
from sb3_stein.common.svgd import Bandwidth, SVGDDivergenceError, SVGDResult, svgd

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
EVAL_SELECTIONS = ("max_q", "softmax")


class _StateNetwork(BasePolicy):
    """An MLP on a features extractor's output: what the initial Gaussian and ``f_psi`` share.

    :param observation_space: observation space.
    :param action_space: Box action space.
    :param net_arch: hidden layer sizes.
    :param features_extractor: features extractor.
    :param features_dim: its output size.
    :param activation_fn: hidden activation.
    :param normalize_images: SB3 image normalisation flag.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: nn.Module,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
    ):
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
            squash_output=True,
        )
        self.net_arch = net_arch
        self.features_dim = features_dim
        self.activation_fn = activation_fn
        self.action_dim = get_action_dim(action_space)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                features_dim=self.features_dim,
                activation_fn=self.activation_fn,
                features_extractor=self.features_extractor,
            )
        )
        return data


class InitialDistribution(_StateNetwork):
    """The initial distribution ``q0(u | s) = N(mu_theta(s), sigma_theta(s)^2)`` of the sampler.

    With ``learn_init=True`` this is S²AC(phi, theta) (§3.1, "Parameterized initialization"):
    an MLP gives the mean and log standard deviation. With ``learn_init=False`` it is S²AC(phi):
    the fixed ``N(0, init_std^2 I)`` and no trainable parameter.

    :param observation_space: observation space.
    :param action_space: Box action space.
    :param net_arch: hidden layer sizes of the mean/log-std MLP.
    :param features_extractor: features extractor.
    :param features_dim: its output size.
    :param activation_fn: hidden activation.
    :param learn_init: learn the Gaussian (S²AC(phi, theta)) or keep it fixed (S²AC(phi)).
    :param init_std: standard deviation of the fixed Gaussian (``learn_init=False``), and the
        initial standard deviation of the learned one (its log-std bias starts at ``log(init_std)``).
    :param normalize_images: SB3 image normalisation flag.
    :param output_dim: dimension of the Gaussian (default: the action dimension; Q-STAC's prior
        covers ``horizon x action`` dimensions).
    """

    fixed_log_std: th.Tensor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: nn.Module,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        learn_init: bool = True,
        init_std: float = PAPER_INIT_STD,
        normalize_images: bool = True,
        output_dim: int | None = None,
    ):
        super().__init__(
            observation_space,
            action_space,
            net_arch,
            features_extractor,
            features_dim,
            activation_fn,
            normalize_images,
        )
        self.learn_init = learn_init
        self.init_std = init_std
        self.output_dim = self.action_dim if output_dim is None else output_dim
        action_dim = self.output_dim
        if learn_init:
            self.latent_pi = nn.Sequential(*create_mlp(features_dim, -1, net_arch, activation_fn))
            last = net_arch[-1] if net_arch else features_dim
            self.mu = nn.Linear(last, action_dim)
            self.log_std = nn.Linear(last, action_dim)
            with th.no_grad():
                self.log_std.bias.fill_(float(th.log(th.tensor(init_std))))
        else:
            self.register_buffer("fixed_log_std", th.full((action_dim,), float(th.log(th.tensor(init_std)))))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(dict(learn_init=self.learn_init, init_std=self.init_std, output_dim=self.output_dim))
        return data

    def forward(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:  # type: ignore[override]
        """Mean and log standard deviation ``(B, A)`` each, in pre-tanh units."""
        features = self.extract_features(obs, self.features_extractor)
        if not self.learn_init:
            log_std = self.fixed_log_std.expand(features.shape[0], -1)
            return th.zeros_like(log_std), log_std
        latent = self.latent_pi(features)
        return self.mu(latent), th.clamp(self.log_std(latent), LOG_STD_MIN, LOG_STD_MAX)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        mean, _ = self(observation)
        return th.tanh(mean)


class AmortizedSampler(_StateNetwork):
    """Test-time sampler ``f_psi(s, z)`` of Appendix K / Algorithm 2 (S²AC(phi, theta, psi)).

    Maps a state and noise ``z ~ N(0, I_A)`` to a pre-tanh action; trained by amortized SVGD
    towards ``exp(Q / alpha)`` (Eq. 24-25, see ``S2AC._train_amortized``). Parameters: those of
    :class:`_StateNetwork`.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        n_inputs = self.features_dim + self.action_dim  # features and noise z
        self.net = nn.Sequential(*create_mlp(n_inputs, self.action_dim, self.net_arch, self.activation_fn))

    def forward(self, obs: PyTorchObs, noise: th.Tensor) -> th.Tensor:  # type: ignore[override]
        """Pre-tanh samples ``(B, k, A)`` for noise ``(B, k, A)``."""
        features = self.extract_features(obs, self.features_extractor)
        features = features.unsqueeze(1).expand(-1, noise.shape[1], -1)
        return self.net(th.cat([features, noise], dim=-1))

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        batch = (
            next(iter(observation.values())).shape[0]
            if isinstance(observation, dict)
            else observation.shape[0]
        )
        noise = th.zeros(batch, 1, self.action_dim, device=self.device)
        if not deterministic:
            noise.normal_()
        return th.tanh(self(observation, noise)[:, 0])


@dataclass
class ParticleSample:
    """Particles drawn by :meth:`S2ACPolicy.sample`.

    :param actions: squashed particles ``(B, m, A)`` in ``[-1, 1]``.
    :param pre_tanh: the SVGD particles ``u^L`` ``(B, m, A)``.
    :param log_prob: ``log pi(a | s)`` of each particle ``(B, m)`` (Thm 3.3 + tanh correction),
        or ``None`` when not requested.
    :param bandwidth: kernel variance of the last SVGD step ``(B,)``.
    :param init_std: standard deviations of the initial Gaussian ``(B, A)``.
    :param init_mean: its mean ``(B, A)``.
    :param bandwidth_floored: share of the (SVGD step, state) pairs whose kernel variance sat at the
        validity floor (tracked while the log-likelihood is).
    """

    actions: th.Tensor
    pre_tanh: th.Tensor
    log_prob: th.Tensor | None
    bandwidth: th.Tensor
    init_std: th.Tensor
    init_mean: th.Tensor
    bandwidth_floored: float = 0.0


class S2ACPolicy(BasePolicy):
    """Policy of :class:`sb3_stein.S2AC`: initial Gaussian, twin critics, SVGD sampler.

    :param observation_space: observation space.
    :param action_space: Box action space.
    :param lr_schedule: learning-rate schedule for the optimizers.
    :param net_arch: hidden sizes, a list (shared) or ``dict(pi=[...], qf=[...])``; default
        ``[256, 256]`` (the paper's Tables 3-4).
    :param activation_fn: hidden activation. ReLU critics take a fast exact path for the SVGD
        scores (see :mod:`sb3_stein.common.critics`); others use autograd with ``create_graph``.
    :param n_particles: ``m``, particles per state (>= 2).
    :param svgd_steps: ``L``, SVGD steps (>= 0; 0 gives SAC's Gaussian actor with tanh).
    :param svgd_step_size: ``eps`` > 0.
    :param kernel_bandwidth: ``"median"`` (default), ``"paper"`` or a fixed kernel variance (see
        :class:`sb3_stein.S2AC`).
    :param learn_init: S²AC(phi, theta) (True) or S²AC(phi) (False).
    :param init_std: std of the fixed initial Gaussian / initial std of the learned one (default
        ``sqrt(0.5)``, Table 4's ``N(0, 0.5 I)`` read as a covariance).
    :param bound_std: ``t``: initial particles are drawn within ``mu +- t sigma``; ``None`` disables.
    :param eval_action_selection: particle chosen for ``deterministic=True``: ``"max_q"`` (the
        highest-Q particle of each state) or ``"softmax"`` (see :meth:`select`: a softmax draw made
        deterministic by saved Gumbel noise).
    :param amortized: also build the amortized sampler ``f_psi`` (Appendix K); ``predict`` uses it.
    :param amortized_net_arch: hidden sizes of ``f_psi`` (default: the actor's).
    :param features_extractor_class: SB3 features extractor class.
    :param features_extractor_kwargs: its keyword arguments.
    :param normalize_images: SB3 image normalisation flag.
    :param optimizer_class: optimizer class.
    :param optimizer_kwargs: optimizer keyword arguments (besides the learning rate).
    :param n_critics: number of critics (their minimum is used).
    :param share_features_extractor: share the features extractor between actor and critic.
    """

    initial_distribution: InitialDistribution
    critic: ContinuousCritic
    critic_target: ContinuousCritic
    amortized_sampler: AmortizedSampler | None
    alpha: th.Tensor
    eval_noise: th.Tensor
    eval_gumbel: th.Tensor

    #: Control steps per particle: S²AC plans one action; Q-STAC overrides it (``H``).
    horizon: int = 1
    #: Weight ``w`` of ``log q0`` in the sampler's target. S²AC targets ``exp(Q / alpha)`` alone (0).
    prior_weight: float = 0.0

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        n_particles: int = 10,
        svgd_steps: int = 3,
        svgd_step_size: float = 0.1,
        kernel_bandwidth: Bandwidth = "median",
        learn_init: bool = True,
        init_std: float = PAPER_INIT_STD,
        bound_std: float | None = 3.0,
        eval_action_selection: str = "max_q",
        amortized: bool = False,
        amortized_net_arch: list[int] | None = None,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
    ):
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            squash_output=True,
            normalize_images=normalize_images,
        )
        if net_arch is None:
            net_arch = [256, 256]
        actor_arch, critic_arch = get_actor_critic_arch(net_arch)
        self.net_arch = net_arch
        self.activation_fn = activation_fn
        self.n_particles = n_particles
        self.svgd_steps = svgd_steps
        self.svgd_step_size = svgd_step_size
        self.kernel_bandwidth = kernel_bandwidth
        self.learn_init = learn_init
        self.init_std = init_std
        self.bound_std = bound_std
        self.eval_action_selection = eval_action_selection
        self.amortized = amortized
        self.amortized_net_arch = amortized_net_arch if amortized_net_arch is not None else actor_arch
        self.n_critics = n_critics
        self.share_features_extractor = share_features_extractor
        self.actor_arch, self.critic_arch = actor_arch, critic_arch
        # The temperature alpha weighs the repulsive term of the sampler (paper Thm 3.3); the
        # algorithm keeps it in sync with its entropy coefficient. A buffer, so it is saved.
        self.register_buffer("alpha", th.ones(()))
        # Set by S2AC while it collects experience, so that predict() bypasses f_psi then.
        self.collecting_rollouts = False
        # Standardised initial noise used by predict(deterministic=True), drawn once and saved, so
        # that a deterministic action is a function of the state alone (SVGD from mu + sigma * z).
        self.register_buffer(
            "eval_noise", truncated_standard_normal((n_particles, self.particle_dim), bound_std, th.zeros(()))
        )
        # Gumbel noise for eval_action_selection="softmax", drawn once and saved for the same reason:
        # argmax(Q / alpha + G) is a draw from softmax(Q / alpha) over the draw of G.
        self.register_buffer("eval_gumbel", saved_gumbel_noise(n_particles, th.initial_seed()))
        self.register_load_state_dict_pre_hook(_upgrade_state_dict)
        self._build(lr_schedule)

    @property
    def actor(self) -> InitialDistribution:
        """SB3's name for what SAC's machinery trains and saves (``actor.optimizer``): here the
        initial distribution ``q0``, not the whole actor (which is the SVGD sampler)."""
        return self.initial_distribution

    @property
    def action_dim(self) -> int:
        """Dimension of one action."""
        return get_action_dim(self.action_space)

    @property
    def particle_dim(self) -> int:
        """Dimension of one particle: ``horizon x action_dim`` (S²AC: the action dimension)."""
        return self.horizon * self.action_dim

    def _make_features_extractor_and_dim(self) -> tuple[BaseFeaturesExtractor, int]:
        extractor = self.make_features_extractor()
        return extractor, extractor.features_dim

    def _build(self, lr_schedule: Schedule) -> None:
        extractor, features_dim = self._make_features_extractor_and_dim()
        self.initial_distribution = InitialDistribution(
            self.observation_space,
            self.action_space,  # type: ignore[arg-type]
            net_arch=self.actor_arch,
            features_extractor=extractor,
            features_dim=features_dim,
            activation_fn=self.activation_fn,
            learn_init=self.learn_init,
            init_std=self.init_std,
            normalize_images=self.normalize_images,
            output_dim=self.particle_dim,
        ).to(self.device)
        actor_params = list(self.initial_distribution.parameters())
        # S²AC(phi) has nothing to learn in its fixed Gaussian (features extractors without
        # parameters, such as Flatten, included): no optimizer then.
        actor_optimizer = (
            self.optimizer_class(actor_params, lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]
            if actor_params
            else None
        )
        self.initial_distribution.optimizer = actor_optimizer  # type: ignore[assignment]
        critic_kwargs: dict[str, Any] = dict(
            observation_space=self.observation_space,
            action_space=self.action_space,
            net_arch=self.critic_arch,
            activation_fn=self.activation_fn,
            normalize_images=self.normalize_images,
            n_critics=self.n_critics,
            share_features_extractor=self.share_features_extractor,
        )
        if self.share_features_extractor:
            self.critic = ContinuousCritic(
                features_extractor=self.initial_distribution.features_extractor,
                features_dim=features_dim,
                **critic_kwargs,
            ).to(self.device)
            critic_parameters = [
                p for n, p in self.critic.named_parameters() if "features_extractor" not in n
            ]
        else:
            ext, dim = self._make_features_extractor_and_dim()
            self.critic = ContinuousCritic(features_extractor=ext, features_dim=dim, **critic_kwargs).to(
                self.device
            )
            critic_parameters = list(self.critic.parameters())
        ext, dim = self._make_features_extractor_and_dim()
        self.critic_target = ContinuousCritic(features_extractor=ext, features_dim=dim, **critic_kwargs).to(
            self.device
        )
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic.optimizer = self.optimizer_class(
            critic_parameters,
            lr=lr_schedule(1),  # type: ignore[call-arg]
            **self.optimizer_kwargs,
        )
        self.critic_target.set_training_mode(False)
        self.amortized_sampler = None
        if self.amortized:
            ext, dim = self._make_features_extractor_and_dim()
            self.amortized_sampler = AmortizedSampler(
                self.observation_space,
                self.action_space,  # type: ignore[arg-type]
                net_arch=self.amortized_net_arch,
                features_extractor=ext,
                features_dim=dim,
                activation_fn=self.activation_fn,
                normalize_images=self.normalize_images,
            ).to(self.device)
            self.amortized_sampler.optimizer = self.optimizer_class(
                self.amortized_sampler.parameters(),
                lr=lr_schedule(1),  # type: ignore[call-arg]
                **self.optimizer_kwargs,
            )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                n_particles=self.n_particles,
                svgd_steps=self.svgd_steps,
                svgd_step_size=self.svgd_step_size,
                kernel_bandwidth=self.kernel_bandwidth,
                learn_init=self.learn_init,
                init_std=self.init_std,
                bound_std=self.bound_std,
                eval_action_selection=self.eval_action_selection,
                amortized=self.amortized,
                amortized_net_arch=self.amortized_net_arch,
                n_critics=self.n_critics,
                share_features_extractor=self.share_features_extractor,
                lr_schedule=self._dummy_schedule,
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
            )
        )
        return data

    def sample(
        self,
        obs: PyTorchObs,
        with_log_prob: bool = True,
        n_particles: int | None = None,
        fixed_noise: bool = False,
        critic: ParticleCritic | None = None,
        steps: int | None = None,
    ) -> ParticleSample:
        """Draw ``m`` particles per state: ``U^0 ~ q0(.|s)``, then ``L`` SVGD steps on the current critic.

        The one sampling path of every Stein actor here (S²AC Algorithm 1, Q-STAC Algorithm 1): a
        particle is ``horizon`` controls (S²AC: one action) in pre-tanh units; only
        :meth:`q_score` (the gradient of the Q part of the target) and the hooks :meth:`prior` and
        :meth:`particle_bounds` differ between the algorithms. The target is the density of ``U``
        whose image ``tanh(U)`` has density ``exp(Q / alpha)`` (S²AC) or the Q-STAC posterior (Eq.
        11); see :meth:`target_score`. Gradients flow from the particles to the initial
        distribution's parameters through every unrolled step (the actor loss, Eq. 9); the critic's
        weights are constants here.

        :param obs: observations ``(B, ...)``.
        :param with_log_prob: also compute ``log pi(a|s)`` per particle (Eq. 11 + tanh correction).
        :param n_particles: override ``m`` (fresh noise only: ``fixed_noise`` has ``n_particles``).
        :param fixed_noise: start from the saved ``eval_noise`` instead of fresh noise (deterministic).
        :param critic: ``self.critic`` already bound to ``obs`` (see :meth:`critic_at`).
        :param steps: ``L`` for this call (``None``: ``svgd_steps``).
        :return: a :class:`ParticleSample` whose ``actions`` are the (first) controls ``(B, m, A)`` and
            ``log_prob`` their log-density ``(B, m)``: for ``horizon > 1`` the first horizon step's
            block of the flow's log-likelihood (prior term plus that block's share of the Theorem 3.3
            trace) with the tanh correction. ``pre_tanh``, ``init_mean`` and ``init_std`` cover whole
            particles ``(.., horizon * A)``.
        """
        m = self.n_particles if n_particles is None else n_particles
        horizon, act_dim = self.horizon, self.action_dim
        critic = self.critic_at(obs) if critic is None else critic
        mean, log_std = self.prior(obs)  # (B, H * A) each
        batch = mean.shape[0]
        noise = self.initial_noise(batch, m, fixed_noise, like=mean)  # (B, m, H * A)
        std = log_std.exp()
        u0 = mean.unsqueeze(1) + std.unsqueeze(1) * noise
        log_q0 = None
        if with_log_prob:  # one block per horizon step: (B, m, H); S²AC's single block (B, m)
            log_q0 = diag_normal_log_prob(
                noise.view(batch, m, horizon, act_dim),
                log_std.view(batch, 1, horizon, act_dim),
                self.bound_std,
            )
            log_q0 = log_q0.squeeze(-1) if horizon == 1 else log_q0
        bounds = self.particle_bounds(mean, std)

        def score_fn(u: th.Tensor) -> th.Tensor:
            score = self.target_score(obs, u, critic, mean, log_std)
            return score if bounds is None else score + bounds.force(u)

        try:
            result = svgd(
                u0,
                score_fn,
                steps=self.svgd_steps if steps is None else steps,
                step_size=self.svgd_step_size,
                bandwidth=self.kernel_bandwidth,
                repulsion_weight=self.alpha,
                log_q0=log_q0,
                owner=self.owner,
            )
        except SVGDDivergenceError as error:
            check_finite_observations(obs, self.owner, error)
            raise
        u = result.particles
        first = u[..., :act_dim]
        log_prob = None
        if result.log_prob is not None:
            first_block = result.log_prob if horizon == 1 else result.log_prob[..., 0]
            log_prob = first_block - tanh_log_det(first)
        self.record_sample(result, bounds)
        return ParticleSample(th.tanh(first), u, log_prob, result.bandwidth, std, mean, result.floored)

    @property
    def owner(self) -> str:
        """The algorithm's name in error messages."""
        return "S2AC"

    def prior(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """Mean and log-std ``(B, horizon * A)`` of the initial distribution ``q0(.|s)``."""
        return self.initial_distribution(obs)

    def initial_noise(self, batch: int, m: int, fixed_noise: bool, like: th.Tensor) -> th.Tensor:
        """Standardised initial particles ``(B, m, particle_dim)``, truncated at ``bound_std``.

        :param fixed_noise: the saved ``eval_noise`` (``predict(deterministic=True)``), which has
            ``n_particles`` particles.
        :raises ValueError: for ``fixed_noise`` with another ``m``: there is no saved noise for it.
        """
        if fixed_noise:
            if m != self.n_particles:
                raise ValueError(
                    f"fixed_noise=True starts from the saved eval_noise of n_particles={self.n_particles} "
                    f"particles; it cannot give n_particles={m}. Use fixed_noise=False for another count."
                )
            return self.eval_noise.unsqueeze(0).expand(batch, -1, -1).to(like.dtype)
        return truncated_standard_normal((batch, m, self.particle_dim), self.bound_std, like)

    def particle_bounds(self, mean: th.Tensor, std: th.Tensor) -> BoxAugmentedLagrangian | None:
        """Constraint on the particles during the flow (Q-STAC's Eq. 12-15); S²AC has none: its
        ``mu +- t sigma`` bound applies to the initial particles only (the flow stays invertible)."""
        return None

    def q_score(self, obs: PyTorchObs, u: th.Tensor, critic: ParticleCritic) -> th.Tensor:
        """``grad_U`` of the Q part of the target, ``(B, m, particle_dim)`` for particles ``u``.

        S²AC: ``grad_u Q(s, tanh u) = (1 - a^2) grad_a Q`` with ``a = tanh(u)`` at the bound states.
        """
        actions = th.tanh(u)
        _, dq_da = critic.min_q_and_grad(actions)
        assert dq_da is not None
        return (1.0 - actions.pow(2)) * dq_da

    def target_score(
        self,
        obs: PyTorchObs,
        u: th.Tensor,
        critic: ParticleCritic,
        mean: th.Tensor | None = None,
        log_std: th.Tensor | None = None,
    ) -> th.Tensor:
        """Score of the sampler's target in pre-tanh units, in the paper's ``h = alpha * phi`` scaling.

        ``alpha * grad_U [Q-part / alpha + w log q0(U) + (1 - w) log|det J_tanh(U)|]`` with the Q part
        from :meth:`q_score` and ``w = prior_weight``. With ``w = 0`` (S²AC) it is the density of ``u``
        whose image under tanh is ``exp(Q / alpha)``. With a prior (Q-STAC, Eq. 11) the posterior is
        over action sequences with the prior the tanh image of the Gaussian: in pre-tanh units its
        log-determinant cancels the Jacobian of the change of variables, which remains only for the
        part ``1 - w`` without prior. Shared by the SVGD sampler and the amortized sampler's update.

        :param mean: the prior's mean ``(B, particle_dim)`` (needed when ``prior_weight > 0``).
        :param log_std: its log-std, same shape.
        """
        score = self.q_score(obs, u, critic)
        jacobian = -2.0 * th.tanh(u)  # grad log|det J_tanh(u)|
        if self.prior_weight == 0.0:
            return score + self.alpha * jacobian
        assert mean is not None and log_std is not None
        prior = -(u - mean.unsqueeze(1)) / log_std.exp().unsqueeze(1).pow(2)  # grad log N(u; mu, sigma^2)
        return score + self.alpha * (self.prior_weight * prior + (1.0 - self.prior_weight) * jacobian)

    def record_sample(self, result: SVGDResult, bounds: BoxAugmentedLagrangian | None) -> None:
        """Hook for per-sample diagnostics (Q-STAC's constraint and sequence statistics)."""

    def critic_at(self, obs: PyTorchObs, cache_weights: bool = False) -> ParticleCritic:
        """The critic bound to ``obs`` for repeated evaluation on particles (weights detached).

        :param cache_weights: reuse the stacked weights of the previous call while the critic is
            unchanged (``predict`` would otherwise copy them every time). The online critic changes
            only through its optimizer and ``load_state_dict``, which the cache sees (see
            :func:`~sb3_stein.common.critics.stacked_critic_layers`).
        """
        return ParticleCritic(self.critic, obs, cache_weights=cache_weights)

    def select(self, critic: ParticleCritic, actions: th.Tensor, deterministic: bool) -> th.Tensor:
        """One particle per state ``(B, A)`` out of ``actions`` ``(B, m, A)``.

        Training (``deterministic=False``): a uniformly random particle (Algorithm 1, line 5).
        Evaluation: ``eval_action_selection``, the highest-Q particle, or (``"softmax"``) the particle
        ``argmax_i Q_i / alpha + G_i`` with Gumbel noise ``G`` drawn once and saved (``eval_gumbel``):
        over the draw of ``G`` that is a sample of ``softmax(Q / alpha)``, and for the saved ``G`` a
        function of the state. ``predict(deterministic=True)`` runs the sampler from the saved
        ``eval_noise`` too, so deterministic means deterministic with either selection. One ``G``
        serves every state and time step: an evaluation's returns reflect one draw of ``G`` per model,
        not an average over softmax draws.
        """
        batch, m, _ = actions.shape
        if not deterministic:
            index = th.randint(m, (batch,), device=actions.device)
        else:
            q, _ = critic.min_q_and_grad(actions, need_grad=False)  # (B, m)
            if self.eval_action_selection == "max_q":
                index = q.argmax(-1)
            else:
                gumbel = self.eval_gumbel.to(q.dtype)[:m] if m <= self.n_particles else None
                if gumbel is None:  # more particles than saved noise: no fixed draw exists
                    raise ValueError(
                        f"eval_action_selection='softmax' has Gumbel noise for {self.n_particles} particles"
                    )
                index = (q / self.alpha.clamp_min(1e-8) + gumbel).argmax(-1)
        return actions.gather(1, index.view(batch, 1, 1).expand(batch, 1, actions.shape[-1])).squeeze(1)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        # f_psi is a test-time sampler (Appendix K: it "cannot be used during training"); rollouts
        # that fill the replay buffer always come from the SVGD sampler (Algorithm 2, line 4).
        if self.amortized_sampler is not None and not self.collecting_rollouts:
            return self.amortized_sampler._predict(observation, deterministic)
        critic = self.critic_at(observation, cache_weights=True)
        # inference_mode skips autograd's bookkeeping, a large part of the cost of the ~200 small
        # tensor operations of one action; critics off the ReLU fast path need autograd for grad_a Q.
        # (inference_mode(False) would switch grad mode on, hence nullcontext.)
        no_graph = critic.layers is not None and not self.acting_needs_autograd
        with th.inference_mode() if no_graph else contextlib.nullcontext():
            sample = self.sample(
                observation,
                with_log_prob=False,
                fixed_noise=deterministic,
                critic=critic,
                steps=self.acting_steps,
            )
            return self.select(critic, sample.actions, deterministic)

    @property
    def acting_steps(self) -> int | None:
        """SVGD steps when acting (``None``: ``svgd_steps``)."""
        return None

    @property
    def acting_needs_autograd(self) -> bool:
        """Whether acting needs autograd even on the closed-form critic path."""
        return False

    def set_training_mode(self, mode: bool) -> None:
        self.initial_distribution.set_training_mode(mode)
        self.critic.set_training_mode(mode)
        if self.amortized_sampler is not None:
            self.amortized_sampler.set_training_mode(mode)
        self.training = mode


def check_finite_observations(obs: PyTorchObs, owner: str, error: Exception) -> None:
    """Name the observation, not the step size, when the flow diverged because its input was not finite.

    Called on the error path only (no device sync on the hot path).

    :raises ValueError: if ``obs`` holds NaN or inf.
    """
    values = list(obs.values()) if isinstance(obs, dict) else [obs]
    if not all(bool(th.isfinite(v.float()).all()) for v in values):
        raise ValueError(
            f"{owner}: an observation is not finite (NaN or inf), so the sampler cannot run on it. "
            "Check the environment (or a wrapper) that produced it; the step size is not the cause."
        ) from error


def saved_gumbel_noise(n: int, seed: int) -> th.Tensor:
    """``n`` standard Gumbel draws from a generator of their own, so that drawing them leaves the global
    random stream (and with it every seeded run's network initialisation) untouched."""
    generator = th.Generator().manual_seed(seed % 2**63)
    uniform = th.rand(n, generator=generator).clamp(1e-12, 1 - 1e-7)
    return -th.log(-th.log(uniform))


def _upgrade_state_dict(
    module: nn.Module, state_dict: dict[str, th.Tensor], prefix: str, *args: Any, **kwargs: Any
) -> None:
    """Read policies saved before ``actor`` was renamed ``initial_distribution`` and before
    ``eval_gumbel`` existed (a fixed draw then, the same at every load)."""
    for key in [k for k in state_dict if k.startswith(prefix + "actor.")]:
        state_dict[prefix + "initial_distribution." + key[len(prefix + "actor.") :]] = state_dict.pop(key)
    if prefix + "eval_gumbel" not in state_dict and isinstance(module, S2ACPolicy):
        state_dict[prefix + "eval_gumbel"] = saved_gumbel_noise(module.n_particles, 0)


MlpPolicy = S2ACPolicy
