"""DMPC's policy: a value network (the critic, with its Polyak target) and the MPC actor built on it.

The action is the first control of the OCP of :class:`~sb3_stein.dmpc.problem.ValueMPCProblem`
solved from the observation with the **target** network's weights (§6: "the actor only receives a
Polyak averaged version of the value function"), warm-started from the previous plan of the same
episode (:class:`~sb3_stein.common.mpc_acting.ActingContext`); a failed solve falls back to the
previous successful plan's next control (else the middle of the control bounds) and is counted.
The MPC is deterministic (Eq. 10): ``deterministic`` makes no difference.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_stein.common.mpc import MPCLayer
from sb3_stein.common.mpc_acting import ActingContext, WarmStartedPredict
from sb3_stein.dmpc.problem import MLPValue, ValueMPCProblem, ValueNetwork, activation_name

__all__ = ["DMPCPolicy", "MlpPolicy"]


class DMPCPolicy(WarmStartedPredict, BasePolicy):
    """Value network ``V(s | theta)``, its target and the MPC actor of DMPC.

    :param observation_space: the environment's (flat Box) observation space: the value's input and the
        MPC's state (it must hold the goal and the time to go, as the paper's conditioned value).
    :param action_space: the environment's action Box (the MPC's control bounds).
    :param lr_schedule: learning-rate schedule of the value network (SB3).
    :param dynamics_model: the resolved dynamics model (control-affine, with ``dt``).
    :param horizon: ``H``, the MPC's stages.
    :param control_weight: ``R`` of Eq. 10 and 14 (number or ``(nu,)`` diagonal).
    :param gamma: the discount of Eq. 10 (the algorithm passes its own ``gamma``).
    :param running_cost: Eq. 14's running cost on/off (the paper's ablation).
    :param stabilizing_weights: Appendix B's stabilising cost weights ``(obs_dim,)``, or ``None``.
    :param net_arch: hidden layers of the value network (the paper: ``[12, 12, 12]``).
    :param activation_fn: its activation: ``nn.Tanh`` (the paper), ``nn.Sigmoid``, ``nn.Softplus`` or
        ``nn.SiLU`` (twice differentiable; ReLU and the like are refused).
    :param mpc_kwargs: options of :class:`~sb3_stein.common.mpc.MPCLayer` (``solver``, ``tol``,
        ``max_iter``, ``compiled`` (default here: ``False``), ``batch_mode``, ...).
    :param weight_decay: Adam's weight decay of the value network (§6: "decaying the weights results
        in smoother behavior").
    :param optimizer_class: the value network's optimizer.
    :param optimizer_kwargs: its extra keyword arguments.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        dynamics_model: nn.Module,
        horizon: int = 10,
        control_weight: float | list[float] = 1.0,
        gamma: float = 0.99,
        running_cost: bool = True,
        stabilizing_weights: list[float] | None = None,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        mpc_kwargs: dict[str, Any] | None = None,
        weight_decay: float = 1e-4,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            squash_output=False,
        )
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
            raise ValueError(f"DMPC needs a flat Box observation space, got {observation_space!r}")
        if not isinstance(action_space, spaces.Box) or not np.all(np.isfinite(action_space.low)):
            raise ValueError(f"DMPC needs a bounded Box action space, got {action_space!r}")
        if not (np.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be finite and >= 0, got {weight_decay!r}")
        self.dynamics_model = dynamics_model
        self.horizon, self.control_weight, self.gamma = int(horizon), control_weight, float(gamma)
        self.running_cost, self.stabilizing_weights = bool(running_cost), stabilizing_weights
        self.net_arch = list(net_arch) if net_arch is not None else [12, 12, 12]
        self.activation_fn = activation_fn
        # Interpreted by default: the value network's derivatives make the NLP large (cart-pole, H = 10:
        # about 300k casadi instructions inline); compiled per-stage functions took 60 s to build and
        # acted no faster (measured 2026-12-04). compiled=True in mpc_kwargs overrides.
        self.mpc_kwargs = {"compiled": False, **dict(mpc_kwargs or {})}
        self.weight_decay = float(weight_decay)
        spec = MLPValue(int(observation_space.shape[0]), tuple(self.net_arch), activation_name(activation_fn))
        self.value = ValueNetwork(spec)
        self.value_target = copy.deepcopy(self.value)
        self.value_target.requires_grad_(False)
        problem = ValueMPCProblem(
            dynamics_model,
            spec.input_dim,
            action_space.low,
            action_space.high,
            spec,
            horizon=self.horizon,
            control_weight=np.asarray(control_weight, np.float64),
            discount=self.gamma,
            running_cost=self.running_cost,
            stabilizing_weights=None if stabilizing_weights is None else np.asarray(stabilizing_weights),
        )
        self.mpc = MPCLayer(problem, **self.mpc_kwargs)
        self.acting = {"train": ActingContext(), "predict": ActingContext()}
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]
            self.value.parameters(),
            lr=lr_schedule(1),
            weight_decay=self.weight_decay,
            **self.optimizer_kwargs,
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dynamics_model=self.dynamics_model,
            horizon=self.horizon,
            control_weight=self.control_weight,
            gamma=self.gamma,
            running_cost=self.running_cost,
            stabilizing_weights=self.stabilizing_weights,
            net_arch=self.net_arch,
            activation_fn=self.activation_fn,
            mpc_kwargs=self.mpc_kwargs,
            weight_decay=self.weight_decay,
        )
        return data

    def actor_params(self, batch: int) -> np.ndarray:
        """``(batch, n_params)``: the target network's weights, the actor's NLP parameters."""
        weights = self.value_target.flat_parameters()
        bound = self.mpc.ocp.param_high[0]
        if not np.all(np.isfinite(weights)) or np.abs(weights).max() > bound:
            raise ValueError(
                f"DMPC: the value network's weights left the finite range the MPC accepts "
                f"(|w| <= {bound:g}); lower the learning rate or raise weight_decay"
            )
        return np.tile(weights, (batch, 1))

    def control_cost(self, scaled_actions: th.Tensor) -> th.Tensor:
        """``(batch,)``: ``1/2 u'Ru dt`` of actions stored in SB3's ``[-1, 1]`` scale (the path cost's control
        part over one step, Eq. 4), with ``u`` in environment units as the OCP sees it."""
        ocp = self.mpc.ocp
        assert isinstance(ocp, ValueMPCProblem)
        low = th.as_tensor(ocp.u_low, dtype=scaled_actions.dtype, device=scaled_actions.device)
        high = th.as_tensor(ocp.u_high, dtype=scaled_actions.dtype, device=scaled_actions.device)
        u = low + 0.5 * (scaled_actions + 1.0) * (high - low)
        weight = th.as_tensor(ocp.control_weight, dtype=u.dtype, device=u.device)
        return 0.5 * ocp.dt * (weight * u**2).sum(-1)

    def act(self, obs: th.Tensor, context: str = "predict") -> tuple[np.ndarray, np.ndarray]:
        """MPC actions ``(n_envs, nu)`` in environment units and failure flags ``(n_envs,)``."""
        states = obs.detach().double().cpu().numpy().reshape(len(obs), -1)
        actions, failed, _ = self.acting[context].act(self.mpc, states, self.actor_params(len(states)))
        return actions, failed

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        assert isinstance(observation, th.Tensor), "DMPC takes flat Box observations"
        actions, _ = self.act(observation, "predict")
        return th.as_tensor(actions, dtype=th.float32, device=self.device)

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic)

    def set_training_mode(self, mode: bool) -> None:
        self.value.train(mode)
        self.training = mode


MlpPolicy = DMPCPolicy
