"""Ballbot target reaching past walls (DMPC, Farshidian, Hoeller & Hutter, CoRL 2019), with its torch model.

Source: shared/papers/004_e1bdd2b42101da57.txt, §6.1 and Appendix B: "the agent has to reach a target in
3 seconds from any initial position. Additionally, we add walls to the environment so that most of the time,
it cannot reach the target via the shortest path [...] the target reaching cost is simply encoded as the
euclidean distance from the current position to the goal, the walls are encoded by a termination of the
episode with a fixed penalty"; the value function is "conditioned on a goal and a time to reach the goal";
performance is "the average performance over 8 trajectories sampled from different starting positions". The
robot is ETH's ballbot (the paper's ref. [23]; Appendix B, Fig. 4): a body balancing on a ball driven by
three omni-wheels. The paper gives neither the field, the walls, the start region, the penalty nor the torque
bound: those below are ours (marked so). This module is our own implementation.

Physics (our derivation; written once, :func:`ballbot_ode`, for numpy, torch and casadi)
----------------------------------------------------------------------------------------
Two decoupled planar ballbots, in the x-z and the y-z plane (the planar decomposition of P. Fankhauser and
C. Gwerder, "Modeling and Control of a Ballbot", BSc thesis, ETH Zurich 2010, for the Rezero ballbot; we
could not consult the thesis, so the equations below are derived here, with massless omni-wheels), and a
yaw rate. Each plane (x-z shown; the y-z plane is the same with ``y``, ``theta_y`` and ``T_yz``) has the
ball-centre position ``x`` (m) and the body tilt ``theta`` (rad) from the vertical, positive when the body
leans to ``+x``. The ball (mass ``m_b``, radius ``r``, inertia ``I_b``) rolls without slipping, so it turns
by ``x / r`` (positive = rolling to ``+x``); the body (mass ``m_a``, centre of mass at the height ``l`` above
the ball centre, inertia ``I_a`` about its centre of mass) has its centre of mass at ``(x + l sin(theta),
r + l cos(theta))``. The actuator torque ``T`` acts between the two: ``+T`` on the ball, ``-T`` on the body
(about the ball centre), both in the rolling sense. (A massless omni-wheel of radius ``r_w`` pressing on the
ball with the tangential force ``F`` gives the ball ``r F`` and the body, axle force plus motor reaction,
``-r F`` about the ball centre, so the motors' power is ``T (x'/r - theta')``.) With a viscous rolling
resistance ``b`` of the ball against the ground (N m s/rad; 0 by default)::

    kinetic     K = 1/2 m_b x'^2 + 1/2 I_b (x'/r)^2 + 1/2 I_a theta'^2
                    + 1/2 m_a ((x' + l cos(theta) theta')^2 + (l sin(theta) theta')^2)
    potential   V = m_a g l cos(theta)
    virtual work  dW = T (dx/r - dtheta) - b (x'/r) (dx/r)

Lagrange's equations ``d/dt dL/dq' - dL/dq = Q`` with ``L = K - V`` and ``q = (x, theta)`` give::

    [ M             c cos(theta) ] [ x''     ]   [ f1 ]   [ T/r + c sin(theta) theta'^2 - b x'/r^2 ]
    [ c cos(theta)  J            ] [ theta'' ] = [ f2 ] = [ -T + c g sin(theta)                     ]

    M = m_b + m_a + I_b / r^2,   c = m_a l,   J = I_a + m_a l^2,   D = M J - c^2 cos^2(theta) > 0,
    x'' = (J f1 - c cos(theta) f2) / D,   theta'' = (M f2 - c cos(theta) f1) / D.

The mechanical energy ``E = 1/2 M x'^2 + c cos(theta) x' theta' + 1/2 J theta'^2 + c g cos(theta)`` changes
at the rate ``E' = T (x'/r - theta') - b x'^2 / r^2`` (:func:`ballbot_energy`; checked in the tests). Upright
at rest with ``T = 0`` is an equilibrium; linearised, ``theta'' = (M c g / D) theta``: with the defaults a
tilt grows as ``exp(4.3 t / s)`` (x-z plane). The body's yaw rate obeys ``I_z omega_z' = T_yaw - b_z
omega_z``; the ball is assumed not to spin about the vertical (the ground takes that reaction), and the yaw
*angle* is not a state: the decoupled model keeps the wheels aligned with the world axes (valid while the
heading stays near 0).

Wheel torques to planar torques (a constant matrix, :func:`torque_map`): wheel ``i`` (azimuth ``b_i = 0, 120,
240 deg`` about ``z`` from ``+x``; zenith angle ``a`` of its contact point seen from the ball centre) touches
the ball at ``n_i = (sin a cos b_i, sin a sin b_i, cos a)`` and pushes it along ``d_i = (-sin b_i, cos b_i,
0)`` with the force ``tau_i / r_w`` (its rollers let the ball slide freely across). The torque on the ball is
``(r / r_w) sum_i tau_i n_i x d_i`` with ``n_i x d_i = (-cos a cos b_i, -cos a sin b_i, sin a)``; rolling to
``+x`` turns the ball about ``+y``, rolling to ``+y`` about ``-x``, hence::

    T_xz  = -(r / r_w) cos(a) sum_i tau_i sin(b_i)
    T_yz  =  (r / r_w) cos(a) sum_i tau_i cos(b_i)
    T_yaw = -(r / r_w) sin(a) sum_i tau_i          (on the body: the reaction of the ball's yaw torque)

The matrix is invertible, so all three wheels matter. Cross-check: at the upright attitude these generalized
forces (``T / r`` on the ball position, ``-T`` on the tilt, ``T_yaw`` on the yaw) equal, entry by entry,
those of the wheel-torque map of ocs2's ``ocs2_ballbot`` example (``src/dynamics/BallbotSystemDynamics.cpp``
at zero yaw, pitch and roll; read, nothing copied). The ODE is control-affine in the wheel torques.

Parameters and sources (ocs2 = github.com/leggedrobotics/ocs2 at commit 2638675,
``ocs2_robotic_examples/ocs2_ballbot``: ETH's ballbot model by the paper's first author, whose SLQ solver the
paper's actor uses; "URDF" = its ``include/ocs2_ballbot/generated/kindsl/ballbot.urdf``):

* ``ball_radius = 0.125`` m: ocs2 ``BallbotParameters.h`` ``ballRadius_`` (= the URDF's ball-centre height);
* ``wheel_radius = 0.064`` m: ocs2 ``BallbotParameters.h`` ``wheelRadius_``;
* ``ball_mass = 2.65`` kg, ``ball_inertia = 0.0166`` kg m^2: URDF, link ``ball``;
* ``body_mass = 18.66`` kg: URDF, link ``base``;
* ``com_height = 0.1956`` m: URDF, ``base`` inertial origin z above the ball centre (its horizontal offsets
  of 3.0 and 3.3 mm are neglected);
* ``body_inertia_xz = 1.8037``, ``body_inertia_yz = 1.80``, ``body_inertia_yaw = 0.166703`` kg m^2: URDF,
  ``base`` ``iyy`` (tilting in the x-z plane turns about y), ``ixx`` and ``izz``, about its centre of mass;
* ``zenith_angle = 45 deg``: Rezero's (the task's brief; also what the ``sqrt(2)`` factors of ocs2's wheel
  map encode); the azimuths 0/120/240 deg: the 120 deg spacing, ocs2's map fixes which wheel is first;
* ``gravity = 9.81`` m/s^2;
* ``ball_friction = yaw_friction = 0``: our choice (frictionless, as ocs2's model);
* ``torque_bound = 10`` N m per wheel: our choice (ocs2's example has no input bound).

We could not verify these numbers against the thesis or the real Rezero (published figures: 3 m/s^2
acceleration, 3.6 m/s top speed, 20 deg lean, Drives and Controls magazine, June 2012).

Environment (:class:`BallbotEnv`, gymnasium id ``Ballbot-v0``)
--------------------------------------------------------------
* Observation (``float32``, :data:`OBS_DIM` = 12): ``[x, y, theta_x, theta_y, vx, vy, theta_x', theta_y',
  omega_z, goal_x, goal_y, time_to_go]``: the physical state (:data:`STATE_DIM` = 9: ball-centre position in
  m, body tilts in the x-z and y-z planes in rad, their rates in m/s and rad/s, the yaw rate in rad/s), the
  goal (:data:`GOAL_SLICE`, m) and the time left (:data:`TIME_INDEX`, s). :func:`ballbot_ode` is the time
  derivative of this whole vector: 0 for the goal, -1 for the time to go.
* Action: the three wheel torques in N m, ``Box(-10, 10, (3,), float32)`` (``torque_bound``), clipped into
  it; a non-finite action or one of another shape raises ``ValueError``.
* Step: one classical RK4 step (:func:`~sb3_stein.common.backends.rk4_step`) of :func:`ballbot_ode` over
  ``dt = 0.05`` s with the torques held; then the time to go is clipped at 0 (round-off).
* Field ``[-1.5, 1.5]^2`` m (ours): starts and targets lie in it; the ballbot may leave it (no rule).
* Walls (ours; :data:`WALLS`): the segment ``(-0.6, 0) -> (0.6, 0)``, 0.05 m thick, between the start region
  ``[-1.2, 1.2] x [-1.0, -0.7]`` and the target ``(0, 1)``: it blocks the straight path from most starts
  (with the ball's clearance, from all of the default region). A *hit*: the ball centre closer than
  ``ball_radius + wall_thickness / 2`` (0.15 m) to a wall, checked after each step (a step moves the ball by
  less than the width of that 0.3 m band while its speed is below 6 m/s).
* A *fall* (ours): a tilt beyond ``fall_angle`` (default ``pi / 4``, well past Rezero's 20 deg lean; the
  decoupled planar model is meant for small tilts, and without such a rule an optimiser reaches the target
  faster by flipping the body over: with the 10 N m bound and the tilt kept below 0.35 rad, a casadi/ipopt
  solve still brings three starts, two of :data:`BENCHMARK_STARTS`, around the wall to the target in 3 s).
* Reward of a step to the position ``p'``: ``-|p' - goal| dt`` (euclidean distance times the step) minus
  ``penalty`` (default 10) on a hit or a fall.
* Termination (``terminated=True``): a hit or a fall (with the penalty), or the deadline after ``max_time =
  3`` s (60 steps, :data:`MAX_EPISODE_STEPS`). The time to go is part of the observation, so the deadline is
  a genuine terminal state of this finite-horizon task (no bootstrapping past it), not a truncation; the
  registered ``TimeLimit`` of 60 steps coincides with it.
* ``info``: ``"is_success"`` (at the deadline within ``success_radius = 0.2`` m of the goal, no hit, no
  fall), ``"wall_hit"``, ``"fallen"``, ``"distance"`` (m).
* Reset: upright at rest, the start drawn uniformly in the start region (outside the walls' band), the target
  fixed (``target``) or, with ``random_target=True``, drawn in ``[-1.2, 1.2] x [0.7, 1.2]``;
  ``options={"start": (x, y)}`` and ``options={"target": (x, y)}`` set them (e.g. the 8
  :data:`BENCHMARK_STARTS`).
* ``render_mode="rgb_array"``: top view (as the paper's Fig. 2a): field, start region, walls, target with its
  success disc, the path of the centre of mass (ball and body) so far, the ball and its lean.

:class:`BallbotDynamics` is the torch model (the project's dynamics-model contract): ``forward`` is
``env.step``'s next observation, :meth:`~BallbotDynamics.reward` its reward (penalty included),
:meth:`~BallbotDynamics.is_terminal` its termination; :meth:`~BallbotDynamics.f` and
:meth:`~BallbotDynamics.g` give DMPC's control-affine form ``dx/dt = f + g u`` and
:meth:`~BallbotDynamics.continuous_dynamics` the ODE on any backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import torch
from gymnasium import spaces
from torch import nn

from sb3_stein.common.backends import NUMPY, TORCH, Backend, rk4_step, to_float64

from .raster import blend, draw_segment, pixel_grid

__all__ = [
    "ACT_DIM",
    "BALL_INERTIA",
    "BALL_MASS",
    "BALL_RADIUS",
    "BENCHMARK_STARTS",
    "BODY_INERTIA_XZ",
    "BODY_INERTIA_YAW",
    "BODY_INERTIA_YZ",
    "BODY_MASS",
    "COM_HEIGHT",
    "DEFAULT_PHYSICS",
    "DT",
    "FALL_ANGLE",
    "FIELD_HIGH",
    "FIELD_LOW",
    "GOAL_SLICE",
    "GRAVITY",
    "MAX_EPISODE_STEPS",
    "MAX_TIME",
    "OBS_DIM",
    "PENALTY",
    "START_REGION",
    "STATE_DIM",
    "SUCCESS_RADIUS",
    "TARGET",
    "TARGET_REGION",
    "TIME_INDEX",
    "TORQUE_BOUND",
    "WALLS",
    "WALL_THICKNESS",
    "WHEEL_AZIMUTHS",
    "WHEEL_RADIUS",
    "ZENITH_ANGLE",
    "BallbotDynamics",
    "BallbotEnv",
    "ballbot_energy",
    "ballbot_ode",
    "ballbot_step",
    "check_physics",
    "torque_map",
    "wall_distance",
]

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
#: A point ``(x, y)`` in m, and a region ``((x_lo, y_lo), (x_hi, y_hi))``.
Point = tuple[float, float]
Region = tuple[Point, Point]
#: A wall: the segment ``(x0, y0) -> (x1, y1)`` in m.
Wall = tuple[float, float, float, float]

# ----------------------------------------------------------------------------- layout of the observation

#: Physical state: ``x, y, theta_x, theta_y, vx, vy, theta_x', theta_y', omega_z``.
STATE_DIM = 9
#: The goal ``(x, y)`` in the observation.
GOAL_SLICE = slice(9, 11)
#: The time to go (s) in the observation.
TIME_INDEX = 11
#: Observation length: state, goal, time to go.
OBS_DIM = 12
#: Three wheel torques.
ACT_DIM = 3
_POSITION = slice(0, 2)
_TILT = slice(2, 4)

# ----------------------------------------------------------------------------- parameters (module docstring)

#: Gravity in m/s^2.
GRAVITY = 9.81
#: Ball radius in m (ocs2 ``BallbotParameters.h``).
BALL_RADIUS = 0.125
#: Omni-wheel radius in m (ocs2 ``BallbotParameters.h``).
WHEEL_RADIUS = 0.064
#: Ball mass in kg and inertia in kg m^2 (ocs2 ``ballbot.urdf``, link ``ball``).
BALL_MASS = 2.65
BALL_INERTIA = 0.0166
#: Body mass in kg and its centre-of-mass height above the ball centre in m (ocs2 URDF, link ``base``).
BODY_MASS = 18.66
COM_HEIGHT = 0.1956
#: Body inertias about its centre of mass, kg m^2: tilting in the x-z plane (about y), in the y-z plane
#: (about x), and about the vertical (ocs2 URDF, link ``base``: ``iyy``, ``ixx``, ``izz``).
BODY_INERTIA_XZ = 1.8037
BODY_INERTIA_YZ = 1.80
BODY_INERTIA_YAW = 0.166703
#: Zenith angle of the omni-wheel contacts, rad (Rezero: 45 deg; not verified in the thesis).
ZENITH_ANGLE = math.pi / 4
#: Azimuths of the three omni-wheels about z from +x, rad.
WHEEL_AZIMUTHS = (0.0, 2.0 * math.pi / 3.0, 4.0 * math.pi / 3.0)
#: The ODE's keyword arguments with their defaults (frictions: ours, 0).
DEFAULT_PHYSICS: dict[str, float] = {
    "gravity": GRAVITY,
    "ball_mass": BALL_MASS,
    "ball_radius": BALL_RADIUS,
    "ball_inertia": BALL_INERTIA,
    "body_mass": BODY_MASS,
    "com_height": COM_HEIGHT,
    "body_inertia_xz": BODY_INERTIA_XZ,
    "body_inertia_yz": BODY_INERTIA_YZ,
    "body_inertia_yaw": BODY_INERTIA_YAW,
    "wheel_radius": WHEEL_RADIUS,
    "zenith_angle": ZENITH_ANGLE,
    "ball_friction": 0.0,
    "yaw_friction": 0.0,
}

# ----------------------------------------------------------------------------- task (ours unless noted)

#: Largest wheel torque in N m (our choice).
TORQUE_BOUND = 10.0
#: Control step in s, and the episode length in s (the paper: "reach a target in 3 seconds") and steps.
DT = 0.05
MAX_TIME = 3.0
MAX_EPISODE_STEPS = 60
#: The field (m): starts and targets lie in it.
FIELD_LOW: Point = (-1.5, -1.5)
FIELD_HIGH: Point = (1.5, 1.5)
#: Walls as segments ``(x0, y0, x1, y1)`` in m, and their thickness in m.
WALLS: tuple[Wall, ...] = ((-0.6, 0.0, 0.6, 0.0),)
WALL_THICKNESS = 0.05
#: Default target, and the region of ``random_target=True``.
TARGET: Point = (0.0, 1.0)
TARGET_REGION: Region = ((-1.2, 0.7), (1.2, 1.2))
#: Region the start position is drawn from (upright, at rest).
START_REGION: Region = ((-1.2, -1.0), (1.2, -0.7))
#: Eight fixed starts for benchmarks (the paper averages 8 trajectories from different starts).
BENCHMARK_STARTS: tuple[Point, ...] = (
    (-1.05, -0.75),
    (-0.35, -0.75),
    (0.35, -0.75),
    (1.05, -0.75),
    (-1.05, -0.95),
    (-0.35, -0.95),
    (0.35, -0.95),
    (1.05, -0.95),
)
#: Penalty (a cost) of a wall hit or a fall, success radius in m, and the tilt of a fall in rad.
PENALTY = 10.0
SUCCESS_RADIUS = 0.2
FALL_ANGLE = math.pi / 4


# ----------------------------------------------------------------------------- physics


def torque_map(
    ball_radius: float = BALL_RADIUS, wheel_radius: float = WHEEL_RADIUS, zenith_angle: float = ZENITH_ANGLE
) -> FloatArray:
    """The constant ``(3, 3)`` matrix from the wheel torques ``(tau_1, tau_2, tau_3)`` (N m) to the planar
    torques ``(T_xz, T_yz, T_yaw)`` (N m; module docstring).

    :param ball_radius: ``r`` in m.
    :param wheel_radius: ``r_w`` in m.
    :param zenith_angle: ``alpha`` in rad, in ``(0, pi / 2)``.
    """
    ratio = ball_radius / wheel_radius
    beta = np.asarray(WHEEL_AZIMUTHS)
    return ratio * np.stack(
        [
            -math.cos(zenith_angle) * np.sin(beta),
            math.cos(zenith_angle) * np.cos(beta),
            -math.sin(zenith_angle) * np.ones(3),
        ]
    )


def _planar(
    theta: Any,
    velocity: Any,
    rate: Any,
    torque: Any,
    be: Backend,
    total_mass: float,
    coupling: float,
    inertia: float,
    radius: float,
    gravity: float,
    friction: float,
) -> tuple[Any, Any]:
    """``(x'', theta'')`` of one planar ballbot (module docstring)."""
    sin, cos = be.sin(theta), be.cos(theta)
    f1 = torque / radius + coupling * sin * rate * rate - friction * velocity / (radius * radius)
    f2 = coupling * gravity * sin - torque
    det = total_mass * inertia - coupling * coupling * cos * cos
    return (inertia * f1 - coupling * cos * f2) / det, (total_mass * f2 - coupling * cos * f1) / det


def ballbot_ode(
    x: Any,
    u: Any,
    be: Backend,
    *,
    gravity: float = GRAVITY,
    ball_mass: float = BALL_MASS,
    ball_radius: float = BALL_RADIUS,
    ball_inertia: float = BALL_INERTIA,
    body_mass: float = BODY_MASS,
    com_height: float = COM_HEIGHT,
    body_inertia_xz: float = BODY_INERTIA_XZ,
    body_inertia_yz: float = BODY_INERTIA_YZ,
    body_inertia_yaw: float = BODY_INERTIA_YAW,
    wheel_radius: float = WHEEL_RADIUS,
    zenith_angle: float = ZENITH_ANGLE,
    ball_friction: float = 0.0,
    yaw_friction: float = 0.0,
) -> Any:
    """Time derivative of the whole observation vector (module docstring for the equations).

    Control-affine in ``u``: ``ode(x, u) = ode(x, 0) + G(x) u``. No clipping here.

    :param x: observation ``[x, y, theta_x, theta_y, vx, vy, theta_x', theta_y', omega_z, goal_x, goal_y,
        time_to_go]``: ``(..., 12)`` numpy/torch arrays or a ``(12, 1)`` casadi column.
    :param u: wheel torques in N m: ``(..., 3)``, or a ``(3, 1)`` casadi column.
    :param be: the array library (:data:`~sb3_stein.common.backends.NUMPY`, ``TORCH`` or ``CASADI``).
    :param gravity: ``g`` in m/s^2.
    :param ball_mass: ``m_b`` in kg.
    :param ball_radius: ``r`` in m.
    :param ball_inertia: ``I_b`` in kg m^2 (about any axis through the ball centre).
    :param body_mass: ``m_a`` in kg.
    :param com_height: ``l``, height of the body's centre of mass above the ball centre, in m.
    :param body_inertia_xz: ``I_a`` of the x-z plane (about the y axis through the body's centre of mass),
        kg m^2.
    :param body_inertia_yz: ``I_a`` of the y-z plane (about the x axis), kg m^2.
    :param body_inertia_yaw: ``I_z`` about the vertical, kg m^2.
    :param wheel_radius: ``r_w`` in m.
    :param zenith_angle: ``alpha`` of the wheel contacts in rad.
    :param ball_friction: ``b``, viscous rolling resistance of the ball in N m s/rad (>= 0).
    :param yaw_friction: ``b_z``, viscous yaw friction of the body in N m s/rad (>= 0).
    :return: ``dx/dt``, same layout as ``x`` (goal rows 0, time-to-go row -1).
    """
    _, _, theta_x, theta_y, vx, vy, rate_x, rate_y, yaw_rate, _, _, time_to_go = be.split(x)
    tau = be.split(u)
    a = torque_map(ball_radius, wheel_radius, zenith_angle).tolist()  # Python floats: casadi-safe
    t_xz, t_yz, t_yaw = (a[k][0] * tau[0] + a[k][1] * tau[1] + a[k][2] * tau[2] for k in range(3))
    total_mass = ball_mass + body_mass + ball_inertia / ball_radius**2
    coupling = body_mass * com_height
    common = (total_mass, coupling)
    tail = (ball_radius, gravity, ball_friction)
    inertia_xz = body_inertia_xz + body_mass * com_height**2
    inertia_yz = body_inertia_yz + body_mass * com_height**2
    acc_x, alpha_x = _planar(theta_x, vx, rate_x, t_xz, be, *common, inertia_xz, *tail)
    acc_y, alpha_y = _planar(theta_y, vy, rate_y, t_yz, be, *common, inertia_yz, *tail)
    yaw_acc = (t_yaw - yaw_friction * yaw_rate) / body_inertia_yaw
    zero = 0.0 * time_to_go
    return be.stack([vx, vy, rate_x, rate_y, acc_x, acc_y, alpha_x, alpha_y, yaw_acc, zero, zero, zero - 1.0])


def ballbot_step(x: Any, u: Any, dt: float, be: Backend, **physics: float) -> Any:
    """One RK4 step of :func:`ballbot_ode` of ``dt`` s with the torques held (no clipping of ``u`` and no
    clipping of the time to go: :class:`BallbotEnv` and :class:`BallbotDynamics` add both).

    :param x: observation(s), as for :func:`ballbot_ode`.
    :param u: wheel torques in N m.
    :param dt: step in s.
    :param be: the array library.
    :param physics: keyword arguments of :func:`ballbot_ode`.
    """

    def ode(state: Any, torque: Any, backend: Backend) -> Any:
        return ballbot_ode(state, torque, backend, **physics)

    return rk4_step(ode, x, u, dt, be)


def ballbot_energy(x: Any, be: Backend, **physics: float) -> Any:
    """Mechanical energy (J) of the two planar ballbots and the yaw: ``sum_planes (1/2 M x'^2 + c cos(theta)
    x' theta' + 1/2 J theta'^2 + c g cos(theta)) + 1/2 I_z omega_z^2`` (module docstring).

    :param x: observation(s) ``(..., 12)`` (numpy or torch) or a state ``(..., 9)``.
    :param be: :data:`~sb3_stein.common.backends.NUMPY` or ``TORCH``.
    :param physics: keyword arguments of :func:`ballbot_ode` (defaults for those left out).
    """
    p = {**DEFAULT_PHYSICS, **physics}
    parts = be.split(x)
    theta, speed, rate = parts[2:4], parts[4:6], parts[6:8]
    total_mass = p["ball_mass"] + p["body_mass"] + p["ball_inertia"] / p["ball_radius"] ** 2
    coupling = p["body_mass"] * p["com_height"]
    inertias = (p["body_inertia_xz"], p["body_inertia_yz"])
    energy = 0.5 * p["body_inertia_yaw"] * parts[8] * parts[8]
    for k in range(2):
        cos = be.cos(theta[k])
        inertia = inertias[k] + p["body_mass"] * p["com_height"] ** 2
        energy = energy + 0.5 * total_mass * speed[k] * speed[k] + coupling * cos * speed[k] * rate[k]
        energy = energy + 0.5 * inertia * rate[k] * rate[k] + coupling * p["gravity"] * cos
    return energy


def check_physics(**physics: Any) -> dict[str, float]:
    """The ODE's keyword arguments, completed with :data:`DEFAULT_PHYSICS` and validated.

    :raises ValueError: naming the parameter, for an unknown name, a non-finite value, a mass, length,
        inertia or gravity that is not > 0, a negative friction, or a zenith angle outside ``(0, pi / 2)``.
    """
    unknown = sorted(set(physics) - set(DEFAULT_PHYSICS))
    if unknown:
        raise ValueError(f"unknown ballbot physics parameter(s) {unknown}; known: {sorted(DEFAULT_PHYSICS)}")
    out: dict[str, float] = {}
    for name, default in DEFAULT_PHYSICS.items():
        value = physics.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        value = float(value)
        friction = name.endswith("_friction")
        if not math.isfinite(value) or (value < 0 if friction else value <= 0):
            raise ValueError(f"{name} must be a finite number {'>= 0' if friction else '> 0'}, got {value!r}")
        out[name] = value
    if not out["zenith_angle"] < math.pi / 2:
        raise ValueError(f"zenith_angle must lie in (0, pi/2) rad, got {out['zenith_angle']!r}")
    return out


def wall_distance(positions: Any, walls: Sequence[Wall]) -> Any:
    """Distance (m) of ball-centre positions ``(..., 2)`` (numpy or torch) to the nearest wall segment,
    shape ``(...)``; ``inf`` without walls. A wall is hit when this is below ``ball_radius + wall_thickness /
    2``.

    :param positions: ``(..., 2)`` positions in m.
    :param walls: segments ``(x0, y0, x1, y1)`` in m.
    """
    is_torch = isinstance(positions, torch.Tensor)
    px, py = positions[..., 0], positions[..., 1]
    best = px * 0.0 + math.inf
    for x0, y0, x1, y1 in walls:
        dx, dy = x1 - x0, y1 - y0
        length2 = dx * dx + dy * dy
        t = px * 0.0 if length2 == 0.0 else ((px - x0) * dx + (py - y0) * dy) / length2
        t = t.clamp(0.0, 1.0) if is_torch else np.clip(t, 0.0, 1.0)
        ex, ey = px - (x0 + t * dx), py - (y0 + t * dy)
        dist = (ex * ex + ey * ey).sqrt() if is_torch else np.sqrt(ex * ex + ey * ey)
        best = torch.minimum(best, dist) if is_torch else np.minimum(best, dist)
    return best


# ----------------------------------------------------------------------------- validation helpers


def _number(name: str, value: Any, minimum: float = 0.0, strict: bool = True) -> float:
    """``value`` as a float; :class:`ValueError` unless finite and ``> minimum`` (``>=`` if not strict)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {minimum}, got {value!r}")
    return value


def _point(name: str, value: Any) -> FloatArray:
    """``value`` as a finite ``(2,)`` float64 array inside the field, else :class:`ValueError`."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = np.full(1, np.nan)
    if array.shape != (2,) or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be 2 finite numbers (x, y) in m, got {value!r}")
    if np.any(array < FIELD_LOW) or np.any(array > FIELD_HIGH):
        raise ValueError(f"{name} {array.tolist()} lies outside the field {FIELD_LOW}-{FIELD_HIGH}")
    return array


def _region(name: str, value: Any) -> tuple[FloatArray, FloatArray]:
    """``((x_lo, y_lo), (x_hi, y_hi))`` inside the field with ``lo <= hi``, else :class:`ValueError`."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = np.full(1, np.nan)
    if array.shape != (2, 2) or not np.all(np.isfinite(array)) or np.any(array[0] > array[1]):
        raise ValueError(f"{name} must be ((x_lo, y_lo), (x_hi, y_hi)) in m with lo <= hi, got {value!r}")
    _point(f"{name} corner", array[0])
    _point(f"{name} corner", array[1])
    return array[0].copy(), array[1].copy()


def _walls(value: Any) -> tuple[Wall, ...]:
    """``(K, 4)`` finite rows ``(x0, y0, x1, y1)`` (``K`` may be 0), else :class:`ValueError`."""
    try:
        rows = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        rows = np.full(1, np.nan)
    if rows.size == 0:
        return ()
    if rows.ndim != 2 or rows.shape[1] != 4 or not np.all(np.isfinite(rows)):
        raise ValueError(f"walls must be (K, 4) finite rows (x0, y0, x1, y1) in m, got {value!r}")
    return tuple((float(r[0]), float(r[1]), float(r[2]), float(r[3])) for r in rows)


# ----------------------------------------------------------------------------- environment


class BallbotEnv(gym.Env[Float32Array, Float32Array]):
    """Reach a target within 3 s past a wall with a ballbot (module docstring for the physics and the rules).

    :param render_mode: ``None`` or ``"rgb_array"``.
    :param dt: control step in s (one RK4 step).
    :param max_time: episode length in s; a whole number of steps ``dt``. The deadline terminates.
    :param torque_bound: wheel torques are clipped into ``[-torque_bound, torque_bound]`` N m (the action
        Box).
    :param walls: wall segments, ``(K, 4)`` rows ``(x0, y0, x1, y1)`` in m (``[]`` for none).
    :param wall_thickness: thickness of the walls in m (> 0).
    :param target: the fixed target ``(x, y)`` in m (in the field, clear of the walls).
    :param random_target: draw the target uniformly in ``target_region`` at each reset instead.
    :param target_region: ``((x_lo, y_lo), (x_hi, y_hi))`` of ``random_target``, m.
    :param start_region: ``((x_lo, y_lo), (x_hi, y_hi))`` the start is drawn from, m.
    :param penalty: cost of a wall hit or a fall (subtracted from the reward, >= 0).
    :param success_radius: ``info["is_success"]`` radius around the target at the deadline, m.
    :param fall_angle: a tilt (either plane) beyond this many rad is a fall, in ``(0, pi]``.
    :param gravity: ``g`` in m/s^2.
    :param ball_mass: ball mass in kg.
    :param ball_radius: ball radius in m (also the walls' clearance).
    :param ball_inertia: ball inertia in kg m^2.
    :param body_mass: body mass in kg.
    :param com_height: body centre-of-mass height above the ball centre in m.
    :param body_inertia_xz: body inertia for tilting in the x-z plane (about y), kg m^2.
    :param body_inertia_yz: body inertia for tilting in the y-z plane (about x), kg m^2.
    :param body_inertia_yaw: body inertia about the vertical, kg m^2.
    :param wheel_radius: omni-wheel radius in m.
    :param zenith_angle: zenith angle of the wheel contacts in rad.
    :param ball_friction: viscous rolling resistance of the ball, N m s/rad (>= 0).
    :param yaw_friction: viscous yaw friction of the body, N m s/rad (>= 0).
    :param render_size: frame width and height in pixels (>= 64).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        render_mode: str | None = None,
        dt: float = DT,
        max_time: float = MAX_TIME,
        torque_bound: float = TORQUE_BOUND,
        walls: npt.ArrayLike = WALLS,
        wall_thickness: float = WALL_THICKNESS,
        target: Sequence[float] = TARGET,
        random_target: bool = False,
        target_region: Region = TARGET_REGION,
        start_region: Region = START_REGION,
        penalty: float = PENALTY,
        success_radius: float = SUCCESS_RADIUS,
        fall_angle: float = FALL_ANGLE,
        gravity: float = GRAVITY,
        ball_mass: float = BALL_MASS,
        ball_radius: float = BALL_RADIUS,
        ball_inertia: float = BALL_INERTIA,
        body_mass: float = BODY_MASS,
        com_height: float = COM_HEIGHT,
        body_inertia_xz: float = BODY_INERTIA_XZ,
        body_inertia_yz: float = BODY_INERTIA_YZ,
        body_inertia_yaw: float = BODY_INERTIA_YAW,
        wheel_radius: float = WHEEL_RADIUS,
        zenith_angle: float = ZENITH_ANGLE,
        ball_friction: float = 0.0,
        yaw_friction: float = 0.0,
        render_size: int = 400,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if (
            isinstance(render_size, bool)
            or not isinstance(render_size, (int, np.integer))
            or render_size < 64
        ):
            raise ValueError(f"render_size must be an integer >= 64, got {render_size!r}")
        self.render_mode, self.render_size = render_mode, int(render_size)
        self._physics = check_physics(
            gravity=gravity,
            ball_mass=ball_mass,
            ball_radius=ball_radius,
            ball_inertia=ball_inertia,
            body_mass=body_mass,
            com_height=com_height,
            body_inertia_xz=body_inertia_xz,
            body_inertia_yz=body_inertia_yz,
            body_inertia_yaw=body_inertia_yaw,
            wheel_radius=wheel_radius,
            zenith_angle=zenith_angle,
            ball_friction=ball_friction,
            yaw_friction=yaw_friction,
        )
        self.dt, self.max_time = _number("dt", dt), _number("max_time", max_time)
        self.n_steps = round(self.max_time / self.dt)
        if self.n_steps < 1 or abs(self.n_steps * self.dt - self.max_time) > 1e-9 * self.max_time:
            raise ValueError(
                f"max_time ({max_time!r} s) must be a whole number (>= 1) of steps dt ({dt!r} s)"
            )
        self.torque_bound = _number("torque_bound", torque_bound)
        self.walls = _walls(walls)
        self.wall_thickness = _number("wall_thickness", wall_thickness)
        self.hit_distance = self._physics["ball_radius"] + 0.5 * self.wall_thickness
        self.penalty = _number("penalty", penalty, strict=False)
        self.success_radius = _number("success_radius", success_radius)
        self.fall_angle = _number("fall_angle", fall_angle)
        if self.fall_angle > math.pi:
            raise ValueError(f"fall_angle must lie in (0, pi] rad, got {fall_angle!r}")
        self.target = self._free_point("target", target)
        self.random_target = bool(random_target)
        self.target_region = _region("target_region", target_region)
        self.start_region = _region("start_region", start_region)
        for name, region in (("start_region", self.start_region), ("target_region", self.target_region)):
            grid = np.stack(np.meshgrid(*np.linspace(region[0], region[1], 21).T), axis=-1).reshape(-1, 2)
            if not np.any(wall_distance(grid, self.walls) >= self.hit_distance):
                raise ValueError(f"{name} {np.stack(region).tolist()} lies entirely within the walls' band")
        inf = np.full(STATE_DIM, np.inf)
        self.observation_space = spaces.Box(
            np.concatenate([-inf, FIELD_LOW, [0.0]]).astype(np.float32),
            np.concatenate([inf, FIELD_HIGH, [self.max_time]]).astype(np.float32),
            dtype=np.float32,
        )
        self.action_space = spaces.Box(
            -self.torque_bound, self.torque_bound, shape=(ACT_DIM,), dtype=np.float32
        )
        self._obs = np.concatenate([np.zeros(STATE_DIM), self.target, [self.max_time]])
        self._steps = 0
        self._path: list[FloatArray] = []
        self._background: FloatArray | None = None

    # ------------------------------------------------------------ accessors
    @property
    def physics(self) -> dict[str, float]:
        """The ODE's parameters as keyword arguments of :func:`ballbot_ode` (a copy)."""
        return dict(self._physics)

    @property
    def state(self) -> FloatArray:
        """A copy of the physical state (:data:`STATE_DIM` entries, float64)."""
        return self._obs[:STATE_DIM].copy()

    @property
    def observation(self) -> FloatArray:
        """A copy of the current observation in float64 (the environment's own precision)."""
        return self._obs.copy()

    @property
    def goal(self) -> FloatArray:
        """The current episode's target ``(x, y)`` in m (a copy)."""
        return self._obs[GOAL_SLICE].copy()

    def dynamics_model(self) -> BallbotDynamics:
        """A :class:`BallbotDynamics` with this environment's parameters."""
        return BallbotDynamics(
            dt=self.dt,
            torque_bound=self.torque_bound,
            walls=self.walls,
            wall_thickness=self.wall_thickness,
            penalty=self.penalty,
            fall_angle=self.fall_angle,
            **self._physics,
        )

    def com_position(self, state: npt.ArrayLike | None = None) -> FloatArray:
        """Horizontal position (m) of the centre of mass of ball and body for a physical state (default: the
        current one): the ball centre plus ``m_a l sin(theta) / (m_a + m_b)`` per plane."""
        s = self._obs if state is None else np.asarray(state, dtype=np.float64)
        ratio = self._physics["body_mass"] / (self._physics["body_mass"] + self._physics["ball_mass"])
        return s[_POSITION] + ratio * self._physics["com_height"] * np.sin(s[_TILT])

    def _free_point(self, name: str, value: Any) -> FloatArray:
        """A point in the field whose ball would not hit a wall, else :class:`ValueError`."""
        point = _point(name, value)
        if wall_distance(point, self.walls) < self.hit_distance:
            raise ValueError(
                f"{name} {point.tolist()} lies inside a wall (closer than {self.hit_distance} m, ball radius "
                "plus half the wall thickness)"
            )
        return point

    def _draw_free(self, region: tuple[FloatArray, FloatArray]) -> FloatArray:
        for _ in range(1000):
            point = self.np_random.uniform(region[0], region[1])
            if wall_distance(point, self.walls) >= self.hit_distance:
                return point
        raise RuntimeError("could not draw a point outside the walls' band in 1000 tries")

    def _observation(self) -> Float32Array:
        return self._obs.astype(np.float32)

    def set_state(self, state: npt.ArrayLike) -> Float32Array:
        """Teleport to the physical ``state`` (:data:`STATE_DIM` numbers, module docstring order) and return
        the observation; the goal, the time to go and the step count are kept.

        :raises ValueError: unless ``state`` holds 9 finite numbers.
        """
        s = np.asarray(state, dtype=np.float64)
        if s.shape != (STATE_DIM,) or not np.all(np.isfinite(s)):
            raise ValueError(f"state must be {STATE_DIM} finite numbers, got {state!r}")
        self._obs[:STATE_DIM] = s
        self._path.append(self.com_position())
        return self._observation()

    # ------------------------------------------------------------ episode
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Float32Array, dict[str, Any]]:
        """Upright at rest at a start drawn in the start region (or ``options["start"]``), with the fixed or
        drawn target (or ``options["target"]``), ``max_time`` to go.

        :raises ValueError: for unknown option keys, or a start/target outside the field or inside a wall.
        """
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - {"start", "target"})
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; known: 'start', 'target'")
        if "start" in options:
            start = self._free_point("options['start']", options["start"])
        else:
            start = self._draw_free(self.start_region)
        if "target" in options:
            target = self._free_point("options['target']", options["target"])
        elif self.random_target:
            target = self._draw_free(self.target_region)
        else:
            target = self.target
        self._obs = np.concatenate([start, np.zeros(STATE_DIM - 2), target, [self.max_time]])
        self._steps = 0
        self._path = [self.com_position()]
        distance = float(np.linalg.norm(start - target))
        return self._observation(), {
            "is_success": False,
            "wall_hit": False,
            "fallen": False,
            "distance": distance,
        }

    def step(self, action: npt.ArrayLike) -> tuple[Float32Array, float, bool, bool, dict[str, Any]]:
        """One RK4 step under the clipped wheel torques; reward, termination and info as in the module
        docstring.

        :raises ValueError: for an action that is not 3 finite numbers.
        """
        try:
            u = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"action must be {ACT_DIM} finite wheel torques (N m), got {action!r}"
            ) from error
        if u.shape != (ACT_DIM,):
            raise ValueError(f"action must have shape ({ACT_DIM},) (wheel torques, N m), got shape {u.shape}")
        if not np.all(np.isfinite(u)):
            raise ValueError(f"action must be finite, got {u.tolist()}")
        u = np.clip(u, -self.torque_bound, self.torque_bound)
        nxt = ballbot_step(self._obs, u, self.dt, NUMPY, **self._physics)
        nxt[TIME_INDEX] = max(nxt[TIME_INDEX], 0.0)
        self._obs = nxt
        self._steps += 1
        self._path.append(self.com_position())
        hit = bool(wall_distance(nxt[_POSITION], self.walls) < self.hit_distance)
        fallen = bool(np.any(np.abs(nxt[_TILT]) > self.fall_angle))
        deadline = self._steps >= self.n_steps
        distance = float(np.linalg.norm(nxt[_POSITION] - nxt[GOAL_SLICE]))
        reward = -distance * self.dt - (self.penalty if hit or fallen else 0.0)
        success = deadline and not (hit or fallen) and distance <= self.success_radius
        info = {"is_success": success, "wall_hit": hit, "fallen": fallen, "distance": distance}
        return self._observation(), float(reward), hit or fallen or deadline, False, info

    # ------------------------------------------------------------ rendering
    def render(self) -> npt.NDArray[np.uint8] | None:  # type: ignore[override]
        """A ``(render_size, render_size, 3)`` ``uint8`` top view: field (white), start region (blue), walls
        (dark grey, true thickness), target (green cross and success disc), the centre-of-mass path so far
        (blue), the ball (red, true radius) and its lean (the body's centre of mass, black). ``None`` (with a
        warning) without ``render_mode="rgb_array"``."""
        if self.render_mode is None:
            gym.logger.warn('Call gymnasium.make(..., render_mode="rgb_array") to render.')
            return None
        xs, px = pixel_grid(self.render_size, max(abs(v) for v in (*FIELD_LOW, *FIELD_HIGH)))
        if self._background is None:
            self._background = self._draw_background(xs, px)
        img = self._background.copy()
        goal = self._obs[GOAL_SLICE]
        green = np.array([20.0, 150.0, 60.0])
        draw_segment(img, xs, xs, goal, goal, self.success_radius, np.array([170.0, 225.0, 180.0]), px)
        for d in (np.array([0.08, 0.08]), np.array([0.08, -0.08])):
            draw_segment(img, xs, xs, goal - d, goal + d, 0.015, green, px)
        path = np.asarray(self._path)
        for j in range(len(path) - 1):
            draw_segment(img, xs, xs, path[j], path[j + 1], 0.012, np.array([30.0, 80.0, 220.0]), px)
        ball = self._obs[_POSITION]
        draw_segment(img, xs, xs, ball, ball, self._physics["ball_radius"], np.array([210.0, 40.0, 40.0]), px)
        lean = ball + self._physics["com_height"] * np.sin(self._obs[_TILT])
        draw_segment(img, xs, xs, ball, lean, 0.012, np.array([20.0, 20.0, 20.0]), px)
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

    def _draw_background(self, xs: FloatArray, px: float) -> FloatArray:
        size = xs.shape[0]
        img = np.full((size, size, 3), 215.0)
        gx, gy = xs[None, :], xs[::-1][:, None]

        def fill(lo: Any, hi: Any, color: Any) -> None:
            inside_x = np.clip(np.minimum(gx - lo[0], hi[0] - gx) / px + 0.5, 0.0, 1.0)
            inside_y = np.clip(np.minimum(gy - lo[1], hi[1] - gy) / px + 0.5, 0.0, 1.0)
            blend(img, inside_x * inside_y, np.asarray(color, dtype=np.float64), slice(None), slice(None))

        fill(FIELD_LOW, FIELD_HIGH, (255.0, 255.0, 255.0))
        fill(*self.start_region, (205.0, 222.0, 245.0))
        if self.random_target:
            fill(*self.target_region, (215.0, 240.0, 220.0))
        grey = np.array([70.0, 70.0, 70.0])
        for x0, y0, x1, y1 in self.walls:
            draw_segment(
                img, xs, xs, np.array([x0, y0]), np.array([x1, y1]), 0.5 * self.wall_thickness, grey, px
            )
        return img


# ----------------------------------------------------------------------------- torch model


class BallbotDynamics(nn.Module):
    """Known dynamics of :class:`BallbotEnv` in torch.

    ``forward(obs, action)`` maps observations ``(..., 12)`` and wheel torques ``(..., 3)`` (N m, clipped to
    the bound as :meth:`BallbotEnv.step` does) to the next observation: one RK4 step of :func:`ballbot_ode`,
    the time to go clipped at 0. Batched over any leading shape, same dtype and device as ``obs``,
    differentiable. :meth:`reward` and :meth:`is_terminal` are the environment's. :meth:`f` and :meth:`g` are
    the control-affine form ``dx/dt = f(t, x) + g(t, x) u`` of the ODE (DMPC's running cost; time-invariant:
    ``t`` is unused, the observation carries the time to go). Parameters as for :class:`BallbotEnv`
    (``physics``: the keyword arguments of :func:`ballbot_ode`, validated by :func:`check_physics`).
    """

    obs_dim = OBS_DIM
    act_dim = ACT_DIM

    def __init__(
        self,
        dt: float = DT,
        torque_bound: float = TORQUE_BOUND,
        walls: npt.ArrayLike = WALLS,
        wall_thickness: float = WALL_THICKNESS,
        penalty: float = PENALTY,
        fall_angle: float = FALL_ANGLE,
        **physics: float,
    ) -> None:
        super().__init__()
        self.physics = check_physics(**physics)
        self.dt, self.torque_bound = _number("dt", dt), _number("torque_bound", torque_bound)
        self.walls = _walls(walls)
        self.wall_thickness = _number("wall_thickness", wall_thickness)
        self.hit_distance = self.physics["ball_radius"] + 0.5 * self.wall_thickness
        self.penalty = _number("penalty", penalty, strict=False)
        self.fall_angle = _number("fall_angle", fall_angle)

    @classmethod
    def from_env(cls, env: Any = None) -> BallbotDynamics:
        """The model of ``env`` (a :class:`BallbotEnv` or a wrapper of one; ``None``: the defaults)."""
        env = getattr(env, "unwrapped", env)
        return env.dynamics_model() if isinstance(env, BallbotEnv) else cls()

    def extra_repr(self) -> str:
        return (
            f"dt={self.dt}, torque_bound={self.torque_bound}, walls={self.walls}, "
            f"wall_thickness={self.wall_thickness}, penalty={self.penalty}, fall_angle={self.fall_angle}, "
            f"physics={self.physics}"
        )

    def continuous_dynamics(self, x: Any, u: Any, be: Backend = TORCH) -> Any:
        """``dx/dt``: :func:`ballbot_ode` with this model's physics (no clipping of ``u``), on any backend."""
        return ballbot_ode(x, u, be, **self.physics)

    def f(self, t: Any, x: torch.Tensor) -> torch.Tensor:
        """Drift ``(..., 12)``: the ODE at zero torque (``t`` unused)."""
        del t
        return ballbot_ode(x, x.new_zeros((*x.shape[:-1], ACT_DIM)), TORCH, **self.physics)

    def g(self, t: Any, x: torch.Tensor) -> torch.Tensor:
        """Input matrix ``(..., 12, 3)``: column ``i`` is the ODE's response to a unit torque of wheel ``i``
        (exact: the ODE is affine in the torques; ``t`` unused)."""
        del t
        eye = torch.eye(ACT_DIM, dtype=x.dtype, device=x.device)
        responses = ballbot_ode(x.unsqueeze(-2), eye, TORCH, **self.physics)  # (..., 3, 12)
        return (responses - self.f(None, x).unsqueeze(-2)).transpose(-1, -2)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Next observation ``(..., 12)`` of observations ``(..., 12)`` under wheel torques ``(..., 3)``."""
        u = action.to(obs.dtype).clamp(-self.torque_bound, self.torque_bound)
        nxt = ballbot_step(obs, u, self.dt, TORCH, **self.physics)
        return torch.cat([nxt[..., :TIME_INDEX], nxt[..., TIME_INDEX:].clamp_min(0.0)], dim=-1)

    def wall_clearance(self, obs: torch.Tensor) -> torch.Tensor:
        """Distance (m) of the ball to the nearest wall beyond the hit distance, ``(...)``: negative on a hit
        (a smooth signal for planners; ``inf`` without walls)."""
        return wall_distance(obs[..., _POSITION], self.walls) - self.hit_distance

    def _failed(self, obs: torch.Tensor) -> torch.Tensor:
        state = to_float64(obs)
        hit = wall_distance(state[..., _POSITION], self.walls) < self.hit_distance
        return hit | (state[..., _TILT].abs() > self.fall_angle).any(dim=-1)

    @torch.no_grad()
    def is_terminal(self, obs: torch.Tensor) -> torch.Tensor:
        """Whether observations ``(..., 12)`` end the episode, bool ``(...)``: a wall hit, a fall, or the
        deadline (time to go at most ``dt / 2``, robust to round-off), :meth:`BallbotEnv.step`'s rules.

        Compared in float64 as the environment does; on a float32 observation the verdict can differ from the
        environment's only within the observation's rounding of a bound.
        """
        return self._failed(obs) | (to_float64(obs[..., TIME_INDEX]) <= 0.5 * self.dt)

    def reward(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """The environment's reward ``(...)`` of the transition: ``-|p' - goal| dt`` minus ``penalty`` when
        ``next_obs`` hits a wall or has fallen (the penalty contributes no gradient)."""
        del obs, action
        distance = torch.linalg.vector_norm(next_obs[..., _POSITION] - next_obs[..., GOAL_SLICE], dim=-1)
        with torch.no_grad():
            failed = self._failed(next_obs)
        return -distance * self.dt - self.penalty * failed.to(next_obs.dtype)
