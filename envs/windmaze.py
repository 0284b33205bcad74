"""Point-mass wind maze of the leap-c lecture (SAC-ZOP/SAC-FOP/SAC-FOA), with its torch model and MPC problem.

Source: the lecture (shared/papers/001_fba01a676f0f8ac9.txt, slides "Current Environments" and the
parameter table) describes *WindMaze*: "Point mass navigates through a maze with a spatially varying
wind field. Goal: walk to the target while avoiding wind fields, navigate through narrow passages, MPC
can not see wind field". The numbers below come from the lecture's reference code, leap-c (BSD-2,
``leap_c/examples/pointmass/env.py``, the ``PointMassEnvConfig`` version with a 4 x 1 maze and
``WindParcour`` boxes; the older 10 x 10 vortex version is a different task). This module is our own
implementation of that behaviour.

Environment :class:`WindMazeEnv` (gymnasium id ``PointMassWindMaze-v0``, 100 steps = 10 s):

* state ``(x, y, vx, vy)``: position in metres, velocity in m/s; maze ``[0, 4] x [0, 1]`` (leap-c);
* observation ``(x, y, vx, vy, wind_x, wind_y)`` (``float32``): the state and the wind force (N) at the
  current position; bounds ``[0, 4] x [0, 1] x [-20, 20]^2 x [-10.5, 10.5]^2`` (leap-c);
* action: force ``(fx, fy)`` in N, clipped into ``[-10, 10]^2`` (leap-c ``Fmax = 10``);
* dynamics (leap-c ``define_transition_matrices``; mass ``m = 1`` kg, damping ``c = 15`` kg/s in x and
  y, ``dt = 0.1`` s): the velocity is integrated exactly for a force held over the step, the position
  by explicit Euler with the *old* velocity::

      a = exp(-c dt / m),   b = (m / c) (1 - a)
      p' = p + dt v
      v' = a v + b (clip(u, -10, 10) + w(p))

  where ``w(p) = (-10.5, 0)`` N inside a wind box (bounds inclusive) and ``(0, 0)`` outside: the wind
  is evaluated at the position *before* the step;
* wind boxes ``[x_lo, x_hi] x [y_lo, y_hi]`` (leap-c ``WindParcour``): ``"hard"`` (the default of
  leap-c's ``PointMassEnvConfig``): ``[0.5, 1.5] x [0.1, 1.0]`` and ``[2.5, 3.5] x [0.0, 0.9]``, leaving
  0.1 m passages at the bottom and the top; ``"easy"``: ``[0.5, 1.5] x [0.2, 1.0]`` and
  ``[2.5, 3.5] x [0.0, 0.8]``. The wind (10.5 N) is stronger than the largest force (10 N): a mass
  inside a box is pushed back whatever it does;
* start: uniform in the disc of radius 0.15 around ``(0.25, 0.8)`` at rest (leap-c ``Circle.sample``;
  re-drawn if inside a wind box). ``random_start=True`` (or ``reset(options={"mode": "train"})``, the
  leap-c option) draws the position uniformly in ``[0.1, 3.9] x [0.1, 0.9]`` outside the wind boxes;
* goal: the disc of radius 0.15 around ``(3.75, 0.2)`` (boundary included);
* reward of a step to ``(p', t')`` with ``t'`` the time after the step (leap-c)::

      r = 0.1 (1 - |x' - 3.75| / 4) + [p' in goal] 60 (1 - 0.5 t' / 10)

* termination: reaching the goal (``info["is_success"]``) or leaving the state box, i.e. a position
  outside the maze *or* a speed component beyond 20 m/s (``info["violation"]``; leap-c: no penalty, no
  clipping, the last observation lies outside the observation Box). Truncation after ``max_time = 10`` s
  (100 steps; the registered id adds the same ``TimeLimit``).

:class:`WindMazeDynamics` is the known-dynamics torch model (the project's contract for model-based
algorithms): ``forward(obs, action)`` reproduces :meth:`WindMazeEnv.step`'s next observation, wind
included. It has no ``reward`` method: the goal bonus depends on the elapsed time, which the
observation does not hold.

:class:`WindMazeOCP` is the parameterized MPC problem of the lecture: the same point mass *without*
wind (the MPC cannot see it), ``N = 20`` stages over ``T = 2`` s, the least-squares cost of leap-c with
the lecture's ten learnable parameters (see its docstring).

The point-mass step is written once (:func:`pointmass_step`) for a :class:`~sb3_stein.common.backends.Backend`
and serves ``env.step`` (numpy), the torch model and the casadi OCP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import torch
from gymnasium import spaces
from torch import nn

from sb3_stein.common.backends import CASADI, NUMPY, TORCH, Backend, to_float64
from sb3_stein.common.ocp import OptimalControlProblem

from .raster import blend

__all__ = [
    "DAMPING",
    "DT",
    "FORCE_BOUND",
    "GOAL",
    "MASS",
    "MAX_EPISODE_STEPS",
    "MAX_SPEED",
    "MAZE_HIGH",
    "MAZE_LOW",
    "START",
    "WIND_BOXES",
    "WIND_MAGNITUDE",
    "WindMazeDynamics",
    "WindMazeEnv",
    "WindMazeOCP",
    "pointmass_step",
    "velocity_coefficients",
]

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
Difficulty = Literal["easy", "hard"]
#: A wind box ``(x_lo, y_lo, x_hi, y_hi)`` in metres.
Box = tuple[float, float, float, float]

#: Point mass in kg (leap-c ``PointMassEnvConfig.m``).
MASS = 1.0
#: Viscous damping coefficient in kg/s, the same in x and y (leap-c ``cx = cy = 15``).
DAMPING = 15.0
#: Time step in s (leap-c ``dt``; also the MPC's ``T / N = 2 / 20``).
DT = 0.1
#: Largest force per axis in N (leap-c ``Fmax``; the lecture's action-reference bounds).
FORCE_BOUND = 10.0
#: Wind force in N inside a wind box, pointing to ``-x`` (leap-c ``max_wind_force``).
WIND_MAGNITUDE = 10.5
#: Speed bound per axis in m/s: part of the state box whose violation terminates (leap-c ``max_v``).
MAX_SPEED = 20.0
#: Lower-left and upper-right corners of the maze in m (leap-c ``state_low/state_high``).
MAZE_LOW = (0.0, 0.0)
MAZE_HIGH = (4.0, 1.0)
#: Centres of the start and goal discs in m, and their radius (leap-c ``start``/``goal`` circles).
START = (0.25, 0.8)
GOAL = (3.75, 0.2)
RADIUS = 0.15
#: Episode length in s (leap-c ``max_time``), and in steps (the registered ``TimeLimit``).
MAX_TIME = 10.0
MAX_EPISODE_STEPS = 100
#: Reward coefficients (leap-c):
#: ``DISTANCE_WEIGHT (1 - |x - goal_x| / 4) + GOAL_BONUS (1 - BONUS_DECAY t / T)``.
DISTANCE_WEIGHT = 0.1
GOAL_BONUS = 60.0
BONUS_DECAY = 0.5
#: Wind boxes ``(x_lo, y_lo, x_hi, y_hi)`` per difficulty (leap-c ``WindParcour``; "hard" is its default).
WIND_BOXES: dict[str, tuple[Box, ...]] = {
    "easy": ((0.5, 0.2, 1.5, 1.0), (2.5, 0.0, 3.5, 0.8)),
    "hard": ((0.5, 0.1, 1.5, 1.0), (2.5, 0.0, 3.5, 0.9)),
}
#: Start region of ``random_start`` / ``options={"mode": "train"}`` (leap-c's "train" mode).
TRAIN_START_LOW = (0.1, 0.1)
TRAIN_START_HIGH = (3.9, 0.9)


# ----------------------------------------------------------------------------- shared physics


def velocity_coefficients(mass: float, damping: float, dt: float) -> tuple[float, float]:
    """``(a, b)`` of the exact velocity update ``v' = a v + b F`` for ``m v' = F - c v`` over ``dt``.

    :param mass: ``m`` in kg (> 0).
    :param damping: ``c`` in kg/s (> 0).
    :param dt: step in s (> 0).
    :return: ``a = exp(-c dt / m)`` (dimensionless) and ``b = (m / c) (1 - a)`` in s/kg.
    """
    a = math.exp(-damping * dt / mass)
    return a, (mass / damping) * (1.0 - a)


def pointmass_step(x: Any, force: Any, be: Backend, dt: float, a: float, b: float) -> Any:
    """One step of the damped point mass (leap-c's discretisation; module docstring).

    :param x: state ``(x, y, vx, vy)``: ``(..., 4)`` numpy/torch arrays or a ``(4, 1)`` casadi column.
    :param force: total force ``(fx, fy)`` in N held over the step (control plus wind), same layout.
    :param be: the array library (:data:`~sb3_stein.common.backends.NUMPY`, ``TORCH`` or ``CASADI``).
    :param dt: step in s.
    :param a: velocity decay ``exp(-c dt / m)`` (:func:`velocity_coefficients`).
    :param b: force gain ``(m / c) (1 - a)`` in s/kg.
    :return: the next state in the layout of ``x``.
    """
    px, py, vx, vy = be.split(x)
    fx, fy = be.split(force)
    return be.stack([px + dt * vx, py + dt * vy, a * vx + b * fx, a * vy + b * fy])


def _in_boxes(px: Any, py: Any, boxes: Sequence[Box]) -> Any:
    """Boolean array (numpy or torch, shape of ``px``): whether ``(px, py)`` lies in any box (bounds
    inclusive, as leap-c's ``WindParcour``)."""
    inside = px < -math.inf  # all False, in px's library and shape
    for x_lo, y_lo, x_hi, y_hi in boxes:
        inside = inside | ((px >= x_lo) & (px <= x_hi) & (py >= y_lo) & (py <= y_hi))
    return inside


def resolve_wind_boxes(difficulty: str, wind_boxes: npt.ArrayLike | None) -> tuple[Box, ...]:
    """The wind boxes: ``wind_boxes`` if given (``(K, 4)`` rows ``(x_lo, y_lo, x_hi, y_hi)`` in m, ``K``
    may be 0 for no wind), else those of ``difficulty`` (``"easy"`` or ``"hard"``).

    :raises ValueError: for an unknown difficulty or malformed boxes.
    """
    if wind_boxes is None:
        if difficulty not in WIND_BOXES:
            raise ValueError(f"difficulty must be one of {tuple(WIND_BOXES)}, got {difficulty!r}")
        return WIND_BOXES[difficulty]
    rows = np.asarray(wind_boxes, dtype=np.float64)
    if rows.size == 0:
        return ()
    if rows.ndim != 2 or rows.shape[1] != 4 or not np.all(np.isfinite(rows)):
        raise ValueError(
            f"wind_boxes must be (K, 4) finite rows (x_lo, y_lo, x_hi, y_hi), got {wind_boxes!r}"
        )
    if np.any(rows[:, 0] > rows[:, 2]) or np.any(rows[:, 1] > rows[:, 3]):
        raise ValueError(f"wind_boxes rows need x_lo <= x_hi and y_lo <= y_hi, got {wind_boxes!r}")
    return tuple((float(r[0]), float(r[1]), float(r[2]), float(r[3])) for r in rows)


def _positive(name: str, value: Any) -> float:
    """``value`` as a float; :class:`ValueError` unless it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _point(name: str, value: Sequence[float] | npt.ArrayLike) -> FloatArray:
    """``value`` as a finite ``(2,)`` float64 array, else :class:`ValueError`."""
    array = np.asarray(value, dtype=np.float64)
    if array.shape != (2,) or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be 2 finite numbers (x, y) in m, got {value!r}")
    return array


def _in_maze(name: str, point: FloatArray) -> None:
    if np.any(point < MAZE_LOW) or np.any(point > MAZE_HIGH):
        raise ValueError(f"{name} {point.tolist()} lies outside the maze {MAZE_LOW}-{MAZE_HIGH}")


# ----------------------------------------------------------------------------- environment


class WindMazeEnv(gym.Env[Float32Array, Float32Array]):
    """The lecture's point-mass wind maze (module docstring for the physics, reward and episode rules).

    Defaults are leap-c's (``PointMassEnvConfig``, ``difficulty="hard"``).

    :param difficulty: ``"hard"`` (default) or ``"easy"``: which leap-c wind boxes (ignored when
        ``wind_boxes`` is given).
    :param wind_boxes: optional ``(K, 4)`` rows ``(x_lo, y_lo, x_hi, y_hi)`` in m replacing the
        difficulty's boxes (``[]`` for no wind).
    :param wind_magnitude: wind force in N (to ``-x``) inside a box; also the observation bound of the
        wind entries.
    :param mass: point mass in kg.
    :param damping: viscous damping coefficient in kg/s (both axes).
    :param dt: time step in s.
    :param force_bound: actions are clipped into ``[-force_bound, force_bound]^2`` (N).
    :param max_speed: speed bound per axis in m/s (state box; leaving it terminates).
    :param max_time: episode length in s: truncation and the time scale of the goal bonus.
    :param start: centre of the start disc in m.
    :param goal: centre of the goal disc in m.
    :param radius: radius of the start and goal discs in m.
    :param random_start: draw starts uniformly in ``[0.1, 3.9] x [0.1, 0.9]`` (outside the wind) instead
        of the start disc (leap-c's ``options={"mode": "train"}``, which ``reset`` also accepts).
    :param render_mode: ``None`` or ``"rgb_array"``.
    :param render_width: frame width in pixels (the height follows the maze's aspect ratio).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        difficulty: Difficulty = "hard",
        wind_boxes: npt.ArrayLike | None = None,
        wind_magnitude: float = WIND_MAGNITUDE,
        mass: float = MASS,
        damping: float = DAMPING,
        dt: float = DT,
        force_bound: float = FORCE_BOUND,
        max_speed: float = MAX_SPEED,
        max_time: float = MAX_TIME,
        start: Sequence[float] = START,
        goal: Sequence[float] = GOAL,
        radius: float = RADIUS,
        random_start: bool = False,
        render_mode: str | None = None,
        render_width: int = 600,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if (
            isinstance(render_width, bool)
            or not isinstance(render_width, (int, np.integer))
            or render_width < 50
        ):
            raise ValueError(f"render_width must be an integer >= 50, got {render_width!r}")
        self.difficulty = difficulty
        self.wind_boxes = resolve_wind_boxes(difficulty, wind_boxes)
        self.wind_magnitude = _positive("wind_magnitude", wind_magnitude)
        self.mass, self.damping = _positive("mass", mass), _positive("damping", damping)
        self.dt, self.force_bound = _positive("dt", dt), _positive("force_bound", force_bound)
        self.max_speed, self.max_time = _positive("max_speed", max_speed), _positive("max_time", max_time)
        self.radius = _positive("radius", radius)
        self.start, self.goal = _point("start", start), _point("goal", goal)
        _in_maze("start", self.start)
        _in_maze("goal", self.goal)
        self.random_start = bool(random_start)
        self.render_mode, self.render_width = render_mode, int(render_width)
        self._a, self._b = velocity_coefficients(self.mass, self.damping, self.dt)
        self.state_low = np.array([*MAZE_LOW, -self.max_speed, -self.max_speed])
        self.state_high = np.array([*MAZE_HIGH, self.max_speed, self.max_speed])
        wind = np.full(2, self.wind_magnitude)
        self.observation_space = spaces.Box(
            np.concatenate([self.state_low, -wind]).astype(np.float32),
            np.concatenate([self.state_high, wind]).astype(np.float32),
            dtype=np.float32,
        )
        self.action_space = spaces.Box(-self.force_bound, self.force_bound, shape=(2,), dtype=np.float32)
        self._state = np.array([*self.start, 0.0, 0.0])
        self._steps = 0
        self._path: list[FloatArray] = [self._state[:2].copy()]
        self._background: FloatArray | None = None

    # ------------------------------------------------------------ physics
    def wind_force(self, positions: npt.ArrayLike) -> FloatArray:
        """Wind force in N at positions ``(..., 2)`` (m): ``(-wind_magnitude, 0)`` in a box, else 0."""
        p = np.asarray(positions, dtype=np.float64)
        inside = _in_boxes(p[..., 0], p[..., 1], self.wind_boxes)
        wind_x = np.where(inside, -self.wind_magnitude, 0.0)
        return np.stack([wind_x, np.zeros_like(wind_x)], axis=-1)

    def dynamics_model(self) -> WindMazeDynamics:
        """A :class:`WindMazeDynamics` with this environment's parameters."""
        return WindMazeDynamics(
            wind_boxes=self.wind_boxes,
            wind_magnitude=self.wind_magnitude,
            mass=self.mass,
            damping=self.damping,
            dt=self.dt,
            force_bound=self.force_bound,
            max_speed=self.max_speed,
            goal=self.goal,
            radius=self.radius,
        )

    @property
    def state(self) -> FloatArray:
        """Copy of the current state ``(x, y, vx, vy)`` (float64, m and m/s)."""
        return self._state.copy()

    @property
    def time(self) -> float:
        """Seconds elapsed since the last reset."""
        return self._steps * self.dt

    def set_state(self, state: npt.ArrayLike) -> Float32Array:
        """Teleport to ``state = (x, y, vx, vy)`` (not clipped) and return its observation; the elapsed
        time and the drawn path are kept."""
        self._state = np.asarray(state, dtype=np.float64).reshape(4).copy()
        self._path.append(self._state[:2].copy())
        return self._observation()

    def _observation(self) -> Float32Array:
        wind = self.wind_force(self._state[:2])
        return np.concatenate([self._state, wind]).astype(np.float32)

    def _sample_start(self, train: bool) -> FloatArray:
        for _ in range(1000):
            if train:
                position = self.np_random.uniform(TRAIN_START_LOW, TRAIN_START_HIGH)
            else:
                angle = self.np_random.uniform(0.0, 2.0 * np.pi)
                distance = self.radius * np.sqrt(self.np_random.uniform(0.0, 1.0))
                position = self.start + distance * np.array([np.cos(angle), np.sin(angle)])
            if not bool(_in_boxes(position[0], position[1], self.wind_boxes)):
                return position
        raise RuntimeError("could not draw a start position outside the wind boxes in 1000 tries")

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Float32Array, dict[str, Any]]:
        """Start at rest in the start disc (or anywhere, with ``random_start`` or ``options={"mode":
        "train"}``), outside the wind boxes."""
        super().reset(seed=seed)
        train = self.random_start or (options or {}).get("mode") == "train"
        self._state = np.concatenate([self._sample_start(train), np.zeros(2)])
        self._steps = 0
        self._path = [self._state[:2].copy()]
        return self._observation(), {"is_success": False, "violation": False}

    def step(self, action: npt.ArrayLike) -> tuple[Float32Array, float, bool, bool, dict[str, Any]]:
        """Apply the force ``action`` (N, clipped) for ``dt`` seconds; see the module docstring."""
        u = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -self.force_bound, self.force_bound)
        force = u + self.wind_force(self._state[:2])
        self._state = pointmass_step(self._state, force, NUMPY, self.dt, self._a, self._b)
        self._steps += 1
        self._path.append(self._state[:2].copy())
        position = self._state[:2]
        violation = bool(np.any(self._state < self.state_low) or np.any(self._state > self.state_high))
        success = bool(np.linalg.norm(position - self.goal) <= self.radius)
        span = MAZE_HIGH[0] - MAZE_LOW[0]
        reward = DISTANCE_WEIGHT * (1.0 - abs(position[0] - self.goal[0]) / span)
        if success:
            reward += GOAL_BONUS * (1.0 - BONUS_DECAY * self.time / self.max_time)
        truncated = self._steps >= round(self.max_time / self.dt)
        info = {"is_success": success, "violation": violation, "time": self.time}
        return self._observation(), float(reward), success or violation, bool(truncated), info

    # ------------------------------------------------------------ rendering
    def render(self) -> npt.NDArray[np.uint8] | None:  # type: ignore[override]
        """An ``(H, W, 3)`` ``uint8`` frame (``W = render_width``): maze, wind boxes with arrows, start
        (grey) and goal (green) discs, the path since reset and the mass (red)."""
        if self.render_mode is None:
            gym.logger.warn('Call gymnasium.make(..., render_mode="rgb_array") to render.')
            return None
        canvas = _Canvas(self.render_width)
        if self._background is None:
            self._background = self._draw_background(canvas)
        img = self._background.copy()
        path = np.asarray(self._path)
        for j in range(len(path) - 1):
            canvas.segment(img, path[j], path[j + 1], 0.008, (30.0, 80.0, 220.0))
        canvas.disc(img, self._state[:2], 0.04, (200.0, 30.0, 30.0))
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

    def _draw_background(self, canvas: _Canvas) -> FloatArray:
        img = np.empty((canvas.height, canvas.width, 3), dtype=np.float64)
        img[:] = (205.0, 205.0, 205.0)
        canvas.rectangle(img, MAZE_LOW, MAZE_HIGH, (250.0, 250.0, 250.0))
        arrow = (40.0, 90.0, 160.0)
        for x_lo, y_lo, x_hi, y_hi in self.wind_boxes:
            canvas.rectangle(img, (x_lo, y_lo), (x_hi, y_hi), (160.0, 200.0, 240.0), opacity=0.6)
            for y in np.linspace(y_lo, y_hi, 5)[1:-1]:
                tail, head = np.array([x_hi - 0.15, y]), np.array([x_lo + 0.15, y])
                canvas.segment(img, tail, head, 0.006, arrow)
                for dy in (-0.04, 0.04):
                    canvas.segment(img, head, head + np.array([0.06, dy]), 0.006, arrow)
        canvas.disc(img, self.start, self.radius, (150.0, 150.0, 150.0), opacity=0.6)
        canvas.disc(img, self.goal, self.radius, (20.0, 170.0, 60.0), opacity=0.8)
        (x0, y0), (x1, y1) = MAZE_LOW, MAZE_HIGH
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        for i in range(4):
            canvas.segment(img, corners[i], corners[(i + 1) % 4], 0.01, (40.0, 40.0, 40.0))
        return img


class _Canvas:
    """World-to-pixel geometry of a frame showing the maze with a 0.1 m margin, and anti-aliased
    drawing of discs, segments and rectangles on a float RGB image (with :func:`raster.blend`)."""

    margin = 0.1

    def __init__(self, width: int) -> None:
        x_extent = MAZE_HIGH[0] - MAZE_LOW[0] + 2 * self.margin
        y_extent = MAZE_HIGH[1] - MAZE_LOW[1] + 2 * self.margin
        self.width = width
        self.px = x_extent / width
        self.height = max(round(y_extent / self.px), 1)
        self.xs = MAZE_LOW[0] - self.margin + (np.arange(self.width) + 0.5) * self.px
        self.ys = MAZE_HIGH[1] + self.margin - (np.arange(self.height) + 0.5) * self.px  # top row first

    def _window(self, lo: FloatArray, hi: FloatArray) -> tuple[slice, slice] | None:
        c0 = max(int(np.floor((lo[0] - self.xs[0]) / self.px)) - 1, 0)
        c1 = min(int(np.ceil((hi[0] - self.xs[0]) / self.px)) + 2, self.width)
        r0 = max(int(np.floor((self.ys[0] - hi[1]) / self.px)) - 1, 0)
        r1 = min(int(np.ceil((self.ys[0] - lo[1]) / self.px)) + 2, self.height)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def _blend(self, img: FloatArray, window: tuple[slice, slice], alpha: FloatArray, color: Any) -> None:
        blend(img, alpha, np.asarray(color, dtype=np.float64), *window)

    def disc(self, img: FloatArray, centre: Any, radius: float, color: Any, opacity: float = 1.0) -> None:
        """Filled disc of ``radius`` m around ``centre``."""
        c = np.asarray(centre, dtype=np.float64)
        window = self._window(c - radius, c + radius)
        if window is None:
            return
        gx, gy = self.xs[window[1]][None, :], self.ys[window[0]][:, None]
        alpha = np.clip((radius - np.hypot(gx - c[0], gy - c[1])) / self.px + 0.5, 0.0, 1.0)
        self._blend(img, window, opacity * alpha, color)

    def segment(self, img: FloatArray, p: Any, q: Any, half_width: float, color: Any) -> None:
        """Segment ``p -> q`` (m) of half-width ``half_width`` m with round caps."""
        p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
        window = self._window(np.minimum(p, q) - half_width, np.maximum(p, q) + half_width)
        if window is None:
            return
        gx, gy = self.xs[window[1]][None, :], self.ys[window[0]][:, None]
        d = q - p
        dd = float(d @ d)
        t = 0.0 if dd == 0.0 else np.clip(((gx - p[0]) * d[0] + (gy - p[1]) * d[1]) / dd, 0.0, 1.0)
        dist = np.hypot(gx - (p[0] + t * d[0]), gy - (p[1] + t * d[1]))
        self._blend(img, window, np.clip((half_width - dist) / self.px + 0.5, 0.0, 1.0), color)

    def rectangle(self, img: FloatArray, lo: Any, hi: Any, color: Any, opacity: float = 1.0) -> None:
        """Filled axis-aligned rectangle with corners ``lo`` and ``hi`` (m)."""
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        window = self._window(lo, hi)
        if window is None:
            return
        gx, gy = self.xs[window[1]][None, :], self.ys[window[0]][:, None]
        inside_x = np.clip(np.minimum(gx - lo[0], hi[0] - gx) / self.px + 0.5, 0.0, 1.0)
        inside_y = np.clip(np.minimum(gy - lo[1], hi[1] - gy) / self.px + 0.5, 0.0, 1.0)
        self._blend(img, window, opacity * inside_x * inside_y, color)


# ----------------------------------------------------------------------------- torch model


class WindMazeDynamics(nn.Module):
    """Known dynamics of :class:`WindMazeEnv` in torch, the true wind included.

    ``forward(obs, action)`` maps observations ``(..., 6)`` and forces ``(..., 2)`` (N, environment
    units, clipped as :meth:`WindMazeEnv.step` does) to the next observation ``(..., 6)``: batched, same
    dtype and device as ``obs``, differentiable in ``obs`` and ``action`` (the wind is piecewise
    constant in the position, so it contributes no gradient). The wind acting during the step is
    recomputed from the position ``obs[..., :2]`` (for observations of the environment it equals
    ``obs[..., 4:]``); positions are not clipped, as in the environment. :meth:`is_terminal` is the
    environment's termination (the goal disc, or leaving the state box).

    Parameters as for :class:`WindMazeEnv` (``wind_boxes=None`` takes ``difficulty``'s boxes).
    """

    obs_dim = 6
    act_dim = 2
    # Class-level defaults of the termination parameters, so that a model pickled before they existed
    # (inside a saved agent) still has them when loaded.
    max_speed: float = MAX_SPEED
    goal: FloatArray = np.asarray(GOAL, dtype=np.float64)
    radius: float = RADIUS

    def __init__(
        self,
        difficulty: Difficulty = "hard",
        wind_boxes: npt.ArrayLike | None = None,
        wind_magnitude: float = WIND_MAGNITUDE,
        mass: float = MASS,
        damping: float = DAMPING,
        dt: float = DT,
        force_bound: float = FORCE_BOUND,
        max_speed: float = MAX_SPEED,
        goal: Sequence[float] | npt.ArrayLike = GOAL,
        radius: float = RADIUS,
    ) -> None:
        super().__init__()
        self.wind_boxes = resolve_wind_boxes(difficulty, wind_boxes)
        self.wind_magnitude = _positive("wind_magnitude", wind_magnitude)
        self.mass, self.damping = _positive("mass", mass), _positive("damping", damping)
        self.dt, self.force_bound = _positive("dt", dt), _positive("force_bound", force_bound)
        self.max_speed, self.radius = _positive("max_speed", max_speed), _positive("radius", radius)
        self.goal = _point("goal", goal)
        self._a, self._b = velocity_coefficients(self.mass, self.damping, self.dt)

    @classmethod
    def from_env(cls, env: Any = None) -> WindMazeDynamics:
        """The model of ``env`` (a :class:`WindMazeEnv` or a wrapper of one; ``None``: the defaults)."""
        env = getattr(env, "unwrapped", env)
        return env.dynamics_model() if isinstance(env, WindMazeEnv) else cls()

    def extra_repr(self) -> str:
        return (
            f"wind_boxes={self.wind_boxes}, wind_magnitude={self.wind_magnitude}, mass={self.mass}, "
            f"damping={self.damping}, dt={self.dt}, force_bound={self.force_bound}, "
            f"max_speed={self.max_speed}, goal={self.goal.tolist()}, radius={self.radius}"
        )

    def wind_x(self, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
        """x-component of the wind force (N) at positions ``(px, py)`` (m), in ``px``'s dtype."""
        return torch.zeros_like(px).masked_fill(_in_boxes(px, py, self.wind_boxes), -self.wind_magnitude)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Next observation ``(..., 6)`` of observations ``(..., 6)`` under forces ``(..., 2)``."""
        u = action.to(obs.dtype).clamp(-self.force_bound, self.force_bound)
        force = torch.stack([u[..., 0] + self.wind_x(obs[..., 0], obs[..., 1]), u[..., 1]], dim=-1)
        state = pointmass_step(obs[..., :4], force, TORCH, self.dt, self._a, self._b)
        wind = self.wind_x(state[..., 0], state[..., 1])
        return torch.cat([state, torch.stack([wind, torch.zeros_like(wind)], dim=-1)], dim=-1)

    @torch.no_grad()
    def is_terminal(self, obs: torch.Tensor) -> torch.Tensor:
        """Whether observations ``(..., 6)`` end the episode, bool ``(...)``, by
        :meth:`WindMazeEnv.step`'s rule: the position in the goal disc (boundary included), or the state
        ``(x, y, vx, vy)`` outside the box ``[0, 4] x [0, 1] x [-max_speed, max_speed]^2``.

        Compared in float64, as the environment compares its float64 state; on a float32 observation
        the verdict can differ from the environment's only within the observation's rounding of a bound.
        A NaN state is not terminal, as in the environment (its comparisons are all false).
        """
        state = to_float64(obs[..., :4])
        low = state.new_tensor([*MAZE_LOW, -self.max_speed, -self.max_speed])
        high = state.new_tensor([*MAZE_HIGH, self.max_speed, self.max_speed])
        violation = (state < low).any(dim=-1) | (state > high).any(dim=-1)
        success = (
            torch.linalg.vector_norm(state[..., :2] - state.new_tensor(self.goal), dim=-1) <= self.radius
        )
        return violation | success


# ----------------------------------------------------------------------------- MPC problem


class WindMazeOCP(OptimalControlProblem):
    """The lecture's parameterized MPC for the wind maze (casadi symbols; see
    :class:`~sb3_stein.common.ocp.OptimalControlProblem`).

    * Model: the environment's point mass (:func:`pointmass_step`) *without* wind, state
      ``(x, y, vx, vy)``; :meth:`state_from_obs` drops the wind entries of the observation (leap-c's
      planner does the same). Note: leap-c's OCP uses ``m = 1`` but damping ``cx = cy = 0.1`` against
      the environment's 15; we use the environment's value by default (``damping`` argument), so the
      MPC's only model error is the wind.
    * Horizon ``N = 20`` intervals of ``dt = 0.1`` s (``T = 2`` s; leap-c ``N_horizon``/``T_horizon``).
    * Cost (leap-c's ``EXTERNAL`` least squares), per stage ``k < N`` and terminal::

          l(x, u) = 0.5 sum_i q_i^2 (x_i - x_ref_i)^2 + 0.5 sum_j r^2 (u_j - u_ref_j)^2
          V(x_N)  = 0.5 sum_i q_i^2 (x_i - x_ref_i)^2

      with ``r = 0.1`` fixed (leap-c ``r_diag_sqrt``, not learnable in the lecture's table) and base
      state weights 1 (leap-c ``q_diag_sqrt`` default), so ``Q = diag(q^2)``.
    * Learnable parameters ``p_k`` (the lecture's table, 10 numbers): ``x_ref, y_ref`` in ``(0, 4)`` and
      ``(0, 1)`` m; ``vx_ref, vy_ref`` in ``(-20, 20)`` m/s; ``ux_ref, uy_ref`` in ``(-10, 10)`` N;
      ``q_x, q_y, q_vx, q_vy`` (square roots of the state residual weights) in ``(0.5, 1.5)``.
      Defaults: the goal at rest ``(3.75, 0.2, 0, 0)``, zero force, weights 1. (leap-c's library
      default reference is the origin; its closed-loop test passes the goal, which we adopt as the
      hand-tuned value.)
    * Constraints: controls in ``[-10, 10]^2`` (hard, leap-c); states ``x_1..x_N`` in the maze shrunk
      by ``position_margin`` (default 1 mm, our choice: the environment terminates on *any* excess, and
      an interior-point plan that rides a bound, e.g. with a position reference on the wall, ends
      about 1e-9 past it: with no margin, SAC-FOP with per-stage parameters ended 286 of 288 training
      episodes that way) and speeds in ``[-20, 20]`` (the environment's termination
      box). leap-c makes these state bounds *soft* (L1 10000 / L2 10 slack penalties) with a 0.05 m
      margin; here they are hard (the base class has no slacks). Since ``x_1``'s position is
      ``p_0 + dt v_0`` whatever the control, a state heading out of the maze within one step makes the
      problem infeasible, exactly when the environment terminates at the next step anyway.

    :param horizon: ``N``, number of intervals.
    :param dt: interval length in s.
    :param mass: point mass in kg.
    :param damping: damping coefficient in kg/s of the MPC model.
    :param force_bound: control bound in N (also the action-reference bounds).
    :param max_speed: speed bound in m/s (state constraint and velocity-reference bounds).
    :param goal: default position reference in m.
    :param control_weight_sqrt: ``r``, square root of the control residual weight (fixed).
    :param position_margin: the position constraint is the maze shrunk by this much (m, >= 0).
        Training violations are still counted against the maze itself (:meth:`violation_bounds`).
    """

    obs_dim = 6

    def __init__(
        self,
        horizon: int = 20,
        dt: float = DT,
        mass: float = MASS,
        damping: float = DAMPING,
        force_bound: float = FORCE_BOUND,
        max_speed: float = MAX_SPEED,
        goal: Sequence[float] = GOAL,
        control_weight_sqrt: float = 0.1,
        position_margin: float = 1e-3,
    ) -> None:
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
        self.state_dim, self.control_dim, self.horizon = 4, 2, int(horizon)
        self.dt, self.mass, self.damping = (
            _positive("dt", dt),
            _positive("mass", mass),
            _positive("damping", damping),
        )
        self.force_bound, self.max_speed = (
            _positive("force_bound", force_bound),
            _positive("max_speed", max_speed),
        )
        self.control_weight_sqrt = _positive("control_weight_sqrt", control_weight_sqrt)
        margin = float(position_margin)
        half = 0.5 * min(MAZE_HIGH[0] - MAZE_LOW[0], MAZE_HIGH[1] - MAZE_LOW[1])
        if not math.isfinite(margin) or not 0.0 <= margin < half:
            raise ValueError(f"position_margin must be a number in [0, {half}), got {position_margin!r}")
        self.position_margin = margin
        goal_array = _point("goal", goal)
        _in_maze("goal", goal_array)
        self.goal = goal_array
        self._a, self._b = velocity_coefficients(self.mass, self.damping, self.dt)
        f, v = self.force_bound, self.max_speed
        self.u_low, self.u_high = np.full(2, -f), np.full(2, f)
        self.x_low = np.array([MAZE_LOW[0] + margin, MAZE_LOW[1] + margin, -v, -v])
        self.x_high = np.array([MAZE_HIGH[0] - margin, MAZE_HIGH[1] - margin, v, v])
        self.param_names = (
            "x_ref",
            "y_ref",
            "vx_ref",
            "vy_ref",
            "ux_ref",
            "uy_ref",
            "q_sqrt_x",
            "q_sqrt_y",
            "q_sqrt_vx",
            "q_sqrt_vy",
        )
        self.param_low = np.array([MAZE_LOW[0], MAZE_LOW[1], -v, -v, -f, -f, 0.5, 0.5, 0.5, 0.5])
        self.param_high = np.array([MAZE_HIGH[0], MAZE_HIGH[1], v, v, f, f, 1.5, 1.5, 1.5, 1.5])
        self.param_default = np.array([goal_array[0], goal_array[1], 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])

    def violation_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The environment's termination box (the maze and the speed bound), without the margin."""
        v = self.max_speed
        return (
            np.array([MAZE_LOW[0], MAZE_LOW[1], -v, -v], dtype=np.float64),
            np.array([MAZE_HIGH[0], MAZE_HIGH[1], v, v], dtype=np.float64),
        )

    @classmethod
    def from_env(cls, env: Any = None) -> WindMazeOCP:
        """The OCP of ``env`` (a :class:`WindMazeEnv` or a wrapper of one: its mass, damping, step,
        force and speed bounds and goal; ``None``: the defaults)."""
        env = getattr(env, "unwrapped", env)
        if not isinstance(env, WindMazeEnv):
            return cls()
        return cls(
            dt=env.dt,
            mass=env.mass,
            damping=env.damping,
            force_bound=env.force_bound,
            max_speed=env.max_speed,
            goal=tuple(env.goal),
        )

    def dynamics(self, x: Any, u: Any) -> Any:
        """``x_{k+1}``: the wind-free point-mass step (casadi ``(4, 1)`` column)."""
        return pointmass_step(x, u, CASADI, self.dt, self._a, self._b)

    def _state_cost(self, x: Any, p: Any) -> Any:
        return sum(0.5 * p[6 + i] ** 2 * (x[i] - p[i]) ** 2 for i in range(4))

    def stage_cost(self, x: Any, u: Any, p: Any) -> Any:
        """``0.5 sum q_i^2 (x_i - x_ref_i)^2 + 0.5 r^2 |u - u_ref|^2`` (casadi scalar)."""
        r2 = self.control_weight_sqrt**2
        return self._state_cost(x, p) + sum(0.5 * r2 * (u[j] - p[4 + j]) ** 2 for j in range(2))

    def terminal_cost(self, x: Any, p: Any) -> Any:
        """``0.5 sum q_i^2 (x_i - x_ref_i)^2`` (casadi scalar)."""
        return self._state_cost(x, p)

    def state_from_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """The MPC state ``(x, y, vx, vy)``: the observation without its wind entries."""
        return obs[..., :4]
