"""S²AC: Stein Soft Actor-Critic (Messaoud et al., ICLR 2024; shared/papers/002_7b60a202b120fb81.txt)."""

from __future__ import annotations

import time
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, ReplayBufferSamples, Schedule
from stable_baselines3.common.utils import polyak_update
from stable_baselines3.sac import SAC
from torch.nn import functional as F

from sb3_stein.common.critics import ParticleCritic
from sb3_stein.common.distributions import PAPER_INIT_STD
from sb3_stein.common.svgd import (
    Bandwidth,
    check_bandwidth,
    kernel_bandwidth,
    pairwise_sq_dists,
    rbf_kernel,
    stein_direction,
)
from sb3_stein.common.validation import (
    check_box_action_space,
    check_choice,
    check_ent_coef,
    check_int,
    check_observation_space,
    check_positive,
    check_update_schedule,
)
from sb3_stein.s2ac.policies import EVAL_SELECTIONS, MlpPolicy, ParticleSample, S2ACPolicy

SelfS2AC = TypeVar("SelfS2AC", bound="S2AC")


class S2AC(SAC):
    """Stein Soft Actor-Critic (S²AC).

    The actor is an SVGD sampler of the energy-based policy ``exp(Q(s, .) / alpha)``: ``m``
    particles drawn from a (learned) Gaussian ``q0(.|s)`` move ``L`` steps along the Stein
    direction (Eq. 1), and their log-likelihood follows in closed form (Theorem 3.1, 3.3, Eq. 11),
    which gives the policy's entropy for the soft critic targets and the actor loss.

    One gradient step (Algorithm 1), as implemented in :meth:`train`:

    1. critic targets (Eq. 8): ``y = r + gamma (1 - d) * mean_i [min_k Q_targ_k(s', a'_i) -
       alpha log pi(a'_i | s')]`` with particles ``a'_i`` of the sampler run on ``s'`` with the
       *current* critic (the policy is defined by the current Q, as in the reference code);
    2. critic loss: SAC's MSE to ``y``;
    3. actor loss (Eq. 9): ``mean_{s, i} [alpha log pi(a_i | s) - min_k Q_k(s, a_i)]`` backpropagated
       through the unrolled SVGD steps into the initial Gaussian (critic weights constant);
    4. entropy coefficient: fixed, or tuned as in SAC towards ``target_entropy`` with the Eq. 11
       estimate ``-mean_i log pi(a_i | s)``;
    5. amortized sampler ``f_psi`` (optional, Appendix K, Eq. 24-25);
    6. Polyak update of the target critics.

    Choices where the paper is silent or ambiguous (each tested):

    * Squashing: particles live in pre-tanh space and the critic sees ``tanh(u)``, the actions
      stored in the replay buffer. The sampler's target in ``u`` is the density whose image under
      tanh is ``exp(Q / alpha)``, so its score includes ``alpha * grad log|det J_tanh|``, and
      ``log pi(a)`` subtracts the tanh log-determinant. (The reference code evaluates Q on pre-tanh
      particles while its buffer holds squashed actions.)
    * Temperature: the repulsive term carries ``alpha`` (Theorem 3.3 / Eq. 24), i.e. the sampler
      targets ``exp(Q / alpha)`` as Eq. 3 asks; the reference code targets ``exp(Q)``.
    * Bounds (Eq. 9 constraint): initial particles are drawn from the Gaussian truncated to
      ``mu +- t sigma`` (inverse-CDF sampling, the same distribution as the paper's "sample more
      and keep those inside"), with the truncation in ``log q0``; the flow itself is not
      truncated (that would break invertibility). The share of final particles outside the band
      is logged as ``train/particles_outside_bound``.
    * Kernel bandwidth: the median heuristic by default, not the printed formula (see
      ``kernel_bandwidth``); computed per state from detached particles at every step, and floored at
      ``eps * alpha / 0.25`` so that the closed-form entropy stays in the domain of Theorem 3.1
      (``eps * ||grad h|| << 1``; the floor bounds the operator norm of the repulsive Jacobian, see
      ``max_expansion`` in :func:`sb3_stein.common.svgd.svgd`). Without the floor the actor can
      shrink its Gaussian until the spread-based bandwidth vanishes and the first-order trace
      reports unbounded entropy (observed on Pendulum-v1 before the floor existed). The share of
      floored (step, state) pairs is logged as ``train/bandwidth_floored``.
    * Notation: the papers' ``N(0, s I)`` are covariances (Table 2's ``q0 = N(0, 6 I)`` of Fig. 4),
      so ``init_std`` defaults to ``sqrt(0.5)`` (Table 4, MuJoCo) and the multi-goal entry uses
      ``sqrt(0.3)`` (Table 3).
    * ReLU critics: the SVGD scores ``grad_a Q`` are computed in closed form
      (:mod:`sb3_stein.common.critics`); since a ReLU network's action Hessian is zero, this gives
      the same actor gradient as autograd with ``create_graph=True`` at a fraction of the cost.

    :param policy: ``"MlpPolicy"`` or an :class:`S2ACPolicy` subclass.
    :param env: environment, VecEnv or registered id (Box action space).
    :param learning_rate: learning rate of all optimizers (float or schedule).
    :param buffer_size: replay buffer size.
    :param learning_starts: uniform-random steps before learning starts.
    :param batch_size: minibatch size (paper: 100).
    :param tau: Polyak coefficient of the target critics.
    :param gamma: discount factor.
    :param train_freq: update the model every ``train_freq`` steps (int or ``(n, "step"|"episode")``).
    :param gradient_steps: gradient steps per update (-1: as many as environment steps).
    :param action_noise: optional extra action noise (rarely useful: the sampler is stochastic).
    :param replay_buffer_class: replay buffer class.
    :param replay_buffer_kwargs: its keyword arguments.
    :param optimize_memory_usage: SB3's memory-efficient replay buffer.
    :param n_steps: n-step returns (SB3 >= 2.7 replay buffers).
    :param ent_coef: entropy coefficient ``alpha``: a float, or ``"auto"``/``"auto_<init>"`` to tune it.
    :param target_update_interval: target critic update period in gradient steps.
    :param target_entropy: entropy target when tuning ``alpha`` (``"auto"``: ``-dim(A)``).
    :param n_particles: ``m``, particles per state (>= 2; paper: 10).
    :param svgd_steps: ``L``, SVGD steps (>= 0; paper: 3 with a learned initial Gaussian).
    :param svgd_step_size: ``eps`` > 0 (paper: 0.1 MuJoCo, 0.01 multi-goal).
    :param kernel_bandwidth: ``"median"`` (Liu & Wang's heuristic, the reference code's; the
        default), ``"paper"`` (the formula printed in Tables 3-4) or a fixed kernel variance. The
        default follows issue 12's evidence (benchmarks/results/multimodality/NOTE.md): ``"paper"``'s
        kernel spans all particles, so they move almost rigidly and few reach a mode (SVGD core, 2-D
        two-mode target at alpha = 0.2, L = 3: 0.10 of the particles near a mode against 0.24 with
        ``"median"``, 0.87 for the target). On the one-step task ``MultiModalBandit-v0`` (1-D, two equal
        modes, 5 seeds, 800 steps, alpha = 0.2) ``"median"`` keeps both modes in 4 of 5 seeds with
        0.60-0.82 of the samples near a mode, ``"paper"`` in none (all on one mode), SB3 SAC in none;
        on a fixed bimodal critic (tests/test_s2ac_multimodal.py) 0.79 against 0.35 near a mode.
        Pendulum-v1 learns the same with either (3 seeds, 10k steps: 3k steps to -200 both; final
        -140.9 against -139.8). The cost per step is the same. ``"median"``'s kernel sits at the
        validity floor more often (logged as ``train/bandwidth_floored``), and on the SVGD core its
        closed-form entropy errs more at eps = 0.1 (0.18 against 0.10 nats; issue 11's
        benchmarks/results/bandwidth/NOTE.md), while in the one-step training runs ``"paper"``'s errs
        more (1-D, alpha = 0.2: 0.44-0.89 nats below a k-NN estimate, ``"median"`` 0.28-0.42 above).
        In 2-D at alpha = 0.2 neither bandwidth follows the target (see the NOTE).
    :param learn_init: learn the initial Gaussian (S²AC(phi, theta)) or keep ``N(0, init_std^2)`` (S²AC(phi)).
    :param init_std: std of the fixed initial Gaussian / initial std of the learned one (default
        ``sqrt(0.5)``: Table 4's ``N(0, 0.5 I)`` read as a covariance).
    :param bound_std: ``t``: initial particles within ``mu +- t sigma`` (paper: 3); ``None`` disables.
    :param eval_action_selection: particle executed by ``predict(deterministic=True)``: ``"max_q"``
        or ``"softmax"`` (``argmax Q / alpha + G`` with Gumbel noise ``G`` drawn once and saved: a
        softmax draw over ``G``, and deterministic, as ``deterministic=True`` promises).
    :param amortized: train the amortized test-time sampler ``f_psi(s, z)`` alongside
        (Algorithm 2); ``predict`` then uses it (one forward pass instead of SVGD).
    :param stats_window_size: window for rollout statistics.
    :param tensorboard_log: tensorboard log folder.
    :param policy_kwargs: keyword arguments of the policy (``net_arch``, ``activation_fn``, ...).
    :param verbose: verbosity.
    :param seed: random seed.
    :param device: torch device.
    :param _init_setup_model: build the networks at construction.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    policy: S2ACPolicy  # type: ignore[assignment]

    def __init__(
        self,
        policy: str | type[S2ACPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 100,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        ent_coef: str | float = "auto",
        target_update_interval: int = 1,
        target_entropy: str | float = "auto",
        n_particles: int = 10,
        svgd_steps: int = 3,
        svgd_step_size: float = 0.1,
        kernel_bandwidth: Bandwidth = "median",
        learn_init: bool = True,
        init_std: float = PAPER_INIT_STD,
        bound_std: float | None = 3.0,
        eval_action_selection: str = "max_q",
        amortized: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        check_box_action_space(env, type(self).__name__)
        check_observation_space(env, type(self).__name__)
        check_update_schedule(batch_size, target_update_interval)
        check_ent_coef(ent_coef)
        sampler_args: dict[str, Any] = dict(
            n_particles=n_particles,
            svgd_steps=svgd_steps,
            svgd_step_size=svgd_step_size,
            kernel_bandwidth=kernel_bandwidth,
            learn_init=learn_init,
            init_std=init_std,
            bound_std=bound_std,
            eval_action_selection=eval_action_selection,
            amortized=amortized,
        )
        # The same settings given through policy_kwargs win (as after a load) but are checked too.
        sampler_args.update({k: v for k, v in (policy_kwargs or {}).items() if k in sampler_args})
        sampler_kwargs = dict(
            n_particles=check_int("n_particles", sampler_args["n_particles"], 2),
            svgd_steps=check_int("svgd_steps", sampler_args["svgd_steps"], 0),
            svgd_step_size=check_positive("svgd_step_size", sampler_args["svgd_step_size"]),
            kernel_bandwidth=check_bandwidth(sampler_args["kernel_bandwidth"]),
            learn_init=bool(sampler_args["learn_init"]),
            init_std=check_positive("init_std", sampler_args["init_std"]),
            bound_std=check_positive("bound_std", sampler_args["bound_std"], allow_none=True),
            eval_action_selection=check_choice(
                "eval_action_selection", sampler_args["eval_action_selection"], EVAL_SELECTIONS
            ),
            amortized=bool(sampler_args["amortized"]),
        )
        policy_kwargs = {**(policy_kwargs or {}), **sampler_kwargs}
        super().__init__(
            policy,  # type: ignore[arg-type]
            env,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            action_noise=action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            ent_coef=ent_coef,
            target_update_interval=target_update_interval,
            target_entropy=target_entropy,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        # SAC's base class adds gSDE to the policy arguments; the SVGD sampler has no use for it.
        self.policy_kwargs.pop("use_sde", None)
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self.policy.alpha.fill_(float(self._current_ent_coef()))

    def _current_ent_coef(self) -> th.Tensor:
        if self.log_ent_coef is not None:
            return th.exp(self.log_ent_coef.detach())
        return self.ent_coef_tensor

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        amortized = self.policy.amortized_sampler
        optimizers = [self.critic.optimizer]
        for optimizer in (
            self.actor.optimizer,
            self.ent_coef_optimizer,
            amortized.optimizer if amortized else None,
        ):
            if optimizer is not None:
                optimizers.append(optimizer)
        self._update_learning_rate(optimizers)

        ent_coefs, ent_coef_losses, actor_losses, critic_losses, amortized_losses = [], [], [], [], []
        diagnostics: list[dict[str, float]] = []
        for gradient_step in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            ent_coef = self._current_ent_coef()
            ent_coefs.append(ent_coef.item())
            self.policy.alpha.copy_(ent_coef.squeeze())

            critic_losses.append(self._critic_step(replay_data, ent_coef))
            actor_loss, sample, sample_ms = self._actor_step(replay_data.observations, ent_coef)
            actor_losses.append(actor_loss)

            log_prob = sample.log_prob.detach().mean(1, keepdim=True)  # type: ignore[union-attr]  # (B, 1)
            if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
                ent_coef_losses.append(self._ent_coef_step(log_prob))

            if amortized is not None:
                amortized_losses.append(self._train_amortized(replay_data.observations, ent_coef))

            if gradient_step % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)

            diagnostics.append(self._sample_diagnostics(sample, sample_ms))

        self.policy.alpha.copy_(self._current_ent_coef().squeeze())
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/ent_coef", np.mean(ent_coefs))
        self.logger.record("train/actor_loss", np.mean(actor_losses))
        self.logger.record("train/critic_loss", np.mean(critic_losses))
        if ent_coef_losses:
            self.logger.record("train/ent_coef_loss", np.mean(ent_coef_losses))
        for key in diagnostics[0] if diagnostics else ():
            self.logger.record(f"train/{key}", np.mean([d[key] for d in diagnostics]))
        if amortized_losses:
            self.logger.record("train/amortized_loss", np.mean(amortized_losses))

    def _critic_step(self, replay_data: ReplayBufferSamples, ent_coef: th.Tensor) -> float:
        """Critic targets (Eq. 8) with the closed-form entropy of the sampler on ``s'`` (Eq. 11), SAC's
        MSE loss, one optimizer step. Returns the loss."""
        discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
        with th.no_grad():
            next_sample = self.policy.sample(replay_data.next_observations)
            assert next_sample.log_prob is not None
            next_q, _ = ParticleCritic(self.critic_target, replay_data.next_observations).values_and_grads(
                next_sample.actions, need_grad=False
            )
            soft_value = (next_q.min(0).values - ent_coef * next_sample.log_prob).mean(1, keepdim=True)
            target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * soft_value

        current_q_values = self.critic(replay_data.observations, replay_data.actions)
        critic_loss = 0.5 * sum(F.mse_loss(current_q, target_q_values) for current_q in current_q_values)
        assert isinstance(critic_loss, th.Tensor)
        self.critic.optimizer.zero_grad()
        critic_loss.backward()
        self.critic.optimizer.step()
        return critic_loss.item()

    def _actor_step(self, obs: th.Tensor, ent_coef: th.Tensor) -> tuple[float, ParticleSample, float]:
        """Actor loss (Eq. 9) through the unrolled SVGD steps, on the updated critic, and one step of
        the initial distribution's optimizer (none for S²AC(phi)). Returns the loss, the sample and
        the sampler's wall time in ms."""
        actor_optimizer = self.actor.optimizer
        start = time.perf_counter()
        with th.set_grad_enabled(actor_optimizer is not None):
            critic = ParticleCritic(self.critic, obs)
            sample = self.policy.sample(obs, critic=critic)
            assert sample.log_prob is not None
            q_pi, _ = critic.min_q_and_grad(sample.actions, need_grad=False)
            actor_loss = (ent_coef * sample.log_prob - q_pi).mean()
        sample_ms = 1e3 * (time.perf_counter() - start)
        if actor_optimizer is not None:
            actor_optimizer.zero_grad()
            actor_loss.backward()
            actor_optimizer.step()
        return actor_loss.item(), sample, sample_ms

    def _ent_coef_step(self, log_prob: th.Tensor) -> float:
        """SAC's temperature update towards ``target_entropy`` with the Eq. 11 estimate."""
        assert self.ent_coef_optimizer is not None and self.log_ent_coef is not None
        assert isinstance(self.target_entropy, float)
        ent_coef_loss = -(self.log_ent_coef * (log_prob + self.target_entropy)).mean()
        self.ent_coef_optimizer.zero_grad()
        ent_coef_loss.backward()
        self.ent_coef_optimizer.step()
        return ent_coef_loss.item()

    def _sample_diagnostics(self, sample: ParticleSample, sample_ms: float) -> dict[str, float]:
        """What a user needs to trust the sampler, per gradient step (logged as ``train/<key>``)."""
        with th.no_grad():
            assert sample.log_prob is not None
            stats = dict(
                entropy=-sample.log_prob.mean().item(),
                kernel_bandwidth=sample.bandwidth.mean().item(),
                bandwidth_floored=sample.bandwidth_floored,
                particle_spread=sample.actions.std(1).mean().item(),
                init_std=sample.init_std.mean().item(),
                actor_sampling_ms=sample_ms,
            )
            if self.policy.bound_std is not None:
                z = (sample.pre_tanh - sample.init_mean.unsqueeze(1)) / sample.init_std.unsqueeze(1)
                stats["particles_outside_bound"] = (
                    (z.abs() > self.policy.bound_std).any(-1).float().mean().item()
                )
        return stats

    def _train_amortized(self, obs: th.Tensor, ent_coef: th.Tensor) -> float:
        """One step of the amortized sampler ``f_psi`` (Appendix K, Eq. 24-25).

        Eq. 24 moves each output ``f_psi(s, z)`` along the Stein direction
        ``Delta f = 1/m sum_i k(a_i, f) score(a_i) + alpha grad_{a_i} k(a_i, f)`` of the target
        ``exp(Q / alpha)``; the surrogate ``-<stop_grad(Delta f), f_psi>`` has gradient
        ``-E[Delta f * d f_psi / d psi]`` (Eq. 25). The points ``a_i`` are ``m`` samples of
        ``f_psi`` itself for the same state (amortized SVGD of Wang & Liu 2016, as in SQL, which
        the paper follows): with the S²AC particles in their place the field would vanish once
        those particles fit the target, whatever ``f_psi`` outputs, and nothing would keep its
        samples apart. Everything happens in pre-tanh space, with the tanh-corrected score.
        """
        sampler = self.policy.amortized_sampler
        assert sampler is not None and sampler.optimizer is not None
        batch, m = obs.shape[0], self.policy.n_particles
        act_dim = self.action_space.shape[0]  # type: ignore[index]
        noise = th.randn(batch, m, act_dim, device=self.device)
        samples = sampler(obs, noise)  # (B, m, A): f_psi(s, z_k), pre-tanh
        with th.no_grad():
            points = samples.detach()
            score = self.policy.target_score(obs, points, self.policy.critic_at(obs))  # (B, m, A)
            sq_dists = pairwise_sq_dists(points)  # (B, m, m)
            sigma2 = kernel_bandwidth(sq_dists, self.policy.kernel_bandwidth)
            direction = stein_direction(points, score, rbf_kernel(sq_dists, sigma2), sigma2, ent_coef)
        loss = -(direction * samples).sum(-1).mean()
        sampler.optimizer.zero_grad()
        loss.backward()
        sampler.optimizer.step()
        return float(loss.item())

    def _sample_action(
        self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        # Experience always comes from the SVGD sampler, even when predict() uses f_psi.
        self.policy.collecting_rollouts = True
        try:
            return super()._sample_action(learning_starts, action_noise, n_envs)
        finally:
            self.policy.collecting_rollouts = False

    def learn(
        self: SelfS2AC,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "S2AC",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfS2AC:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        if self.actor.optimizer is None:
            state_dicts.remove("actor.optimizer")
        if self.policy.amortized_sampler is not None:
            state_dicts.append("policy.amortized_sampler.optimizer")
        return state_dicts, variables
