"""SAC-ZOP, SAC-FOP and SAC-FOA: SAC with an MPC prior (Hoffmann, lecture "An MPC prior for SAC";
shared/papers/001_fba01a676f0f8ac9.txt; reference code leap-c).

The policy is a Gaussian over the parameters ``phi`` of an MPC; the MPC turns them into the action
``a = u0*(s, phi)`` (the lecture's "Hierarchical Actor Architecture"). The three variants differ in
what the critic sees and where the exploration noise goes:

============ ================================ ================================== ===============
algorithm    critic                            actor gradient                     exploration
============ ================================ ================================== ===============
``SACZOP``   parameter critic ``Q(s, phi)``    through ``Q`` only (no MPC)        on ``phi``
``SACFOP``   action critic ``Q(s, a)``         through the MPC's sensitivities    on ``phi``
``SACFOA``   action critic ``Q(s, a)``         through the MPC's sensitivities    on ``a``
============ ================================ ================================== ===============

All three count "training violations" (lecture, "Unsafe Exploration using Action Noise"): a
training step violates when the action sent by the agent (before the environment clips it) lies
outside the OCP's control bounds, or the state reached lies outside the OCP's state bounds, or the
environment reports ``info["violation"]``. They
log ``rollout/violation_rate`` (fraction of training steps) and ``rollout/violation_episode_rate``
(fraction of finished training episodes with at least one violation), and the MPC's acting
statistics (``mpc/act_failures``, ``mpc/act_iterations`` (loop batches only: a mapped solve
reports no iteration count), ``mpc/act_ms``, ``mpc/retry_rate``, the share of solves whose warm
start failed and that were retried cold, and ``mpc/act_u0_at_bound``, the share of the first
controls at a control bound, both since the previous log dump). SAC-FOP and SAC-FOA also log their
updates' MPC statistics, among them the share of first controls at a bound and the size of
``d u0* / d phi`` (see :class:`SACFOP`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, ReplayBufferSamples, Schedule
from stable_baselines3.common.utils import polyak_update

from sb3_stein.common.dynamics import RefusesNormalizedObservations, refuse_normalized_observations
from sb3_stein.common.mpc import PARAM_INTERFACES, MPCSolution, parameter_box
from sb3_stein.common.mpc_acting import record_acting_stats
from sb3_stein.common.ocp import OptimalControlProblem, resolve_ocp
from sb3_stein.common.validation import (
    check_box_action_space,
    check_choice,
    check_ent_coef,
    check_observation_space,
    check_update_schedule,
)
from sb3_stein.sac_mpc.buffers import MPCReplayBuffer
from sb3_stein.sac_mpc.policies import ActionNoisePolicy, MPCParameterPolicy, check_action_space

__all__ = ["SACFOA", "SACFOP", "SACZOP"]

SelfSACMPC = TypeVar("SelfSACMPC", bound="_SACMPC")

_DOC_PARAMETERS = """
    :param policy: ``"MlpPolicy"`` or a policy class.
    :param env: the environment (instance, ``VecEnv`` or registered id). Its action Box must match
        the OCP's controls; its observations must be a flat Box (Dict and Tuple spaces are refused)
        in raw units: ``VecNormalize(norm_obs=True)`` is refused here, by ``set_env`` and by
        ``load(path, env=...)`` (the MPC reads its states from the observations).
    :param ocp: ``"auto"`` (default): the OCP registered for the environment's id
        (:func:`sb3_stein.register_ocp`; ``CartPoleSwingUp-v0``, ``PointMassWindMaze-v0`` and
        ``Chain-v0`` ship with one); or an :class:`~sb3_stein.common.ocp.OptimalControlProblem`;
        or its import path ``"package.module:Factory"``.
    :param param_interface: ``"global"`` (one parameter vector shared by all MPC stages, the
        default) or ``"stage"`` (one per stage): the lecture's "Controller Comparison".
    :param mpc_kwargs: options of :class:`~sb3_stein.common.mpc.MPCLayer`: ``solver`` (``"fatrop"``
        or ``"ipopt"``), ``tol``, ``max_iter``, ``active_tol``, ``compiled``, ``batch_mode``,
        ``n_threads``, ``retry_cold``, ``control_barrier`` (a log barrier on the control bounds that
        keeps SAC-FOP's gradient through saturated first controls nonzero; off by default,
        benchmarks/results/mpc_control_barrier/ for its effect on the cart-pole).
    :param learning_rate: Adam learning rate of actor, critic and entropy coefficient (leap-c: 1e-3).
    :param buffer_size: replay buffer size.
    :param learning_starts: steps before the first update. Until then the agent draws the MPC
        parameters uniformly from their Box (SB3's SAC draws random *actions*; random parameters
        keep the warm-up behind the MPC).
    :param batch_size: minibatch size (leap-c: 64), an integer >= 1.
    :param tau: soft target update coefficient.
    :param gamma: discount factor.
    :param train_freq: update every ``train_freq`` steps (leap-c: 4).
    :param gradient_steps: gradient steps per update.
    :param action_noise: not supported (``None``): exploration comes from the policy's Gaussian.
    :param replay_buffer_class: SB3 replay buffer class (``None``: SB3's choice).
    :param replay_buffer_kwargs: its keyword arguments.
    :param optimize_memory_usage: SB3's memory-efficient buffer variant.
    :param n_steps: n-step returns (SB3).
    :param ent_coef: entropy coefficient, ``"auto"`` (tuned; ``"auto_0.02"`` starts at leap-c's
        0.02) or a number > 0. (SB3's SAC takes 0 and negative numbers, which switch the
        maximum-entropy objective off or reverse it: refused here.)
    :param target_update_interval: target network update interval, in gradient steps, an integer
        >= 1.
    :param target_entropy: ``"auto"``: minus the dimension of the space the entropy is measured in
        (see the class docstring), SB3's rule.
    :param stats_window_size: episodes averaged in the rollout logs.
    :param tensorboard_log: tensorboard log folder.
    :param policy_kwargs: keyword arguments of the policy (``net_arch``, ``activation_fn``,
        ``log_std_init``, ``n_critics``, ...).
    :param verbose: SB3 verbosity.
    :param seed: random seed.
    :param device: torch device (the MPC itself runs on the CPU in float64).
    :param _init_setup_model: build the networks now (SB3).
"""


class _SACMPC(RefusesNormalizedObservations, SAC):
    """Shared machinery of the three MPC-prior SAC variants (not for direct use)."""

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MPCParameterPolicy}
    policy: MPCParameterPolicy
    #: What the critic takes: "parameters" (ZOP) or "actions" (FOP, FOA).
    _critic_input: ClassVar[str] = "parameters"

    def __init__(
        self,
        policy: str | type[MPCParameterPolicy],
        env: GymEnv | str,
        ocp: Any = "auto",
        param_interface: str = "global",
        mpc_kwargs: dict[str, Any] | None = None,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 64,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 4,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        ent_coef: str | float = "auto",
        target_update_interval: int = 1,
        target_entropy: str | float = "auto",
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        name = type(self).__name__
        check_box_action_space(env, name)
        check_observation_space(env, name)  # before SB3's "use MultiInputPolicy", which we lack
        if action_noise is not None:
            raise ValueError(f"{name} explores with its policy's Gaussian; action_noise must be None")
        check_choice("param_interface", param_interface, PARAM_INTERFACES)
        ent_coef = check_ent_coef(ent_coef)
        check_update_schedule(batch_size, target_update_interval)
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
            action_noise=None,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            ent_coef=ent_coef,
            target_update_interval=target_update_interval,
            target_entropy=target_entropy,
            use_sde=False,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        self.policy_kwargs = dict(self.policy_kwargs)  # never write into the caller's dict
        if self.env is not None:
            # Also on load(path, env=...), which comes through here with the new env (set_env below).
            refuse_normalized_observations(self.env, name)
        given = self.policy_kwargs.get("ocp", ocp)
        if not _init_setup_model and given == "auto":
            # SB3's load() builds with _init_setup_model=False, then restores policy_kwargs (with the
            # saved OCP) before _setup_model(): nothing to resolve here, even for unregistered OCPs.
            self._reset_violation_counters()
            return
        if self.env is not None:
            resolved = resolve_ocp(given, self.env, name)
            check_action_space(self.action_space, resolved)
            _check_observations(resolved, self.observation_space, name)
        elif isinstance(given, OptimalControlProblem):
            resolved = given
        else:
            raise ValueError(f"{name} needs an env (to find its OCP) or ocp=<OptimalControlProblem>")
        self.policy_kwargs.update(
            ocp=resolved,
            param_interface=self.policy_kwargs.get("param_interface", param_interface),
            mpc_kwargs=self.policy_kwargs.get("mpc_kwargs", mpc_kwargs or {}),
            critic_input=self._critic_input,
        )
        self._reset_violation_counters()
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ set-up

    def _entropy_dim(self) -> int:
        """Dimension of the space the entropy lives in (the parameters, lecture: "We measure the
        entropy of the parameter policy")."""
        ocp = self.policy_kwargs["ocp"]
        return int(parameter_box(ocp, self.policy_kwargs["param_interface"]).shape[0])

    def _buffer_space(self) -> Any:
        return self.action_space

    def _setup_model(self) -> None:
        auto_entropy = isinstance(self.target_entropy, str) and self.target_entropy == "auto"
        fresh_buffer = self.replay_buffer is None
        if self._critic_input == "actions" and self.replay_buffer_class is None and self.n_steps == 1:
            # Updates re-solve the MPC: keep the acting plans as their warm starts (buffers.py).
            ocp = self.policy_kwargs["ocp"]
            self.replay_buffer_class = MPCReplayBuffer
            self.replay_buffer_kwargs = {
                **self.replay_buffer_kwargs,
                "plan_size": (ocp.horizon + 1) * ocp.state_dim + ocp.horizon * ocp.control_dim,
            }
        super()._setup_model()
        if auto_entropy:
            self.target_entropy = float(-self._entropy_dim())
        space = self._buffer_space()
        if fresh_buffer and space is not self.action_space:
            assert self.replay_buffer_class is not None
            self.replay_buffer = self.replay_buffer_class(
                self.buffer_size,
                self.observation_space,
                space,
                device=self.device,
                n_envs=self.n_envs,
                optimize_memory_usage=self.optimize_memory_usage,
                **self.replay_buffer_kwargs,
            )

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "_pending_violation",
            "_pending_plans",
            "_update_logs",
        ]

    # ------------------------------------------------------------------ acting

    def _reset_violation_counters(self) -> None:
        self.violation_counts = {"steps": 0, "violating_steps": 0, "episodes": 0, "violating_episodes": 0}
        self._episode_violated: np.ndarray | None = None
        self._pending_violation: np.ndarray | None = None
        self._pending_plans: np.ndarray | None = None
        self._act_seconds = 0.0

    def _act(self, n_envs: int, warmup: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(env actions, buffer actions, chosen actions before clipping)`` for ``self._last_obs``."""
        policy = self.policy
        obs, _ = policy.obs_to_tensor(self._last_obs)  # type: ignore[arg-type]
        if warmup:
            # numpy's global generator, which SB3's set_random_seed seeds (as for its warm-up actions).
            size = (n_envs, policy.parameter_space.shape[0])
            scaled = th.as_tensor(np.random.uniform(-1.0, 1.0, size=size), dtype=th.float32)  # noqa: NPY002
            scaled = scaled.to(policy.device)
        else:
            with th.no_grad():
                scaled = policy.sample_params(obs, deterministic=False)
        actions, _ = policy.act_mpc(obs, policy.params_from_scaled(scaled), "train")
        actions = actions.astype(np.float32)
        self._pending_plans = policy.acting["train"].plans
        if self._critic_input == "parameters":
            buffer = scaled.cpu().numpy()
        else:
            buffer = np.clip(policy.scale_action(actions), -1.0, 1.0)
        return actions, buffer, actions

    def _setup_learn(self, total_timesteps: int, *args: Any, **kwargs: Any) -> Any:
        reset = kwargs.get("reset_num_timesteps", args[1] if len(args) > 1 else True)
        result = super()._setup_learn(total_timesteps, *args, **kwargs)
        if reset:  # a fresh start: new episodes, counts from zero (as SB3's num_timesteps)
            self._reset_violation_counters()
            self.policy.reset_warm_start(context="train")
        return result

    def _sample_action(
        self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        self.policy.set_training_mode(False)
        actions, buffer, chosen = self._act(n_envs, self.num_timesteps < learning_starts)
        self._act_seconds += time.perf_counter() - start
        # Actions outside the control bounds count now; states once the environment has stepped.
        self._pending_violation = self.policy.mpc.ocp.action_violation(chosen)
        return actions, buffer

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: Any,
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        self._count_violations(new_obs, dones, infos)
        if isinstance(replay_buffer, MPCReplayBuffer):
            replay_buffer.pending_plans = self._pending_plans
        finished = np.flatnonzero(dones)
        if len(finished):  # a new episode starts without the old one's plan
            self.policy.reset_warm_start(finished, "train")
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

    def _count_violations(self, new_obs: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]) -> None:
        ocp = self.policy.mpc.ocp
        n_envs = len(dones)
        next_obs = np.array(new_obs, dtype=np.float64, copy=True)
        for i, done in enumerate(dones):
            terminal = infos[i].get("terminal_observation")
            if done and terminal is not None:
                next_obs[i] = terminal
        violated = ocp.state_violation(ocp.state_from_obs_numpy(next_obs))
        # The environment's own verdict counts too (the lecture's environments report one): it may be
        # stricter than the OCP's round-off tolerance, e.g. a plan riding a bound that ends 1e-9 past it.
        violated |= np.array([bool(info.get("violation", False)) for info in infos])
        if self._pending_violation is not None:
            violated = violated | self._pending_violation
        if self._episode_violated is None or len(self._episode_violated) != n_envs:
            self._episode_violated = np.zeros(n_envs, dtype=bool)
        self._episode_violated |= violated
        counts = self.violation_counts
        counts["steps"] += n_envs
        counts["violating_steps"] += int(violated.sum())
        finished = np.asarray(dones, dtype=bool)
        counts["episodes"] += int(finished.sum())
        counts["violating_episodes"] += int((self._episode_violated & finished).sum())
        self._episode_violated[finished] = False

    def dump_logs(self) -> None:
        counts = self.violation_counts
        if counts["steps"]:
            self.logger.record("rollout/violation_rate", counts["violating_steps"] / counts["steps"])
        if counts["episodes"]:
            self.logger.record(
                "rollout/violation_episode_rate", counts["violating_episodes"] / counts["episodes"]
            )
        record_acting_stats(self.logger, self.policy.acting["train"], self._act_seconds, counts["steps"])
        super().dump_logs()

    # ------------------------------------------------------------------ training


def _check_observations(ocp: OptimalControlProblem, observation_space: Any, owner: str) -> None:
    """The OCP must read the environment's observations: ``state_from_obs`` gives ``(nx,)``."""
    from gymnasium import spaces

    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(f"{owner} needs a flat Box observation space, got {observation_space!r}")
    sample = th.zeros((2, observation_space.shape[0]))
    try:
        states = ocp.state_from_obs(sample)
    except Exception as error:
        raise ValueError(
            f"{owner}: {type(ocp).__name__}.state_from_obs fails on observations of shape "
            f"{tuple(observation_space.shape)}: {error}. This OCP cannot be built for this environment."
        ) from error
    if tuple(states.shape) != (2, ocp.state_dim):
        raise ValueError(
            f"{owner}: {type(ocp).__name__} maps observations of shape {tuple(observation_space.shape)} to "
            "MPC "
            f"states of shape {tuple(states.shape[1:])}, expected ({ocp.state_dim},): this OCP does not "
            "belong to this environment"
        )


class SACZOP(_SACMPC):
    __doc__ = (
        """SAC-ZOP: SAC with an MPC prior, parameter critic, zero-order in the MPC.

    The lecture's parameter MDP: "The MPC can be seen as part of the environment!" The policy is
    SB3's squashed Gaussian over the MPC parameters (normalised to ``[-1, 1]``); the replay buffer
    stores those parameters; the critic is ``Q(s, phi)``. Updates are SAC's, unchanged, on the
    parameter MDP (lecture, "SAC-ZOP: Objectives"):

    * actor: ``max E[Q(s, phi) - alpha log varphi(phi | s)]``;
    * critic: ``(R + gamma V(S') - Q(S, phi))^2`` with ``V(s) = E[Q(s, phi) - alpha log varphi]``;
    * entropy measured in parameter space; ``target_entropy="auto"`` is ``-n_phi``. (leap-c scales
      its log-probabilities by ``action_dim / param_dim`` and targets ``-action_dim``; that is the
      same fixed point with ``alpha`` rescaled.)

    The MPC runs only when acting, never in an update. When a solve fails while acting, the
    environment gets the fallback action (previous plan's next control) while the buffer stores the
    sampled ``phi``: for those (counted, ``mpc/act_failures``) transitions the parameter MDP's
    identity ``Q(s, phi) = Q(s, u0*(s, phi))`` does not hold.
"""
        + _DOC_PARAMETERS
    )

    def _buffer_space(self) -> Any:
        return self.policy.parameter_space


class PolicyActions(NamedTuple):
    """What the current policy does at a minibatch of states, through the MPC (SAC-FOP/FOA updates)."""

    #: ``(batch, nu)`` actions in SB3's ``[-1, 1]``, differentiable with respect to the actor.
    actions: th.Tensor
    #: ``(batch, 1)`` log-density of what the entropy term measures (parameters; FOA: action noise).
    log_prob: th.Tensor
    #: ``(batch,)`` bool: the MPC solve converged.
    success: th.Tensor
    #: The MPC's numpy solution (first controls, iterations, the diagnostics' sensitivities).
    solution: MPCSolution


@dataclass
class _UpdateLogs:
    """What one ``train()`` call records, collected per gradient step and logged once at the end."""

    ent_coefs: list[float] = field(default_factory=list)
    ent_coef_losses: list[float] = field(default_factory=list)
    critic_losses: list[float] = field(default_factory=list)
    actor_losses: list[float] = field(default_factory=list)
    #: Per gradient step: share of the actor's first-control entries at a bound (successful solves).
    u0_at_bound: list[float] = field(default_factory=list)
    #: Mean ``||d a / d phi||`` of the last gradient step's actor batch (successful solves).
    du0_dphi_norm: list[float] = field(default_factory=list)
    mpc_seconds: float = 0.0
    mpc_solves: int = 0
    mpc_failures: int = 0
    mpc_iterations: int = 0
    #: Solves whose iteration count is known (a mapped solve reports none).
    mpc_iteration_solves: int = 0
    mpc_retries: int = 0
    #: Solves that ``MPCLayer(solver="riccati")`` handed to fatrop (its solution failed the KKT check).
    mpc_fallbacks: int = 0


class SACFOP(_SACMPC):
    __doc__ = (
        """SAC-FOP: SAC with an MPC prior, action critic, first-order through the MPC.

    The policy is the same Gaussian over MPC parameters as SAC-ZOP's; the replay buffer stores the
    actions the MPC produced, the critic is ``Q(s, a)``. Lecture, "SAC-FOP: Objectives":

    * actor: ``min E[alpha log varphi(phi | s) - Q(s, u0*(s, phi))]``, the gradient flowing
      through the MPC's sensitivities ``d u0* / d phi`` (:class:`~sb3_stein.common.mpc.MPCLayer`);
    * critic: ``(R + gamma V(S') - Q(S, A))^2`` with
      ``V(s) = E[Q(s, u0*(s, phi)) - alpha log varphi(phi | s)]``: the next actions are recomputed
      through the MPC for the batch;
    * entropy in parameter space, as for SAC-ZOP (``target_entropy="auto"`` = ``-n_phi``).

    Samples whose MPC solve failed are masked out of the losses (leap-c does the same): a failed
    next-state solve removes the sample from the critic loss, a failed actor solve from the actor
    loss. A batch in which every solve fails raises ``RuntimeError`` with the solver's statuses.

    Diagnostics (beyond SAC's keys and the MPC's failure rate, iterations, time and
    ``train/mpc_retry_rate``, the share of solves retried cold after a failed warm start, and with
    ``mpc_kwargs={"solver": "riccati"}`` ``train/mpc_fallback_rate``, the share of solves fatrop redid):
    ``train/mpc_u0_at_bound``, the share of the actor's first controls (successful solves) that sit
    at a control bound, where ``d u0* / d phi = 0`` and the actor gets no gradient through the MPC;
    ``train/mpc_du0_dphi_norm``, the mean Frobenius norm of ``d a / d phi`` over the successful
    solves of the last gradient step of every :attr:`du0_dphi_interval`-th ``train()`` call,
    both in SB3's ``[-1, 1]`` units (``nu`` extra reverse passes each time; at-bound samples count as
    0); and ``mpc/act_u0_at_bound``, the same
    share for the training rollouts' controls since the previous log dump (all three variants). On
    the cart-pole most first controls sit at the +-80 N bound (benchmarks/results/sac_mpc_diagnostics).
"""
        + _DOC_PARAMETERS
    )

    _critic_input = "actions"
    #: ``train/mpc_du0_dphi_norm`` is computed on every this-many-th ``train()`` call (the first one
    #: included, counted in ``_train_calls``). Each time costs ``nu`` reverse passes through the MPC,
    #: about a tenth of a cart-pole gradient step (issue 15): computed at every update, it slowed every
    #: gradient step for a number that is only logged. The logger keeps the last value recorded before a
    #: dump, so the logged norm is at most ``du0_dphi_interval - 1`` updates old.
    du0_dphi_interval: ClassVar[int] = 10
    #: ``train()`` calls so far (saved with the model; a model saved before it existed counts from 0).
    _train_calls: int = 0

    # ------------------------------------------------------------------ the update

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        """SB3's ``SAC.train`` with the MPC in it: per gradient step, sample, actor actions, entropy
        coefficient, soft targets, critic loss and step, actor loss and step, target update; then
        one block of ``logger.record``.

        Why not SB3's ``SAC.train`` itself: it has no hook point. It takes the actor's and the
        target's actions from ``self.actor.action_log_prob`` and averages both losses over the
        whole batch (``F.mse_loss``, ``.mean()``); SAC-FOP needs both actions through the MPC and
        the failed solves masked out of both losses. So this method is ``SAC.train``'s gradient
        step in ``SAC.train``'s order (same computations, same random draws), split into the steps
        it is made of, and the places where SAC-FOP differs are small methods:
        :meth:`_actor_actions`, :meth:`_next_actions` (SAC-FOA overrides only ``_policy_actions``,
        under both), :meth:`_critic_mask` and :meth:`_actor_mask`. With every solve successful the
        masks are all ones and each step is SAC's. SB3's pieces are reused where they fit: the
        learning-rate schedule, ``polyak_update``, the networks and optimizers SAC set up.
        """
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers += [self.ent_coef_optimizer]
        self._update_learning_rate(optimizers)
        self._update_logs = logs = _UpdateLogs()

        for gradient_step in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma

            policy_actions = self._actor_actions(replay_data.observations)
            ent_coef = self._entropy_coefficient_step(policy_actions.log_prob, logs)
            self._critic_step(replay_data, discounts, ent_coef, logs)
            self._actor_step(replay_data.observations, policy_actions, ent_coef, logs)

            if gradient_step % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)
            sensitivities = (
                gradient_step == gradient_steps - 1 and self._train_calls % self.du0_dphi_interval == 0
            )
            self._collect_diagnostics(policy_actions, logs, sensitivities)

        self._train_calls += 1
        self._n_updates += gradient_steps
        self._record_update(logs, gradient_steps)

    # hooks: what SAC-FOP does differently from SAC

    def _actor_actions(self, obs: th.Tensor) -> PolicyActions:
        """The current policy's actions at ``s`` for the actor loss (SAC: ``actor.action_log_prob``),
        through the MPC, warm-started from the plans the agent acted with."""
        return self._policy_actions(obs, "actor")

    def _next_actions(self, next_obs: th.Tensor, dones: th.Tensor) -> PolicyActions:
        """The current policy's actions at ``s'`` for the soft target, through the MPC, warm-started
        from the acted plans shifted by one stage. A failed solve at a terminal ``s'`` does not count
        (its value is not used)."""
        return self._policy_actions(next_obs, "target", terminal=dones.bool().reshape(-1))

    def _critic_mask(self, next_actions: PolicyActions, dones: th.Tensor) -> th.Tensor:
        """``(batch, 1)``: the samples in the critic loss: those whose next-state solve succeeded. A
        terminal ``s'`` needs no action (its value is not used), and it is often infeasible for the
        OCP (e.g. outside the maze): such samples stay in."""
        return (next_actions.success.reshape(-1, 1) | dones.bool()).float()

    def _actor_mask(self, actions: PolicyActions) -> th.Tensor:
        """``(batch, 1)``: the samples in the actor loss: those whose solve at ``s`` succeeded."""
        return actions.success.float().reshape(-1, 1)

    # the steps of one gradient step, in SAC.train's order

    def _entropy_coefficient_step(self, log_prob: th.Tensor, logs: _UpdateLogs) -> th.Tensor:
        """SAC's entropy-coefficient step (on every sample: the entropy does not depend on the MPC);
        returns the coefficient for this gradient step's losses (detached)."""
        if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
            ent_coef = th.exp(self.log_ent_coef.detach())
            assert isinstance(self.target_entropy, float)
            ent_coef_loss = -(self.log_ent_coef * (log_prob + self.target_entropy).detach()).mean()
            logs.ent_coef_losses.append(ent_coef_loss.item())
            self.ent_coef_optimizer.zero_grad()
            ent_coef_loss.backward()
            self.ent_coef_optimizer.step()
        else:
            ent_coef = self.ent_coef_tensor
        logs.ent_coefs.append(ent_coef.item())
        return ent_coef

    def _critic_step(
        self, replay_data: ReplayBufferSamples, discounts: Any, ent_coef: th.Tensor, logs: _UpdateLogs
    ) -> None:
        """Soft targets with the next actions through the MPC, then SAC's critic loss over the
        samples of :meth:`_critic_mask` and one optimizer step."""
        with th.no_grad():
            next_actions = self._next_actions(replay_data.next_observations, replay_data.dones)
            next_q = th.cat(self.critic_target(replay_data.next_observations, next_actions.actions), dim=1)
            next_q = th.min(next_q, dim=1, keepdim=True)[0] - ent_coef * next_actions.log_prob
            target_q = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q

        mask = self._critic_mask(next_actions, replay_data.dones)
        current_q = self.critic(replay_data.observations, replay_data.actions)
        critic_loss = 0.5 * sum(_masked_mse(q, target_q, mask) for q in current_q)
        assert isinstance(critic_loss, th.Tensor)
        logs.critic_losses.append(critic_loss.item())
        self.critic.optimizer.zero_grad()
        critic_loss.backward()
        self.critic.optimizer.step()

    def _actor_step(
        self, obs: th.Tensor, policy_actions: PolicyActions, ent_coef: th.Tensor, logs: _UpdateLogs
    ) -> None:
        """SAC's actor loss over the samples of :meth:`_actor_mask`; its gradient flows through the
        MPC's sensitivities into the parameter network."""
        mask = self._actor_mask(policy_actions)
        q_pi = th.cat(self.critic(obs, policy_actions.actions), dim=1)
        min_q_pi = th.min(q_pi, dim=1, keepdim=True)[0]
        actor_loss = ((ent_coef * policy_actions.log_prob - min_q_pi) * mask).sum() / mask.sum()
        logs.actor_losses.append(actor_loss.item())
        self.actor.optimizer.zero_grad()
        actor_loss.backward()
        self.actor.optimizer.step()

    # diagnostics

    def _collect_diagnostics(
        self, policy_actions: PolicyActions, logs: _UpdateLogs, sensitivities: bool
    ) -> None:
        """The actor batch's share of first controls at a bound (every gradient step) and, with
        ``sensitivities``, its mean ``||d a / d phi||`` (``nu`` reverse passes)."""
        solution = policy_actions.solution
        ok = solution.success
        if not ok.any():
            return
        logs.u0_at_bound.append(float(self.policy.mpc.controls_at_bound(solution.u0[ok]).mean()))
        if sensitivities:
            logs.du0_dphi_norm.append(float(self.policy.scaled_sensitivity_norms(solution)[ok].mean()))

    def _record_update(self, logs: _UpdateLogs, gradient_steps: int) -> None:
        """SAC's ``train/`` keys, then the MPC's."""
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/ent_coef", np.mean(logs.ent_coefs))
        self.logger.record("train/actor_loss", np.mean(logs.actor_losses))
        self.logger.record("train/critic_loss", np.mean(logs.critic_losses))
        if logs.ent_coef_losses:
            self.logger.record("train/ent_coef_loss", np.mean(logs.ent_coef_losses))
        if logs.mpc_solves:
            self.logger.record("train/mpc_failure_rate", logs.mpc_failures / logs.mpc_solves)
            if logs.mpc_iteration_solves:
                self.logger.record("train/mpc_iterations", logs.mpc_iterations / logs.mpc_iteration_solves)
            self.logger.record("train/mpc_retry_rate", logs.mpc_retries / logs.mpc_solves)
            if self.policy.mpc.solver_name == "riccati":
                self.logger.record("train/mpc_fallback_rate", logs.mpc_fallbacks / logs.mpc_solves)
            self.logger.record("train/mpc_ms", 1e3 * logs.mpc_seconds / gradient_steps)
            self.logger.record("train/mpc_sensitivity_failures", self.policy.mpc.sensitivity_failures)
        if logs.u0_at_bound:
            self.logger.record("train/mpc_u0_at_bound", np.mean(logs.u0_at_bound))
        if logs.du0_dphi_norm:
            self.logger.record("train/mpc_du0_dphi_norm", np.mean(logs.du0_dphi_norm))

    # ------------------------------------------------------------------ the MPC in an update

    def _warm_starts(self, obs: th.Tensor, shift: bool) -> np.ndarray:
        """Initial guesses for a minibatch from the stored acting plans
        (:meth:`~sb3_stein.common.mpc.MPCLayer.warm_start`; cold where the buffer holds none).

        :param shift: the plans belong to the previous state (the target's ``s'``): move them one stage.
        """
        plans = getattr(self.replay_buffer, "sampled_plans", None)
        if plans is not None and plans.shape[-1] == 0:
            plans = None
        with th.no_grad():
            states = self.policy.mpc_states(obs).double().cpu().numpy()
        return self.policy.mpc.warm_start(states, plans, shift=shift)

    def _mpc_actions(
        self,
        obs: th.Tensor,
        scaled_params: th.Tensor,
        what: str,
        initial_guess: np.ndarray | None = None,
        terminal: th.Tensor | None = None,
    ) -> tuple[th.Tensor, th.Tensor, MPCSolution]:
        """MPC actions in SB3's ``[-1, 1]`` (differentiable), the success mask and the solution for
        a batch; counted in the update's logs."""
        policy = self.policy
        start = time.perf_counter()
        actions, success, solution = policy.solve_mpc(
            obs, policy.params_from_scaled(scaled_params), initial_guess
        )
        logs = self._update_logs
        logs.mpc_seconds += time.perf_counter() - start
        logs.mpc_solves += len(success)
        logs.mpc_failures += int((~solution.success).sum())
        known = solution.iterations >= 0
        logs.mpc_iterations += int(solution.iterations[known].sum())
        logs.mpc_iteration_solves += int(known.sum())
        logs.mpc_retries += int(np.count_nonzero(solution.retried))
        logs.mpc_fallbacks += int(np.count_nonzero(solution.fallback))
        counted = np.ones(len(success), dtype=bool) if terminal is None else ~terminal.cpu().numpy()
        if counted.any() and not solution.success[counted].any():
            statuses = sorted(set(solution.status))
            raise RuntimeError(
                f"{type(self).__name__}: the MPC failed on every sample of a batch of {len(success)} "
                f"({what}); "
                f"solver statuses: {statuses}. Check the OCP (feasibility of its state bounds from the "
                "observed states) or loosen mpc_kwargs (tol, max_iter)."
            )
        return policy.actions_to_scaled(actions), success.to(self.device), solution

    def _policy_actions(self, obs: th.Tensor, what: str, terminal: th.Tensor | None = None) -> PolicyActions:
        """The current policy's actions (reparameterised) through the MPC.

        :param what: ``"actor"`` (at ``s``) or ``"target"`` (at ``s'``): picks the warm start, and
            names the batch in the error of an all-failed batch.
        :param terminal: ``(batch,)`` rows whose failure does not count (terminal next states).
        """
        scaled_params, log_prob = self.actor.action_log_prob(obs)
        guess = self._warm_starts(obs, what == "target")
        actions, success, solution = self._mpc_actions(obs, scaled_params, what, guess, terminal)
        return PolicyActions(actions, log_prob.reshape(-1, 1), success, solution)


def _masked_mse(prediction: th.Tensor, target: th.Tensor, mask: th.Tensor) -> th.Tensor:
    """``F.mse_loss`` over the rows where ``mask`` is 1."""
    return (((prediction - target) ** 2) * mask).sum() / mask.sum().clamp_min(1.0)


class SACFOA(SACFOP):
    __doc__ = (
        """SAC-FOA: the lecture's unsafe-exploration baseline (first-order, action noise).

    Deterministic MPC parameters ``phi_theta(s)`` and Gaussian noise on the MPC's action,
    ``A = u0*(s, phi_theta(s)) + xi_theta(s)`` (lecture, "Exploration via Action Noise"), in SB3's
    scaled action units. The noise can push the action outside the MPC's constraints: the
    environment clips it, the violation is counted. The action critic ``Q(s, a)`` sees the action
    that was applied (clipped); the actor gradient flows through the MPC into ``phi_theta`` and
    through the reparameterised noise into ``sigma_theta``. The entropy is the Gaussian noise's, in
    action space (``target_entropy="auto"`` = ``-action_dim``); the noise is not squashed, so its
    log-density has no tanh correction. Before ``learning_starts`` SAC-FOA acts with its initial
    policy (parameters from the untrained network plus the noise), not with random parameters.
"""
        + _DOC_PARAMETERS
    )

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": ActionNoisePolicy}
    policy: ActionNoisePolicy  # type: ignore[assignment]

    def _entropy_dim(self) -> int:
        return int(np.prod(self.action_space.shape))  # type: ignore[arg-type]

    def _act(self, n_envs: int, warmup: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        policy = self.policy
        obs, _ = policy.obs_to_tensor(self._last_obs)  # type: ignore[arg-type]
        scaled, env_actions, _ = policy.noisy_actions(obs, deterministic=False, context="train")
        self._pending_plans = policy.acting["train"].plans
        low, high = self.action_space.low, self.action_space.high  # type: ignore[attr-defined]
        chosen = low + 0.5 * (scaled + 1.0) * (high - low)
        return env_actions.astype(np.float32), np.clip(scaled, -1.0, 1.0), chosen

    def _policy_actions(self, obs: th.Tensor, what: str, terminal: th.Tensor | None = None) -> PolicyActions:
        """The MPC's action for the deterministic parameters plus the reparameterised noise."""
        scaled_params, log_std = self.actor(obs)
        guess = self._warm_starts(obs, what == "target")
        mean, success, solution = self._mpc_actions(obs, scaled_params, what, guess, terminal)
        std = log_std.exp()
        noisy = mean + std * th.randn_like(mean)
        # Diagonal Gaussian log-density of the noise (what the actor's entropy term measures).
        log_prob = (-0.5 * ((noisy - mean) / std) ** 2 - log_std - 0.5 * np.log(2 * np.pi)).sum(
            -1, keepdim=True
        )
        return PolicyActions(noisy.clamp(-1.0, 1.0), log_prob, success, solution)
