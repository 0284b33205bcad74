"""Known dynamics of gymnasium's ``Pendulum-v1`` in ``torch`` (Q-STAC paper, §V-A: "the first version of
the pendulum task implemented in the Gym framework").

gymnasium 1.x ``PendulumEnv.step`` with state ``(theta, theta_dot)`` and observation
``(cos theta, sin theta, theta_dot)``::

    u = clip(u, -max_torque, max_torque)
    theta_dot' = clip(theta_dot + (3 g / (2 l) sin(theta) + 3 / (m l^2) u) dt, -max_speed, max_speed)
    theta' = theta + theta_dot' dt
    reward = -(angle_normalize(theta)^2 + 0.1 theta_dot^2 + 0.001 u^2)

Only ``cos theta`` and ``sin theta`` are observed (the environment's own ``theta`` is not wrapped); the
model advances them with the angle-addition formulas, which needs no ``atan2``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from sb3_stein.common.backends import Backend


class PendulumDynamics(nn.Module):
    """``forward(obs, action)``: ``(..., 3)`` observations and ``(..., 1)`` torques -> next observations.

    :param g: gravity (``gymnasium.make("Pendulum-v1", g=...)``, default 10).
    :param m: mass (1).
    :param l: length (1).
    :param dt: time step (0.05).
    :param max_speed: speed clip (8).
    :param max_torque: torque clip (2).
    """

    obs_dim: int = 3
    act_dim: int = 1

    def __init__(
        self,
        g: float = 10.0,
        m: float = 1.0,
        l: float = 1.0,  # noqa: E741 - gymnasium's name
        dt: float = 0.05,
        max_speed: float = 8.0,
        max_torque: float = 2.0,
    ) -> None:
        super().__init__()
        self.g, self.m, self.l, self.dt = float(g), float(m), float(l), float(dt)
        self.max_speed, self.max_torque = float(max_speed), float(max_torque)
        # theta'' = gravity_rate sin(theta) + torque_rate u: the one place the pendulum's physics is written;
        # forward() takes one Euler step of it, continuous_dynamics() gives it to DMPC's OCP.
        self._gravity_rate = 3.0 * self.g / (2.0 * self.l)
        self._torque_rate = 3.0 / (self.m * self.l**2)
        self._gravity_step = self._gravity_rate * self.dt
        self._torque_step = self._torque_rate * self.dt

    @classmethod
    def from_env(cls, env: Any = None) -> PendulumDynamics:
        """The model with ``env``'s physical parameters (gymnasium's defaults without an env)."""
        if env is None:
            return cls()
        env = getattr(env, "unwrapped", env)
        names = ("g", "m", "l", "dt", "max_speed", "max_torque")
        return cls(**{name: getattr(env, name) for name in names if hasattr(env, name)})

    def extra_repr(self) -> str:
        return f"g={self.g}, m={self.m}, l={self.l}, dt={self.dt}"

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        # theta enters only through sin(theta) (observed) and theta' = theta + delta, whose cosine and
        # sine follow from the angle-addition formulas: no atan2, few operations (a planner calls
        # this H times per SVGD step and differentiates through it).
        cos, sin, speed = obs.unbind(-1)
        u = action.squeeze(-1).clamp(-self.max_torque, self.max_torque)
        # add(..., alpha=k): the scalar factor rides along with the addition (fewer operations).
        speed = speed.add(sin, alpha=self._gravity_step).add(u, alpha=self._torque_step)
        speed = speed.clamp(-self.max_speed, self.max_speed)
        delta = speed * self.dt
        cos_delta, sin_delta = torch.cos(delta), torch.sin(delta)
        return torch.stack(
            [cos * cos_delta - sin * sin_delta, sin * cos_delta + cos * sin_delta, speed], dim=-1
        )

    def continuous_dynamics(self, x: Any, u: Any, be: Backend) -> Any:
        """Time derivative of the observation ``(cos, sin, theta')`` under torque ``u``: the continuous,
        control-affine pendulum ``theta'' = 3 g / (2 l) sin + 3 / (m l^2) u`` that DMPC's running cost
        needs (:mod:`sb3_stein.common.control_affine`). gymnasium steps it by semi-implicit Euler and clips
        the speed to ``max_speed`` (:meth:`forward` does the same); DMPC's OCP integrates this ODE by RK4
        without the clip, a nominal model that differs from ``env.step`` by the integrator (up to 0.064 per
        step in the observation for speeds within 4 rad/s, ``tests/test_dynamics.py``).

        :param x: ``(..., 3)`` for numpy and torch, a ``(3, 1)`` casadi column.
        :param u: torque ``(..., 1)`` or a ``(1, 1)`` casadi column, not clipped here.
        :param be: the array library (:mod:`sb3_stein.common.backends`).
        """
        cos, sin, speed = be.split(x)
        torque = be.split(u)[0]
        accel = self._gravity_rate * sin + self._torque_rate * torque
        return be.stack([-sin * speed, cos * speed, accel])

    def reward(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """gymnasium's reward of the transition (it depends on the state before the step)."""
        del next_obs
        theta = torch.atan2(obs[..., 1], obs[..., 0])  # already in [-pi, pi]: angle_normalize is the identity
        u = action[..., 0].clamp(-self.max_torque, self.max_torque)
        return -(theta**2 + 0.1 * obs[..., 2] ** 2 + 0.001 * u**2)


#: MPQ's biased pendulum (Table 1): the planner's mass and length are drawn from U[0.9, 1.5] each,
#: against the true system's m = l = 1 (gymnasium's Pendulum-v1).
BIASED_RANGE = (0.9, 1.5)


def biased_pendulum_model(env: Any = None, seed: int = 0) -> PendulumDynamics:
    """The pendulum model MPQ plans with (Table 1): ``m`` and ``l`` drawn once from ``U[0.9, 1.5]``.

    The paper gives the distribution, not how often it is sampled; we draw one model per factory call
    with a fixed ``seed`` (the default 0 gives ``m = 1.28``, ``l = 1.06``), so that a run, its saved model
    and a reload plan with the same biased parameters. Everything else (``g``, ``dt``, the clips) comes
    from ``env`` as for :class:`PendulumDynamics` (the true system's values).

    :param env: the true environment (or ``None``: gymnasium's defaults).
    :param seed: seed of the draw.
    """
    true = PendulumDynamics.from_env(env)
    rng = np.random.default_rng(seed)
    m, length = rng.uniform(*BIASED_RANGE, size=2)
    return PendulumDynamics(
        g=true.g,
        m=float(m),
        l=float(length),
        dt=true.dt,
        max_speed=true.max_speed,
        max_torque=true.max_torque,
    )
