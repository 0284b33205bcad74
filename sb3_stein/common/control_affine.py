"""The control-affine form ``dx = (f(t, x) + g(t, x) u) dt`` of a dynamics model (DESIGN.md).

DMPC's running cost (shared/papers/004_e1bdd2b42101da57.txt, Eq. 14) needs the drift ``f`` and the
input matrix ``g`` of the continuous-time dynamics separately. A dynamics model provides them in one
of two ways:

* one method ``continuous_dynamics(x, u, be)`` (the time derivative, as the environments of this
  package write their physics once for numpy, torch and casadi, :mod:`sb3_stein.common.backends`):
  since it is affine in ``u``, ``f = ode(x, 0)`` and the ``i``-th column of ``g`` is
  ``ode(x, e_i) - ode(x, 0)``, exactly. Preferred when present; the affinity is checked numerically
  when the form is built; or
* methods ``f(t, x)`` (``(nx,)`` drift) and ``g(t, x)`` (``(nx, nu)`` input matrix), which must accept
  a numpy vector and a casadi column (returning an ``SX``/``MX`` matrix for it).

Time enters the package's environments as a state (the time to go), so ``t`` is passed as 0 and a
time-varying model reads time from ``x``. :func:`control_affine_form` returns casadi-ready callables;
anything else fails with an error naming ``dynamics_model``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sb3_stein.common.backends import CASADI, NUMPY, Backend

__all__ = ["ControlAffineForm", "control_affine_form"]


@dataclass(frozen=True)
class ControlAffineForm:
    """``f`` and ``g`` of a model, on casadi symbols (column vectors).

    :ivar state_dim: ``nx``.
    :ivar control_dim: ``nu``.
    :ivar parts: ``x (nx, 1) -> (f (nx, 1), g (nx, nu))``, ``f`` evaluated once.
    :ivar ode: ``(x, u) -> dx/dt``: the model's own ODE where it has one (one evaluation, not the
        ``nu + 1`` that ``f + g u`` would take), else ``f + g u``.
    """

    state_dim: int
    control_dim: int
    parts: Callable[[Any], tuple[Any, Any]]
    ode: Callable[[Any, Any], Any]


def _numpy_parts(model: Any, x: np.ndarray, nu: int) -> tuple[np.ndarray, np.ndarray]:
    """``f (nx,)`` and ``g (nx, nu)`` of ``model`` at one numpy state."""
    if not hasattr(model, "continuous_dynamics"):
        return np.asarray(model.f(0.0, x), np.float64), np.asarray(model.g(0.0, x), np.float64)
    drift = np.asarray(model.continuous_dynamics(x, np.zeros(nu), NUMPY), np.float64)
    columns = [
        np.asarray(model.continuous_dynamics(x, np.eye(nu)[i], NUMPY), np.float64) - drift for i in range(nu)
    ]
    return drift, np.stack(columns, axis=-1)


def control_affine_form(
    model: Any, state_dim: int, control_dim: int, rng: np.random.Generator | None = None, scale: float = 1.0
) -> ControlAffineForm:
    """The control-affine form of ``model`` (module docstring), checked at 8 random points.

    :param model: the dynamics model (``f`` and ``g``, or ``continuous_dynamics``).
    :param state_dim: ``nx``, the size of the state the form acts on (the observation).
    :param control_dim: ``nu``.
    :param rng: random points for the checks (default: seeded 0).
    :param scale: spread of the random states and controls of the check.
    :raises ValueError: naming ``dynamics_model`` when the model has neither form, returns the wrong
        shapes, or is not affine in the control.
    """
    owner = type(model).__name__
    if not (hasattr(model, "f") and hasattr(model, "g")) and not hasattr(model, "continuous_dynamics"):
        raise ValueError(
            f"dynamics_model: DMPC's running cost (Eq. 14) needs the control-affine form dx = (f + g u) dt, "
            f"but {owner} has neither continuous_dynamics(x, u, be) nor methods f(t, x) and g(t, x) "
            "(see sb3_stein.common.control_affine)"
        )
    rng = np.random.default_rng(0) if rng is None else rng
    for _ in range(8):
        x = scale * rng.normal(size=state_dim)
        u = scale * rng.normal(size=control_dim)
        try:
            drift, matrix = _numpy_parts(model, x, control_dim)
        except Exception as error:
            raise ValueError(
                f"dynamics_model: {owner}'s control-affine form failed on numpy: {error}"
            ) from error
        if drift.shape != (state_dim,) or matrix.shape != (state_dim, control_dim):
            raise ValueError(
                f"dynamics_model: {owner}'s control-affine form has f of shape {drift.shape} and g of shape "
                f"{matrix.shape}; expected ({state_dim},) and ({state_dim}, {control_dim})"
            )
        if hasattr(model, "continuous_dynamics"):
            full = np.asarray(model.continuous_dynamics(x, u, NUMPY), np.float64)
            affine = drift + matrix @ u
            if not np.allclose(full, affine, rtol=1e-8, atol=1e-8 * (1 + np.abs(full).max())):
                raise ValueError(
                    f"dynamics_model: {owner}.continuous_dynamics is not affine in the control "
                    f"(largest deviation {np.abs(full - affine).max():.3g}); DMPC needs dx = (f + g u) dt"
                )
    be: Backend = CASADI

    if not hasattr(model, "continuous_dynamics"):

        def parts(x: Any) -> tuple[Any, Any]:
            return model.f(0.0, x), model.g(0.0, x)

        def ode(x: Any, u: Any) -> Any:
            drift, matrix = parts(x)
            return drift + matrix @ u

    else:
        import casadi as ca

        def parts(x: Any) -> tuple[Any, Any]:
            drift = model.continuous_dynamics(x, ca.DM.zeros(control_dim), be)
            eye = ca.DM.eye(control_dim)
            matrix = ca.horzcat(
                *[model.continuous_dynamics(x, eye[:, i], be) - drift for i in range(control_dim)]
            )
            return drift, matrix

        def ode(x: Any, u: Any) -> Any:
            return model.continuous_dynamics(x, u, be)

    return ControlAffineForm(state_dim, control_dim, parts, ode)
