"""The chain of masses connected by springs (the leap-c lecture's *Chain* environment).

The lecture behind SAC-ZOP/FOP (shared/papers/001_fba01a676f0f8ac9.txt, "Current Environments")
describes it as "stabilizing a chain of interconnected springs; goal: achieve target position while
minimizing oscillations". Everything else follows the lecture's reference code, leap-c (BSD-2,
``leap_c/examples/chain``: ``env.py``, ``dynamics.py``, ``planner.py``, ``acados_ocp.py``,
``utils/resting_chain_solver.py``), which implements the chain of Wirsching, Bock and Diehl, "Fast NMPC
of a chain of masses connected by springs" (CACSD 2006) with an added damping term. This module is a
re-implementation from that description, not a copy.

Physics (:class:`ChainPhysics`; defaults from leap-c)
----------------------------------------------------

``n_mass = 5`` point masses in 3-D, numbered 1..5, connected in a row by ``n_mass - 1`` springs:

* mass 1 is fixed at the origin;
* the velocity of the last mass is the control ``u`` (3-D, m/s, clipped to ``[-vmax, vmax]``,
  ``vmax = 1``): ``p_n' = u``;
* each free mass ``k = 2..n-1`` (``m = 0.033`` kg) accelerates under gravity
  (``-9.81`` m/s^2 along ``z``) and the two links to its neighbours. A link from mass ``a`` to
  mass ``b = a + 1`` with ``d = p_b - p_a`` and ``dv = v_b - v_a`` pulls ``b`` back with the
  acceleration

      ``(D / m) (1 - L / |d|) d  +  C |dv| dv``      (component-wise ``|dv| dv``)

  and pushes ``a`` with the opposite one; stiffness ``D = 1`` N/m, rest length ``L = 0.033`` m,
  damping ``C = 0.1``. As in leap-c the damping term is quadratic in the relative velocity and,
  unlike the spring term, *not* divided by the mass (so ``C`` is in 1/m, an acceleration
  coefficient). The fixed mass has velocity 0, the last one velocity ``u``. leap-c's optional
  disturbance forces ``w`` (zero by default) are left out.

The ODE is written once (:meth:`ChainPhysics.ode`, with :mod:`sb3_stein.common.backends`) and
integrated with one classical RK4 step per ``dt = 0.05`` s (leap-c: ``integrate_erk4`` with the
environment's ``dt``), for :meth:`ChainEnv.step` (numpy, float64), :class:`ChainDynamics` (torch) and
:class:`ChainOCP` (casadi).

Observation, action, reward (leap-c ``ChainEnv``)
-------------------------------------------------

* observation (``float32``, ``6 n_mass - 9 = 21`` numbers): the positions of masses ``2..n``
  then the velocities of masses ``2..n-1``, each ``(x, y, z)``::

      [p2x p2y p2z, p3x p3y p3z, p4x p4y p4z, p5x p5y p5z, v2x v2y v2z, v3x v3y v3z, v4x v4y v4z]

  (the fixed mass and the controlled mass's velocity, which is the action, are not part of it);
* action: velocity of the last mass, ``(3,)`` in ``[-vmax, vmax]`` m/s. :meth:`ChainEnv.step`
  clips it to that box (our choice; leap-c integrates the action unclipped, but its agents never
  leave the box);
* reward of a step, on the state *after* it::

      r = 10 * ( -||p_n - p_ref||_1  -  0.1 ||(v_2, ..., v_{n-1})||_2 )

  with the target ``p_ref = ((n_mass - 1) L, 0, 0) = (0.132, 0, 0)`` m: the last mass should end at
  the chain's unstretched length along ``x``, while the free masses come to rest;
* no termination (leap-c: "the system never terminates"); the registered ``Chain-v0`` is truncated
  after 200 steps (10 s, leap-c's ``max_time``);
* ``info["is_success"]``: leap-c's success test ``||x - x_ref||_2 < 0.1`` against the resting
  chain ``x_ref`` at ``p_ref`` (leap-c reports it at truncation only; here every step, SB3's
  ``Monitor`` keeps the last).

Start and reference states: resting chains
------------------------------------------

A resting chain is the equilibrium with every velocity and the control zero and the last mass held at
a given point ``p_last``: the positions of the free masses where all accelerations vanish.
:func:`rest_state` finds it with a damped Newton iteration on those ``3 (n_mass - 2)`` equations
(the very ODE above, Jacobian by central differences) from the closed-form hanging chain with zero
rest length (a parabola, exact for ``L = 0``), to ``max |acceleration| <= 1e-10`` m/s^2 in a few
iterations; results are cached. (leap-c solves the same equations with IPOPT.)

* reset: leap-c's start distribution: ``p_last = R (cos(phi) sin(theta), sin(phi) sin(theta),
  cos(theta))`` with ``R = (n_mass - 1) L``, ``phi ~ U(pi/6, pi/3)``, ``theta ~ U(-pi/4, pi/4)``
  (the last mass starts above the anchor, in front or behind), and the resting chain for it;
* ``x_ref``: the resting chain for ``p_ref`` (:attr:`ChainEnv.x_ref`, the OCP's reference).

The parameterized OCP (:class:`ChainOCP`, leap-c ``acados_ocp.py`` / ``planner.py``)
-------------------------------------------------------------------------------------

``N = 20`` intervals over ``T = 0.25`` s (leap-c's planner defaults, so the MPC's interval is
``0.0125`` s, a quarter of the environment's step), the RK4 model above, control bounds
``|u_i| <= vmax``, no state constraints, and the weighted least-squares cost

    ``l(x, u) = dt_mpc * 0.5 * (||q * (x - x_ref)||^2 + ||r * u||^2)``,
    ``V(x_N) = 0.5 ||q * (x_N - x_ref)||^2``

(``*`` element-wise). The factor ``dt_mpc`` on the stage cost reproduces acados' default
``cost_scaling`` (interval length for the stages, 1 for the terminal cost) under which leap-c's
``EXTERNAL`` costs are evaluated. The learnable parameters of one stage are the lecture's table:
``q`` (square roots of the 21 state residual weights, default 1, bounds (0.5, 1.5)) and ``r``
(square roots of the 3 action residual weights, default 0.1, bounds (0.05, 0.15)): 24 numbers.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import torch
from gymnasium import spaces
from torch import nn

from sb3_stein.common.backends import CASADI, NUMPY, TORCH, Backend, rk4_step
from sb3_stein.common.ocp import OptimalControlProblem

from .raster import blend, draw_segment, pixel_grid

__all__ = [
    "ChainDynamics",
    "ChainEnv",
    "ChainOCP",
    "ChainPhysics",
    "last_mass_target",
    "rest_state",
]

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]

#: Environment time step in seconds (leap-c ``ChainEnvConfig.dt``).
DT = 0.05
#: Bound of each component of the last mass's velocity, m/s (leap-c ``ChainEnvConfig.vmax``).
VMAX = 1.0
#: Episode length in steps of the registered ``Chain-v0``: leap-c's ``max_time = 10`` s at ``DT``.
MAX_EPISODE_STEPS = 200
#: Range of the azimuth ``phi`` of the last mass's start position, rad (leap-c ``init_phi_range``).
START_PHI_RANGE = (np.pi / 6, np.pi / 3)
#: Range of the polar angle ``theta`` of the last mass's start position, rad (leap-c
#: ``init_theta_range``).
START_THETA_RANGE = (-np.pi / 4, np.pi / 4)
#: Reward scale and velocity weight: ``r = 10 (-||.||_1 - 0.1 ||.||_2)`` (leap-c ``ChainEnv.step``).
REWARD_SCALE, VELOCITY_WEIGHT = 10.0, 0.1
#: leap-c's success radius on ``||x - x_ref||_2``.
SUCCESS_RADIUS = 0.1
#: Observation-space bounds (our choice; leap-c's ``+-(n_mass - 1) L`` position box excludes its own
#: resting chains, which hang about 0.5 m below the anchor). A position is at most the last mass's
#: travel in 10 s (``vmax * 10 * sqrt(3)`` < 18 m) plus a stretched chain away from the anchor; the
#: velocity bound is generous against the springs' whipping. Neither is enforced by the dynamics.
POSITION_BOUND, VELOCITY_BOUND = 25.0, 50.0


# ----------------------------------------------------------------------------- physics


@dataclass(frozen=True)
class ChainPhysics:
    """Physical constants of the chain and its ODE (module docstring for the equations).

    Hashable and picklable (plain numbers only). Defaults are leap-c's (``ChainDynamicsParams``);
    leap-c allows per-link values, which are all equal by default, so one number each suffices here.

    :param n_mass: number of masses including the fixed first one and the controlled last one
        (leap-c: 5); at least 3, so that one mass is free.
    :param mass: mass of each free ball, kg (leap-c: 0.033).
    :param stiffness: spring constant ``D`` of each link, N/m (leap-c: 1.0).
    :param rest_length: rest length ``L`` of each link, m (leap-c: 0.033).
    :param damping: coefficient ``C`` of the quadratic damping acceleration ``C |dv| dv``, 1/m
        (leap-c: 0.1; not divided by the mass, as in leap-c).
    :param gravity: gravitational acceleration along ``-z``, m/s^2 (leap-c: 9.81).
    :raises ValueError: for ``n_mass < 3`` or a non-positive mass, stiffness or rest length, a negative
        damping or a non-finite value.
    """

    n_mass: int = 5
    mass: float = 0.033
    stiffness: float = 1.0
    rest_length: float = 0.033
    damping: float = 0.1
    gravity: float = 9.81

    def __post_init__(self) -> None:
        if isinstance(self.n_mass, bool) or not isinstance(self.n_mass, (int, np.integer)) or self.n_mass < 3:
            raise ValueError(
                f"n_mass must be an integer >= 3 (fixed, free and controlled masses), got {self.n_mass!r}"
            )
        values = {
            "mass": self.mass,
            "stiffness": self.stiffness,
            "rest_length": self.rest_length,
            "damping": self.damping,
            "gravity": self.gravity,
        }
        for name, value in values.items():
            if not np.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        for name in ("mass", "stiffness", "rest_length"):
            if values[name] <= 0:
                raise ValueError(f"{name} must be > 0, got {values[name]!r}")
        if self.damping < 0:
            raise ValueError(f"damping must be >= 0, got {self.damping!r}")
        # Normalise to plain Python numbers (hashing, pickling, casadi constants).
        object.__setattr__(self, "n_mass", int(self.n_mass))
        for name, value in values.items():
            object.__setattr__(self, name, float(value))

    @property
    def n_free(self) -> int:
        """Number of free masses (``n_mass - 2``), whose velocities are state."""
        return self.n_mass - 2

    @property
    def n_pos(self) -> int:
        """Number of masses with a position in the state (``n_mass - 1``: all but the fixed one)."""
        return self.n_mass - 1

    @property
    def state_dim(self) -> int:
        """State (= observation) size ``3 (n_mass - 1) + 3 (n_mass - 2)``."""
        return 3 * self.n_pos + 3 * self.n_free

    def ode(self, x: Any, u: Any, be: Backend) -> Any:
        """``x' = f(x, u)`` for any backend.

        :param x: states ``(..., state_dim)`` (numpy, torch) or an ``(state_dim, 1)`` casadi column,
            laid out as the observation (module docstring).
        :param u: velocities of the last mass ``(..., 3)`` in m/s (not clipped here).
        :param be: :data:`~sb3_stein.common.backends.NUMPY`, ``TORCH`` or ``CASADI``.
        :return: ``[v_2..v_{n-1}, u, a_2..a_{n-1}]`` in the state's layout.
        """
        c = be.split(x)
        uc = be.split(u)
        n_pos, n_free = self.n_pos, self.n_free
        pos = [c[3 * k : 3 * k + 3] for k in range(n_pos)]
        vel = [c[3 * n_pos + 3 * k : 3 * n_pos + 3 * k + 3] for k in range(n_free)]
        spring = self.stiffness / self.mass
        # Accelerations of the free masses, built up link by link (Python floats broadcast).
        acc: list[list[Any]] = [[0.0, 0.0, -self.gravity] for _ in range(n_free)]
        for i in range(n_pos):  # link i joins mass i+1 (left; 1 = the anchor) and mass i+2 (right)
            right_p = pos[i]
            d = list(right_p) if i == 0 else [right_p[j] - pos[i - 1][j] for j in range(3)]
            length = be.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
            stretch = spring * (1.0 - self.rest_length / length)
            right_v = uc if i == n_pos - 1 else vel[i]
            dv = list(right_v) if i == 0 else [right_v[j] - vel[i - 1][j] for j in range(3)]
            pull = [stretch * d[j] + self.damping * abs(dv[j]) * dv[j] for j in range(3)]
            if i < n_free:  # the right mass is free (not the controlled last one)
                acc[i] = [acc[i][j] - pull[j] for j in range(3)]
            if i > 0:  # the left mass is free (not the anchor)
                acc[i - 1] = [acc[i - 1][j] + pull[j] for j in range(3)]
        derivative = [*[v for vk in vel for v in vk], *uc, *[a for ak in acc for a in ak]]
        return be.stack(derivative)

    def state_from_positions(self, positions: npt.ArrayLike) -> FloatArray:
        """The state of masses at rest at ``positions`` ``(n_mass - 1, 3)`` (masses ``2..n``), m."""
        p = np.asarray(positions, dtype=np.float64).reshape(self.n_pos, 3)
        return np.concatenate([p.ravel(), np.zeros(3 * self.n_free)])


def last_mass_target(physics: ChainPhysics) -> FloatArray:
    """leap-c's target of the last mass: ``((n_mass - 1) L, 0, 0)`` m, the unstretched chain along ``x``."""
    return np.array([physics.n_pos * physics.rest_length, 0.0, 0.0])


def _free_accelerations(physics: ChainPhysics, free: FloatArray, p_last: FloatArray) -> FloatArray:
    """Accelerations ``(..., 3 n_free)`` of the free masses at positions ``free`` ``(..., 3 n_free)``,
    at rest, with the last mass held at ``p_last``."""
    batch = free.shape[:-1]
    x = np.concatenate(
        [free, np.broadcast_to(p_last, (*batch, 3)), np.zeros((*batch, 3 * physics.n_free))], axis=-1
    )
    xdot = physics.ode(x, np.zeros((*batch, 3)), NUMPY)
    return np.asarray(xdot[..., -3 * physics.n_free :], dtype=np.float64)


@functools.lru_cache(maxsize=256)
def _rest_state_cached(physics: ChainPhysics, p_last: tuple[float, float, float]) -> FloatArray:
    n_free = physics.n_free
    target = np.asarray(p_last, dtype=np.float64)
    # Initial guess: the exact resting chain for zero rest length, p_k = (k / n) p_last - (m g / 2D)
    # k (n - k) e_z for k = 1..n links from the anchor (linear springs: second differences balance
    # gravity). With L = 0.033 m against stretches of ~0.3 m it is close to the answer.
    n_links = physics.n_pos
    k = np.arange(1, n_links)[:, None]
    sag = physics.mass * physics.gravity / (2.0 * physics.stiffness) * k * (n_links - k)
    guess = k / n_links * target - sag * np.array([0.0, 0.0, 1.0])
    q = guess.ravel()
    residual = _free_accelerations(physics, q, target)
    step_size = 1e-6  # central differences: truncation ~1e-12, round-off ~1e-9 relative
    eye = np.eye(3 * n_free) * step_size
    for _ in range(100):
        if np.max(np.abs(residual)) <= 1e-10:
            return physics.state_from_positions(np.concatenate([q, target]))
        probes = _free_accelerations(physics, np.concatenate([q + eye, q - eye]), target)
        jacobian = ((probes[: n_free * 3] - probes[n_free * 3 :]) / (2 * step_size)).T
        try:
            delta = np.linalg.solve(jacobian, -residual)
        except np.linalg.LinAlgError:
            delta = np.linalg.lstsq(jacobian, -residual, rcond=None)[0]
        norm, alpha = np.linalg.norm(residual), 1.0
        while True:  # backtracking on the residual norm
            trial = q + alpha * delta
            trial_residual = _free_accelerations(physics, trial, target)
            if np.linalg.norm(trial_residual) < norm or alpha < 1e-6:
                break
            alpha *= 0.5
        q, residual = trial, trial_residual
    raise RuntimeError(
        f"rest_state: Newton did not converge for p_last={p_last} (max |acceleration| "
        f"{np.max(np.abs(residual)):.3g} m/s^2) with {physics}"
    )


def rest_state(physics: ChainPhysics, p_last: npt.ArrayLike) -> FloatArray:
    """The resting chain with its last mass held at ``p_last``: the state (observation layout,
    float64, velocities zero) where every free mass's acceleration vanishes for zero control.

    Damped Newton on the ``3 (n_mass - 2)`` acceleration equations (module docstring); converges to
    ``max |acceleration| <= 1e-10`` m/s^2 in a few iterations (well under a millisecond each). Results
    are cached per ``(physics, p_last)``; a fresh copy is returned.

    :param physics: the chain.
    :param p_last: position of the last mass, m, ``(3,)``.
    :raises RuntimeError: if the iteration fails (not observed for the start distribution).
    """
    point = np.asarray(p_last, dtype=np.float64).reshape(3)
    key = (float(point[0]), float(point[1]), float(point[2]))
    return _rest_state_cached(physics, key).copy()


# ----------------------------------------------------------------------------- environment


class ChainEnv(gym.Env[Float32Array, Float32Array]):
    """The leap-c chain of masses (module docstring for dynamics, reward and start states).

    :param n_mass: number of masses (leap-c: 5, giving the 21-D observation).
    :param mass: mass of each free ball, kg (leap-c: 0.033).
    :param stiffness: spring constant, N/m (leap-c: 1.0).
    :param rest_length: spring rest length, m (leap-c: 0.033); also sets the target
        ``p_ref = ((n_mass - 1) rest_length, 0, 0)`` and the start radius, as in leap-c.
    :param damping: quadratic damping coefficient, 1/m (leap-c: 0.1).
    :param gravity: gravitational acceleration, m/s^2 (leap-c: 9.81).
    :param dt: time step, s (leap-c: 0.05).
    :param vmax: bound of each action component, m/s (leap-c: 1.0).
    :param render_mode: ``None`` or ``"rgb_array"``.
    :param render_size: height of a frame in pixels (the frame has two square panels side by side).
    :raises ValueError: for a bad physical constant (see :class:`ChainPhysics`), ``dt <= 0``,
        ``vmax <= 0``, an unknown ``render_mode`` or ``render_size < 32``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        n_mass: int = 5,
        mass: float = 0.033,
        stiffness: float = 1.0,
        rest_length: float = 0.033,
        damping: float = 0.1,
        gravity: float = 9.81,
        dt: float = DT,
        vmax: float = VMAX,
        render_mode: str | None = None,
        render_size: int = 300,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if not (np.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a finite number > 0 (seconds), got {dt!r}")
        if not (np.isfinite(vmax) and vmax > 0):
            raise ValueError(f"vmax must be a finite number > 0 (m/s), got {vmax!r}")
        if int(render_size) < 32:
            raise ValueError(f"render_size must be at least 32 pixels, got {render_size!r}")
        self.physics = ChainPhysics(n_mass, mass, stiffness, rest_length, damping, gravity)
        self.dt, self.vmax = float(dt), float(vmax)
        self.render_mode, self.render_size = render_mode, int(render_size)
        nx = self.physics.state_dim
        self.n_pos_states = 3 * self.physics.n_pos
        high = np.concatenate(
            [np.full(self.n_pos_states, POSITION_BOUND), np.full(nx - self.n_pos_states, VELOCITY_BOUND)]
        ).astype(np.float32)
        self.observation_space = spaces.Box(-high, high, dtype=np.float32)
        self.action_space = spaces.Box(-self.vmax, self.vmax, shape=(3,), dtype=np.float32)
        #: Target of the last mass, m.
        self.p_ref = last_mass_target(self.physics)
        #: The resting chain with the last mass at ``p_ref`` (the OCP's reference), float64.
        self.x_ref = rest_state(self.physics, self.p_ref)
        self._state = self.x_ref.copy()

    # ------------------------------------------------------------------ models

    def dynamics_model(self) -> ChainDynamics:
        """A :class:`ChainDynamics` with this environment's constants."""
        p = self.physics
        return ChainDynamics(
            n_mass=p.n_mass,
            mass=p.mass,
            stiffness=p.stiffness,
            rest_length=p.rest_length,
            damping=p.damping,
            gravity=p.gravity,
            dt=self.dt,
            vmax=self.vmax,
        )

    @property
    def state(self) -> FloatArray:
        """A copy of the current float64 state (observation layout)."""
        return self._state.copy()

    def set_state(self, state: npt.ArrayLike) -> Float32Array:
        """Put the chain into ``state`` (observation layout, any float dtype) and return its observation.

        :raises ValueError: for a wrong size or a non-finite entry.
        """
        x = np.asarray(state, dtype=np.float64).reshape(-1)
        if x.shape != (self.physics.state_dim,) or not np.all(np.isfinite(x)):
            raise ValueError(f"state must be {self.physics.state_dim} finite numbers, got {state!r}")
        self._state = x.copy()
        return self._state.astype(np.float32)

    def reward_of(self, state: npt.ArrayLike) -> float:
        """leap-c's reward ``10 (-||p_n - p_ref||_1 - 0.1 ||(v_2..v_{n-1})||_2)`` of a state."""
        x = np.asarray(state, dtype=np.float64)
        p_last = x[self.n_pos_states - 3 : self.n_pos_states]
        distance = float(np.abs(p_last - self.p_ref).sum())
        speed = float(np.linalg.norm(x[self.n_pos_states :]))
        return REWARD_SCALE * (-distance - VELOCITY_WEIGHT * speed)

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Float32Array, dict[str, Any]]:
        """Start at rest with the last mass at a random point of leap-c's start region.

        ``options={"p_last": (x, y, z)}`` starts from the resting chain for that last-mass position
        instead (m).
        """
        super().reset(seed=seed)
        if options is not None and "p_last" in options:
            p_last = np.asarray(options["p_last"], dtype=np.float64).reshape(3)
        else:
            phi = self.np_random.uniform(*START_PHI_RANGE)
            theta = self.np_random.uniform(*START_THETA_RANGE)
            radius = self.physics.n_pos * self.physics.rest_length
            p_last = radius * np.array(
                [np.cos(phi) * np.sin(theta), np.sin(phi) * np.sin(theta), np.cos(theta)]
            )
        self._state = rest_state(self.physics, p_last)
        return self._state.astype(np.float32), self._info()

    def step(self, action: npt.ArrayLike) -> tuple[Float32Array, float, bool, bool, dict[str, Any]]:
        """One RK4 step of ``dt`` with the (clipped) last-mass velocity ``action``; never terminates."""
        u = np.clip(np.asarray(action, dtype=np.float64).reshape(3), -self.vmax, self.vmax)
        self._state = np.asarray(rk4_step(self.physics.ode, self._state, u, self.dt, NUMPY), dtype=np.float64)
        reward = self.reward_of(self._state)
        return self._state.astype(np.float32), reward, False, False, self._info()

    def _info(self) -> dict[str, Any]:
        p_last = self._state[self.n_pos_states - 3 : self.n_pos_states]
        return {
            "is_success": bool(np.linalg.norm(self._state - self.x_ref) < SUCCESS_RADIUS),
            "distance": float(np.abs(p_last - self.p_ref).sum()),
        }

    # ------------------------------------------------------------------ rendering

    def render(self) -> npt.NDArray[np.uint8] | None:  # type: ignore[override]
        """An ``(render_size, 2 render_size, 3)`` ``uint8`` frame: the chain seen from the front (``x``
        right, ``z`` up; left panel) and from the side (``y`` right, ``z`` up; right panel). Grey: the
        anchor; blue: free masses and springs; orange: the controlled mass; green: the target ``p_ref``;
        faint: the resting chain ``x_ref``. The view is 1.4 m wide, centred below the anchor."""
        if self.render_mode is None:
            gym.logger.warn('Call gymnasium.make("Chain-v0", render_mode="rgb_array") to render.')
            return None
        points = np.vstack([np.zeros(3), self._state[: self.n_pos_states].reshape(-1, 3)])
        reference = np.vstack([np.zeros(3), self.x_ref[: self.n_pos_states].reshape(-1, 3)])
        panels = [
            self._draw_panel(points[:, [axis, 2]], reference[:, [axis, 2]], self.p_ref[[axis, 2]])
            for axis in (0, 1)
        ]
        frame = np.concatenate(panels, axis=1)
        return np.clip(np.rint(frame), 0, 255).astype(np.uint8)

    def _draw_panel(self, points: FloatArray, reference: FloatArray, target: FloatArray) -> FloatArray:
        size, half_width = self.render_size, 0.7  # metres shown either side of the centre
        centre = np.array([0.0, -0.25])  # the chain hangs below its anchor
        xs, px = pixel_grid(size, half_width / 1.05)
        img = np.empty((size, size, 3), dtype=np.float64)
        img[:] = (250.0, 250.0, 250.0)
        grey, blue = np.array([90.0, 90.0, 90.0]), np.array([40.0, 90.0, 200.0])
        ground = np.array([-2.0, 0.0]) - centre, np.array([2.0, 0.0]) - centre
        draw_segment(img, xs, xs, ground[0], ground[1], 0.5 * px, np.array([215.0, 215.0, 215.0]), px)
        shifted_ref = reference - centre
        for a, b in itertools.pairwise(shifted_ref):
            draw_segment(img, xs, xs, a, b, 0.004, np.array([200.0, 225.0, 200.0]), px)
        tgt = target - centre
        draw_segment(img, xs, xs, tgt, tgt, 0.025, np.array([30.0, 170.0, 60.0]), px)
        shifted = points - centre
        for a, b in itertools.pairwise(shifted):
            draw_segment(img, xs, xs, a, b, 0.006, blue, px)
        for k, point in enumerate(shifted):
            color = grey if k == 0 else (np.array([235.0, 120.0, 20.0]) if k == len(shifted) - 1 else blue)
            draw_segment(img, xs, xs, point, point, 0.018, color, px)
        frame_edge = np.zeros((size, size))
        frame_edge[[0, -1], :] = frame_edge[:, [0, -1]] = 1.0
        blend(img, frame_edge, np.array([160.0, 160.0, 160.0]), slice(0, size), slice(0, size))
        return img


# ----------------------------------------------------------------------------- torch model


class ChainDynamics(nn.Module):
    """Known dynamics (and reward) of :class:`ChainEnv` in ``torch``.

    ``forward(obs, action)`` maps observations ``(..., 6 n_mass - 9)`` and last-mass velocities
    ``(..., 3)`` (m/s, environment units) to the next observation, as :meth:`ChainEnv.step` does:
    the action clipped to ``[-vmax, vmax]``, then one RK4 step of the shared ODE. Batched,
    differentiable, in the inputs' dtype and device.

    Parameters as for :class:`ChainEnv` (defaults: leap-c's).
    """

    #: Observation size for the default ``n_mass = 5`` (instances carry their own).
    obs_dim: int = 21
    #: Action size (the last mass's 3-D velocity).
    act_dim: int = 3
    p_ref: torch.Tensor

    def __init__(
        self,
        n_mass: int = 5,
        mass: float = 0.033,
        stiffness: float = 1.0,
        rest_length: float = 0.033,
        damping: float = 0.1,
        gravity: float = 9.81,
        dt: float = DT,
        vmax: float = VMAX,
    ) -> None:
        super().__init__()
        if not (np.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a finite number > 0 (seconds), got {dt!r}")
        if not (np.isfinite(vmax) and vmax > 0):
            raise ValueError(f"vmax must be a finite number > 0 (m/s), got {vmax!r}")
        self.physics = ChainPhysics(n_mass, mass, stiffness, rest_length, damping, gravity)
        self.dt, self.vmax = float(dt), float(vmax)
        self.obs_dim = self.physics.state_dim
        self.n_pos_states = 3 * self.physics.n_pos
        self.register_buffer(
            "p_ref", torch.as_tensor(last_mass_target(self.physics), dtype=torch.float32), persistent=False
        )

    @classmethod
    def from_env(cls, env: Any = None) -> ChainDynamics:
        """The model of ``env`` (a :class:`ChainEnv` or a wrapper of one; ``None``: leap-c's defaults)."""
        env = getattr(env, "unwrapped", env)
        return env.dynamics_model() if isinstance(env, ChainEnv) else cls()

    def extra_repr(self) -> str:
        return f"{self.physics}, dt={self.dt}, vmax={self.vmax}"

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Next observation ``(..., obs_dim)`` after applying ``action`` ``(..., 3)`` for ``dt``."""
        u = action.clamp(-self.vmax, self.vmax)
        next_obs: torch.Tensor = rk4_step(self.physics.ode, obs, u, self.dt, TORCH)
        return next_obs

    def reward(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """The environment's reward of the transition (it depends on ``next_obs`` only)."""
        del obs, action
        k = self.n_pos_states
        distance = (next_obs[..., k - 3 : k] - self.p_ref.to(next_obs.dtype)).abs().sum(-1)
        speed = next_obs[..., k:].norm(dim=-1)
        return REWARD_SCALE * (-distance - VELOCITY_WEIGHT * speed)


# ----------------------------------------------------------------------------- OCP

_AXES = ("x", "y", "z")


class ChainOCP(OptimalControlProblem):
    """leap-c's parameterized MPC problem for the chain (module docstring for the formulas).

    Stage parameter vector ``p_k`` (24 numbers for ``n_mass = 5``, the lecture's table): first the
    square roots ``q`` of the state residual weights in the state's order (``q_p2x .. q_p5z``, then
    ``q_v2x .. q_v4z``; default 1, bounds (0.5, 1.5)), then those of the action residual weights
    ``r_ux, r_uy, r_uz`` (default 0.1, bounds (0.05, 0.15)). The terminal cost uses the ``q`` part of
    ``p_N``. Holds only numbers and numpy arrays (picklable).

    :param physics: the chain's constants (default: leap-c's).
    :param horizon: number of intervals ``N`` (leap-c planner: 20).
    :param horizon_time: length ``T`` of the horizon, s (leap-c planner: 0.25, so intervals of
        0.0125 s; pass ``horizon * env.dt`` for intervals equal to the environment's step).
    :param vmax: control bound, m/s (leap-c: 1.0).
    :raises ValueError: for ``horizon < 1`` or a non-positive ``horizon_time`` or ``vmax``.
    """

    obs_dim: ClassVar[int | None] = None  # the observation is the MPC state
    # One stage's RK4 over the masses is large: inline, its Hessian repeated 20 times has about 627k
    # casadi instructions (too slow to compile); as per-stage functions it is generated once.
    stage_functions: ClassVar[bool] = True

    def __init__(
        self,
        physics: ChainPhysics | None = None,
        horizon: int = 20,
        horizon_time: float = 0.25,
        vmax: float = VMAX,
    ) -> None:
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
        if not (np.isfinite(horizon_time) and horizon_time > 0):
            raise ValueError(f"horizon_time must be a finite number > 0 (seconds), got {horizon_time!r}")
        if not (np.isfinite(vmax) and vmax > 0):
            raise ValueError(f"vmax must be a finite number > 0 (m/s), got {vmax!r}")
        self.physics = ChainPhysics() if physics is None else physics
        nx = self.physics.state_dim
        self.state_dim, self.control_dim = nx, 3
        self.horizon = int(horizon)
        self.dt = float(horizon_time) / self.horizon
        self.u_low, self.u_high = np.full(3, -float(vmax)), np.full(3, float(vmax))
        self.x_low = self.x_high = None
        #: The resting chain with the last mass at the target (the cost's reference state).
        self.x_ref = rest_state(self.physics, last_mass_target(self.physics))
        n_pos = self.physics.n_pos
        q_names = [f"q_p{k + 2}{a}" for k in range(n_pos) for a in _AXES]
        q_names += [f"q_v{k + 2}{a}" for k in range(self.physics.n_free) for a in _AXES]
        self.param_names = (*q_names, *(f"r_u{a}" for a in _AXES))
        self.param_low = np.concatenate([np.full(nx, 0.5), np.full(3, 0.05)])
        self.param_high = np.concatenate([np.full(nx, 1.5), np.full(3, 0.15)])
        self.param_default = np.concatenate([np.ones(nx), np.full(3, 0.1)])

    @classmethod
    def from_env(cls, env: Any = None, **kwargs: Any) -> ChainOCP:
        """The OCP for ``env`` (a :class:`ChainEnv` or a wrapper; ``None``: leap-c's defaults), with its
        physical constants and ``vmax``; ``kwargs`` go to the constructor (``horizon``, ``horizon_time``)."""
        env = getattr(env, "unwrapped", env)
        if isinstance(env, ChainEnv):
            kwargs.setdefault("physics", env.physics)
            kwargs.setdefault("vmax", env.vmax)
        return cls(**kwargs)

    def dynamics(self, x: Any, u: Any) -> Any:
        """One RK4 step of ``dt`` of the chain ODE on casadi columns (the control is not clipped: the
        OCP bounds it)."""
        return rk4_step(self.physics.ode, x, u, self.dt, CASADI)

    def _state_residual(self, x: Any, p: Any) -> Any:
        import casadi as ca

        q = p[: self.state_dim]
        return q * (x - ca.DM(self.x_ref))

    def stage_cost(self, x: Any, u: Any, p: Any) -> Any:
        """``dt * 0.5 (||q * (x - x_ref)||^2 + ||r * u||^2)`` (acados' default stage cost scaling)."""
        import casadi as ca

        e = self._state_residual(x, p)
        r = p[self.state_dim : self.state_dim + 3]
        eu = r * u
        return self.dt * 0.5 * (ca.sumsqr(e) + ca.sumsqr(eu))

    def terminal_cost(self, x: Any, p: Any) -> Any:
        """``0.5 ||q * (x_N - x_ref)||^2``."""
        import casadi as ca

        return 0.5 * ca.sumsqr(self._state_residual(x, p))

    def stage_cost_numpy(
        self, x: npt.ArrayLike, u: npt.ArrayLike, p: npt.ArrayLike | None = None
    ) -> FloatArray:
        """:meth:`stage_cost` for numpy batches ``(..., nx)``, ``(..., 3)``, ``(..., 24)`` (default parameters
        when ``p`` is ``None``)."""
        params = self.param_default if p is None else np.asarray(p, dtype=np.float64)
        q, r = params[..., : self.state_dim], params[..., self.state_dim : self.state_dim + 3]
        e = q * (np.asarray(x, dtype=np.float64) - self.x_ref)
        eu = r * np.asarray(u, dtype=np.float64)
        return np.asarray(self.dt * 0.5 * ((e**2).sum(-1) + (eu**2).sum(-1)))
