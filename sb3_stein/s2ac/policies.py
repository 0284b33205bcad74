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

from sb3_stein.common.critics import ParticleCritic
from sb3_stein.common.distributions import (
    PAPER_INIT_STD,
    diag_normal_log_prob,
    tanh_log_det,
    truncated_standard_normal,
)
from sb3_stein.common.svgd import Bandwidth, svgd

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
    :param bandwidth_floored: share of states whose kernel variance sat at the validity floor.
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
    :param kernel_bandwidth: ``"paper"``, ``"median"`` or a fixed kernel variance.
    :param learn_init: S²AC(phi, theta) (True) or S²AC(phi) (False).
    :param init_std: std of the fixed initial Gaussian / initial std of the learned one.
    :param bound_std: ``t``: initial particles are drawn within ``mu +- t sigma``; ``None`` disables.
    :param eval_action_selection: particle chosen for ``deterministic=True``: ``"max_q"`` (the
        highest-Q particle of each state) or ``"softmax"`` (a particle drawn with probability
        ``softmax(Q / alpha)``).
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

    actor: InitialDistribution
    critic: ContinuousCritic
    critic_target: ContinuousCritic
    amortized_sampler: AmortizedSampler | None
    alpha: th.Tensor
    eval_noise: th.Tensor

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
        kernel_bandwidth: Bandwidth = "paper",
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
        self._build(lr_schedule)

    @property
    def particle_dim(self) -> int:
        """Dimension of one particle (the action dimension; Q-STAC: ``horizon x`` that)."""
        return get_action_dim(self.action_space)

    def _make_features_extractor_and_dim(self) -> tuple[BaseFeaturesExtractor, int]:
        extractor = self.make_features_extractor()
        return extractor, extractor.features_dim

    def _build(self, lr_schedule: Schedule) -> None:
        extractor, features_dim = self._make_features_extractor_and_dim()
        self.actor = InitialDistribution(
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
        actor_params = list(self.actor.parameters())
        # S²AC(phi) has nothing to learn in its fixed Gaussian (features extractors without
        # parameters, such as Flatten, included): no optimizer then.
        actor_optimizer = (
            self.optimizer_class(actor_params, lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]
            if actor_params
            else None
        )
        self.actor.optimizer = actor_optimizer  # type: ignore[assignment]
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
                features_extractor=self.actor.features_extractor, features_dim=features_dim, **critic_kwargs
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
    ) -> ParticleSample:
        """Draw ``m`` particles per state: ``u^0 ~ q0(.|s)``, then ``L`` SVGD steps on the current critic.

        The sampler targets the density of ``u`` whose image ``tanh(u)`` has density
        ``exp(Q(s, a) / alpha)``: its score is ``grad_u Q(s, tanh u) + alpha grad_u log|det J_tanh|``
        (in the ``h = alpha * phi`` scaling of the paper). Gradients flow from the particles to the
        initial distribution's parameters through every unrolled step (the actor loss, Eq. 9);
        the critic's weights are constants here.

        :param obs: observations ``(B, ...)``.
        :param with_log_prob: also compute ``log pi(a|s)`` per particle (Eq. 11 + tanh correction).
        :param n_particles: override ``m``.
        :param fixed_noise: start from the saved ``eval_noise`` instead of fresh noise (deterministic).
        :param critic: ``self.critic`` already bound to ``obs`` (see :meth:`critic_at`).
        """
        m = self.n_particles if n_particles is None else n_particles
        mean, log_std = self.actor(obs)  # (B, A) each
        std = log_std.exp()
        if fixed_noise and m == self.n_particles:
            noise = self.eval_noise.unsqueeze(0).expand(mean.shape[0], -1, -1)
        else:
            noise = truncated_standard_normal(
                (mean.shape[0], m, mean.shape[1]), self.bound_std, mean
            )  # (B, m, A)
        u0 = mean.unsqueeze(1) + std.unsqueeze(1) * noise
        log_q0 = diag_normal_log_prob(noise, log_std.unsqueeze(1), self.bound_std) if with_log_prob else None
        alpha = self.alpha
        critic = self.critic_at(obs) if critic is None else critic
        result = svgd(
            u0,
            lambda u: self.pre_tanh_score(critic, u, alpha),
            steps=self.svgd_steps,
            step_size=self.svgd_step_size,
            bandwidth=self.kernel_bandwidth,
            repulsion_weight=alpha,
            log_q0=log_q0,
            owner="S2AC",
        )
        u = result.particles
        log_prob = None if result.log_prob is None else result.log_prob - tanh_log_det(u)
        return ParticleSample(th.tanh(u), u, log_prob, result.bandwidth, std, mean, result.floored)

    def critic_at(self, obs: PyTorchObs, cache_weights: bool = False) -> ParticleCritic:
        """The critic bound to ``obs`` for repeated evaluation on particles (weights detached).

        :param cache_weights: reuse the stacked weights of the previous call while the critic is
            unchanged (``predict`` would otherwise copy them every time). The online critic changes
            only through its optimizer and ``load_state_dict``, which the cache sees (see
            :func:`~sb3_stein.common.critics.stacked_critic_layers`).
        """
        return ParticleCritic(self.critic, obs, cache_weights=cache_weights)

    @staticmethod
    def pre_tanh_score(critic: ParticleCritic, u: th.Tensor, alpha: th.Tensor) -> th.Tensor:
        """Score of the sampler's target in pre-tanh space, ``(B, m, A)`` for particles ``u`` ``(B, m, A)``.

        ``grad_u Q(s, tanh u) + alpha * grad_u log|det J_tanh(u)| = (1 - a^2) grad_a Q - 2 alpha a``
        with ``a = tanh(u)``: the density of ``u`` whose image is ``exp(Q / alpha)``, in the paper's
        ``h = alpha * phi`` scaling. Shared by the SVGD sampler and the amortized sampler's update.
        """
        actions = th.tanh(u)
        _, dq_da = critic.min_q_and_grad(actions)
        assert dq_da is not None
        return (1.0 - actions.pow(2)) * dq_da - 2.0 * alpha * actions

    def select(self, critic: ParticleCritic, actions: th.Tensor, deterministic: bool) -> th.Tensor:
        """One particle per state ``(B, A)`` out of ``actions`` ``(B, m, A)``.

        Training (``deterministic=False``): a uniformly random particle (Algorithm 1, line 5).
        Evaluation: ``eval_action_selection`` (highest Q, or a draw from ``softmax(Q / alpha)``).
        ``predict(deterministic=True)`` runs the sampler from the saved ``eval_noise``, so with
        ``"max_q"`` it is a deterministic function of the state; ``"softmax"`` stays a random draw.
        """
        batch, m, _ = actions.shape
        if not deterministic:
            index = th.randint(m, (batch,), device=actions.device)
        else:
            q, _ = critic.min_q_and_grad(actions, need_grad=False)  # (B, m)
            if self.eval_action_selection == "max_q":
                index = q.argmax(-1)
            else:
                index = th.multinomial(th.softmax(q / self.alpha.clamp_min(1e-8), dim=-1), 1).squeeze(-1)
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
        with th.inference_mode() if critic.layers is not None else contextlib.nullcontext():
            sample = self.sample(observation, with_log_prob=False, fixed_noise=deterministic, critic=critic)
            return self.select(critic, sample.actions, deterministic)

    def set_training_mode(self, mode: bool) -> None:
        self.actor.set_training_mode(mode)
        self.critic.set_training_mode(mode)
        if self.amortized_sampler is not None:
            self.amortized_sampler.set_training_mode(mode)
        self.training = mode


MlpPolicy = S2ACPolicy
