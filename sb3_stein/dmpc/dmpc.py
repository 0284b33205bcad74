"""DMPC: Deep Value Model Predictive Control (Farshidian, Hoeller, Hutter, CoRL 2019;
shared/papers/004_e1bdd2b42101da57.txt)."""

from __future__ import annotations

import time
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import polyak_update
from torch import nn
from torch.nn import functional as F

from sb3_stein.common.dynamics import (
    RefusesNormalizedObservations,
    check_dynamics_model,
    refuse_normalized_observations,
    resolve_dynamics_model,
)
from sb3_stein.common.mpc_acting import record_acting_stats
from sb3_stein.common.validation import check_box_action_space, check_int, check_range
from sb3_stein.dmpc.policies import DMPCPolicy, MlpPolicy

SelfDMPC = TypeVar("SelfDMPC", bound="DMPC")


class DMPC(RefusesNormalizedObservations, OffPolicyAlgorithm):
    """DMPC: a value critic and an MPC actor whose heuristic (Eq. 13) and running cost (Eq. 14) are the
    learned value (:mod:`sb3_stein.dmpc.problem` holds the OCP, :mod:`sb3_stein.dmpc.policies` the
    acting).

    Algorithm 1: every action is the MPC's (Eq. 10, with the Polyak target of the value); transitions go
    to a replay buffer; the critic ``V(s | theta)`` is fitted to the one-step Bellman targets of Eq. 11,
    ``y = c + gamma V_target(s')`` (``V_target(s') = 0`` at a terminal ``s'``), by the squared error of
    Eq. 12 with weight decay (§6). Signs: ``V`` is a **cost** to go, as in the paper; SB3 stores rewards,
    so ``c = -r``.

    Choices where the paper is silent (documented and tested):

    * Updates: SB3's schedule, ``train_freq`` steps then ``gradient_steps`` minibatches of
      ``batch_size`` (the paper: "K mini-batches of size N", no values).
    * No random warm-up: the MPC acts from the first step (Algorithm 1); ``learning_starts`` only delays
      the first update. Exploration is the MPC's own (Prop. 1: the MPC is the importance sampler);
      SB3's ``action_noise`` adds Gaussian or OU noise to it when given (off by default).
    * Time and goal: the observation carries them (the time to go, the target), so ``V(t, s)`` is
      ``V(obs)``; Eq. 14's ``-d_t V`` comes through the time-to-go's drift plus the discount's ``rho V``
      (the value is measured from the current time; :mod:`sb3_stein.dmpc.problem`).
    * A failed MPC solve: the previous successful plan's next control (else the middle of the action
      bounds), counted as ``mpc/act_failures``.
    * The cost of Eq. 11: ``c = -r + 1/2 u'Ru dt`` by default (``control_cost_in_targets``). Eq. 11 only says
      "a cost reflecting the performance on a given task", but the value that Eq. 14 turns back into a
      running cost is the one of the paper's problem (Eq. 3-4), whose path cost holds ``1/2 u'Ru``: the HJB
      behind Eq. 14 minimises ``q + 1/2 u'Ru + d_x V'(f + g u)``. A value learned from the task cost alone
      is the value of another problem than the one the actor solves. ``False``: ``c = -r``.

    :param policy: ``"MlpPolicy"`` or a :class:`~sb3_stein.dmpc.policies.DMPCPolicy` subclass.
    :param env: the environment (flat Box observations, bounded Box actions) or its id.
    :param learning_rate: the value network's Adam learning rate.
    :param buffer_size: replay buffer size.
    :param learning_starts: transitions collected (by the MPC) before the first update.
    :param batch_size: transitions per minibatch.
    :param tau: Polyak coefficient of the target value network the actor uses.
    :param gamma: discount of Eq. 10 and 11, per control step.
    :param train_freq: update every ``train_freq`` steps, or ``(n, "episode")``.
    :param gradient_steps: minibatches per update.
    :param action_noise: SB3's action noise on the MPC's action (``None``: the paper's pure MPC).
    :param replay_buffer_class: SB3's.
    :param replay_buffer_kwargs: SB3's.
    :param optimize_memory_usage: SB3's.
    :param dynamics_model: ``"auto"`` (the model registered for the env id), an ``nn.Module`` or an
        import path; it must give the control-affine form (``continuous_dynamics(x, u, be)`` or
        ``f``/``g``, :mod:`sb3_stein.common.control_affine`) and its control step ``dt``.
    :param horizon: ``H``, the MPC's stages (of ``dt`` each).
    :param control_weight: ``R`` of Eq. 10 and 14: a number or one per action, > 0, environment units.
    :param running_cost: Eq. 14's running cost (``False``: the value as the heuristic only, the
        paper's ablation).
    :param stabilizing_weights: Appendix B's stabilising cost, weights of ``1/2 sum_i w_i obs_i^2`` (one
        per observation entry), or ``None``.
    :param weight_decay: the value network's weight decay (§6).
    :param control_cost_in_targets: add the control cost ``1/2 u'Ru dt`` of the executed action (environment
        units) to the environment's cost in Eq. 11's targets (the path cost of Eq. 4; see above).
    :param mpc_kwargs: options of :class:`~sb3_stein.common.mpc.MPCLayer`.
    :param stats_window_size: SB3's.
    :param tensorboard_log: SB3's.
    :param policy_kwargs: for the policy (``net_arch``, default the paper's ``[12, 12, 12]``;
        ``activation_fn``, default ``nn.Tanh``).
    :param verbose: SB3's.
    :param seed: SB3's.
    :param device: SB3's.

    Logged: ``train/value_loss``, ``train/value_mean``, ``train/target_mean``; from acting
    the MPC acting statistics of :func:`~sb3_stein.common.mpc_acting.record_acting_stats`
    (``mpc/act_failures``, ``mpc/act_iterations``, ``mpc/act_ms``, ``mpc/retry_rate``,
    ``mpc/act_u0_at_bound``), as SAC-MPC logs them.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    policy: DMPCPolicy

    def __init__(
        self,
        policy: str | type[DMPCPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 128,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        dynamics_model: str | nn.Module = "auto",
        horizon: int = 10,
        control_weight: float | list[float] = 1.0,
        running_cost: bool = True,
        stabilizing_weights: list[float] | None = None,
        weight_decay: float = 1e-4,
        control_cost_in_targets: bool = True,
        mpc_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        check_box_action_space(env, "DMPC")
        check_range("gamma", gamma, 0.0, 1.0, open_low=True)
        kwargs = dict(policy_kwargs or {})
        given = dict(
            horizon=check_int("horizon", horizon, 1),
            control_weight=control_weight,
            running_cost=bool(running_cost),
            stabilizing_weights=stabilizing_weights,
            weight_decay=weight_decay,
            mpc_kwargs=dict(mpc_kwargs or {}),
        )
        given.update({k: kwargs.pop(k) for k in list(kwargs) if k in given})
        super().__init__(
            policy,
            env,
            learning_rate,
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
            policy_kwargs={**kwargs, **given},
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            use_sde=False,
            sde_support=False,
            supported_action_spaces=(spaces.Box,),
            support_multi_env=True,
        )
        self.policy_kwargs.setdefault("dynamics_model", dynamics_model)
        if self.env is None and _init_setup_model:
            raise ValueError("DMPC needs an env (to find and check its dynamics model)")
        if self.env is not None:
            refuse_normalized_observations(self.env, "DMPC")
        if not isinstance(control_cost_in_targets, (bool, np.bool_)):
            raise ValueError(
                f"control_cost_in_targets must be True or False, got {control_cost_in_targets!r}"
            )
        self.control_cost_in_targets = bool(control_cost_in_targets)
        #: Seconds spent acting since construction (or load: the acting statistics restart with the policy).
        self._act_seconds = 0.0
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        # Resolved here, not in __init__: load() restores the saved policy_kwargs only afterwards.
        model = self.policy_kwargs.get("dynamics_model", "auto")
        if self.env is not None:
            model = resolve_dynamics_model(model, self.env, "DMPC").to(self.device)
            check_dynamics_model(model, self.observation_space, self.action_space, "DMPC", device=self.device)
        elif not isinstance(model, nn.Module):
            raise ValueError(
                "DMPC was loaded without an env and its saved dynamics_model needs one: pass env=..."
            )
        self.policy_kwargs["dynamics_model"] = model
        self.policy_kwargs["gamma"] = self.gamma
        super()._setup_model()

    # ------------------------------------------------------------------ acting

    def _sample_action(
        self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        # Algorithm 1 acts with the MPC from the first step: no uniform warm-up.
        start = time.perf_counter()
        obs = th.as_tensor(self._last_obs, dtype=th.float64, device=self.device)  # type: ignore[arg-type]
        actions, _ = self.policy.act(obs.reshape(n_envs, -1), "train")
        self._act_seconds += time.perf_counter() - start
        scaled = self.policy.scale_action(actions)
        if action_noise is not None:
            scaled = np.clip(scaled + action_noise(), -1.0, 1.0)
        return self.policy.unscale_action(scaled), scaled

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: Any,
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        finished = np.flatnonzero(dones)
        if len(finished):  # a new episode starts without the old one's plan
            self.policy.reset_warm_start(finished, "train")
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

    def dump_logs(self) -> None:
        # The acting statistics every MPC algorithm logs; the time per step over the rows solved.
        acting = self.policy.acting["train"]
        record_acting_stats(self.logger, acting, self._act_seconds, acting.stats["solves"])
        super().dump_logs()

    # ------------------------------------------------------------------ learning

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        losses, values, targets = [], [], []
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = data.discounts if data.discounts is not None else self.gamma

            # Eq. 11: one-step targets from the Polyak target network, costs c = -r (+ 1/2 u'Ru dt, Eq. 4).
            with th.no_grad():
                next_value = self.policy.value_target(data.next_observations.float()).view(-1, 1)
                cost = -data.rewards
                if self.control_cost_in_targets:
                    cost = cost + self.policy.control_cost(data.actions).view(-1, 1)
                target = cost + (1 - data.dones) * discounts * next_value

            # Eq. 12 (weight decay in the optimizer).
            value = self.policy.value(data.observations.float()).view(-1, 1)
            loss = F.mse_loss(value, target)
            self.policy.optimizer.zero_grad()
            loss.backward()
            self.policy.optimizer.step()
            polyak_update(self.policy.value.parameters(), self.policy.value_target.parameters(), self.tau)

            losses.append(loss.item())
            values.append(float(value.detach().mean()))
            targets.append(float(target.mean()))
            self._n_updates += 1

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/value_loss", np.mean(losses))
        self.logger.record("train/value_mean", np.mean(values))
        self.logger.record("train/target_mean", np.mean(targets))

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_act_seconds"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []

    def learn(
        self: SelfDMPC,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "DMPC",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfDMPC:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
