"""Q-STAC: Q-guided Stein variational model predictive actor-critic (Cai et al.;
shared/papers/000_814aadeb5f13c3d8.txt)."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from torch import nn

from sb3_stein.common.distributions import PAPER_INIT_STD
from sb3_stein.common.dynamics import (
    RefusesNormalizedObservations,
    check_dynamics_model,
    refuse_normalized_observations,
    resolve_dynamics_model,
)
from sb3_stein.common.svgd import Bandwidth
from sb3_stein.common.validation import check_int, check_positive, check_range
from sb3_stein.qstac.policies import MlpPolicy, QSTACPolicy
from sb3_stein.s2ac.s2ac import S2AC

SelfQSTAC = TypeVar("SelfQSTAC", bound="QSTAC")


class QSTAC(RefusesNormalizedObservations, S2AC):
    """Q-STAC: SAC whose actor is a Stein-variational MPC over ``H``-step control sequences.

    Acting (Algorithm 1, inner loop): the prior network gives ``(mu_h, sigma_h), h = 1..H``
    (Eq. 9); ``m`` control sequences are drawn from it (within ``mu +- t sigma``); ``L`` times they
    are rolled out through the known dynamics model and moved along the Stein direction of the
    log-posterior ``sum_h Q(x_h, u_h) + log q0(U)`` (Eq. 11) augmented with the bound constraints
    ``mu - t sigma <= U <= mu + t sigma`` (Eq. 12-15); a random particle (training) or the one
    ``eval_action_selection`` picks (``deterministic=True``; default the highest-Q one) gives its first
    control to the environment.

    Learning (Algorithm 1, update loop) is S²AC's :meth:`~sb3_stein.S2AC.train` with this sampler:
    critic targets with the closed-form entropy of the sampled first controls (following S²AC),
    SAC's critic loss, the actor loss (Eq. 3) through the unrolled SVGD steps into the prior
    network, the entropy coefficient as in SAC, Polyak targets. S²AC is the special case ``H = 1``
    with ``prior_weight=0`` and ``constraint=False`` (tested).

    Choices where the paper is silent (each documented here and tested):

    * Units and squashing: particles live in pre-tanh space, controls are ``tanh(u)`` in SB3 units
      (what the critic sees and the buffer stores), converted to the environment's Box once, before
      the model (:meth:`QSTACPolicy.to_env_units`). The bounds ``mu +- t sigma`` apply in pre-tanh
      space, where the prior Gaussian lives.
    * Temperature: the log-posterior is ``sum_h Q / alpha + log q0`` (Eq. 11 with S²AC's ``exp(Q /
      alpha)``); the prior enters with weight ``prior_weight`` (1 as in Eq. 11).
    * Discounting along the horizon: none by default (Eq. 11 sums the Q-values);
      ``horizon_discount`` weights step ``h`` by ``horizon_discount^h``.
    * Entropy in the targets and the actor loss: that of the *executed first control*, ``log pi(a_1|s)``
      taken as the first horizon step's block of the flow's log-likelihood (its prior term plus its
      diagonal block of the Theorem 3.3 trace) with the tanh correction. Exact for ``H = 1``; for
      ``H > 1`` the marginal of the first control has no closed form and this is its block-diagonal
      approximation. The whole sequence's entropy is logged too (``train/sequence_entropy``).
    * Next actions for the critic targets: the first controls of the sampler run on ``s'`` with the
      current critic, as S²AC does.
    * Terminal states: where the dynamics model has ``is_terminal(obs)`` (the shipped models of
      environments that terminate do), the Q-values of the steps from the first terminal state of a
      rollout on get weight 0: the episode ends there, no control is applied, so they are not part
      of the plan's value. The share of masked steps is logged as ``train/terminal_masked``.
    * Highest-Q particle: the one whose first control has the highest ``Q(s, a_1)`` (what executing
      it is worth), not the highest Eq. 11 sum.
    * Multipliers: one per particle coordinate, zero at the start of every SVGD run, updated at
      each evaluation of the constraint force (before the particles move) by the method of
      multipliers ``lambda <- lambda + eta g`` (the sign that pushes particles back; see
      :mod:`sb3_stein.common.constraints`); constants for the actor gradient. The bounds are
      detached from the prior network: the constraint shapes the flow, it is not a training signal
      for ``mu`` and ``sigma``. The penalty's step ``svgd_step_size * constraint_penalty`` must be
      at most 2: particles that leave the bounds together are moved back by up to that multiple of
      their violation per step (the kernel average weighs a lone particle's own force by ``1 / m``),
      which overshoots beyond 1 and diverges beyond 2.
    * Prior std floor: ``sigma^2`` of the prior gets ``svgd_step_size * alpha * prior_weight / 0.25``
      added, so that the prior's score cannot make the explicit SVGD step unstable
      (:meth:`QSTACPolicy.stable_log_std`).
    * Critic weights are constants in the sampler (as in S²AC); the gradient through the model
      rollout uses autograd, with ``create_graph`` for the actor loss.

    Parameters of :class:`~sb3_stein.S2AC` (``amortized`` excluded), plus:

    :param dynamics_model: ``"auto"`` (the model registered for the env id, see
        :func:`sb3_stein.register_dynamics_model`), a ``torch.nn.Module`` mapping ``(obs, action)`` in
        environment units to the next observation, or an import path ``"package.module:Factory"``.
    :param horizon: ``H >= 1`` control steps per particle.
    :param constraint: the augmented-Lagrangian bounds of Eq. 12-15 (``bound_std`` standard
        deviations around the prior mean).
    :param constraint_penalty: ``c > 0`` (Eq. 14), in Q units per unit of violation.
    :param multiplier_step: ``eta > 0`` of the multiplier update (``None``: ``c``).
    :param prior_weight: weight ``>= 0`` of ``log q0(U)`` in the log-posterior (Eq. 11: 1).
    :param horizon_discount: in ``(0, 1]``: weight of ``Q(x_h, u_h)`` is ``horizon_discount^h``.
    :param act_svgd_steps: ``L`` when acting (``predict``, which also collects the training data),
        ``>= 0``; ``None`` (default, the paper): ``svgd_steps``. Not in the paper: a cheaper acting
        variant. Each step rolls the particles out through the model and back-propagates through it,
        so acting cost grows linearly in ``L`` (measured at H = 5, m = 10: 5.95, 4.39, 2.71, 0.88 ms for
        L = 3, 2, 1, 0); ``0`` executes the prior's samples (highest-Q one when deterministic)
        with no planning. Gradient steps always use ``svgd_steps``. benchmarks/results/speed_qstac
        and benchmarks/results/qstac_acting report its cost and returns.

    Logged beyond S²AC's keys: ``train/constraint_violation`` (share of particle coordinates
    outside the bounds after the flow), ``train/multiplier_abs_mean``, and for ``H > 1`` (with
    ``H = 1`` there is no rollout and the sequence is the action) ``train/sequence_entropy``
    (the whole sequence's closed-form entropy), ``train/model_rollout_ms`` (one forward rollout
    through the model) and ``train/sequence_score_ms`` (one score: rollout, critic gradients and the
    backward pass through the model).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    policy: QSTACPolicy  # type: ignore[assignment]

    def __init__(
        self,
        policy: str | type[QSTACPolicy],
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
        dynamics_model: str | nn.Module = "auto",
        horizon: int = 5,
        n_particles: int = 10,
        svgd_steps: int = 3,
        svgd_step_size: float = 0.1,
        kernel_bandwidth: Bandwidth = "paper",
        learn_init: bool = True,
        init_std: float = PAPER_INIT_STD,
        bound_std: float | None = 3.0,
        constraint: bool = True,
        constraint_penalty: float = 1.0,
        multiplier_step: float | None = None,
        prior_weight: float = 1.0,
        horizon_discount: float = 1.0,
        act_svgd_steps: int | None = None,
        eval_action_selection: str = "max_q",
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        given = dict(
            horizon=horizon,
            constraint=constraint,
            constraint_penalty=constraint_penalty,
            multiplier_step=multiplier_step,
            prior_weight=prior_weight,
            horizon_discount=horizon_discount,
            act_svgd_steps=act_svgd_steps,
            bound_std=bound_std,
            amortized=False,
        )
        given.update({k: v for k, v in (policy_kwargs or {}).items() if k in given})
        if given["amortized"]:
            raise ValueError("QSTAC has no amortized sampler (amortized=True is an S2AC option)")
        planner_kwargs = dict(
            horizon=check_int("horizon", given["horizon"], 1),
            constraint=bool(given["constraint"]),
            constraint_penalty=check_positive("constraint_penalty", given["constraint_penalty"]),
            multiplier_step=check_positive("multiplier_step", given["multiplier_step"], allow_none=True),
            prior_weight=check_range("prior_weight", given["prior_weight"], 0.0, None),
            horizon_discount=check_range(
                "horizon_discount", given["horizon_discount"], 0.0, 1.0, open_low=True
            ),
            act_svgd_steps=None
            if given["act_svgd_steps"] is None
            else check_int("act_svgd_steps", given["act_svgd_steps"], 0),
        )
        if planner_kwargs["constraint"] and given["bound_std"] is None:
            raise ValueError(
                "constraint=True keeps particles within mu +- bound_std * sigma: bound_std must be a number "
                "> 0, got None (or pass constraint=False)"
            )
        policy_kwargs = {**(policy_kwargs or {}), **planner_kwargs}
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
            n_particles=n_particles,
            svgd_steps=svgd_steps,
            svgd_step_size=svgd_step_size,
            kernel_bandwidth=kernel_bandwidth,
            learn_init=learn_init,
            init_std=init_std,
            bound_std=bound_std,
            eval_action_selection=eval_action_selection,
            amortized=False,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        # S2AC has checked the step size, from policy_kwargs too (where load and Optuna put it).
        step_size = float(self.policy_kwargs["svgd_step_size"])
        penalty = float(planner_kwargs["constraint_penalty"])  # type: ignore[arg-type]
        if planner_kwargs["constraint"] and step_size * penalty > 2.0:
            raise ValueError(
                "svgd_step_size * constraint_penalty must be <= 2: particles that leave the bounds together "
                "are moved back by up to that multiple of their violation per SVGD step, and beyond 2 the "
                f"flow diverges; got {step_size} * {penalty}; lower one of them"
            )
        self.policy_kwargs.setdefault("dynamics_model", dynamics_model)
        if self.env is None and _init_setup_model:
            raise ValueError("QSTAC needs an env (to find and check its dynamics model)")
        if self.env is not None:
            refuse_normalized_observations(self.env, "QSTAC")
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        # Resolved here, not in __init__: load() builds the algorithm with _init_setup_model=False and
        # restores the saved policy_kwargs (with the user's model) only afterwards.
        model = self.policy_kwargs.get("dynamics_model", "auto")
        if self.env is not None:
            model = resolve_dynamics_model(model, self.env, "QSTAC")
            # On the device the policy will run it on: a model saved after a CUDA run comes back there.
            model = model.to(self.device)
            check_dynamics_model(
                model, self.observation_space, self.action_space, "QSTAC", device=self.device
            )
        elif not isinstance(model, nn.Module):
            raise ValueError(
                "QSTAC was loaded without an env and its saved dynamics_model is not a module "
                f"({model!r}): pass env=... to load() so that it can be resolved"
            )
        self.policy_kwargs["dynamics_model"] = model
        super()._setup_model()

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        stats = self.policy.stats
        for values in stats.values():
            values.clear()
        super().train(gradient_steps, batch_size)
        if stats["rollout_ms"]:
            self.logger.record("train/model_rollout_ms", np.mean(stats["rollout_ms"]))
            self.logger.record("train/sequence_score_ms", np.mean(stats["score_ms"]))
        if stats["outside"]:
            self.logger.record("train/constraint_violation", np.mean(stats["outside"]))
        if stats["sequence_entropy"]:
            self.logger.record("train/sequence_entropy", np.mean(stats["sequence_entropy"]))
        if stats["multiplier_abs"]:
            self.logger.record("train/multiplier_abs_mean", np.mean(stats["multiplier_abs"]))
        if stats["terminal_masked"]:
            self.logger.record("train/terminal_masked", np.mean(stats["terminal_masked"]))

    def learn(
        self: SelfQSTAC,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "QSTAC",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfQSTAC:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
