"""Kinova Jaco arm tasks in MuJoCo (Q-STAC paper, §V-A, Fig. 2c-d, Table I), with kinematic partial models.

The paper ran a Kinova Gen2 arm in Isaac Gym (GPU; not installable here). We use the same robot family
as dm_control ships it: the 6-DoF Jaco arm and its 3-finger hand (``dm_control/third_party/kinova``:
MJCF and meshes, read from the installed ``dm-control`` wheel; dm_control itself is not imported),
composed with ``mujoco.MjSpec`` into a scene of ours.

``KinovaReachObstacles-v0`` (:class:`KinovaReachEnv`): bring the hand's pinch point to a target.

* **Scene**: the arm stands on the floor at the origin, turned so that joint 1 at zero points it along
  ``+x``. Three fixed boxes stand on the floor between the start side (``y > 0``) and the target side
  (``y < 0``), as in the paper: two close together (a 6 cm slit between them, less than the hand's width,
  so the arm can hardly pass) and one further out, leaving a 20 cm path between it and the pair, all
  0.30 m tall, so that the arm can also go over them. The boxes
  are solid (MuJoCo contacts: the arm cannot pass through them). The paper gives no dimensions; these
  are ours (:data:`OBSTACLES`). The height sets how often the direct route is blocked: a scripted
  joint-space reach (inverse kinematics, P-control; 20 episodes) succeeds in 20/20 episodes without the
  boxes, 13/20 with them at 0.30 m (the rest end stuck against a box) and 0/20 at 0.45 m (our first
  layout, on which neither SAC in 30k steps nor Q-STAC in 6k learned to reach:
  ``benchmarks/results/kinova_pilot``); the same reach via two waypoints above the 0.45 m boxes succeeds
  20/20. The paper's SAC reaches 26.7 % of its targets, so its task blocks some episodes, not all.
* **Control**: joint velocities. The action ``(6,)`` in ``[-1, 1]`` rad/s is the set-point of a MuJoCo
  velocity servo on each joint (``kv = 1000``, torque limit 100 N m), with gravity compensation on the
  arm's bodies (a velocity-controlled robot tracks its commands; the servo's lag is the physics the
  kinematic model leaves out). The fingers are held open by position servos and are not part of the
  action. Control step 0.02 s (10 physics steps of 0.002 s, ``implicitfast``); episodes of 200 steps
  (4 s, the registry's truncation).
* **Observation** ``(18,)``: joint positions (6, rad, unwrapped), joint velocities (6, rad/s), the pinch
  point (3, m, world) and the target (3, m).
* **Start and target** drawn each episode: joint angles uniform around a home pose whose pinch point
  lies on the start side (redrawn until nothing touches), the target uniform in a box on the other side
  (:data:`TARGET_LOW`, :data:`TARGET_HIGH`), beyond the obstacles.
* **Reward** (the paper gives none; ours, in the style of ``Nav2D``): ``progress_coeff * (d - d')`` (the
  decrease of the pinch point's distance to the target; it telescopes, so every successful path earns
  the same), ``- collision_penalty`` (0.1) at every step on which an arm or hand geom touches an
  obstacle, ``+ success_reward`` on success. The penalty is sized so that an episode spent stuck
  against a box (at most 200 steps: -20) costs about what a successful reach earns (progress about 6
  plus 10). With 1.0 per step (our first choice) a policy that heads straight for the target and is
  blocked in a third of the episodes would average about ``0.65 * 16 - 0.35 * 190 < 0``, worse than
  keeping still (0), the local optimum SAC found on the first layout. Success (``info["is_success"]``)
  is ``d' < target_radius`` (5 cm) and ends the episode (``terminated``). ``info`` also has
  ``distance``, ``obstacle_contact`` (this step) and ``collisions`` (steps with contact so far in the
  episode).

:class:`KinovaKinematicModel` is the partial model Q-STAC plans with (registered for the id): the next
joint positions integrate the commanded velocities (clipped to the action bounds and, for joints 2 and
3, to their limits), the next velocities are the commands, the pinch point is the forward kinematics of
the compiled MuJoCo model's body tree (read from ``body_pos``, ``body_quat``, ``jnt_axis``, ``site_pos``:
no hand-typed constants), batched in torch; the target is constant. Its blind spots: contacts (it moves
the arm through obstacles, self-collisions and the floor), the servo's lag (per-step joint error up to
about 0.015 rad under random commands, tested) and the joint friction. Its reward is the environment's
progress and success terms plus a penalty while the *pinch point* is inside an obstacle box inflated by
:data:`HAND_RADIUS` (the model cannot see contacts of the links).

``KinovaPickPlace-v0`` (:class:`KinovaPickPlaceEnv`): the same arm without obstacles, a free 5 cm cube
to pick up and a destination to put it at, a gripper action for the three fingers (dm_control's finger
velocity actuators), ``info`` with the two stages of Table I (``reached_cube``, ``is_success``);
:class:`KinovaPickPlaceModel` is its partial model: the arm's kinematics and a documented grasp rule
for the cube. A scripted inverse-kinematics controller picks and places the cube in about 460 steps
(``tests/test_env_kinova.py``).

Rendering (``rgb_array``) needs an OpenGL context for MuJoCo: headless, ``MUJOCO_GL=osmesa`` with the
system's OSMesa (Debian's ``libosmesa6``) or ``MUJOCO_GL=egl``.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from sb3_stein.envs.mujoco_scene import MujocoRendering, dm_control_path, import_mujoco
from torch import nn

MAX_EPISODE_STEPS = 200
N_SUBSTEPS = 10
PHYSICS_DT = 0.002
CONTROL_DT = N_SUBSTEPS * PHYSICS_DT
N_JOINTS = 6
MAX_JOINT_SPEED = 1.0  # rad/s, the action bound
SERVO_KV = 1000.0
SERVO_TORQUE = 100.0
#: Joint angles of the home pose: the pinch point at about (0.45, 0.35, 0.35), on the start side (found
#: by inverse kinematics on the model below; a target region at y = -0.35 needs joint 1 near 0.9).
HOME = np.array([-0.27, 3.606, 1.373, -2.08, 1.065, 0.0])
HOME_NOISE = np.array([0.25, 0.15, 0.15, 0.3, 0.3, 0.3])
#: Obstacles: (centre x, y, z, half-sizes x, y, z) of boxes standing on the floor, metres.
OBSTACLES = np.array(
    [
        [0.32, 0.0, 0.15, 0.04, 0.05, 0.15],  # the pair: a 6 cm slit between them...
        [0.46, 0.0, 0.15, 0.04, 0.05, 0.15],
        [0.74, 0.0, 0.15, 0.04, 0.05, 0.15],  # ...and a 20 cm path to the third; all 0.30 m tall
    ]
)
TARGET_LOW = np.array([0.3, -0.45, 0.2])
TARGET_HIGH = np.array([0.6, -0.25, 0.45])
TARGET_RADIUS = 0.05
#: The kinematic model's inflation of an obstacle box around the pinch point (the hand's size).
HAND_RADIUS = 0.06
OBS_DIM = 2 * N_JOINTS + 6
CUBE_HALF = 0.025
CUBE_MASS = 0.05
#: Finger speed of the gripper action's bound (rad/s; dm_control's finger control range).
FINGER_SPEED = 5.0
FINGER_OPEN, FINGER_CLOSED = 0.15, 1.35
#: Pick-and-place: cube start region (on the floor, start side) and destination region (floor, far side).
CUBE_LOW, CUBE_HIGH = np.array([0.35, 0.1]), np.array([0.55, 0.3])
DESTINATION_LOW, DESTINATION_HIGH = np.array([0.35, -0.35]), np.array([0.55, -0.15])
#: Stage radii: the pinch point within REACH_RADIUS of the cube's centre; the cube within PLACE_RADIUS
#: of the destination (success).
REACH_RADIUS, PLACE_RADIUS = 0.03, 0.05
#: The partial model's grasp rule: the cube moves with the pinch point while the mean finger angle is at
#: least GRASP_ANGLE and the cube's centre is within REACH_RADIUS of the pinch point.
GRASP_ANGLE = 0.85
PICK_OBS_DIM = 2 * N_JOINTS + 1 + 9
#: Name prefix of the arm's elements in the scene; the hand's are under ``arm/hand/``.
ARM = "arm/"
PINCH = "arm/hand/pinchsite"


class JointController(Protocol):
    """A low-level controller between the action and the arm's velocity servos (the hook that
    :class:`sb3_stein.envs.action_integrator.AdaptiveActionIntegrator` plugs in; see
    :meth:`KinovaReachEnv._run_physics`).

    ``n_segments`` must divide :data:`N_SUBSTEPS`; the control step is split into that many segments of
    ``N_SUBSTEPS // n_segments`` physics steps, and ``segment_command(i, joint_positions, velocity)``
    returns the servos' set-point ``(6,)`` (rad/s) for segment ``i`` from the measured joint positions
    ``(6,)`` (rad) at its start and the step's commanded joint velocities ``(6,)`` (rad/s, already clipped
    to the action bounds).
    """

    n_segments: int

    def segment_command(self, segment: int, joint_positions: np.ndarray, velocity: np.ndarray) -> np.ndarray:
        """The servos' set-point ``(6,)`` for segment ``segment`` (rad/s)."""
        ...


def build_reach_model(obstacles: np.ndarray = OBSTACLES, cube: bool = False) -> Any:
    """The arm's scene compiled by MuJoCo: floor, Jaco arm with its hand, velocity servos, obstacles;
    with ``cube=True`` the pick-and-place scene: a free 5 cm cube (50 g) and dm_control's finger
    velocity actuators (``kv = 10``, force limit 1, set-points in ``[-5, 5]`` rad/s: a grip force of
    about 25 N, ``dm_control/entities/manipulators/kinova/jaco_hand.py``) instead of the held fingers."""
    mujoco = import_mujoco()
    root = dm_control_path("third_party", "kinova")
    scene = mujoco.MjSpec()
    scene.option.timestep = PHYSICS_DT
    scene.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    world = scene.worldbody
    world.add_light(pos=[0, 0, 3], dir=[0, 0, -1], type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL)
    world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2, 2, 0.1], rgba=[0.3, 0.35, 0.4, 1])
    world.add_camera(name="overview", pos=[1.6, 0.0, 1.3], xyaxes=[0, 1, 0, -0.55, 0, 0.83])
    for k, (cx, cy, cz, hx, hy, hz) in enumerate(obstacles):
        world.add_geom(
            name=f"obstacle_{k}",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            pos=[cx, cy, cz],
            size=[hx, hy, hz],
            rgba=[0.8, 0.3, 0.2, 1],
            contype=1,
            conaffinity=1,
        )
    world.add_site(name="target", pos=[0.4, -0.3, 0.3], size=[TARGET_RADIUS, 0, 0], rgba=[0.1, 0.8, 0.2, 0.5])
    if cube:
        body = world.add_body(name="cube", pos=[0.45, 0.2, CUBE_HALF])
        body.add_freejoint(name="cube")
        body.add_geom(
            name="cube",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[CUBE_HALF] * 3,
            mass=CUBE_MASS,
            friction=[1.5, 0.01, 0.001],
            condim=4,
            rgba=[0.2, 0.4, 0.9, 1],
        )
    arm = mujoco.MjSpec.from_file(os.path.join(root, "jaco_arm.xml"))
    hand = mujoco.MjSpec.from_file(os.path.join(root, "jaco_hand.xml"))
    arm.attach(hand, prefix="hand/", site=arm.site("wristsite"))
    mount = world.add_frame(pos=[0, 0, 0], quat=[0, 0, 0, 1])  # turned by pi about z: joint 1 = 0 faces +x
    scene.attach(arm, prefix=ARM, frame=mount)
    for body in scene.bodies:
        if body.name not in ("world", "cube"):
            body.gravcomp = 1.0
    for i in range(1, N_JOINTS + 1):
        servo = scene.add_actuator(
            name=f"joint_{i}_velocity", target=f"{ARM}joint_{i}", trntype=mujoco.mjtTrn.mjTRN_JOINT
        )
        servo.set_to_velocity(kv=SERVO_KV)
        servo.ctrlrange, servo.ctrllimited = [-MAX_JOINT_SPEED, MAX_JOINT_SPEED], True
        servo.forcerange, servo.forcelimited = [-SERVO_TORQUE, SERVO_TORQUE], True
    for i in range(1, 4):
        finger = scene.add_actuator(
            name=f"finger_{i}", target=f"{ARM}hand/finger_{i}", trntype=mujoco.mjtTrn.mjTRN_JOINT
        )
        if cube:
            finger.set_to_velocity(kv=10.0)
            finger.ctrlrange, finger.ctrllimited = [-FINGER_SPEED, FINGER_SPEED], True
            finger.forcerange, finger.forcelimited = [-1.0, 1.0], True
        else:
            finger.set_to_position(kp=5.0)
            finger.ctrlrange, finger.ctrllimited = [0.15, 1.35], True
    return scene.compile()


class KinovaReachEnv(MujocoRendering, gym.Env):
    """``KinovaReachObstacles-v0`` (module docstring for the scene, reward and model).

    :param render_mode: ``None`` or ``"rgb_array"``.
    :param obstacles: ``(K, 6)`` boxes ``(cx, cy, cz, hx, hy, hz)`` instead of :data:`OBSTACLES`.
    :param target: a fixed target ``(3,)`` instead of a random one per episode; must be reachable (at
        most 0.85 m from the shoulder) and outside the obstacles.
    :param progress_coeff: weight of the distance decrease (per metre).
    :param collision_penalty: per step with an arm-obstacle contact.
    :param success_reward: bonus on success.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": round(1 / CONTROL_DT)}
    render_size, render_camera = (360, 480), "overview"

    def __init__(
        self,
        render_mode: str | None = None,
        obstacles: Any = None,
        target: Any = None,
        progress_coeff: float = 10.0,
        collision_penalty: float = 0.1,
        success_reward: float = 10.0,
    ):
        self.obstacles = OBSTACLES.copy() if obstacles is None else np.asarray(obstacles, dtype=np.float64)
        if self.obstacles.ndim != 2 or self.obstacles.shape[1] != 6 or not np.all(self.obstacles[:, 3:] > 0):
            raise ValueError("obstacles must be a (K, 6) array of (cx, cy, cz, hx, hy, hz), hx, hy, hz > 0")
        self._init_scene(build_reach_model(self.obstacles), render_mode)
        self.progress_coeff, self.collision_penalty = float(progress_coeff), float(collision_penalty)
        self.success_reward = float(success_reward)
        self._obstacle_geoms = {self.model.geom(f"obstacle_{k}").id for k in range(len(self.obstacles))}
        self.fixed_target = (
            None if target is None else self._check_target(np.asarray(target, dtype=np.float64))
        )
        if self._start_region_blocked():
            raise ValueError(
                "obstacles intersect the start region: the home pose's arm touches them; move the boxes "
                f"away from the start side (y > 0 near the home pose), got {self.obstacles.tolist()}"
            )
        self.action_space = spaces.Box(-MAX_JOINT_SPEED, MAX_JOINT_SPEED, shape=(N_JOINTS,), dtype=np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float64)
        self.target = TARGET_LOW.copy()
        self.collisions = 0

    def _init_scene(self, model: Any, render_mode: str | None) -> None:
        """What both arm tasks set up from a compiled scene."""
        mujoco = import_mujoco()

        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.model, self.data = model, mujoco.MjData(model)
        self.frame_skip, self.dt = N_SUBSTEPS, CONTROL_DT
        self.render_mode = render_mode
        self._site = self.model.site(PINCH).id
        self._target_site = self.model.site("target").id
        self._shoulder = self.model.body(f"{ARM}b_2").id
        self._qadr = np.array([model.joint(f"{ARM}joint_{i}").qposadr[0] for i in range(1, N_JOINTS + 1)])
        #: ``None``: the action is the servos' set-point for the whole control step; else the controller
        #: that turns it into one set-point per segment (:meth:`_run_physics`).
        self.joint_controller: JointController | None = None

    def _check_target(self, target: np.ndarray) -> np.ndarray:
        import mujoco

        if target.shape != (3,) or not np.all(np.isfinite(target)):
            raise ValueError(f"target must be a finite (3,) position, got {target!r}")
        mujoco.mj_forward(self.model, self.data)
        reach = float(np.linalg.norm(target - self.data.xpos[self._shoulder]))
        if reach > 0.85 or target[2] < 0.02:
            raise ValueError(
                f"target {target.tolist()} is out of reach: {reach:.2f} m from the shoulder (at most 0.85) "
                "and above the floor are reachable"
            )
        inside = np.all(
            np.abs(target - self.obstacles[:, :3]) < self.obstacles[:, 3:] + TARGET_RADIUS, axis=1
        )
        if inside.any():
            raise ValueError(
                f"target {target.tolist()} lies within {TARGET_RADIUS} m of obstacle {int(np.argmax(inside))}"
            )
        return target

    def _start_region_blocked(self) -> bool:
        import mujoco

        self.data.qpos[:N_JOINTS] = HOME
        mujoco.mj_forward(self.model, self.data)
        return self._obstacle_contacts() > 0

    def _obstacle_contacts(self) -> int:
        contact = self.data.contact[: self.data.ncon]
        geoms = np.stack([contact.geom1, contact.geom2], axis=1) if self.data.ncon else np.zeros((0, 2), int)
        return int(sum(bool({int(a), int(b)} & self._obstacle_geoms) for a, b in geoms))

    def pinch_point(self) -> np.ndarray:
        return self.data.site_xpos[self._site].copy()

    def _obs(self) -> np.ndarray:
        q, v = self.data.qpos[:N_JOINTS], self.data.qvel[:N_JOINTS]
        return np.concatenate([q, v, self.pinch_point(), self.target])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        import mujoco

        super().reset(seed=seed)
        # The start pose first, then the target: a seed gives the same start with or without a fixed target.
        for _ in range(1000):
            mujoco.mj_resetData(self.model, self.data)
            self.data.qpos[:N_JOINTS] = HOME + self.np_random.uniform(-HOME_NOISE, HOME_NOISE)
            self.data.qpos[N_JOINTS:] = 0.15  # fingers open
            self.data.ctrl[N_JOINTS:] = 0.15
            mujoco.mj_forward(self.model, self.data)
            if self.data.ncon == 0 and self.pinch_point()[1] > 0.05:
                break
        else:  # pragma: no cover - the home region is free by construction (checked at init)
            raise RuntimeError("KinovaReachObstacles-v0: no collision-free start pose found in 1000 draws")
        self.target = (
            self.fixed_target.copy()
            if self.fixed_target is not None
            else self.np_random.uniform(TARGET_LOW, TARGET_HIGH)
        )
        self.model.site_pos[self._target_site] = self.target
        mujoco.mj_forward(self.model, self.data)
        self.collisions = 0
        return self._obs(), {"is_success": False, "distance": self._distance(), "collisions": 0}

    def _distance(self) -> float:
        return float(np.linalg.norm(self.pinch_point() - self.target))

    def _run_physics(self, velocity: np.ndarray) -> bool:
        """One control step's physics for the commanded joint velocities ``velocity (6,)``: without a
        :attr:`joint_controller`, ``N_SUBSTEPS`` MuJoCo steps with ``velocity`` (clipped to the action
        bounds) as the servos' set-point; with one, its ``n_segments`` segments of
        ``N_SUBSTEPS // n_segments`` steps, each with the set-point it returns for the joint positions
        measured at the segment's start (clipped likewise). Returns whether an arm-obstacle contact
        occurred on any physics step."""
        import mujoco

        velocity = np.clip(velocity, -MAX_JOINT_SPEED, MAX_JOINT_SPEED)
        controller = self.joint_controller
        n_segments = 1 if controller is None else controller.n_segments
        if n_segments < 1 or N_SUBSTEPS % n_segments:
            raise ValueError(f"joint_controller.n_segments must divide {N_SUBSTEPS}, got {n_segments}")
        contact = False
        for segment in range(n_segments):
            command = (
                velocity
                if controller is None
                else controller.segment_command(segment, self.data.qpos[self._qadr], velocity)
            )
            self.data.ctrl[:N_JOINTS] = np.clip(command, -MAX_JOINT_SPEED, MAX_JOINT_SPEED)
            if not self._obstacle_geoms:  # nothing to watch: MuJoCo's own loop
                mujoco.mj_step(self.model, self.data, nstep=N_SUBSTEPS // n_segments)
                continue
            for _ in range(N_SUBSTEPS // n_segments):
                mujoco.mj_step(self.model, self.data)
                contact = contact or self._obstacle_contacts() > 0
        return contact

    def step(self, action: np.ndarray):
        action = np.asarray(action, dtype=np.float64).reshape(N_JOINTS)
        if not np.all(np.isfinite(action)):
            raise ValueError(f"KinovaReachObstacles-v0: action must be finite, got {action}")
        before = self._distance()
        contact = self._run_physics(action)
        self.collisions += int(contact)
        after = self._distance()
        success = after < TARGET_RADIUS
        reward = self.progress_coeff * (before - after) - self.collision_penalty * contact
        reward += self.success_reward * success
        info = {
            "is_success": success,
            "distance": after,
            "obstacle_contact": contact,
            "collisions": self.collisions,
        }
        return self._obs(), float(reward), success, False, info


class KinovaPickPlaceEnv(KinovaReachEnv):
    """``KinovaPickPlace-v0``: pick up a cube and put it down at a destination (Q-STAC paper, Fig. 2d,
    Table I's two stages).

    The reaching scene without obstacles, plus a free 5 cm cube on the floor (start side) and a
    destination on the floor (far side), both drawn each episode. **Action** ``(7,)``: the six joint
    velocities and one gripper command in ``[-1, 1]``: all three fingers get the same velocity set-point
    ``5 * a`` rad/s (dm_control's finger actuators; positive closes), so a held positive command grips
    with about 25 N and stops on the cube. **Observation** ``(22,)``: joint positions (6), joint
    velocities (6), the mean finger angle (1; 0.15 open, 1.35 closed), the pinch point (3), the cube's
    centre (3), the destination (3). **Reward** (ours): ``reach_coeff * (d - d')`` for the pinch point's
    distance to the cube plus ``place_coeff * (e - e')`` for the cube's distance to the destination
    (both telescope) and ``success_reward`` on success. **Stages** in ``info``: ``reached_cube`` (the
    pinch point has come within 3 cm of the cube's centre in this episode) and ``is_success`` (the
    cube within 5 cm of the destination, which ends the episode).

    :param render_mode: ``None`` or ``"rgb_array"``.
    :param reach_coeff: weight of the pinch point's approach to the cube (per metre).
    :param place_coeff: weight of the cube's approach to the destination (per metre).
    :param success_reward: bonus on success.
    """

    #: 10 s: reaching, closing the fingers (about 1 s), carrying and placing (a scripted P-controller
    #: needs about 460 steps; tests/test_env_kinova.py).
    MAX_EPISODE_STEPS = 500

    def __init__(
        self,
        render_mode: str | None = None,
        reach_coeff: float = 5.0,
        place_coeff: float = 10.0,
        success_reward: float = 10.0,
    ):
        self.obstacles = np.zeros((0, 6))
        self._init_scene(build_reach_model(self.obstacles, cube=True), render_mode)
        self.reach_coeff, self.place_coeff = float(reach_coeff), float(place_coeff)
        self.success_reward = float(success_reward)
        self.progress_coeff, self.collision_penalty = self.reach_coeff, 0.0
        self._obstacle_geoms: set[int] = set()
        self._vadr = np.array([self.model.joint(f"{ARM}joint_{i}").dofadr[0] for i in range(1, 7)])
        self._fadr = np.array([self.model.joint(f"{ARM}hand/finger_{i}").qposadr[0] for i in range(1, 4)])
        self._cube_qadr = int(self.model.joint("cube").qposadr[0])
        self._cube = self.model.body("cube").id
        self.fixed_target = None
        high = np.r_[np.full(N_JOINTS, MAX_JOINT_SPEED), 1.0].astype(np.float32)
        self.action_space = spaces.Box(-high, high, dtype=np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(PICK_OBS_DIM,), dtype=np.float64)
        self.target = np.r_[DESTINATION_LOW, CUBE_HALF]
        self.reached = False
        self.collisions = 0

    def cube_position(self) -> np.ndarray:
        return self.data.xpos[self._cube].copy()

    def _obs(self) -> np.ndarray:
        q, v = self.data.qpos[self._qadr], self.data.qvel[self._vadr]
        finger = np.mean(self.data.qpos[self._fadr])
        return np.concatenate([q, v, [finger], self.pinch_point(), self.cube_position(), self.target])

    def _stage_distances(self) -> tuple[float, float]:
        cube = self.cube_position()
        return float(np.linalg.norm(self.pinch_point() - cube)), float(np.linalg.norm(cube - self.target))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        import mujoco

        gym.Env.reset(self, seed=seed)
        for _ in range(1000):
            mujoco.mj_resetData(self.model, self.data)
            self.data.qpos[self._qadr] = HOME + self.np_random.uniform(-HOME_NOISE, HOME_NOISE)
            self.data.qpos[self._fadr] = FINGER_OPEN
            cube_xy = self.np_random.uniform(CUBE_LOW, CUBE_HIGH)
            self.data.qpos[self._cube_qadr : self._cube_qadr + 7] = [*cube_xy, CUBE_HALF, 1, 0, 0, 0]
            mujoco.mj_forward(self.model, self.data)
            # the cube rests on the floor (its own contacts); nothing else may touch
            touching = [{int(c.geom1), int(c.geom2)} for c in self.data.contact[: self.data.ncon]]
            floor_cube = {self.model.geom("floor").id, self.model.geom("cube").id}
            if all(pair == floor_cube for pair in touching) and self.pinch_point()[1] > 0.05:
                break
        else:  # pragma: no cover
            raise RuntimeError("KinovaPickPlace-v0: no collision-free start found in 1000 draws")
        self.target = np.r_[self.np_random.uniform(DESTINATION_LOW, DESTINATION_HIGH), CUBE_HALF]
        self.model.site_pos[self._target_site] = self.target
        mujoco.mj_forward(self.model, self.data)
        self.reached = False
        reach, _ = self._stage_distances()
        return self._obs(), {"is_success": False, "reached_cube": False, "cube_distance": reach}

    def step(self, action: np.ndarray):
        action = np.asarray(action, dtype=np.float64).reshape(N_JOINTS + 1)
        if not np.all(np.isfinite(action)):
            raise ValueError(f"KinovaPickPlace-v0: action must be finite, got {action}")
        reach_before, place_before = self._stage_distances()
        self.data.ctrl[N_JOINTS:] = FINGER_SPEED * np.clip(action[N_JOINTS], -1.0, 1.0)
        self._run_physics(action[:N_JOINTS])
        reach, place = self._stage_distances()
        self.reached = self.reached or reach < REACH_RADIUS
        success = place < PLACE_RADIUS
        reward = self.reach_coeff * (reach_before - reach) + self.place_coeff * (place_before - place)
        reward += self.success_reward * success
        info = {
            "is_success": success,
            "reached_cube": self.reached,
            "cube_distance": reach,
            "destination_distance": place,
        }
        return self._obs(), float(reward), success, False, info


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


class KinovaKinematicModel(nn.Module):
    """The kinematic partial model of the Kinova tasks (module docstring): integrate the commanded joint
    velocities, forward kinematics of the compiled model's body tree to the pinch point, target constant.

    Batched torch, differentiable in the actions (Q-STAC plans through it); ``(..., 18)`` observations.

    :param model: the compiled MuJoCo model to read the body tree from (default: the reaching scene).
    :param obstacles: the boxes for the reward's pinch-point penalty (default: :data:`OBSTACLES`).
    :param progress_coeff: as the environment's.
    :param collision_penalty: per step with the pinch point inside an inflated obstacle.
    :param success_reward: as the environment's.
    """

    # The body tree folded into one homogeneous transform per hinge k (the fixed bodies before it
    # included): the hand's pose is prod_k frames[k] @ rot(axis_k, q_k), with
    # frames[k] @ rot(axis_k, q_k) = frames[k] + sin q_k frames_k[k] + (1 - cos q_k) frames_kk[k]
    # (Rodrigues with the axis' cross-product matrix K: frames_k = frames K, frames_kk = frames K^2).
    # Six batched matrix-vector products then give the pinch point: a few dozen tensor ops per call
    # instead of a few hundred (Q-STAC's SVGD steps differentiate through H calls per particle).
    frames: th.Tensor  # (6, 4, 4)
    frames_k: th.Tensor  # (6, 4, 4)
    frames_kk: th.Tensor  # (6, 4, 4)
    pinch_in_last: th.Tensor  # (4,) the pinch point in the last hinge's frame (homogeneous)
    q_low: th.Tensor  # (6,) joint limits (-inf / inf where unlimited)
    q_high: th.Tensor
    boxes: th.Tensor  # (K, 6) obstacles for the reward

    def __init__(
        self,
        model: Any = None,
        obstacles: Any = None,
        progress_coeff: float = 10.0,
        collision_penalty: float = 0.1,
        success_reward: float = 10.0,
    ):
        super().__init__()
        obstacles = OBSTACLES if obstacles is None else np.asarray(obstacles, dtype=np.float64)
        model = build_reach_model(obstacles) if model is None else model
        chain = []  # bodies from the arm's first joint to the hand, in order
        body = model.site(PINCH).bodyid[0]
        while body != 0:
            chain.append(int(body))
            body = int(model.body_parentid[body])
        chain.reverse()
        frames, frames_k, frames_kk = [], [], []
        fixed = np.eye(4)  # the bodies since the last hinge
        for b in chain:
            link = np.eye(4)
            link[:3, :3], link[:3, 3] = _quat_to_matrix(model.body_quat[b]), model.body_pos[b]
            fixed = fixed @ link
            n_joints = int(model.body_jntnum[b])
            if n_joints > 1:
                raise ValueError(
                    f"body {model.body(b).name!r} has {n_joints} joints; the chain needs one per body"
                )
            if n_joints == 1:
                j = int(model.body_jntadr[b])
                if np.any(model.jnt_pos[j] != 0) or model.jnt_type[j] != 3:  # 3 = hinge
                    raise ValueError(
                        f"joint {model.joint(j).name!r}: only hinges at the body origin are supported"
                    )
                x, y, z = model.jnt_axis[j] / np.linalg.norm(model.jnt_axis[j])
                cross = np.zeros((4, 4))  # the k-th hinge along the chain is observation entry k
                cross[:3, :3] = [[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]]
                frames.append(fixed)
                frames_k.append(fixed @ cross)
                frames_kk.append(fixed @ cross @ cross)
                fixed = np.eye(4)
        hinges = [int(model.body_jntadr[b]) for b in chain if model.body_jntnum[b] == 1]
        if len(hinges) != N_JOINTS:
            raise ValueError(f"the arm chain must hold {N_JOINTS} hinges, found {len(hinges)}")
        site = model.site(PINCH).id
        self.register_buffer("frames", th.as_tensor(np.stack(frames)))
        self.register_buffer("frames_k", th.as_tensor(np.stack(frames_k)))
        self.register_buffer("frames_kk", th.as_tensor(np.stack(frames_kk)))
        self.register_buffer("pinch_in_last", th.as_tensor(fixed @ np.append(model.site_pos[site], 1.0)))
        lows = np.where(model.jnt_limited[hinges], model.jnt_range[hinges, 0], -np.inf)
        highs = np.where(model.jnt_limited[hinges], model.jnt_range[hinges, 1], np.inf)
        self.register_buffer("q_low", th.as_tensor(lows))
        self.register_buffer("q_high", th.as_tensor(highs))
        self.register_buffer("boxes", th.as_tensor(obstacles))
        self.dt = CONTROL_DT
        self.progress_coeff, self.collision_penalty = float(progress_coeff), float(collision_penalty)
        self.success_reward = float(success_reward)

    @classmethod
    def from_env(cls, env: Any = None) -> KinovaKinematicModel:
        env = getattr(env, "unwrapped", env)
        if isinstance(env, KinovaReachEnv):
            return cls(
                env.model, env.obstacles, env.progress_coeff, env.collision_penalty, env.success_reward
            )
        return cls()

    def pinch_point(self, q: th.Tensor) -> th.Tensor:
        """Forward kinematics: joint angles ``(..., 6)`` -> pinch point ``(..., 3)`` in the world frame."""
        sin, one_minus_cos = th.sin(q)[..., None, None], (1 - th.cos(q))[..., None, None]  # (..., 6, 1, 1)
        hinges = (  # (..., 6, 4, 4): frames[k] @ rot(axis_k, q_k)
            self.frames.to(q) + sin * self.frames_k.to(q) + one_minus_cos * self.frames_kk.to(q)
        )
        point = self.pinch_in_last.to(q).expand(*q.shape[:-1], 4).unsqueeze(-1)  # (..., 4, 1)
        for k in range(N_JOINTS - 1, -1, -1):
            point = hinges[..., k, :, :] @ point
        return point[..., :3, 0]

    def forward(self, obs: th.Tensor, action: th.Tensor) -> th.Tensor:
        q = obs[..., :N_JOINTS]
        v = action.clamp(-MAX_JOINT_SPEED, MAX_JOINT_SPEED)
        q_next = th.minimum(th.maximum(q + self.dt * v, self.q_low.to(q)), self.q_high.to(q))
        v_next = (q_next - q) / self.dt
        return th.cat([q_next, v_next, self.pinch_point(q_next), obs[..., 2 * N_JOINTS + 3 :]], dim=-1)

    def is_terminal(self, obs: th.Tensor) -> th.Tensor:
        distance = th.linalg.vector_norm(obs[..., 12:15] - obs[..., 15:18], dim=-1)
        return distance < TARGET_RADIUS

    def reward(self, obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
        before = th.linalg.vector_norm(obs[..., 12:15] - obs[..., 15:18], dim=-1)
        after = th.linalg.vector_norm(next_obs[..., 12:15] - next_obs[..., 15:18], dim=-1)
        point = next_obs[..., None, 12:15]  # (..., 1, 3) against boxes (K, 6)
        boxes = self.boxes.to(point)
        inside = ((point - boxes[:, :3]).abs() < boxes[:, 3:] + HAND_RADIUS).all(-1).any(-1)
        return (
            self.progress_coeff * (before - after)
            - self.collision_penalty * inside.to(obs.dtype)
            + self.success_reward * (after < TARGET_RADIUS).to(obs.dtype)
        )


class KinovaPickPlaceModel(KinovaKinematicModel):
    """The partial model of ``KinovaPickPlace-v0``: the arm as :class:`KinovaKinematicModel`, the fingers
    integrate their commanded velocity (``5 * a`` rad/s, clipped to ``[0.15, 1.35]``), the destination
    is constant, and the cube follows the **grasp rule** (the model's assumption about the object it does
    not simulate): while the mean finger angle after the step is at least :data:`GRASP_ANGLE` and the
    cube's centre was within :data:`REACH_RADIUS` of the pinch point, the cube moves with the pinch
    point (``cube' = cube + pinch' - pinch``); otherwise it stays where it is. Blind spots: contacts
    (the fingers stop on the cube in the environment, here they close through it; the cube can be
    pushed, dropped or slip), gravity on a released cube (it stays in the air), the servo's lag.
    ``(..., 22)`` observations, ``(..., 7)`` actions; batched, differentiable in the joint commands.

    :param model: the compiled pick-and-place scene (default: built).
    :param reach_coeff: as the environment's.
    :param place_coeff: as the environment's.
    :param success_reward: as the environment's.
    """

    def __init__(
        self,
        model: Any = None,
        reach_coeff: float = 5.0,
        place_coeff: float = 10.0,
        success_reward: float = 10.0,
    ):
        model = build_reach_model(np.zeros((0, 6)), cube=True) if model is None else model
        super().__init__(model, np.zeros((0, 6)), reach_coeff, 0.0, success_reward)
        self.reach_coeff, self.place_coeff = float(reach_coeff), float(place_coeff)

    @classmethod
    def from_env(cls, env: Any = None) -> KinovaPickPlaceModel:
        env = getattr(env, "unwrapped", env)
        if isinstance(env, KinovaPickPlaceEnv):
            return cls(env.model, env.reach_coeff, env.place_coeff, env.success_reward)
        return cls()

    def forward(self, obs: th.Tensor, action: th.Tensor) -> th.Tensor:
        q, finger = obs[..., :N_JOINTS], obs[..., 2 * N_JOINTS : 2 * N_JOINTS + 1]
        pinch, cube = obs[..., 13:16], obs[..., 16:19]
        v = action[..., :N_JOINTS].clamp(-MAX_JOINT_SPEED, MAX_JOINT_SPEED)
        q_next = th.minimum(th.maximum(q + self.dt * v, self.q_low.to(q)), self.q_high.to(q))
        grip = FINGER_SPEED * action[..., N_JOINTS:].clamp(-1.0, 1.0)
        finger_next = (finger + self.dt * grip).clamp(FINGER_OPEN, FINGER_CLOSED)
        pinch_next = self.pinch_point(q_next)
        held = (finger_next >= GRASP_ANGLE) & (
            th.linalg.vector_norm(cube - pinch, dim=-1, keepdim=True) < REACH_RADIUS
        )
        cube_next = th.where(held, cube + pinch_next - pinch, cube)
        return th.cat(
            [q_next, (q_next - q) / self.dt, finger_next, pinch_next, cube_next, obs[..., 19:22]], dim=-1
        )

    def is_terminal(self, obs: th.Tensor) -> th.Tensor:
        return th.linalg.vector_norm(obs[..., 16:19] - obs[..., 19:22], dim=-1) < PLACE_RADIUS

    def reward(self, obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
        def distances(o: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
            reach = th.linalg.vector_norm(o[..., 13:16] - o[..., 16:19], dim=-1)
            return reach, th.linalg.vector_norm(o[..., 16:19] - o[..., 19:22], dim=-1)

        (reach, place), (reach_next, place_next) = distances(obs), distances(next_obs)
        return (
            self.reach_coeff * (reach - reach_next)
            + self.place_coeff * (place - place_next)
            + self.success_reward * (place_next < PLACE_RADIUS).to(obs.dtype)
        )
