"""``BallInCupSparse-v0``: MPQ's sparse ball-in-cup (Bhardwaj et al. 2020, §4.1 task 2, Table 1, App. B).

The physics is the DeepMind Control Suite's ball-in-cup (Tassa et al. 2018): dm_control's own MJCF
(``dm_control/suite/ball_in_cup.xml``, read from the installed ``dm-control`` wheel; dm_control itself
is not imported), a cup on two slide joints driven by two motors (``gear = 5``, controls in
``[-1, 1]``), a ball on two slide joints tied to the cup by a string (a limited spatial tendon of
length 0.3), physics step 0.002 s, control step 0.02 s (10 physics steps), the suite's initial state
(ball uniform in ``x ∈ [-0.2, 0.2]``, ``z ∈ [0.2, 0.5]`` joint units, redrawn until nothing touches,
cup at rest at the origin) and its ``in_target`` test (the ball's centre inside the cup's target box
shrunk by the ball's radius, in ``x`` and ``z``).

What the paper changes, and we with it:

* **Sparse cost** (Table 1, 3): cost 1 at every step, 0 while the ball is in the cup, i.e. reward
  ``in_target - 1``. ``info["is_success"]`` is ``in_target`` at that step, so rl_zoo3's and SB3's
  success rate (read at the episode's last step) is "the ball is in the cup at the end".
* **4 s episodes** (§4.1): 200 control steps, truncated (the registry's ``max_episode_steps``).
* **The true parameters of Table 1**: ball mass 0.058 kg, moment of inertia ``1.47e-5`` about every
  axis, string stiffness 0.05 (dm_control's model has a 0.0654 kg ball of density 1000 and an
  unsprung string; its spring length is the string's length at the initial pose, 0.292).
* **Observation** (App. B, 12-D): ``[x_ball (2), x_target (2), v_ball (2), v_target (2), x_target -
  x_ball (2), cos Θ, sin Θ]`` in the ``x-z`` plane of the world, Θ the angle of the line from the
  ball to the target (``atan2`` of the last difference). The target is the centre of the cup's
  target box; the cup only translates, so its velocity is the cup's. The observation determines the
  physical state exactly (positions and velocities of the four joints), which is what lets a
  simulator model start its rollouts from an observation.

The simulator model (:class:`BallInCupSimulator`, MPQ's "biased model", issue 13) is a second copy of
the same MJCF with other parameters, rolled out by ``mujoco.rollout`` (multithreaded C, no Python loop
over samples); :func:`biased_ball_in_cup_model` draws those parameters once from Table 1's ranges.

Rendering needs an OpenGL context for MuJoCo (``MUJOCO_GL=egl`` or ``osmesa`` with the system's
libraries); where there is none, ``render()`` raises a ``RuntimeError`` saying so.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from sb3_stein.envs.mujoco_scene import MujocoRendering, dm_control_path, import_mujoco
from torch import nn

#: 4 s at the suite's control step of 0.02 s (§4.1).
MAX_EPISODE_STEPS = 200
#: Physics steps per control step (0.02 / 0.002, dm_control's ``_CONTROL_TIMESTEP``).
N_SUBSTEPS = 10
OBS_DIM = 12


@dataclass(frozen=True)
class BallInCupParams:
    """The physical parameters MPQ's paper randomises (Table 1).

    :param ball_mass: kg.
    :param ball_inertia: moment of inertia about each axis, kg m^2.
    :param tendon_stiffness: stiffness of the string, N/m (spring length: its length at the initial pose).
    """

    ball_mass: float = 0.058
    ball_inertia: float = 1.47e-5
    tendon_stiffness: float = 0.05

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (math.isfinite(value) and value >= 0) or (name != "tendon_stiffness" and value == 0):
                raise ValueError(f"BallInCupParams.{name} must be a finite positive number, got {value!r}")


#: The true system (Table 1's "true value" column).
TRUE_PARAMS = BallInCupParams()
#: Table 1's uniform ranges for the planner's model.
BIASED_RANGES: dict[str, tuple[float, float]] = {
    "ball_mass": (0.0087, 0.87),
    "ball_inertia": (0.22e-5, 22e-5),
    "tendon_stiffness": (0.00375, 1.5),
}


def load_model(params: BallInCupParams = TRUE_PARAMS) -> Any:
    """dm_control's ball-in-cup MJCF compiled by MuJoCo, with ``params`` written into the model."""
    mujoco = import_mujoco()
    suite = dm_control_path("suite")
    with open(os.path.join(suite, "ball_in_cup.xml"), "rb") as f:
        xml = f.read()
    assets = {}
    for name in ("visual.xml", "skybox.xml", "materials.xml"):
        with open(os.path.join(suite, "common", name), "rb") as f:
            assets[f"./common/{name}"] = f.read()
    model = mujoco.MjModel.from_xml_string(xml.decode(), assets)
    ball = model.body("ball").id
    model.body_mass[ball] = params.ball_mass
    model.body_inertia[ball] = params.ball_inertia
    model.tendon_stiffness[model.tendon("string").id] = params.tendon_stiffness
    return model


@dataclass(frozen=True)
class Layout:
    """Where the observation's pieces live in a compiled model (read off it, not typed in)."""

    qpos_cup: np.ndarray  # qpos addresses of cup_x, cup_z
    qpos_ball: np.ndarray  # of ball_x, ball_z
    qvel_cup: np.ndarray
    qvel_ball: np.ndarray
    cup_origin: np.ndarray  # (x, z) of the target box's centre at zero joint positions
    ball_origin: np.ndarray  # (x, z) of the ball's centre at zero joint positions
    in_target_margin: np.ndarray  # (x, z): target box half-size minus the ball's radius

    @classmethod
    def of(cls, model: Any) -> Layout:
        xz = [0, 2]
        joints = [model.joint(name) for name in ("cup_x", "cup_z", "ball_x", "ball_z")]
        qpos = np.array([int(j.qposadr[0]) for j in joints])
        qvel = np.array([int(j.dofadr[0]) for j in joints])
        target = model.site("target")
        return cls(
            qpos_cup=qpos[:2],
            qpos_ball=qpos[2:],
            qvel_cup=qvel[:2],
            qvel_ball=qvel[2:],
            cup_origin=(model.body("cup").pos + target.pos)[xz].copy(),
            ball_origin=model.body("ball").pos[xz].copy(),
            in_target_margin=(target.size[xz] - model.geom("ball").size[0]).copy(),
        )

    def observation(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """The 12-D observation of App. B from joint positions and velocities ``(..., 4)``."""
        ball = self.ball_origin + qpos[..., self.qpos_ball]
        target = self.cup_origin + qpos[..., self.qpos_cup]
        diff = target - ball
        theta = np.arctan2(diff[..., 1], diff[..., 0])
        return np.concatenate(
            [
                ball,
                target,
                qvel[..., self.qvel_ball],
                qvel[..., self.qvel_cup],
                diff,
                np.cos(theta)[..., None],
                np.sin(theta)[..., None],
            ],
            axis=-1,
        )

    def joint_state(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Joint positions and velocities ``(..., 4)`` that produce ``obs`` (its first 8 entries)."""
        qpos = np.zeros((*obs.shape[:-1], 4))
        qvel = np.zeros_like(qpos)
        qpos[..., self.qpos_ball] = obs[..., 0:2] - self.ball_origin
        qpos[..., self.qpos_cup] = obs[..., 2:4] - self.cup_origin
        qvel[..., self.qvel_ball] = obs[..., 4:6]
        qvel[..., self.qvel_cup] = obs[..., 6:8]
        return qpos, qvel


def in_target(obs: th.Tensor, margin: th.Tensor | np.ndarray) -> th.Tensor:
    """dm_control's ``in_target`` from observations ``(..., 12)``: ``|x_target - x_ball| < margin``."""
    margin = th.as_tensor(margin, dtype=obs.dtype, device=obs.device)
    return (obs[..., 8:10].abs() < margin).all(dim=-1)


class BallInCupSparseEnv(MujocoRendering, gym.Env):
    """The sparse ball-in-cup of MPQ's paper on dm_control's model (module docstring for the details).

    :param render_mode: ``None`` or ``"rgb_array"`` (needs MuJoCo's OpenGL, see the module docstring).
    :param params: the physical parameters of the true system (default: Table 1's true values).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(1 / (0.002 * N_SUBSTEPS))}
    render_size, render_camera = (240, 320), "cam0"

    def __init__(self, render_mode: str | None = None, params: BallInCupParams | None = None):
        mujoco = import_mujoco()

        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.params = params if params is not None else TRUE_PARAMS
        self.model = load_model(self.params)
        self.data = mujoco.MjData(self.model)
        self.layout = Layout.of(self.model)
        self.frame_skip = N_SUBSTEPS
        self.dt = float(self.model.opt.timestep) * N_SUBSTEPS
        self.render_mode = render_mode
        low = self.model.actuator_ctrlrange[:, 0].astype(np.float32)
        high = self.model.actuator_ctrlrange[:, 1].astype(np.float32)
        self.action_space = spaces.Box(low, high, dtype=np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float64)

    def _obs(self) -> np.ndarray:
        return self.layout.observation(self.data.qpos.copy(), self.data.qvel.copy())

    def _in_target(self, obs: np.ndarray) -> bool:
        return bool(np.all(np.abs(obs[8:10]) < self.layout.in_target_margin))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        import mujoco

        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        # dm_control's BallInCup.initialize_episode: redraw the ball until nothing touches.
        while True:
            self.data.qpos[self.layout.qpos_ball[0]] = self.np_random.uniform(-0.2, 0.2)
            self.data.qpos[self.layout.qpos_ball[1]] = self.np_random.uniform(0.2, 0.5)
            mujoco.mj_forward(self.model, self.data)
            if self.data.ncon == 0:
                break
        obs = self._obs()
        return obs, {"is_success": self._in_target(obs)}

    def step(self, action: np.ndarray):
        import mujoco

        action = np.asarray(action, dtype=np.float64).reshape(self.action_space.shape)
        if not np.all(np.isfinite(action)):
            raise ValueError(f"BallInCupSparse-v0: action must be finite, got {action}")
        ctrl_range = self.model.actuator_ctrlrange
        self.data.ctrl[:] = np.clip(action, ctrl_range[:, 0], ctrl_range[:, 1])
        mujoco.mj_step(self.model, self.data, nstep=N_SUBSTEPS)
        obs = self._obs()
        success = self._in_target(obs)
        return obs, float(success) - 1.0, False, False, {"is_success": success}


class BallInCupSimulator(nn.Module):
    """A simulator model of ``BallInCupSparse-v0``: the same MJCF with ``params``, rolled out by MuJoCo.

    Implements the dynamics-model protocol (``forward(obs, action) -> next_obs``, any leading batch
    dimensions, environment units) and the simulator-model extension MPQ's planner uses,
    ``rollout_sequence(obs (B, N, 12), actions (B, N, T, 2)) -> (next_obs (B, N, T, 12), rewards
    (B, N, T))``, which rolls every sequence in one ``mujoco.rollout`` call (``n_threads`` C threads,
    no Python loop over samples or steps). ``reward(obs, action, next_obs)`` is the sparse reward of the
    environment from the next observation. Computation is in float64 on the CPU; results come back in
    the inputs' dtype and device. Each rollout starts with a zero constraint-solver warm start
    (the environment carries its own from step to step), so a model with the true parameters
    reproduces ``env.step`` to solver tolerance, not bit for bit (``tests/test_env_ball_in_cup.py``).

    Pickles by its parameters (the compiled model is rebuilt).

    :param params: the model's physical parameters (default: the true ones).
    :param n_threads: threads for ``mujoco.rollout``; ``None``: ``torch.get_num_threads()`` at each call.
    """

    def __init__(self, params: BallInCupParams | None = None, n_threads: int | None = None):
        super().__init__()
        if n_threads is not None and (not isinstance(n_threads, int) or n_threads < 1):
            raise ValueError(f"n_threads must be None or an integer >= 1, got {n_threads!r}")
        self.params = params if params is not None else TRUE_PARAMS
        self.n_threads = n_threads
        self._build()

    def _build(self) -> None:
        import mujoco

        self.mj_model = load_model(self.params)
        self.layout = Layout.of(self.mj_model)
        self._datas: list[Any] = []
        self._state_size = mujoco.mj_stateSize(self.mj_model, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        self._mujoco = mujoco

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("mj_model", "layout", "_datas", "_state_size", "_mujoco"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._build()

    @classmethod
    def from_env(cls, env: Any = None) -> BallInCupSimulator:
        """The model with the environment's (true) parameters: an exact model, for tests and ablations."""
        params = getattr(getattr(env, "unwrapped", env), "params", None)
        return cls(params if isinstance(params, BallInCupParams) else TRUE_PARAMS)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v:.4g}" for k, v in asdict(self.params).items())

    def _rollout(self, obs: np.ndarray, controls: np.ndarray) -> np.ndarray:
        """Observations after each of ``T`` control steps: obs ``(M, 12)``, controls ``(M, T, 2)`` ->
        ``(M, T, 12)``."""
        from mujoco import rollout

        m = controls.shape[0]
        n_threads = self.n_threads or max(1, th.get_num_threads())
        while len(self._datas) < n_threads:
            self._datas.append(self._mujoco.MjData(self.mj_model))
        qpos, qvel = self.layout.joint_state(obs)
        nq = self.mj_model.nq
        initial = np.zeros((m, self._state_size))  # FULLPHYSICS = [time, qpos, qvel] for this model
        initial[:, 1 : 1 + nq] = qpos
        initial[:, 1 + nq : 1 + nq + self.mj_model.nv] = qvel
        low, high = self.mj_model.actuator_ctrlrange[:, 0], self.mj_model.actuator_ctrlrange[:, 1]
        per_physics_step = np.repeat(np.clip(controls, low, high), N_SUBSTEPS, axis=1)  # (M, T * 10, 2)
        state, _ = rollout.rollout(
            self.mj_model,
            self._datas[:n_threads],
            initial,
            per_physics_step,
            persistent_pool=n_threads > 1,
        )
        state = state[:, N_SUBSTEPS - 1 :: N_SUBSTEPS]  # (M, T, nstate): after each control step
        return self.layout.observation(state[..., 1 : 1 + nq], state[..., 1 + nq : 1 + nq + self.mj_model.nv])

    @th.no_grad()
    def forward(self, obs: th.Tensor, action: th.Tensor) -> th.Tensor:
        lead = obs.shape[:-1]
        flat_obs = obs.detach().reshape(-1, OBS_DIM).double().cpu().numpy()
        flat_act = action.detach().reshape(-1, 1, action.shape[-1]).double().cpu().numpy()
        next_obs = self._rollout(flat_obs, flat_act)[:, 0]
        return th.as_tensor(next_obs, dtype=obs.dtype, device=obs.device).reshape(*lead, OBS_DIM)

    def reward(self, obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
        """The environment's sparse reward ``in_target(next_obs) - 1``, ``(...)``."""
        return in_target(next_obs, self.layout.in_target_margin).to(next_obs.dtype) - 1.0

    @th.no_grad()
    def rollout_sequence(self, obs: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Roll ``actions (B, N, T, A)`` from ``obs (B, N, 12)``: ``(next_obs (B, N, T, 12), rewards
        (B, N, T))``."""
        batch, n, horizon, act_dim = actions.shape
        flat_obs = obs.detach().reshape(batch * n, OBS_DIM).double().cpu().numpy()
        flat_act = actions.detach().reshape(batch * n, horizon, act_dim).double().cpu().numpy()
        next_obs = th.as_tensor(self._rollout(flat_obs, flat_act), dtype=obs.dtype, device=obs.device)
        next_obs = next_obs.reshape(batch, n, horizon, OBS_DIM)
        return next_obs, self.reward(obs, actions, next_obs)


def biased_ball_in_cup_model(env: Any = None, seed: int = 0) -> BallInCupSimulator:
    """The model MPQ plans with (Table 1): ball mass, inertia and string stiffness drawn once from
    :data:`BIASED_RANGES` (uniform), with a fixed ``seed``.

    The paper gives the distribution, not how often it is sampled; as for the pendulum
    (:func:`sb3_stein.envs.pendulum.biased_pendulum_model`) we draw one model per factory call, so a
    run, its saved model and a reload plan alike.

    :param env: unused (the true environment; accepted for the factory protocol).
    :param seed: seed of the draw.
    """
    rng = np.random.default_rng(seed)
    draw = {name: float(rng.uniform(*bounds)) for name, bounds in BIASED_RANGES.items()}
    return BallInCupSimulator(BallInCupParams(**draw))
