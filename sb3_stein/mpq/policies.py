"""Policy of :class:`sb3_stein.MPQ`: a soft Q critic and the infinite-horizon MPPI planner that acts on it."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy, ContinuousCritic
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_stein.common.mppi import MPPI, MPPIResult

#: The paper's critic (App. B): two hidden layers of 100 tanh units.
PAPER_NET_ARCH = [100, 100]


class MPQPolicy(BasePolicy):
    """Soft Q critic(s) ``Q(s, a)`` (SB3 units ``[-1, 1]``, reward units) and the MPPI planner.

    Acting (Algorithm 1, line 3): MPPI from the current state, warm-started from the previous step's
    plan shifted by one (per environment; reset where an episode starts), with the critic as the
    terminal value ``Q(s_{H-1}, a_{H-1})``; the first control of the optimised mean is executed.
    ``deterministic=True`` draws the planner's noise from a generator seeded with ``eval_seed`` at
    every call, so a state and a warm start give one action.

    :param observation_space: flat Box.
    :param action_space: Box (finite bounds).
    :param lr_schedule: the critic's learning rate schedule.
    :param dynamics_model: the planner's model (environment units); ``None`` only for ``horizon=1``.
    :param reward_model: ``r(obs, action, next_obs)``; ``None`` only for ``horizon=1``.
    :param horizon: ``H >= 1`` (``1``: soft Q-learning, no model).
    :param n_samples: ``N >= 2`` sequences per plan.
    :param noise_sigma: per-step covariance ``Sigma`` in environment units (scalar, ``(A,)`` or ``(A, A)``).
    :param temperature: ``lambda > 0``.
    :param mppi_step_size: ``alpha`` in ``(0, 1]`` of Eq. 18.
    :param planner_gamma: the planner's discount (MPQ passes its ``gamma``).
    :param n_iterations: MPPI iterations per action.
    :param eval_seed: seed of the noise for ``deterministic=True``.
    :param use_terminal_q: plan with the critic as terminal value (MPQ); ``False``: plain MPPI over ``H``
        model steps (the baselines of :class:`~sb3_stein.mpq.MPPIController`).
    :param net_arch: critic hidden layers (default the paper's ``[100, 100]``).
    :param activation_fn: critic activation (default the paper's ``tanh``).
    :param n_critics: critics in the ensemble (the paper: 1); the planner uses their minimum.
    :param use_target_network: keep a Polyak-averaged target critic for the targets (the paper: no).
    :param features_extractor_class: SB3's, default ``FlattenExtractor``.
    :param features_extractor_kwargs: its keyword arguments.
    :param normalize_images: SB3's.
    :param optimizer_class: the critic's optimizer (default Adam, the paper's).
    :param optimizer_kwargs: its keyword arguments.
    """

    action_low: th.Tensor
    action_high: th.Tensor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        dynamics_model: nn.Module | None = None,
        reward_model: Callable[..., th.Tensor] | None = None,
        horizon: int = 4,
        n_samples: int = 24,
        noise_sigma: float | list[float] | list[list[float]] = 4.0,
        temperature: float = 0.15,
        mppi_step_size: float = 0.5,
        planner_gamma: float = 0.9,
        n_iterations: int = 1,
        eval_seed: int = 0,
        use_terminal_q: bool = True,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        n_critics: int = 1,
        use_target_network: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
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
        if horizon > 1 and (dynamics_model is None or reward_model is None):
            raise ValueError("MPQPolicy with horizon > 1 needs a dynamics_model and a reward_model")
        self.dynamics = dynamics_model.requires_grad_(False) if dynamics_model is not None else None
        self.reward_model = reward_model
        self.horizon, self.n_samples, self.noise_sigma = horizon, n_samples, noise_sigma
        self.temperature, self.mppi_step_size, self.planner_gamma = temperature, mppi_step_size, planner_gamma
        self.n_iterations, self.eval_seed = n_iterations, eval_seed
        self.use_terminal_q = use_terminal_q
        if not use_terminal_q and horizon == 1:
            raise ValueError("use_terminal_q=False plans on the model alone: horizon must be > 1")
        self.net_arch = PAPER_NET_ARCH if net_arch is None else list(net_arch)
        self.activation_fn, self.n_critics = activation_fn, n_critics
        self.use_target_network = use_target_network
        self.critic_kwargs = dict(
            observation_space=observation_space,
            action_space=action_space,
            net_arch=self.net_arch,
            activation_fn=activation_fn,
            normalize_images=normalize_images,
            n_critics=n_critics,
            share_features_extractor=False,
        )
        self.register_buffer("action_low", th.as_tensor(action_space.low, dtype=th.float32), persistent=False)
        self.register_buffer(
            "action_high", th.as_tensor(action_space.high, dtype=th.float32), persistent=False
        )
        self._plan: th.Tensor | None = None  # warm start (n_envs, H, A), environment units
        self.stats: dict[str, deque[float]] = {
            name: deque(maxlen=10_000) for name in ("plan_ms", "rollout_ms", "ess", "value")
        }
        self._build(lr_schedule)

    def _build(self, lr_schedule: Schedule) -> None:
        self.critic = self.make_critic()
        self.critic.optimizer = self.optimizer_class(  # type: ignore[call-arg]
            self.critic.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )
        self.critic_target: ContinuousCritic | None = None
        if self.use_target_network:
            self.critic_target = self.make_critic()
            self.critic_target.load_state_dict(self.critic.state_dict())
            self.critic_target.set_training_mode(False)
        # MPPI with the online critic (acting) and with the targets' critic (Eq. 19).
        self.planner = self.make_planner(self.critic)
        self.target_planner = self.make_planner(self.critic_target or self.critic)

    def make_critic(self) -> ContinuousCritic:
        kwargs = self._update_features_extractor(dict(self.critic_kwargs), features_extractor=None)
        return ContinuousCritic(**kwargs).to(self.device)

    def to_env_units(self, actions: th.Tensor) -> th.Tensor:
        """SB3's ``[-1, 1]`` -> the Box (as ``unscale_action``)."""
        low, high = self.action_low.to(actions), self.action_high.to(actions)
        return low + 0.5 * (actions + 1.0) * (high - low)

    def to_policy_units(self, actions: th.Tensor) -> th.Tensor:
        """The Box -> SB3's ``[-1, 1]`` (as ``scale_action``): what the critic sees and the buffer stores."""
        low, high = self.action_low.to(actions), self.action_high.to(actions)
        return 2.0 * (actions - low) / (high - low) - 1.0

    def make_planner(self, critic: ContinuousCritic) -> MPPI:
        def terminal_value(states: th.Tensor, actions: th.Tensor) -> th.Tensor:
            lead = states.shape[:-1]
            flat_obs = states.reshape(-1, states.shape[-1])
            flat_act = self.to_policy_units(actions).reshape(-1, actions.shape[-1])
            q = th.cat(critic(flat_obs, flat_act), dim=1).min(dim=1).values
            return q.view(lead)

        def no_model(obs: th.Tensor, action: th.Tensor) -> th.Tensor:  # horizon=1 never steps
            raise AssertionError("MPQ with horizon=1 has no dynamics model to roll out")

        return MPPI(
            dynamics=self.dynamics if self.dynamics is not None else no_model,
            reward_model=self.reward_model if self.reward_model is not None else no_model,  # type: ignore[arg-type]
            horizon=self.horizon,
            n_samples=self.n_samples,
            noise_sigma=th.as_tensor(self.noise_sigma),
            temperature=self.temperature,
            step_size=self.mppi_step_size,
            gamma=self.planner_gamma,
            action_low=self.action_low,
            action_high=self.action_high,
            terminal_value=terminal_value if self.use_terminal_q else None,
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                lr_schedule=self._dummy_schedule,
                dynamics_model=self.dynamics,
                reward_model=self.reward_model,
                horizon=self.horizon,
                n_samples=self.n_samples,
                noise_sigma=self.noise_sigma,
                temperature=self.temperature,
                mppi_step_size=self.mppi_step_size,
                planner_gamma=self.planner_gamma,
                n_iterations=self.n_iterations,
                eval_seed=self.eval_seed,
                use_terminal_q=self.use_terminal_q,
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                n_critics=self.n_critics,
                use_target_network=self.use_target_network,
            )
        )
        return data

    def reset_plan(self, indices: np.ndarray | None = None) -> None:
        """Forget the warm start (all environments, or the rows ``indices``): the next plan starts from
        the prior's zero sequence. Called where an episode starts."""
        if indices is None or self._plan is None:
            self._plan = None
        else:
            self._plan[th.as_tensor(indices, device=self._plan.device)] = 0.0

    def plan(self, obs: th.Tensor, deterministic: bool = False) -> MPPIResult:
        """One acting plan for observations ``(B, obs_dim)``, warm-started and then stored shifted."""
        obs = obs.float()
        warm = self._plan if self._plan is not None and self._plan.shape[0] == obs.shape[0] else None
        generator = None
        if deterministic:
            generator = th.Generator(device=obs.device).manual_seed(self.eval_seed)
        t0 = time.perf_counter()
        result = self.planner.plan(obs, warm, self.n_iterations, generator)
        self.stats["plan_ms"].append(1e3 * (time.perf_counter() - t0))
        self.stats["rollout_ms"].append(result.rollout_ms)
        self.stats["ess"].append(float(result.ess.mean()))
        self.stats["value"].append(float(result.value.mean()))
        self._plan = MPPI.shift(result.mean)
        return result

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        assert isinstance(observation, th.Tensor)
        result = self.plan(observation, deterministic)
        return self.to_policy_units(result.mean[:, 0])

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``predict``; rows whose ``episode_start`` is set start planning from scratch."""
        if episode_start is not None and self._plan is not None:
            starts = np.flatnonzero(np.asarray(episode_start, dtype=bool))
            if len(starts) == self._plan.shape[0]:
                self._plan = None
            elif len(starts):
                self.reset_plan(starts)
        return super().predict(observation, state, episode_start, deterministic)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def set_training_mode(self, mode: bool) -> None:
        self.critic.set_training_mode(mode)
        self.training = mode


MlpPolicy = MPQPolicy
