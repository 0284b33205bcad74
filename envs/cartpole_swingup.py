"""Cart-pole swing-up of the leap-c lecture (SAC-ZOP/SAC-FOP), its torch model and its parameterized MPC.

The lecture (shared/papers/001_fba01a676f0f8ac9.txt, slide "Current Environments") lists "CartPole
Swing-Up: the agent must swing up and balance a pole on a cart" and, as its only learnable MPC
parameter, the "Angle reference" (dimension 1, in the cost, bounds ``(-2 pi, 2 pi)``). Everything else
follows the lecture's reference code, leap-c (BSD-2; ``leap_c/examples/cartpole/env.py``,
``acados_ocp.py`` and ``planner.py``), re-written here; our own choices are marked as such.

Physics (leap-c's ``CartPoleEnvConfig`` and the acados pendulum-on-cart model it comes from): a cart of
mass ``M = 1 kg`` on a rail, pushed by a horizontal force ``F`` in ``[-80, 80] N``, carries a pole
modelled as a point mass ``m = 0.1 kg`` at the end of a massless rod of length ``l = 0.8 m``; gravity
``g = 9.81 m/s^2``; no friction. State ``s = (x, theta, xdot, thetadot)`` (m, rad, m/s, rad/s); ``theta = 0``
is upright, ``theta = pi`` hanging down, positive ``theta`` turns counter-clockwise (the pole tip is at
``(x - l sin theta, l cos theta)``)::

    D        = M + m - m cos^2 theta
    xddot    = (-m l sin(theta) thetadot^2 + m g cos(theta) sin(theta) + F) / D
    thetaddot = (-m l cos(theta) sin(theta) thetadot^2 + F cos(theta) + (M + m) g sin(theta)) / (l D)

written once (:func:`cartpole_ode`, on a :class:`~sb3_stein.common.backends.Backend`) and integrated with
one classical RK4 step of ``dt = 0.05 s`` per environment step; the same function serves ``env.step``
(numpy), :class:`CartPoleSwingUpDynamics` (torch) and :class:`CartPoleSwingUpOCP` (casadi).

Environment (:class:`CartPoleSwingUpEnv`):

* action: force ``F``, ``Box(-80, 80, (1,), float32)``; out-of-range actions are clipped;
* start: ``(0, pi, 0, 0)``, hanging at rest, exactly as leap-c (deterministic). ``init_noise`` (our
  addition, default 0) adds uniform noise of that half-width to every coordinate;
* observation (``float32``): ``(x, theta, xdot, thetadot)`` with the *raw* angle folded into
  ``(-2 pi, 2 pi)`` by a sign-keeping remainder (:func:`fold_angle`): the angle accumulated since the
  start, reset by one full turn whenever it passes ``+-2 pi``. This is what leap-c *intends* (its
  docstring: "bounded between -2pi and 2pi by always adding/subtracting the highest multiple of 2pi") and
  why the learnable angle reference of the MPC lives in ``(-2 pi, 2 pi)``: the pole can be swung up to
  ``0`` or to ``+-2 pi`` (through either side), and the agent picks which through the reference. We keep
  it (our choice) rather than wrapping into ``[-pi, pi)``, which would make the observation (and the MPC's
  initial state) jump by ``2 pi`` every time the pole swings past the bottom, i.e. all the time at the start;
* reward per step, from the angle after the step: ``|pi - |wrap(theta)|| / (10 pi)``: ``0.1`` upright,
  ``0`` hanging down (:func:`swingup_reward`);
* termination when the cart leaves ``[-2.4, 2.4] m``, without a penalty (leap-c: "just terminating should
  be enough punishment when reward is positive"); ``info["violation"]`` tells so;
* truncation: 10 s = 200 steps, done by gymnasium's ``TimeLimit`` of the registered
  ``CartPoleSwingUp-v0``. A directly constructed environment never truncates unless given
  ``max_episode_steps`` (our addition);
* ``info["is_success"]``: leap-c's success criterion, the pole within 0.1 rad of upright for the last 10
  steps (and not terminated); read by SB3's success-rate logging at the end of an episode.

**Angle-wrap fix.** leap-c folds the angle with ``theta % 2 * np.pi`` (and ``-(-theta % 2 * np.pi)`` for
negative angles). Python parses that as ``(theta % 2) * pi``, so e.g. ``theta = 7 rad`` (physically
``0.717 rad``) becomes ``pi``, hanging down, with the wrong reward and a discontinuous state. We fold with
``fmod(theta, 2 pi)`` (:func:`fold_angle`; identical to the intended ``theta % (2 pi)`` /
``-(-theta % (2 pi))`` outside ``[-2 pi, 2 pi]``, the identity inside) and compute the reward from the
angle wrapped into ``[-pi, pi)`` as ``((theta + pi) mod 2 pi) - pi`` (:func:`wrap_angle`, floor modulo).

MPC (:class:`CartPoleSwingUpOCP`, leap-c's ``export_parametric_ocp`` with the ``CartPolePlanner``
defaults): ``N = 5`` stages of ``dt = 0.05 s`` (``T = 0.25 s``), the RK4 model above (no angle folding
inside the prediction, as in leap-c), ``|F| <= 80``, and acados' ``NONLINEAR_LS`` cost
``0.5 ||y - y_ref||^2_W`` with ``y = (x, theta, xdot, thetadot, F)``, ``y_ref = (0, theta_ref, 0, 0, 0)``,
``W = diag(2e3, 2e3, 1e-2, 1e-2, 0.2)``; the terminal cost uses the state part ``W_e = diag(2e3, 2e3,
1e-2, 1e-2)``. acados scales stage costs by the interval length by default
(``AcadosOcpOptions.cost_scaling = [time_steps, 1.0]``; leap-c's planner leaves it at the default), so the
stage cost here is ``dt * 0.5 ||y - y_ref||^2_W`` and the terminal cost ``0.5 ||x_N - x_ref||^2_{W_e}``.
leap-c constrains the cart position ``|x| <= 2.4`` as a *soft* bound (L2 slack weight ``Z = 1e3``, also
scaled by ``dt`` on the stages); by default we write that slack as the equivalent exact penalty
``0.5 Z max(0, |x| - 2.4)^2`` in the costs, so the problem stays feasible; ``position_constraint="hard"``
turns it into a hard state bound (``x_low``/``x_high``) instead.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import torch
from gymnasium import spaces
from torch import nn

from sb3_stein.common.backends import CASADI, NUMPY, TORCH, Backend, rk4_step, to_float64
from sb3_stein.common.ocp import OptimalControlProblem

from .raster import draw_segment, pixel_grid

__all__ = [
    "CONTROL_WEIGHT",
    "DT",
    "FORCE_MAX",
    "GRAVITY",
    "MASS_CART",
    "MASS_POLE",
    "MAX_EPISODE_STEPS",
    "MPC_HORIZON",
    "POLE_LENGTH",
    "SLACK_WEIGHT",
    "STATE_WEIGHTS",
    "X_THRESHOLD",
    "CartPoleSwingUpDynamics",
    "CartPoleSwingUpEnv",
    "CartPoleSwingUpOCP",
    "cartpole_ode",
    "cartpole_step",
    "fold_angle",
    "swingup_reward",
    "wrap_angle",
]

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]

#: Gravity ``g`` in m/s^2 (leap-c ``CartPoleEnvConfig.gravity``).
GRAVITY = 9.81
#: Cart mass ``M`` in kg (leap-c ``masscart``).
MASS_CART = 1.0
#: Pole (point) mass ``m`` in kg at the rod's end (leap-c ``masspole``).
MASS_POLE = 0.1
#: Rod length ``l`` in m, pivot to point mass (leap-c ``length``).
POLE_LENGTH = 0.8
#: Force bound ``Fmax`` in N (leap-c ``Fmax``; also the MPC's control bound).
FORCE_MAX = 80.0
#: Time step in s (leap-c ``dt``; also the MPC's interval, ``T_horizon / N_horizon = 0.25 / 5``).
DT = 0.05
#: Cart position bound in m: the episode terminates outside ``[-X_THRESHOLD, X_THRESHOLD]`` (leap-c).
X_THRESHOLD = 2.4
#: Steps per episode of the registered id: 10 s at ``DT`` (leap-c ``max_time = 10``).
MAX_EPISODE_STEPS = 200
#: MPC stages ``N`` (leap-c ``CartPolePlannerConfig.N_horizon``).
MPC_HORIZON = 5
#: Diagonal LS weights on the state residual ``(x, theta, xdot, thetadot)`` (leap-c ``q_diag``).
STATE_WEIGHTS = (2e3, 2e3, 1e-2, 1e-2)
#: LS weight on the force (leap-c ``r_diag``).
CONTROL_WEIGHT = 2e-1
#: L2 weight of the slack of the soft bound ``|x| <= X_THRESHOLD`` (leap-c ``Zl = Zu = 1e3``).
SLACK_WEIGHT = 1e3
#: Angle within which the pole counts as upright for ``info["is_success"]``, rad (leap-c).
UPRIGHT_TOLERANCE = 0.1
#: Consecutive upright steps needed for ``info["is_success"]`` (leap-c: "the last 10 steps").
UPRIGHT_STEPS = 10

_TWO_PI = 2.0 * math.pi


# ----------------------------------------------------------------------------- physics


def cartpole_ode(
    x: Any,
    u: Any,
    be: Backend,
    *,
    gravity: float = GRAVITY,
    masscart: float = MASS_CART,
    masspole: float = MASS_POLE,
    length: float = POLE_LENGTH,
) -> Any:
    """Time derivative of the cart-pole state (module docstring for the equations).

    :param x: state ``(x, theta, xdot, thetadot)`` in m, rad, m/s, rad/s: shape ``(..., 4)`` for numpy and
        torch, a ``(4, 1)`` column for casadi.
    :param u: force in N: ``(..., 1)``, or a ``(1, 1)`` casadi column. Not clipped here.
    :param be: the array library (:data:`~sb3_stein.common.backends.NUMPY`, ``TORCH`` or ``CASADI``).
    :param gravity: ``g`` in m/s^2.
    :param masscart: ``M`` in kg.
    :param masspole: ``m`` in kg (point mass at the rod's end).
    :param length: ``l`` in m (rod length).
    :return: ``(xdot, thetadot, xddot, thetaddot)``, same layout as ``x``.
    """
    _, theta, vel, omega = be.split(x)
    force = be.split(u)[0]
    sin, cos = be.sin(theta), be.cos(theta)
    denominator = masscart + masspole - masspole * cos * cos
    centrifugal = masspole * length * omega * omega
    acc = (-centrifugal * sin + masspole * gravity * cos * sin + force) / denominator
    alpha = (-centrifugal * cos * sin + force * cos + (masscart + masspole) * gravity * sin) / (
        length * denominator
    )
    return be.stack([vel, omega, acc, alpha])


def cartpole_step(
    x: Any,
    u: Any,
    dt: float,
    be: Backend,
    *,
    gravity: float = GRAVITY,
    masscart: float = MASS_CART,
    masspole: float = MASS_POLE,
    length: float = POLE_LENGTH,
) -> Any:
    """One RK4 step of :func:`cartpole_ode` of length ``dt`` (s) with the force held constant.

    No clipping of the force and no folding of the angle (the environment and the torch model add both;
    the MPC's prediction model uses this as it is). Parameters as for :func:`cartpole_ode`.
    """
    ode = functools.partial(
        cartpole_ode, gravity=gravity, masscart=masscart, masspole=masspole, length=length
    )
    return rk4_step(ode, x, u, dt, be)


def fold_angle(theta: Any) -> Any:
    """The angle with full turns removed towards zero: ``fmod(theta, 2 pi)``, in ``(-2 pi, 2 pi)``.

    The identity on ``(-2 pi, 2 pi)``; keeps the sign (``7 -> 7 - 2 pi``, ``-7 -> -(7 - 2 pi)``). This is
    the observation's angle; it is what leap-c's ``theta % 2 * np.pi`` meant (that expression is
    ``(theta % 2) * pi``, a precedence bug: module docstring).

    :param theta: angle(s) in rad: a float, a numpy array or a torch tensor.
    """
    if isinstance(theta, torch.Tensor):
        return torch.fmod(theta, _TWO_PI)
    return np.fmod(theta, _TWO_PI)


def wrap_angle(theta: Any) -> Any:
    """The angle wrapped into ``[-pi, pi)``: ``((theta + pi) mod 2 pi) - pi`` with a floor modulo.

    (Round-off may return ``pi`` itself for inputs a hair below ``-pi``.) Works on floats, numpy arrays
    and torch tensors (Python's ``%`` is a floor modulo on all three).

    :param theta: angle(s) in rad.
    """
    return (theta + math.pi) % _TWO_PI - math.pi


def swingup_reward(theta: Any) -> Any:
    """leap-c's swing-up reward ``|pi - |wrap(theta)|| / (10 pi)``: ``0.1`` upright, ``0`` hanging down.

    :param theta: pole angle(s) in rad, any number of turns (float, numpy array or torch tensor).
    """
    return abs(math.pi - abs(wrap_angle(theta))) / (10.0 * math.pi)


def _check_physics(gravity: float, masscart: float, masspole: float, length: float, force_max: float) -> None:
    values = {"gravity": gravity, "masscart": masscart, "masspole": masspole, "length": length}
    values["force_max"] = force_max
    bad = {name: value for name, value in values.items() if not (math.isfinite(value) and value > 0)}
    if bad:
        raise ValueError(f"cart-pole parameters must be finite and > 0, got {bad}")


# ----------------------------------------------------------------------------- environment


class CartPoleSwingUpEnv(gym.Env[Float32Array, Float32Array]):
    """Swing a pole up from hanging down and balance it (module docstring for the details).

    :param render_mode: ``None`` or ``"rgb_array"``.
    :param gravity: ``g`` in m/s^2 (leap-c: 9.81).
    :param masscart: cart mass ``M`` in kg (leap-c: 1).
    :param masspole: pole point mass ``m`` in kg (leap-c: 0.1).
    :param length: rod length ``l`` in m (leap-c: 0.8).
    :param force_max: force bound in N, the action Box (leap-c: 80).
    :param dt: time step in s, one RK4 step (leap-c: 0.05).
    :param x_threshold: cart position bound in m; beyond it the episode terminates (leap-c: 2.4).
    :param init_noise: half-width of uniform noise added to each coordinate of the start state
        ``(0, pi, 0, 0)`` (units of each coordinate; our addition, default 0 = leap-c's fixed start).
    :param max_episode_steps: truncate after this many steps; ``None`` (default) leaves truncation to the
        registration's ``TimeLimit`` (our addition, for directly constructed environments).
    :param render_size: frame width in pixels; the height is ``2 * render_size // 5``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        render_mode: str | None = None,
        gravity: float = GRAVITY,
        masscart: float = MASS_CART,
        masspole: float = MASS_POLE,
        length: float = POLE_LENGTH,
        force_max: float = FORCE_MAX,
        dt: float = DT,
        x_threshold: float = X_THRESHOLD,
        init_noise: float = 0.0,
        max_episode_steps: int | None = None,
        render_size: int = 600,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        _check_physics(gravity, masscart, masspole, length, force_max)
        if not (math.isfinite(dt) and dt > 0) or not (math.isfinite(x_threshold) and x_threshold > 0):
            raise ValueError(f"dt and x_threshold must be finite and > 0, got {dt!r} and {x_threshold!r}")
        if not (math.isfinite(init_noise) and init_noise >= 0):
            raise ValueError(f"init_noise must be finite and >= 0, got {init_noise!r}")
        if max_episode_steps is not None and (
            isinstance(max_episode_steps, bool)
            or not isinstance(max_episode_steps, int)
            or max_episode_steps < 1
        ):
            raise ValueError(f"max_episode_steps must be None or an integer >= 1, got {max_episode_steps!r}")
        if isinstance(render_size, bool) or not isinstance(render_size, int) or render_size < 50:
            raise ValueError(f"render_size must be an integer >= 50, got {render_size!r}")
        self.render_mode = render_mode
        self.gravity, self.masscart, self.masspole = float(gravity), float(masscart), float(masspole)
        self.length, self.force_max, self.dt = float(length), float(force_max), float(dt)
        self.x_threshold, self.init_noise = float(x_threshold), float(init_noise)
        self.max_episode_steps, self.render_size = max_episode_steps, render_size
        # Position: leap-c's 2 * x_threshold (the episode ends well before); angle: the fold's range;
        # speeds: unbounded (leap-c documents -inf..inf; its Box says +-10, which swing-ups exceed).
        high = np.array([2.0 * self.x_threshold, _TWO_PI, np.inf, np.inf], dtype=np.float32)
        self.observation_space = spaces.Box(-high, high, dtype=np.float32)
        self.action_space = spaces.Box(-self.force_max, self.force_max, shape=(1,), dtype=np.float32)
        self._state: FloatArray = np.array([0.0, math.pi, 0.0, 0.0])
        self._steps = 0
        self._upright_steps = 0
        self._background: FloatArray | None = None

    @property
    def physics(self) -> dict[str, float]:
        """The ODE's parameters as keyword arguments of :func:`cartpole_ode` / :func:`cartpole_step`."""
        return {
            "gravity": self.gravity,
            "masscart": self.masscart,
            "masspole": self.masspole,
            "length": self.length,
        }

    @property
    def state(self) -> FloatArray:
        """A copy of the current state ``(x, theta, xdot, thetadot)`` (float64, angle folded)."""
        return self._state.copy()

    def set_state(self, state: npt.ArrayLike) -> Float32Array:
        """Put the system in ``state = (x, theta, xdot, thetadot)`` (the angle is folded) and return its
        observation. The step counter and the upright streak of ``info["is_success"]`` restart.

        :raises ValueError: unless ``state`` holds 4 finite numbers.
        """
        s = np.asarray(state, dtype=np.float64)
        if s.shape != (4,) or not np.all(np.isfinite(s)):
            raise ValueError(f"state must be 4 finite numbers (x, theta, xdot, thetadot), got {state!r}")
        self._state = s.copy()
        self._state[1] = fold_angle(s[1])
        self._steps = 0
        self._upright_steps = 0
        return self._obs()

    def dynamics_model(self) -> CartPoleSwingUpDynamics:
        """A :class:`CartPoleSwingUpDynamics` with this environment's parameters."""
        return CartPoleSwingUpDynamics(
            force_max=self.force_max, dt=self.dt, x_threshold=self.x_threshold, **self.physics
        )

    def _obs(self) -> Float32Array:
        return self._state.astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Float32Array, dict[str, Any]]:
        """Start hanging at rest at the track's centre (plus ``init_noise``, if any)."""
        super().reset(seed=seed)
        start = np.array([0.0, math.pi, 0.0, 0.0])
        if self.init_noise > 0:
            start += self.np_random.uniform(-self.init_noise, self.init_noise, size=4)
        obs = self.set_state(start)
        return obs, {"violation": False, "is_success": False}

    def step(self, action: npt.ArrayLike) -> tuple[Float32Array, float, bool, bool, dict[str, Any]]:
        """One RK4 step under the clipped force; reward, termination and info as in the module docstring."""
        u = np.clip(np.asarray(action, dtype=np.float64).reshape(1), -self.force_max, self.force_max)
        state = cartpole_step(self._state, u, self.dt, NUMPY, **self.physics)
        state[1] = fold_angle(state[1])
        self._state = state
        self._steps += 1
        theta = float(state[1])
        reward = float(swingup_reward(theta))
        upright = abs(wrap_angle(theta)) < UPRIGHT_TOLERANCE
        self._upright_steps = self._upright_steps + 1 if upright else 0
        terminated = not (-self.x_threshold <= state[0] <= self.x_threshold)
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        info = {
            "violation": terminated,
            "is_success": (not terminated) and self._upright_steps >= UPRIGHT_STEPS,
        }
        return self._obs(), reward, terminated, truncated, info

    # ------------------------------------------------------------ rendering
    def render(self) -> npt.NDArray[np.uint8] | None:  # type: ignore[override]
        """An ``(H, W, 3)`` ``uint8`` frame (``W = render_size``, ``H = 2 W // 5``): rail with the
        termination bounds, cart and pole. ``None`` (with a warning) without ``render_mode="rgb_array"``.
        """
        if self.render_mode is None:
            gym.logger.warn('Call gymnasium.make(..., render_mode="rgb_array") to render.')
            return None
        size = self.render_size
        # raster.draw_segment works on square images: draw on a square, then keep the band around the rail.
        xs, px = pixel_grid(size, self.x_threshold + 0.5)
        if self._background is None:
            self._background = self._draw_background(xs, px)
        img = self._background.copy()
        pos, theta = float(self._state[0]), float(self._state[1])
        cart = np.array([pos, 0.0])
        half = np.array([0.25, 0.0])
        draw_segment(img, xs, xs, cart - half, cart + half, 0.12, np.array([40.0, 40.0, 40.0]), px)
        tip = cart + self.length * np.array([-math.sin(theta), math.cos(theta)])
        draw_segment(img, xs, xs, cart, tip, 0.04, np.array([202.0, 152.0, 101.0]), px)
        draw_segment(img, xs, xs, cart, cart, 0.05, np.array([129.0, 132.0, 203.0]), px)
        height = 2 * size // 5
        top = (size - height) // 2
        return np.clip(np.rint(img[top : top + height]), 0, 255).astype(np.uint8)

    def _draw_background(self, xs: FloatArray, px: float) -> FloatArray:
        size = xs.shape[0]
        img = np.full((size, size, 3), 255.0)
        bound = self.x_threshold
        rail = np.array([120.0, 120.0, 120.0])
        draw_segment(img, xs, xs, np.array([-bound, 0.0]), np.array([bound, 0.0]), 0.5 * px, rail, px)
        for sign in (-1.0, 1.0):
            mark = np.array([sign * bound, 0.0])
            offset = np.array([0.0, 0.2])
            draw_segment(img, xs, xs, mark - offset, mark + offset, px, np.array([200.0, 60.0, 60.0]), px)
        return img


# ----------------------------------------------------------------------------- torch model


class CartPoleSwingUpDynamics(nn.Module):
    """Known dynamics of :class:`CartPoleSwingUpEnv` in ``torch``.

    ``forward(obs, action)`` maps ``(..., 4)`` observations and ``(..., 1)`` forces in N to the next
    observation exactly as :meth:`CartPoleSwingUpEnv.step`: the force clipped to ``[-force_max,
    force_max]``, one RK4 step of :func:`cartpole_ode`, the angle folded with :func:`fold_angle`. Batched,
    differentiable, in the inputs' dtype and device. :meth:`is_terminal` is the environment's termination
    (the cart off ``[-x_threshold, x_threshold]``). Parameters as for :class:`CartPoleSwingUpEnv`.
    """

    obs_dim: int = 4
    act_dim: int = 1
    #: Class-level default, so that a model pickled before the attribute existed (inside a saved agent)
    #: still has it when loaded.
    x_threshold: float = X_THRESHOLD

    def __init__(
        self,
        gravity: float = GRAVITY,
        masscart: float = MASS_CART,
        masspole: float = MASS_POLE,
        length: float = POLE_LENGTH,
        force_max: float = FORCE_MAX,
        dt: float = DT,
        x_threshold: float = X_THRESHOLD,
    ) -> None:
        super().__init__()
        _check_physics(gravity, masscart, masspole, length, force_max)
        if not (math.isfinite(dt) and dt > 0) or not (math.isfinite(x_threshold) and x_threshold > 0):
            raise ValueError(f"dt and x_threshold must be finite and > 0, got {dt!r} and {x_threshold!r}")
        self.gravity, self.masscart, self.masspole = float(gravity), float(masscart), float(masspole)
        self.length, self.force_max, self.dt = float(length), float(force_max), float(dt)
        self.x_threshold = float(x_threshold)

    @classmethod
    def from_env(cls, env: Any = None) -> CartPoleSwingUpDynamics:
        """The model of ``env`` (a :class:`CartPoleSwingUpEnv` or a wrapper of one; ``None``: defaults)."""
        env = getattr(env, "unwrapped", env)
        return env.dynamics_model() if isinstance(env, CartPoleSwingUpEnv) else cls()

    def extra_repr(self) -> str:
        return (
            f"gravity={self.gravity}, masscart={self.masscart}, masspole={self.masspole}, "
            f"length={self.length}, force_max={self.force_max}, dt={self.dt}, x_threshold={self.x_threshold}"
        )

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Next observation ``(..., 4)`` from observations ``(..., 4)`` and forces ``(..., 1)`` (N)."""
        u = action.clamp(-self.force_max, self.force_max)
        nxt = cartpole_step(
            obs,
            u,
            self.dt,
            TORCH,
            gravity=self.gravity,
            masscart=self.masscart,
            masspole=self.masspole,
            length=self.length,
        )
        return torch.cat([nxt[..., :1], fold_angle(nxt[..., 1:2]), nxt[..., 2:]], dim=-1)

    def continuous_dynamics(self, x: Any, u: Any, be: Backend) -> Any:
        """:func:`cartpole_ode` with this model's physics (no clipping, no folding): the continuous,
        control-affine dynamics that DMPC's running cost needs (:mod:`sb3_stein.common.control_affine`);
        :meth:`forward` is one RK4 step of it."""
        return cartpole_ode(
            x, u, be, gravity=self.gravity, masscart=self.masscart, masspole=self.masspole, length=self.length
        )

    @torch.no_grad()
    def is_terminal(self, obs: torch.Tensor) -> torch.Tensor:
        """Whether observations ``(..., 4)`` end the episode, bool ``(...)``: the cart outside
        ``[-x_threshold, x_threshold]`` (NaN included), :meth:`CartPoleSwingUpEnv.step`'s rule.

        Compared in float64, as the environment compares its float64 state; on a float32 observation
        the verdict can differ from the environment's only within the observation's rounding of the bound
        (about 1e-7 m).
        """
        x = to_float64(obs[..., 0])
        return ~((x >= -self.x_threshold) & (x <= self.x_threshold))

    def reward(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """The environment's reward of the transition: :func:`swingup_reward` of the next angle."""
        del obs, action
        return swingup_reward(next_obs[..., 1])


# ----------------------------------------------------------------------------- MPC


class CartPoleSwingUpOCP(OptimalControlProblem):
    """leap-c's parameterized cart-pole OCP (module docstring); the learnable parameter is the angle
    reference ``theta_ref`` in ``(-2 pi, 2 pi)``, default 0 (the lecture's table).

    Stage cost ``stage_cost_scale * 0.5 * (r' W r + Z s^2)`` with ``r = (x, theta - theta_ref, xdot,
    thetadot, F)``, ``W = diag(state_weights, control_weight)`` and, for ``position_constraint="soft"``,
    the slack ``s = max(0, |x| - x_threshold)``; terminal cost ``0.5 * (r_N' W_e r_N + Z s_N^2)`` on the
    state part. (The slack term also appears at stage 0, where it is a constant: it does not change the
    solution.)

    :param gravity: ``g`` in m/s^2 of the prediction model.
    :param masscart: ``M`` in kg.
    :param masspole: ``m`` in kg.
    :param length: ``l`` in m.
    :param force_max: control bound ``|F| <= force_max`` in N (hard, as in leap-c).
    :param x_threshold: cart position bound in m.
    :param horizon: ``N`` (leap-c planner: 5).
    :param dt: interval length in s (leap-c planner: ``T / N = 0.25 / 5``).
    :param state_weights: LS weights on ``(x, theta, xdot, thetadot)`` (leap-c: ``2e3, 2e3, 1e-2, 1e-2``),
        used at the stages and at the end.
    :param control_weight: LS weight on ``F`` (leap-c: 0.2).
    :param stage_cost_scale: factor of every stage cost; ``None`` = ``dt``, acados' default
        ``cost_scaling`` (the terminal cost has factor 1).
    :param position_constraint: ``"soft"`` (leap-c's L2 slack as an exact penalty in the costs; no state
        bounds) or ``"hard"`` (``x_low = (-x_threshold, -inf, -inf, -inf)``, ``x_high`` likewise; no
        penalty).
    :param slack_weight: ``Z``, the slack's L2 weight (leap-c: 1e3); used for ``"soft"`` only.
    """

    state_dim = 4
    control_dim = 1
    param_names = ("theta_ref",)

    def __init__(
        self,
        gravity: float = GRAVITY,
        masscart: float = MASS_CART,
        masspole: float = MASS_POLE,
        length: float = POLE_LENGTH,
        force_max: float = FORCE_MAX,
        x_threshold: float = X_THRESHOLD,
        horizon: int = MPC_HORIZON,
        dt: float = DT,
        state_weights: Sequence[float] = STATE_WEIGHTS,
        control_weight: float = CONTROL_WEIGHT,
        stage_cost_scale: float | None = None,
        position_constraint: Literal["soft", "hard"] = "soft",
        slack_weight: float = SLACK_WEIGHT,
    ) -> None:
        _check_physics(gravity, masscart, masspole, length, force_max)
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
        if not (math.isfinite(dt) and dt > 0) or not (math.isfinite(x_threshold) and x_threshold > 0):
            raise ValueError(f"dt and x_threshold must be finite and > 0, got {dt!r} and {x_threshold!r}")
        weights = np.asarray(state_weights, dtype=np.float64)
        if weights.shape != (4,) or not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError(f"state_weights must be 4 finite numbers >= 0, got {state_weights!r}")
        if not (math.isfinite(control_weight) and control_weight >= 0):
            raise ValueError(f"control_weight must be finite and >= 0, got {control_weight!r}")
        scale = float(dt) if stage_cost_scale is None else float(stage_cost_scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"stage_cost_scale must be None or finite and > 0, got {stage_cost_scale!r}")
        if position_constraint not in ("soft", "hard"):
            raise ValueError(f"position_constraint must be 'soft' or 'hard', got {position_constraint!r}")
        if not (math.isfinite(slack_weight) and slack_weight >= 0):
            raise ValueError(f"slack_weight must be finite and >= 0, got {slack_weight!r}")
        self.gravity, self.masscart, self.masspole = float(gravity), float(masscart), float(masspole)
        self.length, self.force_max, self.x_threshold = float(length), float(force_max), float(x_threshold)
        self.horizon, self.dt = int(horizon), float(dt)
        self.state_weights, self.control_weight = weights, float(control_weight)
        self.stage_cost_scale, self.slack_weight = scale, float(slack_weight)
        self.position_constraint = position_constraint
        self.u_low = np.array([-self.force_max])
        self.u_high = np.array([self.force_max])
        if position_constraint == "hard":
            self.x_low = np.array([-self.x_threshold, -np.inf, -np.inf, -np.inf])
            self.x_high = np.array([self.x_threshold, np.inf, np.inf, np.inf])
        else:
            self.x_low = self.x_high = None
        self.param_low = np.array([-_TWO_PI])
        self.param_high = np.array([_TWO_PI])
        self.param_default = np.array([0.0])

    @classmethod
    def from_env(cls, env: Any = None, **kwargs: Any) -> CartPoleSwingUpOCP:
        """The OCP with ``env``'s physics, force bound, position bound and time step (a
        :class:`CartPoleSwingUpEnv` or a wrapper of one; ``None`` or another env: the defaults).

        :param kwargs: further constructor arguments (e.g. ``horizon``, ``position_constraint``).
        """
        env = getattr(env, "unwrapped", env)
        if isinstance(env, CartPoleSwingUpEnv):
            kwargs = {
                **env.physics,
                "force_max": env.force_max,
                "x_threshold": env.x_threshold,
                "dt": env.dt,
                **kwargs,
            }
        return cls(**kwargs)

    def _physics(self) -> dict[str, float]:
        return {
            "gravity": self.gravity,
            "masscart": self.masscart,
            "masspole": self.masspole,
            "length": self.length,
        }

    def dynamics(self, x: Any, u: Any) -> Any:
        """One RK4 step of :func:`cartpole_ode` (casadi columns; the angle is not folded)."""
        return cartpole_step(x, u, self.dt, CASADI, **self._physics())

    def _state_cost(self, x: Any, p: Any) -> Any:
        import casadi

        w = self.state_weights
        cost = w[0] * x[0] ** 2 + w[1] * (x[1] - p[0]) ** 2 + w[2] * x[2] ** 2 + w[3] * x[3] ** 2
        if self.position_constraint == "soft":
            slack = casadi.fmax(0, casadi.fabs(x[0]) - self.x_threshold)
            cost = cost + self.slack_weight * slack**2
        return cost

    def stage_cost(self, x: Any, u: Any, p: Any) -> Any:
        """``stage_cost_scale * 0.5 * (r' W r [+ Z s^2])`` (class docstring); ``p = (theta_ref,)``."""
        return self.stage_cost_scale * 0.5 * (self._state_cost(x, p) + self.control_weight * u[0] ** 2)

    def terminal_cost(self, x: Any, p: Any) -> Any:
        """``0.5 * (r_N' W_e r_N [+ Z s_N^2])`` (class docstring); ``p = (theta_ref,)``."""
        return 0.5 * self._state_cost(x, p)

    def violation_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The track ``|x| <= x_threshold`` is the constraint set for the "Training Violations" count,
        whether the OCP writes it as a soft penalty or as a hard bound."""
        inf = np.inf
        return (
            np.array([-self.x_threshold, -inf, -inf, -inf]),
            np.array([self.x_threshold, inf, inf, inf]),
        )
