"""Policies of SAC-ZOP, SAC-FOP and SAC-FOA: a network over MPC parameters, an MPC under it.

The lecture (shared/papers/001_fba01a676f0f8ac9.txt, "Hierarchical Actor Architecture"): a network
models a Gaussian over the MPC parameters, ``y = mu_theta(s) + Sigma_theta(s)^{1/2} xi``, squashed
into the parameter Box, ``phi = rescale(tanh(y))``; the action is the MPC's first control
``a = u0*(s, phi)``. SB3's SAC actor is exactly that squashed Gaussian, built here over the
parameter Box (normalised to ``[-1, 1]``) instead of the action Box.

* :class:`MPCParameterPolicy` (SAC-ZOP, SAC-FOP): the actor is SB3's squashed Gaussian over the
  parameters; the critic takes the parameters (ZOP, ``critic_input="parameters"``) or the actions
  (FOP, ``critic_input="actions"``).
* :class:`ActionNoisePolicy` (SAC-FOA): deterministic parameters ``phi_theta(s)`` and Gaussian
  noise on the MPC action, ``a = u0*(s, phi_theta(s)) + xi``, ``xi ~ N(0, diag(sigma_theta(s)^2))``
  (the lecture's "Exploration via Action Noise").

Every policy's ``action_space`` is the environment's action Box, so SB3's ``predict`` (used by
``evaluate_policy``, rl_zoo3's ``enjoy`` and the evaluation callback) returns environment actions:
``_predict`` runs the MPC. Acting keeps a warm start per environment row (the previous plan of the
same episode shifted by one stage; forgotten when the episode ends) and, when a solve fails, falls
back to :meth:`MPCLayer.fallback_controls` (the previous successful plan's next control, else the
middle of the control bounds) and counts the failure. Training rollouts and ``predict`` keep separate
plans and statistics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BaseModel
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN, Actor, SACPolicy
from torch import nn

from sb3_stein.common.mpc import MPCLayer, MPCSolution
from sb3_stein.common.mpc_acting import ActingContext, WarmStartedPredict
from sb3_stein.common.ocp import OptimalControlProblem
from sb3_stein.common.validation import check_choice

__all__ = [
    "ActingContext",
    "ActionNoiseActor",
    "ActionNoisePolicy",
    "MPCParameterPolicy",
    "MlpPolicy",
    "check_action_space",
]

CRITIC_INPUTS = ("parameters", "actions")


class MPCParameterPolicy(WarmStartedPredict, SACPolicy):
    """SAC policy whose Gaussian lives over MPC parameters (SAC-ZOP / SAC-FOP).

    :param observation_space: the environment's observation space.
    :param action_space: the environment's action Box (the MPC's controls; must match the OCP's
        ``control_dim`` and lie within its control bounds).
    :param lr_schedule: learning-rate schedule (SB3).
    :param ocp: the :class:`~sb3_stein.common.ocp.OptimalControlProblem` (the algorithm resolves
        ``ocp="auto"`` to the environment's registered one before building the policy).
    :param param_interface: ``"global"`` or ``"stage"`` (see :class:`~sb3_stein.common.mpc.MPCLayer`).
    :param critic_input: ``"parameters"``: ``Q(s, phi)`` with ``phi`` normalised to ``[-1, 1]``
        (SAC-ZOP's parameter critic); ``"actions"``: ``Q(s, a)`` with ``a`` in SB3's ``[-1, 1]``
        (SAC-FOP's action critic).
    :param mpc_kwargs: keyword arguments of :class:`~sb3_stein.common.mpc.MPCLayer` (``solver``,
        ``tol``, ``max_iter``, ``active_tol``, ``compiled``, ``batch_mode``, ``n_threads``,
        ``retry_cold``, ``control_barrier``).
    :param kwargs: the remaining arguments of SB3's :class:`~stable_baselines3.sac.policies.SACPolicy`
        (``net_arch``, ``activation_fn``, ``log_std_init``, ``n_critics``, ...). ``use_sde`` is not
        supported. The log standard deviation is clamped to SB3's ``[-20, 2]`` (leap-c: ``[-4, 2]``;
        the entropy target keeps it far from either end in practice).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        ocp: OptimalControlProblem | None = None,
        param_interface: str = "global",
        critic_input: str = "parameters",
        mpc_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if ocp is None:
            raise ValueError(
                f"{type(self).__name__} needs ocp=<OptimalControlProblem>; the SAC-ZOP/FOP/FOA algorithms "
                "pass the environment's registered one (ocp='auto')"
            )
        if kwargs.get("use_sde"):
            raise ValueError(f"{type(self).__name__} does not support use_sde=True (gSDE)")
        self.critic_input = check_choice("critic_input", critic_input, CRITIC_INPUTS)
        self.param_interface = param_interface
        self.mpc_kwargs = dict(mpc_kwargs or {})
        self.mpc = MPCLayer(ocp, param_interface=param_interface, **self.mpc_kwargs)
        self.parameter_space = self.mpc.parameter_space
        check_action_space(action_space, ocp)
        self._param_low = th.as_tensor(self.parameter_space.low, dtype=th.float32)
        self._param_high = th.as_tensor(self.parameter_space.high, dtype=th.float32)
        # Acting contexts: the training rollouts and predict() (evaluation, enjoy) keep their own
        # plans, so that an evaluation episode never warm-starts or falls back on a training one.
        self.acting = {"train": ActingContext(), "predict": ActingContext()}
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    # ------------------------------------------------------------------ networks

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> Actor:
        """SB3's squashed-Gaussian actor over the (normalised) parameter Box."""
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        actor_kwargs["action_space"] = self.parameter_space
        return Actor(**actor_kwargs).to(self.device)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> Any:
        """``Q(s, phi)`` (parameter critic) or ``Q(s, a)`` (action critic)."""
        from stable_baselines3.common.policies import ContinuousCritic

        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        if self.critic_input == "parameters":
            critic_kwargs["action_space"] = self.parameter_space
        return ContinuousCritic(**critic_kwargs).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            ocp=self.mpc.ocp,
            param_interface=self.param_interface,
            critic_input=self.critic_input,
            mpc_kwargs=self.mpc_kwargs,
        )
        return data

    # ------------------------------------------------------------------ conversions

    def params_from_scaled(self, scaled: th.Tensor) -> th.Tensor:
        """``[-1, 1]`` -> the parameter Box (affine, differentiable)."""
        low, high = self._param_low.to(scaled), self._param_high.to(scaled)
        return low + 0.5 * (scaled + 1.0) * (high - low)

    def mpc_states(self, obs: PyTorchObs) -> th.Tensor:
        """The MPC's initial states ``(batch, nx)`` from (preprocessed) observations."""
        assert isinstance(obs, th.Tensor), "the MPC policies take flat Box observations"
        return self.mpc.ocp.state_from_obs(obs.float())

    def actions_to_scaled(self, actions: th.Tensor) -> th.Tensor:
        """Environment units -> SB3's ``[-1, 1]`` (differentiable)."""
        low = th.as_tensor(self.action_space.low, dtype=actions.dtype, device=actions.device)  # type: ignore[attr-defined]
        high = th.as_tensor(self.action_space.high, dtype=actions.dtype, device=actions.device)  # type: ignore[attr-defined]
        return 2.0 * (actions - low) / (high - low) - 1.0

    # ------------------------------------------------------------------ MPC

    def solve_mpc(
        self, obs: PyTorchObs, params: th.Tensor, initial_guess: np.ndarray | None = None
    ) -> tuple[th.Tensor, th.Tensor, MPCSolution]:
        """Differentiable ``u0*(s(obs), phi)`` in environment units, success flags and the solution."""
        return self.mpc(self.mpc_states(obs), params, initial_guess)

    def act_mpc(
        self, obs: PyTorchObs, params: th.Tensor, context: str = "predict"
    ) -> tuple[np.ndarray, np.ndarray]:
        """The MPC actions to send to the environments (no gradient), with warm starts and fallbacks
        (:meth:`~sb3_stein.common.mpc_acting.ActingContext.act`).

        :param context: ``"train"`` (the algorithm's rollouts) or ``"predict"`` (everything else).
        :return: ``(actions (n_envs, nu) in environment units, failed (n_envs,) bool)``.
        """
        with th.no_grad():
            states = self.mpc_states(obs).double().cpu().numpy()
        actions, failed, _ = self.acting[context].act(
            self.mpc, states, params.detach().double().cpu().numpy()
        )
        return actions, failed

    @property
    def act_stats(self) -> dict[str, int]:
        """Statistics of the training rollouts' MPC (:class:`ActingContext`)."""
        return self.acting["train"].stats

    def scaled_sensitivity_norms(self, solution: MPCSolution) -> np.ndarray:
        """``(batch,)``: the Frobenius norm of ``d a / d phi`` per sample, both in SB3's ``[-1, 1]``
        units (the action as the critic sees it, the parameters as the actor outputs them), so the
        norm is what scales SAC-FOP's actor gradient through the MPC and is comparable across
        environments. Zero for failed solves and for first controls held at a bound.
        """
        jacobian = self.mpc.params_jacobian(solution)  # (batch, nu, n_phi), OCP units
        action_scale = 2.0 / (self.action_space.high - self.action_space.low)  # type: ignore[attr-defined]
        param_scale = 0.5 * (self.parameter_space.high - self.parameter_space.low)
        scaled = action_scale[None, :, None] * jacobian * param_scale[None, None, :]
        return np.sqrt((scaled**2).sum(axis=(1, 2)))

    # ------------------------------------------------------------------ acting

    def sample_params(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        """Parameters in ``[-1, 1]`` (the squashed Gaussian's sample, or its mode)."""
        return self.actor(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        scaled_params = self.sample_params(observation, deterministic)
        actions, _ = self.act_mpc(observation, self.params_from_scaled(scaled_params))
        scaled = self.actions_to_scaled(th.as_tensor(actions, dtype=th.float32, device=self.device))
        return scaled.clamp(-1.0, 1.0)


def check_action_space(action_space: spaces.Space, ocp: OptimalControlProblem) -> None:
    """The OCP's controls must be the environment's actions: same size, bounds within the Box.

    :raises ValueError: naming the OCP and the mismatch.
    """
    name = type(ocp).__name__
    if not isinstance(action_space, spaces.Box):
        raise ValueError(f"the MPC policies need a Box action space, got {action_space!r}")
    if get_action_dim(action_space) != ocp.control_dim:
        raise ValueError(
            f"{name} has control_dim={ocp.control_dim} but the environment's action space {action_space} has "
            f"{get_action_dim(action_space)} dimensions: this OCP cannot drive this environment"
        )
    if np.any(ocp.u_low < action_space.low - 1e-6) or np.any(ocp.u_high > action_space.high + 1e-6):
        raise ValueError(
            f"{name}'s control bounds [{ocp.u_low}, {ocp.u_high}] exceed the environment's action space "
            f"[{action_space.low}, {action_space.high}]"
        )


class ActionNoiseActor(BaseModel):
    """SAC-FOA's actor: deterministic parameters ``phi_theta(s)`` in ``[-1, 1]`` (tanh) and a
    state-dependent log standard deviation of the action noise, in SB3's scaled action units.

    :param observation_space: observation space.
    :param action_space: the environment's action Box.
    :param parameter_space: the MPC parameter Box.
    :param net_arch: hidden layers of the shared MLP.
    :param features_extractor: SB3 features extractor.
    :param features_dim: its output size.
    :param activation_fn: activation of the MLP.
    :param log_std_init: initial bias of the log standard deviation head.
    :param normalize_images: SB3's flag (unused for vector observations).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        parameter_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        log_std_init: float = -3.0,
        normalize_images: bool = True,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        self.features_extractor: BaseFeaturesExtractor = features_extractor
        self.net_arch, self.features_dim, self.activation_fn = net_arch, features_dim, activation_fn
        self.parameter_space = parameter_space
        self.latent_pi = nn.Sequential(*create_mlp(features_dim, -1, net_arch, activation_fn))
        last = net_arch[-1] if net_arch else features_dim
        self.mu = nn.Linear(last, get_action_dim(parameter_space))
        self.log_std = nn.Linear(last, get_action_dim(action_space))
        nn.init.constant_(self.log_std.bias, log_std_init)

    def forward(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:  # type: ignore[override]
        """``(scaled parameters (batch, n_phi) in [-1, 1], log_std (batch, nu))``."""
        latent = self.latent_pi(self.extract_features(obs, self.features_extractor))
        return th.tanh(self.mu(latent)), self.log_std(latent).clamp(LOG_STD_MIN, LOG_STD_MAX)


class ActionNoisePolicy(MPCParameterPolicy):
    """SAC-FOA's policy: ``a = u0*(s, phi_theta(s)) + xi``, Gaussian ``xi`` in SB3's scaled action
    units, action critic ``Q(s, a)``. Same arguments as :class:`MPCParameterPolicy` (``critic_input``
    is always ``"actions"``)."""

    actor: ActionNoiseActor  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["critic_input"] = "actions"
        super().__init__(*args, **kwargs)

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> ActionNoiseActor:  # type: ignore[override]
        kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return ActionNoiseActor(
            observation_space=kwargs["observation_space"],
            action_space=kwargs["action_space"],
            parameter_space=self.parameter_space,
            net_arch=kwargs["net_arch"],
            features_extractor=kwargs["features_extractor"],
            features_dim=kwargs["features_dim"],
            activation_fn=kwargs["activation_fn"],
            log_std_init=kwargs.get("log_std_init", -3.0),
            normalize_images=kwargs["normalize_images"],
        ).to(self.device)

    def sample_params(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        """The deterministic parameters in ``[-1, 1]`` (exploration is on the action)."""
        return self.actor(obs)[0]

    def noisy_actions(
        self, obs: PyTorchObs, deterministic: bool = False, context: str = "predict"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Acting: ``(unclipped scaled actions, clipped actions in environment units, failed)``."""
        with th.no_grad():
            scaled_params, log_std = self.actor(obs)
        actions, failed = self.act_mpc(obs, self.params_from_scaled(scaled_params), context)
        scaled = self.actions_to_scaled(th.as_tensor(actions, dtype=th.float32, device=self.device))
        if not deterministic:
            scaled = scaled + log_std.exp() * th.randn_like(scaled)
        scaled_np = scaled.cpu().numpy()
        low, high = self.action_space.low, self.action_space.high  # type: ignore[attr-defined]
        env_actions = low + 0.5 * (np.clip(scaled_np, -1.0, 1.0) + 1.0) * (high - low)
        return scaled_np, env_actions, failed

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        scaled, _, _ = self.noisy_actions(observation, deterministic)
        return th.as_tensor(scaled, device=self.device).clamp(-1.0, 1.0)


MlpPolicy = MPCParameterPolicy
