"""Parameterized optimal control problems (OCPs): what the MPC layer solves.

The lecture behind SAC-ZOP/FOP (shared/papers/001_fba01a676f0f8ac9.txt, slide "Reminder:
Parameterized OCP") writes the MPC as

    min_z  Vbar_phi(x_N) + sum_{k=0}^{N-1} l_phi(x_k, u_k)
    s.t.   x_0 = s,   x_{k+1} = f(x_k, u_k),   0 <= h(x_k, u_k),   0 <= h~(x_N)

with ``z = (x_0, u_0, ..., x_{N-1}, u_{N-1}, x_N)``. Here the constraints ``h`` are boxes: controls
``u_low <= u_k <= u_high`` for every stage and, optionally, states ``x_low <= x_k <= x_high`` for
``k = 1..N`` (not ``x_0``: it is the measured state). Costs depend on a per-stage parameter vector
``p_k`` (``k = 0..N``, the terminal cost gets ``p_N``); the MPC layer
(:class:`sb3_stein.common.mpc.MPCLayer`) maps the policy's parameters ``phi`` to the ``p_k``
through the lecture's two interfaces ("Controller Comparison"): *global* (one ``p`` shared by all
stages) or *stage* (an independent ``p_k`` per stage, ``(N + 1) * n_p`` numbers).

A subclass sets the class/instance attributes below and writes :meth:`dynamics`,
:meth:`stage_cost` and :meth:`terminal_cost` with casadi symbols (use
:data:`sb3_stein.common.backends.CASADI` so the same ODE serves the environment and its torch
model). An OCP must stay a plain, picklable Python object (numbers and numpy arrays): it travels
inside a saved model's ``policy_kwargs``; the casadi solver built from it never does.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch as th

__all__ = ["OptimalControlProblem"]


class OptimalControlProblem:
    """Base class of a parameterized OCP (see the module docstring).

    Attributes a subclass must set (class attributes or in ``__init__``):

    :ivar state_dim: ``nx``, the MPC's state size.
    :ivar control_dim: ``nu``, the size of one control (the environment's action size).
    :ivar horizon: ``N``, the number of control intervals.
    :ivar dt: the length of one interval in seconds (information; the dynamics are discrete).
    :ivar u_low: ``(nu,)`` lower control bounds, in environment units.
    :ivar u_high: ``(nu,)`` upper control bounds.
    :ivar x_low: ``(nx,)`` lower state bounds on ``x_1..x_N`` (``-inf`` for a free coordinate), or
        ``None`` for no state constraints.
    :ivar x_high: ``(nx,)`` upper state bounds, or ``None``.
    :ivar param_names: names of the ``n_p`` entries of one stage's parameter vector ``p_k``.
    :ivar param_low: ``(n_p,)`` lower bounds of the learnable parameters (the policy's Box).
    :ivar param_high: ``(n_p,)`` upper bounds.
    :ivar param_default: ``(n_p,)`` the hand-tuned values (what a plain MPC would use).
    """

    state_dim: int
    control_dim: int
    horizon: int
    dt: float
    u_low: np.ndarray
    u_high: np.ndarray
    x_low: np.ndarray | None = None
    x_high: np.ndarray | None = None
    param_names: tuple[str, ...]
    param_low: np.ndarray
    param_high: np.ndarray
    param_default: np.ndarray
    #: Observation size of the environment this OCP is meant for (``None``: ``state_dim``).
    obs_dim: ClassVar[int | None] = None
    #: Whether :class:`~sb3_stein.common.mpc.MPCLayer` builds this OCP's NLP from per-stage casadi
    #: functions by default (its ``stage_functions`` parameter): worth it when one stage's
    #: derivatives are large, as the chain's.
    stage_functions: ClassVar[bool] = False
    #: Per-stage discount of the objective: stage ``k``'s cost is weighted by ``discount ** k`` and the
    #: terminal cost by ``discount ** N`` (DMPC's Eq. 10); 1 (the lecture's OCPs): undiscounted.
    discount: float = 1.0

    # ------------------------------------------------------------------ symbolic problem

    def dynamics(self, x: Any, u: Any) -> Any:
        """The MPC's discrete-time model ``x_{k+1} = f(x_k, u_k)`` (casadi column vectors)."""
        raise NotImplementedError

    def stage_cost(self, x: Any, u: Any, p: Any) -> Any:
        """``l_p(x_k, u_k)``: a casadi scalar."""
        raise NotImplementedError

    def terminal_cost(self, x: Any, p: Any) -> Any:
        """``Vbar_p(x_N)``: a casadi scalar."""
        raise NotImplementedError

    # ------------------------------------------------------------------ observations

    def state_from_obs(self, obs: th.Tensor) -> th.Tensor:
        """The MPC's initial state ``s`` ``(..., nx)`` from environment observations ``(..., obs_dim)``.

        Differentiable (the MPC layer's ``d u0 / d s`` flows back to the observation through it).
        The default is the identity; e.g. the wind maze drops the wind the MPC cannot see.
        """
        return obs

    def state_from_obs_numpy(self, obs: np.ndarray) -> np.ndarray:
        """:meth:`state_from_obs` on numpy arrays."""
        return self.state_from_obs(th.as_tensor(np.asarray(obs, dtype=np.float64))).numpy()

    # ------------------------------------------------------------------ constraints

    def violation_bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The state set whose exit counts as a training violation: ``(low, high)`` of shape
        ``(nx,)``, or ``None``. Defaults to the hard bounds ``(x_low, x_high)``; an OCP that writes a
        constraint as a soft penalty (e.g. the cart-pole's track) returns that constraint here."""
        if self.x_low is None or self.x_high is None:
            return None
        return np.asarray(self.x_low, dtype=np.float64), np.asarray(self.x_high, dtype=np.float64)

    def action_violation(self, actions: np.ndarray, tol: float = 1e-6) -> np.ndarray:
        """``(batch,)``: which actions, *as chosen* (before the environment clips them), lie
        outside ``[u_low, u_high]`` (``tol`` allows for round-off)."""
        actions = np.asarray(actions, dtype=np.float64).reshape(-1, self.control_dim)
        return np.any((actions < self.u_low - tol) | (actions > self.u_high + tol), axis=-1)

    def state_violation(self, states: np.ndarray, tol: float = 1e-6) -> np.ndarray:
        """``(batch,)``: which MPC states (use :meth:`state_from_obs_numpy`) lie outside
        :meth:`violation_bounds`."""
        states = np.asarray(states, dtype=np.float64).reshape(-1, self.state_dim)
        bounds = self.violation_bounds()
        if bounds is None:
            return np.zeros(len(states), dtype=bool)
        low, high = bounds
        return np.any((states < low - tol) | (states > high + tol), axis=-1)

    def constraint_violation(self, states: np.ndarray, actions: np.ndarray, tol: float = 1e-6) -> np.ndarray:
        """Which ``(state, action)`` rows leave the OCP's constraint set (the lecture's "Training
        Violations"): :meth:`action_violation` or :meth:`state_violation`.

        :param states: ``(batch, nx)`` MPC states.
        :param actions: ``(batch, nu)`` actions as chosen, before the environment clips them.
        :param tol: slack allowed for round-off.
        :return: ``(batch,)`` booleans.
        """
        return self.action_violation(actions, tol) | self.state_violation(states, tol)

    # ------------------------------------------------------------------ checks

    def validate(self) -> None:
        """Check the attributes' shapes and bounds (the MPC layer calls this before building).

        :raises ValueError: naming the attribute and what is wrong.
        """
        name = type(self).__name__
        for attr in ("state_dim", "control_dim", "horizon"):
            value = getattr(self, attr, None)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}.{attr} must be an integer >= 1, got {value!r}")
        nu, nx = self.control_dim, self.state_dim

        def vector(attr: str, size: int) -> np.ndarray:
            value = getattr(self, attr, None)
            if value is None:
                raise ValueError(f"{name}.{attr} is missing; it must be an array of {size} numbers")
            array = np.asarray(value, dtype=np.float64)
            if array.shape != (size,):
                raise ValueError(f"{name}.{attr} must have shape ({size},), got {array.shape}")
            if np.isnan(array).any():
                raise ValueError(f"{name}.{attr} contains NaN: {array}")
            return array

        u_low, u_high = vector("u_low", nu), vector("u_high", nu)
        if not (np.isfinite(u_low).all() and np.isfinite(u_high).all()) or np.any(u_low >= u_high):
            raise ValueError(f"{name}: control bounds need finite u_low < u_high, got {u_low}, {u_high}")
        if (self.x_low is None) != (self.x_high is None):
            raise ValueError(f"{name}: give both x_low and x_high, or neither")
        if self.x_low is not None:
            x_low, x_high = vector("x_low", nx), vector("x_high", nx)
            if np.any(x_low >= x_high):
                raise ValueError(f"{name}: state bounds need x_low < x_high, got {x_low}, {x_high}")
        names = tuple(getattr(self, "param_names", ()))
        n_p = len(names)
        if n_p == 0:
            raise ValueError(f"{name}.param_names is empty: the OCP has no learnable parameter")
        p_low, p_high = vector("param_low", n_p), vector("param_high", n_p)
        default = vector("param_default", n_p)
        if not (np.isfinite(p_low).all() and np.isfinite(p_high).all()) or np.any(p_low >= p_high):
            raise ValueError(
                f"{name}: the learnable parameter Box needs finite param_low < param_high, got "
                f"{dict(zip(names, zip(p_low, p_high)))}"
            )
        if np.any(default < p_low) or np.any(default > p_high):
            raise ValueError(f"{name}.param_default {default} lies outside [param_low, param_high]")
        discount = getattr(self, "discount", 1.0)
        if isinstance(discount, bool) or not (isinstance(discount, (int, float)) and 0 < discount <= 1):
            raise ValueError(f"{name}.discount must be a number in (0, 1], got {discount!r}")
        # From here on every consumer may rely on float64 arrays (a subclass may have set lists).
        self.u_low, self.u_high = u_low, u_high
        self.param_low, self.param_high, self.param_default = p_low, p_high, default
        if self.x_low is not None and self.x_high is not None:
            self.x_low = np.asarray(self.x_low, dtype=np.float64)
            self.x_high = np.asarray(self.x_high, dtype=np.float64)

    @property
    def n_params(self) -> int:
        """``n_p``: size of one stage's parameter vector."""
        return len(self.param_names)


# ----------------------------------------------------------------------------- registry

# env id -> factory(env | None) -> OptimalControlProblem, or its "module:attribute" import path.
_REGISTRY: dict[str, Any] = {
    "CartPoleSwingUp-v0": "sb3_stein.envs.cartpole_swingup:CartPoleSwingUpOCP.from_env",
    "PointMassWindMaze-v0": "sb3_stein.envs.windmaze:WindMazeOCP.from_env",
    "Chain-v0": "sb3_stein.envs.chain:ChainOCP.from_env",
}


def register_ocp(env_id: str, factory: Any, overwrite: bool = False) -> None:
    """Make ``ocp="auto"`` find an OCP for ``env_id``.

    :param env_id: the gymnasium id.
    :param factory: called with the unwrapped environment (or ``None``) and returning an
        :class:`OptimalControlProblem`; or its import path ``"package.module:attribute"``.
    :param overwrite: replace an existing registration (otherwise that is an error).
    """
    from sb3_stein.common.dynamics import register_factory

    register_factory(_REGISTRY, env_id, factory, overwrite, "an OCP")


def registered_ocps() -> list[str]:
    """The environment ids with a registered OCP."""
    return sorted(_REGISTRY)


#: What ``ocp`` may be, for error messages.
ALLOWED_OCPS = (
    "Allowed: 'auto', an OptimalControlProblem instance, or an import path 'package.module:attribute' to "
    "an instance, an OptimalControlProblem subclass (built by its from_env(env) classmethod, else with no "
    "arguments) or a factory f(env) -> OptimalControlProblem."
)


def resolve_ocp(spec: Any, env: Any, owner: str) -> OptimalControlProblem:
    """``ocp`` as an algorithm receives it (``"auto"``, an instance, or an import path) -> the OCP.

    Import paths and registry entries are resolved as dynamics models are
    (:func:`sb3_stein.common.dynamics.build_from_object`): an instance as given, a subclass through
    its ``from_env(env)`` (else without arguments), a factory with the environment (or ``None``).

    :raises ValueError: when ``"auto"`` finds no registration for the environment's id, naming
        the registered ids and how to pass one; when an import path or a registered factory does not
        give an :class:`OptimalControlProblem`, naming ``ocp``, the path and what is allowed.
    :raises TypeError: when ``spec`` is neither ``"auto"``, an OCP nor a string.
    """
    from sb3_stein.common.dynamics import build_from_object, env_id_of, import_object, unwrapped_env

    if isinstance(spec, OptimalControlProblem):
        ocp = spec
    elif spec == "auto":
        env_id = env_id_of(env) if env is not None else None
        if env_id is None or env_id not in _REGISTRY:
            raise ValueError(
                f"{owner}: no OCP is registered for environment {env_id!r}. Registered ids: "
                f"{registered_ocps()}. Pass ocp=<sb3_stein.common.ocp.OptimalControlProblem instance> or an "
                "import path 'package.module:Factory', or call sb3_stein.register_ocp(env_id, factory) first."
            )
        entry = _REGISTRY[env_id]
        what = f"{owner}: the OCP registered for {env_id!r} ({entry!r})"
        factory = import_object(entry, what) if isinstance(entry, str) else entry
        ocp = build_from_object(
            factory, unwrapped_env(env), what, OptimalControlProblem, "an OptimalControlProblem", ALLOWED_OCPS
        )
    elif isinstance(spec, str):
        what = f"{owner}: ocp={spec!r}"
        ocp = build_from_object(
            import_object(spec, what),
            unwrapped_env(env),
            what,
            OptimalControlProblem,
            "an OptimalControlProblem",
            ALLOWED_OCPS,
        )
    else:
        raise TypeError(
            f"{owner}: ocp must be 'auto', an OptimalControlProblem or an import path string, got {spec!r}"
        )
    ocp.validate()
    return ocp
