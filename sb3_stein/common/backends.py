"""One formula, three array libraries: the physics of an environment is written once.

An environment's ``env.step`` runs on numpy, its dynamics model (the shared contract) on torch,
and its optimal control problem on casadi symbols. Writing the same ODE three times invites three
different bugs, so the ODEs take a :class:`Backend` and use only its functions and plain
arithmetic::

    def cartpole_ode(x, u, be):
        pos, theta, vel, omega = be.split(x)
        ...
        return be.stack([vel, omega, acc, alpha])

and are then called with :data:`NUMPY` (``x`` of shape ``(..., n)``), :data:`TORCH` (``(..., n)``) or
:data:`CASADI` (column vectors ``(n, 1)`` of ``casadi.SX``/``MX``). casadi is imported on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th

__all__ = ["CASADI", "NUMPY", "TORCH", "Backend", "rk4_step", "to_float64"]


@dataclass(frozen=True)
class Backend:
    """The few operations an ODE needs, for one array library.

    :param name: ``"numpy"``, ``"torch"`` or ``"casadi"``.
    :param split: vector ``(..., n)`` -> list of its ``n`` components ``(...)``.
    :param stack: list of ``n`` components -> vector ``(..., n)``.
    """

    name: str
    split: Callable[[Any], list[Any]]
    stack: Callable[[Sequence[Any]], Any]
    sin: Callable[[Any], Any]
    cos: Callable[[Any], Any]
    sqrt: Callable[[Any], Any]


def _np_split(x: Any) -> list[Any]:
    return [x[..., i] for i in range(x.shape[-1])]


def _np_stack(parts: Sequence[Any]) -> Any:
    return np.stack(np.broadcast_arrays(*parts), axis=-1)


def _th_stack(parts: Sequence[Any]) -> Any:
    return th.stack(th.broadcast_tensors(*parts), dim=-1)


def _ca() -> Any:
    import casadi

    return casadi


def _ca_split(x: Any) -> list[Any]:
    return [x[i] for i in range(x.shape[0])]


def _ca_stack(parts: Sequence[Any]) -> Any:
    return _ca().vertcat(*parts)


NUMPY = Backend("numpy", _np_split, _np_stack, np.sin, np.cos, np.sqrt)
TORCH = Backend("torch", _np_split, _th_stack, th.sin, th.cos, th.sqrt)
CASADI = Backend(
    "casadi",
    _ca_split,
    _ca_stack,
    lambda v: _ca().sin(v),
    lambda v: _ca().cos(v),
    lambda v: _ca().sqrt(v),
)


def rk4_step(ode: Callable[[Any, Any, Backend], Any], x: Any, u: Any, dt: float, be: Backend) -> Any:
    """One classical Runge-Kutta step of ``x' = ode(x, u)`` with ``u`` held constant over ``dt``."""
    k1 = ode(x, u, be)
    k2 = ode(x + 0.5 * dt * k1, u, be)
    k3 = ode(x + 0.5 * dt * k2, u, be)
    k4 = ode(x + dt * k3, u, be)
    return x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def to_float64(x: th.Tensor) -> th.Tensor:
    """``x`` in float64 where its device has that dtype (not on Apple's MPS: there ``x`` as it is).

    For the termination rules of the dynamics models (``is_terminal``): the environments compare
    float64 numbers, and a float32 comparison would move the bound by its float32 rounding.
    """
    return x if x.device.type == "mps" else x.to(th.float64)
