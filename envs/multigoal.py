"""Multi-goal point-mass environment of the S²AC paper (Messaoud et al., ICLR 2024, §4.2 and App. J).

A 2-D point mass starts at the origin and moves with a bounded velocity towards one of several goals:

* observation: position ``s`` in ``[-7, 7]^2`` (``float32``);
* action: velocity ``a`` in ``[-1, 1]^2`` (out-of-range actions are clipped);
* transition: ``s' = clip(s + a, -7, 7)`` (deterministic);
* reward: ``-30 ||a||^2 - min_k ||s' - g_k||^2``, plus a bonus of ``+10`` when ``s'`` lies within ``0.5`` of a
  goal, which also terminates the episode;
* truncation: the registered ``MultiGoal-v0`` id is wrapped in a :class:`gymnasium.wrappers.TimeLimit` of
  :data:`MAX_EPISODE_STEPS` (= 30, the ``--max_steps`` default of the authors' code and of SQL's multigoal).

Goal layouts (``goals=`` constructor argument):

* ``"asymmetric"`` (default, alias ``"max_entropy"``): ``G1=(5, 0)``, ``G2=(-4, 3)``, ``G3=(-4, -3)``. All
  goals have the same maximum expected future reward but the two left goals have a higher expected future
  entropy; this is the layout behind the paper's Figs. 2, 6, 7, 12 and 16.
* ``"symmetric"``: ``(5, 0)``, ``(-5, 0)``, ``(0, 5)``, ``(0, -5)`` (Haarnoja et al. 2017 style).
* or any ``(K, 2)`` array of goal positions.

Test-time obstacle (``obstacle=`` argument, default off): a set of line segments the agent cannot cross. With
``obstacle=True`` the layout's default bar is used; for the asymmetric layout this is the paper's Fig. 7
bar "placed diagonally at [-1, 1]", i.e. the segment from ``(-2, 0)`` to ``(0, 2)`` (centred at ``(-1, 1)``,
oriented along the diagonal), which cuts the straight path from the origin to ``G2``; this is the segment used
in the authors' ``multigoal_max_entropy_env_obstacles.py``. For the symmetric layout it is the segment
``(-1.5, 3)``–``(1.5, 3)`` on the path to ``(0, 5)``. A move that would cross a segment is cut short: with
``obstacle_mode="stop"`` (default) the agent stops at the wall (``WALL_MARGIN`` before it, along the move);
with ``obstacle_mode="stay"`` it stays where it was (the authors' code).

``info`` (from both ``reset`` and ``step``) holds

* ``"goal_index"``: index of the goal reached at this step, ``-1`` if none (so the final step of an episode
  tells which goal the episode ended at);
* ``"is_success"``: ``goal_index >= 0`` (read by SB3's ``Monitor``/``EvalCallback`` success-rate logging);
* ``"hit_obstacle"``: whether this step was blocked by an obstacle;
* ``"hit_obstacle_episode"``: whether any step of the episode so far was blocked (for the paper's Fig. 16
  "reached goals after hitting an obstacle").

:class:`MultiGoalDynamics` is the matching differentiable ``torch`` model (next state, reward, termination).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import torch
from gymnasium import spaces
from torch import nn

from sb3_stein.common.backends import to_float64

from .raster import blend, draw_segment, pixel_grid

__all__ = [
    "GOAL_LAYOUTS",
    "MAX_EPISODE_STEPS",
    "OBSTACLE_LAYOUTS",
    "WALL_MARGIN",
    "MultiGoalDynamics",
    "MultiGoalEnv",
    "resolve_goals",
    "resolve_obstacles",
]

#: Episode length used when registering ``MultiGoal-v0`` (the authors' ``--max_steps`` default; SQL's too).
MAX_EPISODE_STEPS: int = 30

#: Named goal layouts accepted by ``goals=``.
GOAL_LAYOUTS: dict[str, tuple[tuple[float, float], ...]] = {
    "asymmetric": ((5.0, 0.0), (-4.0, 3.0), (-4.0, -3.0)),
    "max_entropy": ((5.0, 0.0), (-4.0, 3.0), (-4.0, -3.0)),
    "symmetric": ((5.0, 0.0), (-5.0, 0.0), (0.0, 5.0), (0.0, -5.0)),
}

#: Default obstacle segments ``(N, 2 endpoints, 2)`` per named goal layout, used for ``obstacle=True``.
OBSTACLE_LAYOUTS: dict[str, tuple[tuple[tuple[float, float], tuple[float, float]], ...]] = {
    "asymmetric": (((-2.0, 0.0), (0.0, 2.0)),),
    "max_entropy": (((-2.0, 0.0), (0.0, 2.0)),),
    "symmetric": (((-1.5, 3.0), (1.5, 3.0)),),
}

#: Distance (along the move) at which a blocked agent stops in front of a wall (``obstacle_mode="stop"``).
WALL_MARGIN: float = 1e-3

ObstacleMode = Literal["stop", "stay"]
FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]


def resolve_goals(goals: str | npt.ArrayLike) -> FloatArray:
    """Return the goal positions as a ``(K, 2)`` float64 array.

    :param goals: a name from :data:`GOAL_LAYOUTS` (``"asymmetric"``/``"max_entropy"``, ``"symmetric"``) or an
        array-like of shape ``(K, 2)`` with ``K >= 1`` goal positions.
    """
    if isinstance(goals, str):
        if goals not in GOAL_LAYOUTS:
            raise ValueError(
                f"Unknown goal layout {goals!r}; expected one of {sorted(GOAL_LAYOUTS)} or a (K, 2) array"
            )
        return np.asarray(GOAL_LAYOUTS[goals], dtype=np.float64)
    arr = np.asarray(goals, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 1:
        raise ValueError(f"goals must have shape (K, 2), got {arr.shape}")
    return arr


def resolve_obstacles(
    obstacle: bool | npt.ArrayLike | None, goals: str | npt.ArrayLike = "asymmetric"
) -> FloatArray:
    """Return obstacle segments as an ``(N, 2, 2)`` float64 array (``N = 0`` when disabled).

    :param obstacle: ``False``/``None`` (no obstacle), ``True`` (the default bar of the named goal layout, see
        :data:`OBSTACLE_LAYOUTS`), or an array-like of segments of shape ``(N, 2, 2)`` (or a single ``(2, 2)``
        segment), each given by its two endpoints.
    :param goals: the goal layout, only used to pick the default bar for ``obstacle=True``.
    """
    if obstacle is None or obstacle is False:
        return np.zeros((0, 2, 2), dtype=np.float64)
    if obstacle is True:
        if not isinstance(goals, str):
            raise ValueError(
                "obstacle=True needs a named goal layout; pass the segments explicitly for custom goals"
            )
        return np.asarray(OBSTACLE_LAYOUTS[goals], dtype=np.float64)
    arr = np.asarray(obstacle, dtype=np.float64)
    if arr.shape == (2, 2):
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (2, 2):
        raise ValueError(f"obstacle segments must have shape (N, 2, 2), got {arr.shape}")
    return arr


def _cross(ax: Any, ay: Any, bx: Any, by: Any) -> Any:
    return ax * by - ay * bx


def _segment_hit_fraction(p: FloatArray, q: FloatArray, segments: FloatArray) -> float | None:
    """Smallest fraction ``t in (0, 1]`` of the move ``p -> q`` at which it touches a segment, else None."""
    d = q - p
    dd = float(d @ d)
    if dd <= 1e-24:
        return None
    best: float | None = None
    for a, b in segments:
        e = b - a
        ap = a - p
        denom = _cross(d[0], d[1], e[0], e[1])
        if abs(denom) > 1e-12:
            t = _cross(ap[0], ap[1], e[0], e[1]) / denom
            u = _cross(ap[0], ap[1], d[0], d[1]) / denom
            if not (0.0 < t <= 1.0 and 0.0 <= u <= 1.0):
                continue
        else:
            if abs(_cross(ap[0], ap[1], d[0], d[1])) > 1e-12:
                continue  # parallel, not collinear
            ta = float(ap @ d) / dd
            tb = float((b - p) @ d) / dd
            lo, hi = max(min(ta, tb), 0.0), min(max(ta, tb), 1.0)
            if lo > hi or hi <= 0.0:
                continue
            t = lo
        if best is None or t < best:
            best = float(t)
    return best


class MultiGoalEnv(gym.Env[Float32Array, Float32Array]):
    """2-D point mass that must reach one of several goals (S²AC multigoal environment).

    See the module docstring for the full specification.

    :param goals: goal layout: ``"asymmetric"`` (default; ``(5, 0), (-4, 3), (-4, -3)``, the paper's
        max-entropy variant), its alias ``"max_entropy"``, ``"symmetric"`` (``(±5, 0), (0, ±5)``), or a
        ``(K, 2)`` array of goal positions.
    :param obstacle: test-time obstacle: ``False`` (default, none), ``True`` (the layout's default bar; for
        the asymmetric layout the segment ``(-2, 0)``–``(0, 2)`` of the paper's Fig. 7), or an ``(N, 2, 2)``
        array of segments.
    :param obstacle_mode: what happens to a move that would cross an obstacle: ``"stop"`` (default) stops
        the agent at the wall (:data:`WALL_MARGIN` before the crossing point, along the move); ``"stay"``
        leaves the agent where it was (the authors' implementation).
    :param goal_reward: bonus added to the reward on reaching a goal (paper: 10).
    :param actuation_cost_coeff: weight of the action cost ``||a||^2`` (paper: 30).
    :param distance_cost_coeff: weight of the squared distance to the closest goal (paper: 1).
    :param goal_threshold: a goal is reached when ``||s' - g|| < goal_threshold`` (paper: 0.5).
    :param bound: half-width of the square arena: positions are clipped to ``[-bound, bound]^2`` (paper: 7).
    :param action_bound: actions are clipped to ``[-action_bound, action_bound]^2`` (paper: 1).
    :param init_sigma: standard deviation of Gaussian noise added to the origin at reset (paper: 0, i.e. the
        agent always starts exactly at the origin).
    :param render_mode: ``None`` or ``"rgb_array"``.
    :param render_size: side length in pixels of the square frames returned by :meth:`render`.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        goals: str | npt.ArrayLike = "asymmetric",
        obstacle: bool | npt.ArrayLike = False,
        obstacle_mode: ObstacleMode = "stop",
        goal_reward: float = 10.0,
        actuation_cost_coeff: float = 30.0,
        distance_cost_coeff: float = 1.0,
        goal_threshold: float = 0.5,
        bound: float = 7.0,
        action_bound: float = 1.0,
        init_sigma: float = 0.0,
        render_mode: str | None = None,
        render_size: int = 400,
    ) -> None:
        super().__init__()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        if obstacle_mode not in ("stop", "stay"):
            raise ValueError(f"obstacle_mode must be 'stop' or 'stay', got {obstacle_mode!r}")
        self.goals: FloatArray = resolve_goals(goals)
        self.obstacles: FloatArray = resolve_obstacles(obstacle, goals)
        self.obstacle_mode: ObstacleMode = obstacle_mode
        self.goal_reward = float(goal_reward)
        self.actuation_cost_coeff = float(actuation_cost_coeff)
        self.distance_cost_coeff = float(distance_cost_coeff)
        self.goal_threshold = float(goal_threshold)
        self.bound = float(bound)
        self.action_bound = float(action_bound)
        self.init_sigma = float(init_sigma)
        self.render_mode = render_mode
        self.render_size = int(render_size)

        self.observation_space = spaces.Box(low=-self.bound, high=self.bound, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(
            low=-self.action_bound, high=self.action_bound, shape=(2,), dtype=np.float32
        )

        self._pos: Float32Array = np.zeros(2, dtype=np.float32)
        self._trajectory: list[Float32Array] = [self._pos.copy()]
        self._hit_obstacle_episode = False
        self._backgrounds: dict[int, FloatArray] = {}  # cached static frame parts, keyed by frame size

    # ------------------------------------------------------------------ state
    @property
    def num_goals(self) -> int:
        """Number of goals ``K``."""
        return int(self.goals.shape[0])

    @property
    def state(self) -> Float32Array:
        """Copy of the current position (``float32``, shape ``(2,)``)."""
        return self._pos.copy()

    def set_state(self, position: npt.ArrayLike) -> None:
        """Teleport the agent to ``position`` (clipped to the arena); the trajectory restarts from there."""
        pos = np.asarray(position, dtype=np.float32).reshape(2)
        self._pos = np.clip(pos, -self.bound, self.bound).astype(np.float32)
        self._trajectory = [self._pos.copy()]

    @property
    def trajectory(self) -> Float32Array:
        """Positions visited since the last reset (or :meth:`set_state`), shape ``(T + 1, 2)``."""
        return np.stack(self._trajectory)

    # ------------------------------------------------------------- dynamics
    def _blocked_move(self, start: Float32Array, target: Float32Array) -> tuple[Float32Array, bool]:
        if self.obstacles.shape[0] == 0:
            return target, False
        p = start.astype(np.float64)
        q = target.astype(np.float64)
        t = _segment_hit_fraction(p, q, self.obstacles)
        if t is None:
            return target, False
        if self.obstacle_mode == "stay":
            return start.copy(), True
        length = float(np.linalg.norm(q - p))
        t_stop = max(t - WALL_MARGIN / length, 0.0)
        return (p + t_stop * (q - p)).astype(np.float32), True

    def _goal_distances(self, pos: Float32Array) -> FloatArray:
        return np.linalg.norm(pos.astype(np.float64)[None, :] - self.goals, axis=-1)

    def transition_reward(self, action: npt.ArrayLike, next_position: npt.ArrayLike) -> float:
        """Reward of a transition ending at ``next_position`` under (clipped) ``action``, goal bonus incl."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -self.action_bound, self.action_bound)
        dist = self._goal_distances(np.asarray(next_position, dtype=np.float32).reshape(2))
        reward = -self.actuation_cost_coeff * float(a @ a) - self.distance_cost_coeff * float(
            np.min(dist) ** 2
        )
        if float(np.min(dist)) < self.goal_threshold:
            reward += self.goal_reward
        return reward

    # -------------------------------------------------------------- gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Float32Array, dict[str, Any]]:
        """Reset to the origin (plus ``init_sigma`` noise).

        :param seed: seeds ``self.np_random`` (only used when ``init_sigma > 0``).
        :param options: optional ``{"init_state": (x, y)}`` to start elsewhere (clipped to the arena).
        """
        super().reset(seed=seed)
        if options is not None and options.get("init_state") is not None:
            start = np.asarray(options["init_state"], dtype=np.float64).reshape(2)
        else:
            start = np.zeros(2, dtype=np.float64)
            if self.init_sigma > 0.0:
                start = start + self.init_sigma * self.np_random.standard_normal(2)
        self.set_state(start)
        self._hit_obstacle_episode = False
        info = {"goal_index": -1, "is_success": False, "hit_obstacle": False, "hit_obstacle_episode": False}
        return self._pos.copy(), info

    def step(self, action: npt.ArrayLike) -> tuple[Float32Array, float, bool, bool, dict[str, Any]]:
        """Move by the (clipped) velocity ``action``; see the module docstring for reward and termination."""
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(2), -self.action_bound, self.action_bound)
        target = np.clip(self._pos + a, -self.bound, self.bound).astype(np.float32)
        new_pos, hit = self._blocked_move(self._pos, target)
        self._pos = new_pos
        self._trajectory.append(new_pos.copy())
        self._hit_obstacle_episode = self._hit_obstacle_episode or hit

        dist = self._goal_distances(new_pos)
        k = int(np.argmin(dist))
        terminated = bool(dist[k] < self.goal_threshold)
        reward = self.transition_reward(a, new_pos)
        info = {
            "goal_index": k if terminated else -1,
            "is_success": terminated,
            "hit_obstacle": hit,
            "hit_obstacle_episode": self._hit_obstacle_episode,
        }
        return self._pos.copy(), float(reward), terminated, False, info

    def dynamics_model(self, with_obstacles: bool = False) -> MultiGoalDynamics:
        """A :class:`MultiGoalDynamics` with this env's goals, reward coefficients and bounds.

        :param with_obstacles: also model this env's obstacle segments (off by default: model-based agents are
            trained without the obstacle, which only appears at test time).
        """
        return MultiGoalDynamics(
            goals=self.goals,
            obstacles=self.obstacles if with_obstacles else None,
            obstacle_mode=self.obstacle_mode,
            goal_reward=self.goal_reward,
            actuation_cost_coeff=self.actuation_cost_coeff,
            distance_cost_coeff=self.distance_cost_coeff,
            goal_threshold=self.goal_threshold,
            bound=self.bound,
            action_bound=self.action_bound,
        )

    # ------------------------------------------------------------ rendering
    def render(self) -> npt.NDArray[np.uint8] | None:  # type: ignore[override]
        """Return an ``(H, W, 3)`` ``uint8`` frame (``render_mode="rgb_array"``): reward level rings, goals
        (red, with the reach radius shaded), obstacle segments (brown), the trajectory so far (blue) and the
        agent.
        """
        if self.render_mode is None:
            gym.logger.warn(
                "You are calling render method without specifying any render mode. "
                'Pass render_mode="rgb_array" to the constructor or gymnasium.make.'
            )
            return None
        return self.render_trajectories([self.trajectory], agent=self._pos)

    def render_trajectories(
        self,
        trajectories: Sequence[npt.ArrayLike],
        colors: Sequence[tuple[int, int, int]] | None = None,
        agent: npt.ArrayLike | None = None,
        size: int | None = None,
    ) -> npt.NDArray[np.uint8]:
        """Draw several trajectories on one frame (e.g. the 20 test episodes of the paper's Fig. 6/7).

        :param trajectories: sequence of ``(T_i, 2)`` position arrays.
        :param colors: one RGB colour per trajectory (default: blue for all).
        :param agent: optional position at which to draw the agent.
        :param size: frame side in pixels (default ``render_size``).
        :return: ``(size, size, 3)`` ``uint8`` image; ``+y`` points up.
        """
        size = self.render_size if size is None else int(size)
        if size not in self._backgrounds:
            self._backgrounds[size] = _draw_background(
                size, self.bound, self.goals, self.goal_threshold, self.obstacles
            )
        return _draw_overlay(
            self._backgrounds[size],
            self.bound,
            [np.asarray(tr, dtype=np.float64).reshape(-1, 2) for tr in trajectories],
            colors,
            None if agent is None else np.asarray(agent, dtype=np.float64).reshape(2),
        )


# ---------------------------------------------------------------------------------------------- rendering
_BG = np.array([250, 250, 250], dtype=np.float64)
_RING = np.array([195, 195, 210], dtype=np.float64)
_FRAME = np.array([60, 60, 60], dtype=np.float64)
_GOAL = np.array([220, 30, 30], dtype=np.float64)
_OBSTACLE = np.array([140, 70, 20], dtype=np.float64)
_PATH = (30, 80, 220)
_AGENT = np.array([10, 30, 120], dtype=np.float64)


def _draw_background(
    size: int, bound: float, goals: FloatArray, goal_threshold: float, obstacles: FloatArray
) -> FloatArray:
    """Static part of a frame (float RGB): distance-cost level rings, goals, arena boundary, obstacles."""
    xs, px = pixel_grid(size, bound)
    gx, gy = np.meshgrid(xs, xs[::-1])
    dist = np.min(np.hypot(gx[..., None] - goals[:, 0], gy[..., None] - goals[:, 1]), axis=-1)
    img = np.empty((size, size, 3), dtype=np.float64)
    img[:] = _BG
    full = (slice(0, size), slice(0, size))
    # Level rings of the distance cost (every unit of distance to the closest goal).
    ring = np.clip(1.0 - np.abs(dist - np.round(dist)) / (0.6 * px), 0.0, 1.0) * (dist > 0.75)
    blend(img, 0.8 * ring, _RING, *full)
    # Goal reach regions and centres.
    blend(img, 0.25 * np.clip((goal_threshold - dist) / px + 0.5, 0.0, 1.0), _GOAL, *full)
    blend(img, np.clip((0.15 - dist) / px + 0.5, 0.0, 1.0), _GOAL, *full)
    # Arena boundary.
    corners = np.array([[-bound, -bound], [bound, -bound], [bound, bound], [-bound, bound]])
    for i in range(4):
        draw_segment(img, xs, xs, corners[i], corners[(i + 1) % 4], 0.5 * px, _FRAME, px)
    for a, b in obstacles:
        draw_segment(img, xs, xs, a, b, 0.12, _OBSTACLE, px)
    return img


def _draw_overlay(
    background: FloatArray,
    bound: float,
    trajectories: list[FloatArray],
    colors: Sequence[tuple[int, int, int]] | None,
    agent: FloatArray | None,
) -> npt.NDArray[np.uint8]:
    """Draw trajectories and the agent on a copy of ``background``; return the ``uint8`` frame."""
    img = background.copy()
    xs, px = pixel_grid(img.shape[0], bound)
    for i, traj in enumerate(trajectories):
        color = np.asarray(_PATH if colors is None else colors[i], dtype=np.float64)
        if traj.shape[0] == 1:
            draw_segment(img, xs, xs, traj[0], traj[0], 0.05, color, px)
        for j in range(traj.shape[0] - 1):
            draw_segment(img, xs, xs, traj[j], traj[j + 1], 0.05, color, px)
    if agent is not None:
        draw_segment(img, xs, xs, agent, agent, 0.22, _AGENT, px)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------- dynamics model
class MultiGoalDynamics(nn.Module):
    """Known dynamics and reward of :class:`MultiGoalEnv` in ``torch`` (for model-based agents).

    ``forward(obs, action)`` maps ``(..., 2)`` positions and ``(..., 2)`` velocities (environment units,
    broadcastable leading dimensions) to next positions ``clip(obs + clip(action), -bound, bound)`` of shape
    ``(..., 2)``, with the input's dtype and device and no Python loop over the batch. It is differentiable
    with respect to ``action`` (zero gradient where a clip is active).

    Obstacles are *not* modelled unless ``obstacles`` is given (the paper's obstacle only appears at test
    time, after training on the obstacle-free environment). When given, a move that crosses a segment is cut
    short as in the environment (``obstacle_mode``), so the model matches ``env.step`` with the obstacle on.

    :param goals: goal layout, as for :class:`MultiGoalEnv` (name or ``(K, 2)`` array).
    :param obstacles: ``None`` (default, no obstacle) or ``(N, 2, 2)`` segments (e.g. ``env.obstacles``).
    :param obstacle_mode: ``"stop"`` or ``"stay"``, as for :class:`MultiGoalEnv`.
    :param goal_reward: bonus for reaching a goal (10).
    :param actuation_cost_coeff: weight of ``||a||^2`` (30).
    :param distance_cost_coeff: weight of the squared distance to the closest goal (1).
    :param goal_threshold: goal radius (0.5).
    :param bound: arena half-width (7).
    :param action_bound: action bound (1).
    """

    obs_dim: int = 2
    act_dim: int = 2
    goals: torch.Tensor
    obstacles: torch.Tensor

    def __init__(
        self,
        goals: str | npt.ArrayLike = "asymmetric",
        obstacles: npt.ArrayLike | None = None,
        obstacle_mode: ObstacleMode = "stop",
        goal_reward: float = 10.0,
        actuation_cost_coeff: float = 30.0,
        distance_cost_coeff: float = 1.0,
        goal_threshold: float = 0.5,
        bound: float = 7.0,
        action_bound: float = 1.0,
    ) -> None:
        super().__init__()
        if obstacle_mode not in ("stop", "stay"):
            raise ValueError(f"obstacle_mode must be 'stop' or 'stay', got {obstacle_mode!r}")
        segs = resolve_obstacles(None if obstacles is None else np.asarray(obstacles, dtype=np.float64))
        self.register_buffer("goals", torch.as_tensor(resolve_goals(goals)), persistent=False)
        self.register_buffer("obstacles", torch.as_tensor(segs), persistent=False)
        self.obstacle_mode: ObstacleMode = obstacle_mode
        self.goal_reward = float(goal_reward)
        self.actuation_cost_coeff = float(actuation_cost_coeff)
        self.distance_cost_coeff = float(distance_cost_coeff)
        self.goal_threshold = float(goal_threshold)
        self.bound = float(bound)
        self.action_bound = float(action_bound)

    @classmethod
    def from_env(cls, env: Any = None) -> MultiGoalDynamics:
        """The model of ``env`` (a :class:`MultiGoalEnv`, any wrapper of one, or ``None`` for the default
        layout), without its test-time obstacles (see :meth:`MultiGoalEnv.dynamics_model`)."""
        env = getattr(env, "unwrapped", env)
        return env.dynamics_model() if isinstance(env, MultiGoalEnv) else cls()

    def extra_repr(self) -> str:
        return (
            f"num_goals={self.goals.shape[0]}, num_obstacles={self.obstacles.shape[0]}, bound={self.bound}, "
            f"action_bound={self.action_bound}"
        )

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Next position ``clip(obs + clip(action))`` (obstacles applied if modelled); shape ``(..., 2)``."""
        a = action.clamp(-self.action_bound, self.action_bound)
        target = (obs + a).clamp(-self.bound, self.bound)
        if self.obstacles.shape[0] == 0:
            return target
        return self._apply_obstacles(obs, target)

    def _apply_obstacles(self, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        start, target = torch.broadcast_tensors(start, target)
        segs = self.obstacles.to(dtype=start.dtype, device=start.device)  # (N, 2, 2)
        p = start.unsqueeze(-2)  # (..., 1, 2)
        d = (target - start).unsqueeze(-2)  # (..., 1, 2)
        a, e = segs[:, 0], segs[:, 1] - segs[:, 0]  # (N, 2)
        ap = a - p  # (..., N, 2)
        denom = _cross(d[..., 0], d[..., 1], e[..., 0], e[..., 1])  # (..., N)
        cross_ap_e = _cross(ap[..., 0], ap[..., 1], e[..., 0], e[..., 1])
        cross_ap_d = _cross(ap[..., 0], ap[..., 1], d[..., 0], d[..., 1])
        dd = (d * d).sum(-1)  # (..., 1)
        moving = dd > 1e-24
        regular = denom.abs() > 1e-12
        safe_denom = torch.where(regular, denom, torch.ones_like(denom))
        t_reg = cross_ap_e / safe_denom
        u_reg = cross_ap_d / safe_denom
        hit_reg = regular & (t_reg > 0) & (t_reg <= 1) & (u_reg >= 0) & (u_reg <= 1)
        # Collinear moves: overlap of the segment's projection with (0, 1].
        safe_dd = torch.where(moving, dd, torch.ones_like(dd))
        ta = (ap * d).sum(-1) / safe_dd
        tb = ((segs[:, 1] - p) * d).sum(-1) / safe_dd
        lo = torch.minimum(ta, tb).clamp(min=0.0)
        hi = torch.maximum(ta, tb).clamp(max=1.0)
        hit_col = (~regular) & (cross_ap_d.abs() <= 1e-12) & (lo <= hi) & (hi > 0)
        t = torch.where(hit_reg, t_reg, torch.where(hit_col, lo, torch.full_like(t_reg, float("inf"))))
        t = torch.where(moving, t, torch.full_like(t, float("inf")))
        t_hit = t.min(dim=-1).values  # (...)
        blocked = torch.isfinite(t_hit)
        if self.obstacle_mode == "stay":
            t_stop = torch.zeros_like(t_hit)
        else:
            length = safe_dd.squeeze(-1).sqrt()
            t_stop = (torch.where(blocked, t_hit, torch.zeros_like(t_hit)) - WALL_MARGIN / length).clamp(
                min=0.0
            )
        stopped = start + t_stop.unsqueeze(-1) * (target - start)
        return torch.where(blocked.unsqueeze(-1), stopped, target)

    def goal_distances(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Distances to every goal, shape ``(..., K)``."""
        goals = self.goals.to(dtype=next_obs.dtype, device=next_obs.device)
        return torch.linalg.vector_norm(next_obs.unsqueeze(-2) - goals, dim=-1)

    def goal_index(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Index of the goal reached at ``next_obs`` (``-1`` if none), ``int64`` of shape ``(...)``."""
        dist = self.goal_distances(next_obs)
        min_dist, idx = dist.min(dim=-1)
        return torch.where(min_dist < self.goal_threshold, idx, torch.full_like(idx, -1))

    def terminated(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Whether ``next_obs`` is within ``goal_threshold`` of a goal (ends the episode); bool ``(...)``.
        Computed in ``next_obs``'s dtype; :meth:`is_terminal` is the protocol's float64 version."""
        return self.goal_distances(next_obs).min(dim=-1).values < self.goal_threshold

    @torch.no_grad()
    def is_terminal(self, obs: torch.Tensor) -> torch.Tensor:
        """Whether positions ``(..., 2)`` end the episode, bool ``(...)``: within ``goal_threshold`` of a
        goal, :meth:`MultiGoalEnv.step`'s rule, compared in float64 as the environment does (so the
        verdict on the environment's float32 observations is the environment's)."""
        return self.terminated(to_float64(obs))

    def reward(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """Env reward ``-c_a ||clip(a)||^2 - c_d min_k ||s' - g_k||^2 + bonus * [reached]``, shape ``(...)``.

        ``obs`` is unused (the reward depends on the action and the next position only) but kept so that all
        dynamics models share the ``reward(obs, action, next_obs)`` signature. The goal bonus is a step
        function of ``next_obs`` (zero gradient).
        """
        del obs
        a = action.clamp(-self.action_bound, self.action_bound)
        min_dist = self.goal_distances(next_obs).min(dim=-1).values
        action_cost = self.actuation_cost_coeff * (a * a).sum(-1)
        # Squared distance computed directly (not min_dist ** 2) to keep gradients finite at a goal centre.
        goals = self.goals.to(dtype=next_obs.dtype, device=next_obs.device)
        sq_dist = ((next_obs.unsqueeze(-2) - goals) ** 2).sum(-1).min(dim=-1).values
        bonus = (min_dist < self.goal_threshold).to(next_obs.dtype) * self.goal_reward
        return -action_cost - self.distance_cost_coeff * sq_dist + bonus
