"""MPQ: information theoretic model predictive Q-learning (Bhardwaj et al., L4DC 2020;
shared/papers/003_96d88a97244843a9.txt)."""

from __future__ import annotations

import time
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import polyak_update
from torch import nn
from torch.nn import functional as F

from sb3_stein.common.dynamics import (
    RefusesNormalizedObservations,
    check_dynamics_model,
    check_reward_model,
    refuse_normalized_observations,
    resolve_dynamics_model,
    resolve_reward_model,
)
from sb3_stein.common.mppi import noise_cholesky
from sb3_stein.common.validation import check_box_action_space, check_int, check_positive, check_range
from sb3_stein.mpq.policies import MlpPolicy, MPQPolicy

SelfMPQ = TypeVar("SelfMPQ", bound="MPQ")


class MPQ(RefusesNormalizedObservations, OffPolicyAlgorithm):
    """MPQ: soft Q-learning whose actor and whose Q targets are infinite-horizon MPPI on a (biased) model.

    Acting (Algorithm 1, line 3): at every step MPPI optimises ``H`` controls on the known, possibly
    biased, dynamics and reward models with the learned ``Q`` as the terminal value
    ``Q(s_{H-1}, a_{H-1})`` (Eq. 6, 16-18), warm-started from the previous plan; the first control is
    executed. There is no separate actor network.

    Learning (Algorithm 1, lines 6-8; Eq. 19): for a minibatch of transitions ``(s, a, r, s')``,
    ``n_target_iterations`` MPPI iterations from ``s'`` (from the zero sequence) give the free energy
    ``F(s')`` and the target ``y = r + gamma (1 - done) V(s')`` with ``V = -F``; the critic is fitted by
    the MSE. ``horizon=1`` is the paper's soft Q-learning baseline: no model, ``V(s') = lambda log
    E_{N(0, Sigma)}[exp(Q(s', a) / lambda)]`` by the same planner, actions from MPPI on ``Q`` alone.

    Units and signs: the paper writes costs; here rewards (SB3's convention), ``c = -r``, so ``Q`` and
    ``V`` are in reward units and comparable with SAC's. ``noise_sigma`` is in environment units (the
    paper's Table 3 values are, e.g. 4.0 for a pendulum torque in ``[-2, 2]``); the critic sees SB3's
    ``[-1, 1]`` actions, as SAC's.

    Choices where the paper is silent (documented and tested):

    * Algorithm 1 updates every ``N_update`` episodes with ``M`` minibatches of ``K`` transitions; here
      that is SB3's ``train_freq=(N_update, "episode")``, ``gradient_steps=M``, ``batch_size=K`` (the
      paper gives no values; the defaults are SB3's per-step schedule, ``train_freq=1``,
      ``gradient_steps=1``).
    * Every action comes from MPPI from the first step (the paper has no random warm-up):
      ``learning_starts`` only delays the first update (until the buffer holds a minibatch).
    * Targets start MPPI from the zero sequence (the prior's mean): a replayed ``s'`` has no plan to
      warm-start from. Acting uses ``n_iterations`` per step (default 1) with the warm start.
    * Target network: none by default (the paper uses none); ``use_target_network=True`` keeps a
      Polyak-averaged copy (``tau``, ``target_update_interval``) whose ``Q`` the target MPPI uses.
    * Discounting inside the plan: ``gamma`` (Table 3's one gamma), as in the planner module
      (:mod:`sb3_stein.common.mppi`: ``gamma^t`` on rewards, ``gamma^{H-1}`` on ``Q``, the control
      cost undiscounted, App. A).
    * Action bounds, terminal states and numerics: the planner module's docstring.

    :param policy: ``"MlpPolicy"`` or an :class:`~sb3_stein.mpq.policies.MPQPolicy` subclass.
    :param env: the environment (flat Box observations, Box actions) or its id.
    :param learning_rate: the critic's learning rate (App. B: Adam, 1e-3).
    :param buffer_size: replay buffer size.
    :param learning_starts: transitions collected (by MPPI) before the first update.
    :param batch_size: ``K``, transitions per minibatch.
    :param tau: Polyak coefficient of the target critic (``use_target_network=True`` only).
    :param gamma: discount of the targets and of the plan (Table 3: 0.9).
    :param train_freq: update every ``train_freq`` steps, or ``(n, "episode")`` (Algorithm 1's ``N_update``).
    :param gradient_steps: ``M``, minibatches per update.
    :param replay_buffer_class: SB3's.
    :param replay_buffer_kwargs: SB3's.
    :param optimize_memory_usage: SB3's.
    :param n_steps: SB3's n-step returns (1: the paper's one-step Eq. 19).
    :param dynamics_model: ``"auto"`` (the model registered for the env id), an ``nn.Module`` mapping
        ``(obs, action)`` in environment units to the next observation, or an import path (see
        :mod:`sb3_stein.common.dynamics`). Not used, and may be ``None``, with ``horizon=1``.
    :param reward_model: ``"auto"`` (the dynamics model's ``reward(obs, action, next_obs)``), a callable or
        module ``r(obs, action, next_obs) -> (...)`` in environment units, or an import path. ``None``
        with ``horizon=1``.
    :param horizon: ``H >= 1`` controls per plan (``1``: soft Q-learning).
    :param n_samples: ``N >= 2`` sampled sequences per plan (Table 3: 24 pendulum, 36 otherwise).
    :param noise_sigma: per-step noise covariance ``Sigma``, environment units: a variance (Table 3),
        per-dimension variances or a full positive definite matrix.
    :param temperature: ``lambda > 0`` (Table 3: 0.15 pendulum and ball-in-cup).
    :param mppi_step_size: ``alpha`` in ``(0, 1]`` of Eq. 18 (Table 3: 0.5-0.55).
    :param n_iterations: MPPI iterations per action (>= 1).
    :param n_target_iterations: MPPI iterations per target (App. B: 3).
    :param use_target_network: Polyak target critic for the targets (the paper: ``False``).
    :param target_update_interval: gradient steps between target updates (with a target network).
    :param stats_window_size: SB3's.
    :param tensorboard_log: SB3's.
    :param policy_kwargs: for the policy (``net_arch``, default the paper's ``[100, 100]``;
        ``activation_fn``, default ``tanh``; ``n_critics``, default 1; ``eval_seed``).
    :param verbose: SB3's.
    :param seed: SB3's.
    :param device: SB3's.

    Logged: ``train/critic_loss``, ``train/q_mean``, ``train/target_value`` (mean ``V(s')``),
    ``train/target_ess`` (effective sample size of the targets' MPPI weights), ``train/target_ms``
    (computing one minibatch's targets), ``train/target_collapsed`` (share of states whose weights sit on
    one sample); from acting
    ``rollout/plan_ms``, ``rollout/model_rollout_ms``, ``rollout/plan_ess``, ``rollout/plan_value``.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    policy: MPQPolicy

    def __init__(
        self,
        policy: str | type[MPQPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 64,
        tau: float = 0.005,
        gamma: float = 0.9,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        dynamics_model: str | nn.Module | None = "auto",
        reward_model: Any = "auto",
        horizon: int = 4,
        n_samples: int = 24,
        noise_sigma: float | list[float] | list[list[float]] = 4.0,
        temperature: float = 0.15,
        mppi_step_size: float = 0.5,
        n_iterations: int = 1,
        n_target_iterations: int = 3,
        use_target_network: bool = False,
        target_update_interval: int = 1,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        check_box_action_space(env, "MPQ")
        kwargs = dict(policy_kwargs or {})
        given = dict(
            horizon=horizon,
            n_samples=n_samples,
            noise_sigma=noise_sigma,
            temperature=temperature,
            mppi_step_size=mppi_step_size,
            n_iterations=n_iterations,
            use_target_network=use_target_network,
        )
        given.update({k: kwargs.pop(k) for k in list(kwargs) if k in given})
        planner = dict(
            horizon=check_int("horizon", given["horizon"], 1),
            n_samples=check_int("n_samples", given["n_samples"], 2),
            noise_sigma=given["noise_sigma"],
            temperature=check_positive("temperature", given["temperature"]),
            mppi_step_size=check_range("mppi_step_size", given["mppi_step_size"], 0.0, 1.0, open_low=True),
            n_iterations=check_int("n_iterations", given["n_iterations"], 1),
            use_target_network=bool(given["use_target_network"]),
        )
        self.n_target_iterations = check_int("n_target_iterations", n_target_iterations, 1)
        self.target_update_interval = check_int("target_update_interval", target_update_interval, 1)
        check_range("gamma", gamma, 0.0, 1.0, open_low=True)
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
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            policy_kwargs={**kwargs, **planner},
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
        self.policy_kwargs.setdefault("reward_model", reward_model)
        if self.env is None and _init_setup_model:
            raise ValueError("MPQ needs an env (to find and check its dynamics and reward models)")
        if self.env is not None:
            refuse_normalized_observations(self.env, "MPQ")
            assert isinstance(self.action_space, spaces.Box)
            try:
                noise_cholesky(th.as_tensor(planner["noise_sigma"]), self.action_space.shape[0])
            except (ValueError, TypeError, RuntimeError) as error:
                raise ValueError(f"MPQ: noise_sigma: {error}") from error
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        # Resolved here, not in __init__: load() restores the saved policy_kwargs only afterwards.
        horizon = int(self.policy_kwargs["horizon"])
        model = self.policy_kwargs.get("dynamics_model", "auto")
        reward = self.policy_kwargs.get("reward_model", "auto")
        if horizon == 1 and model == "auto":
            model = None  # soft Q-learning needs no model; an explicit one is still checked
        if horizon == 1 and reward == "auto":
            reward = None
        if self.env is not None:
            if model is not None:
                model = resolve_dynamics_model(model, self.env, "MPQ").to(self.device)
                check_dynamics_model(
                    model, self.observation_space, self.action_space, "MPQ", device=self.device
                )
            if reward is not None:
                reward = resolve_reward_model(reward, model, self.env, "MPQ")
                assert isinstance(self.action_space, spaces.Box)
                check_reward_model(
                    reward, model, self.observation_space, self.action_space, "MPQ", self.device
                )
        elif (model is not None and not isinstance(model, nn.Module)) or isinstance(reward, str):
            raise ValueError(
                "MPQ was loaded without an env and its saved dynamics_model/reward_model need one to be "
                "resolved: pass env=... to load()"
            )
        if horizon > 1 and (model is None or reward is None):
            raise ValueError(
                f"MPQ with horizon={horizon} plans through a model: dynamics_model and reward_model must not "
                "be None (horizon=1, soft Q-learning, needs neither)"
            )
        self.policy_kwargs["dynamics_model"] = model
        self.policy_kwargs["reward_model"] = reward
        self.policy_kwargs["planner_gamma"] = self.gamma
        super()._setup_model()

    def _sample_action(
        self, learning_starts: int, action_noise: Any = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        # Algorithm 1 plans from the first step: no uniform warm-up (learning_starts delays updates only).
        return super()._sample_action(0, action_noise, n_envs)

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)
        ended = np.flatnonzero(dones)
        if len(ended):  # the next plan of these environments starts a new episode
            self.policy.reset_plan(ended)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.critic.optimizer)
        critic_losses, q_means, values, ess, target_ms, collapsed = [], [], [], [], [], []
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = data.discounts if data.discounts is not None else self.gamma

            # Targets (Eq. 19): MPPI from s' on the model, the free energy as the next state's value.
            with th.no_grad():
                t0 = time.perf_counter()
                result = self.policy.target_planner.plan(
                    data.next_observations.float(), None, self.n_target_iterations
                )
                target_ms.append(1e3 * (time.perf_counter() - t0))
                next_value = result.value.view(-1, 1)
                if not bool(th.isfinite(next_value).all()):
                    raise FloatingPointError(
                        "MPQ: the targets' MPPI gave a non-finite free energy (every sample of some state "
                        "cost +inf): check the reward model and the critic's values"
                    )
                target_q = data.rewards + (1 - data.dones) * discounts * next_value

            current_q = self.policy.critic(data.observations, data.actions)
            critic_loss = 0.5 * sum(F.mse_loss(q, target_q) for q in current_q)
            assert isinstance(critic_loss, th.Tensor)
            self.policy.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.policy.critic.optimizer.step()

            critic_losses.append(critic_loss.item())
            q_means.append(float(current_q[0].detach().mean()))
            values.append(float(next_value.mean()))
            ess.append(float(result.ess.mean()))
            collapsed.append(float(result.collapsed.float().mean()))
            self._n_updates += 1
            if self.policy.critic_target is not None and self._n_updates % self.target_update_interval == 0:
                polyak_update(
                    self.policy.critic.parameters(), self.policy.critic_target.parameters(), self.tau
                )

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/critic_loss", np.mean(critic_losses))
        self.logger.record("train/q_mean", np.mean(q_means))
        self.logger.record("train/target_value", np.mean(values))
        self.logger.record("train/target_ess", np.mean(ess))
        self.logger.record("train/target_ms", np.mean(target_ms))
        self.logger.record("train/target_collapsed", np.mean(collapsed))
        self._record_plan_stats()

    def _record_plan_stats(self) -> None:
        """The acting planner's statistics since the last update (then cleared)."""
        stats = self.policy.stats
        if stats["plan_ms"]:
            self.logger.record("rollout/plan_ms", np.mean(stats["plan_ms"]))
            self.logger.record("rollout/model_rollout_ms", np.mean(stats["rollout_ms"]))
            self.logger.record("rollout/plan_ess", np.mean(stats["ess"]))
            self.logger.record("rollout/plan_value", np.mean(stats["value"]))
        for values in stats.values():
            values.clear()

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.critic.optimizer"], []

    def learn(
        self: SelfMPQ,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "MPQ",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfMPQ:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )


class MPPIController(MPQ):
    """MPPI without a learned Q (the paper's MPPI baselines, Fig. 2): plans ``H`` steps on the model with
    the last step's reward instead of a terminal value, and learns nothing.

    It is an SB3 algorithm so that rl_zoo3 runs it like any other (zoo name ``mppi``): ``learn`` only
    steps the environment (and fills a replay buffer, kept small by the yml) so that the zoo's
    evaluations, monitor files and saving work; ``train`` records the planner's statistics and does not
    update anything. The paper's variants: same horizon as MPQ (``horizon=H``), a long horizon
    (``horizon=64``), and a long horizon with the true model (``dynamics_model="auto"`` on an env whose
    registered model is the true one, e.g. ``Pendulum-v1``).

    Parameters of :class:`MPQ`; the critic ones have no effect. ``horizon`` must be ``> 1``.
    """

    def __init__(self, policy: str | type[MPQPolicy], env: GymEnv | str, **kwargs: Any):
        policy_kwargs = {**(kwargs.pop("policy_kwargs", None) or {}), "use_terminal_q": False}
        kwargs.setdefault("buffer_size", 1000)
        super().__init__(policy, env, policy_kwargs=policy_kwargs, **kwargs)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self._record_plan_stats()
