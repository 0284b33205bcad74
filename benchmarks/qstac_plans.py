"""Picture of a trained Q-STAC agent with its planned particle trajectories: Nav2D tasks or the Kinova arm.

Usage (a model trained by rl_zoo3 or benchmarks/compare.py)::

    python benchmarks/qstac_plans.py --model logs/qstac/Nav2DHard-v0_1/Nav2DHard-v0.zip \\
        --env Nav2DHard-v0 --out benchmarks/results/qstac_plans

    MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa python benchmarks/qstac_plans.py \\
        --model logs/qstac/KinovaReachObstacles-v0_1/KinovaReachObstacles-v0.zip \\
        --env KinovaReachObstacles-v0 --out benchmarks/results/qstac_plans --frame-every 2

At every step of one episode the policy's Stein MPC runs as when acting (``m`` control sequences
from the prior, ``L`` constrained SVGD steps); each particle's sequence is rolled out through the
dynamics model and drawn (the executed particle in red, the others orange), with the path so far in
blue. Writes ``<env>_plans.gif`` (one frame per ``--frame-every`` steps) and ``<env>_plans.png``
(the whole path with the plans of every ``--png-every``-th step); ``--max-steps`` cuts the episode.

* **Nav2D** (``Nav2D*-v0``): the planned positions over the obstacle field (the env's
  ``render_trajectories``).
* **Kinova arm** (``KinovaReachObstacles-v0``, ``KinovaPickPlace-v0``): each planned joint state is
  mapped to the hand's pinch point by the dynamics model's forward kinematics
  (:meth:`KinovaKinematicModel.pinch_point`), and the end-effector paths are drawn into MuJoCo's
  rendered frame of the scene (the env's ``overview`` camera) as visual-only capsules appended to the
  renderer's scene after ``update_scene``: they take no part in the physics. The target (pick and
  place: the destination) is marked by a green sphere. Rendering needs an OpenGL context for MuJoCo:
  headless, run with ``MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa`` (Debian's ``libosmesa6``) or
  ``MUJOCO_GL=egl``; without one the script stops with the env's message naming ``MUJOCO_GL``.
  A 200-step episode makes a GIF of about 1.2 MB (360x480 frames; ``--frame-every 2`` halves it) and
  a 720x960 PNG (``--png-scale``).
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import gymnasium as gym
import numpy as np
import torch as th
from PIL import Image

from sb3_stein import QSTAC

RED, ORANGE, BLUE, GREEN = (220, 30, 30), (240, 150, 60), (30, 80, 220), (30, 200, 60)


def planned_states(model: QSTAC, obs: np.ndarray, deterministic: bool) -> tuple[th.Tensor, np.ndarray]:
    """Every particle's planned states ``x_0 .. x_H`` ``(m, H + 1, obs_dim)`` for one observation, the
    executed particle first, and the executed action (environment units)."""
    policy = model.policy
    obs_t = th.as_tensor(obs, dtype=th.float32, device=policy.device).unsqueeze(0)
    critic = policy.critic_at(obs_t, cache_weights=True)
    sample = policy.sample(
        obs_t, with_log_prob=False, fixed_noise=deterministic, critic=critic, steps=policy.acting_steps
    )
    act_dim = sample.actions.shape[-1]
    with th.no_grad():
        controls = th.tanh(sample.pre_tanh).view(1, -1, policy.horizon, act_dim)
        states, _ = policy.rollout(obs_t, controls)  # x_0 .. x_{H-1}
        last = policy.dynamics(states[:, :, -1], policy.to_env_units(controls[:, :, -1]))
        paths = th.cat([states, last.unsqueeze(2)], dim=2)[0]
        chosen = policy.select(critic, sample.actions, deterministic)
    action = policy.unscale_action(chosen.cpu().numpy())[0]
    index = int(th.argmin((sample.actions[0] - chosen).abs().sum(-1)))
    return th.roll(paths, -index, dims=0), action  # the executed particle first


def planned_paths(model: QSTAC, obs: np.ndarray, deterministic: bool) -> tuple[np.ndarray, np.ndarray]:
    """Nav2D: particle rollouts ``(m, H + 1, 2)`` (positions) for one observation, and the executed
    action."""
    states, action = planned_states(model, obs, deterministic)
    return states[..., :2].cpu().numpy(), action


def planned_pinch_points(
    model: QSTAC, obs: np.ndarray, deterministic: bool, kinematics: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Kinova arm: the pinch point (end effector) along every particle's plan ``(m, H + 1, 3)``, world
    frame, the executed particle first (its first point is the current pinch point), and the executed
    action.

    :param kinematics: an object with ``pinch_point(q (..., 6)) -> (..., 3)`` (forward kinematics;
        default: the policy's dynamics model, :class:`~sb3_stein.envs.kinova.KinovaKinematicModel`).
    :raises TypeError: if neither has a ``pinch_point``.
    """
    from sb3_stein.envs.kinova import N_JOINTS

    kinematics = model.policy.dynamics if kinematics is None else kinematics
    if not callable(getattr(kinematics, "pinch_point", None)):
        raise TypeError(
            f"{type(kinematics).__name__} has no pinch_point(q) forward kinematics; pass kinematics="
            "KinovaKinematicModel.from_env(env) (sb3_stein.envs.kinova)"
        )
    states, action = planned_states(model, obs, deterministic)
    with th.no_grad():
        points = kinematics.pinch_point(states[..., :N_JOINTS].double())
    return points.cpu().numpy(), action


def add_path(scene: Any, points: np.ndarray, width: float, rgb: Sequence[int], alpha: float = 1.0) -> None:
    """Append a polyline through ``points (T, 3)`` (world frame, metres) to a ``mujoco.MjvScene`` as
    visual-only capsules of radius ``width``, one per segment (zero-length segments skipped).

    :raises RuntimeError: if the scene's ``maxgeom`` has no room left.
    """
    from sb3_stein.envs.mujoco_scene import import_mujoco

    mujoco = import_mujoco()
    rgba = np.array([*(c / 255 for c in rgb), alpha], dtype=np.float32)
    points = np.asarray(points, dtype=np.float64)
    for a, b in itertools.pairwise(points):
        if np.linalg.norm(b - a) < 1e-7:
            continue
        geom = _next_geom(scene)
        mujoco.mjv_initGeom(
            geom, mujoco.mjtGeom.mjGEOM_CAPSULE, np.zeros(3), np.zeros(3), np.eye(3).ravel(), rgba
        )
        mujoco.mjv_connector(geom, mujoco.mjtGeom.mjGEOM_CAPSULE, width, a, b)
        geom.emission = 0.4  # the colours read well in the scene's shade too
        scene.ngeom += 1


def add_sphere(scene: Any, center: np.ndarray, radius: float, rgb: Sequence[int], alpha: float = 1.0) -> None:
    """Append a visual-only sphere to a ``mujoco.MjvScene`` (as :func:`add_path`)."""
    from sb3_stein.envs.mujoco_scene import import_mujoco

    mujoco = import_mujoco()
    rgba = np.array([*(c / 255 for c in rgb), alpha], dtype=np.float32)
    size = np.array([radius, radius, radius])
    geom = _next_geom(scene)
    mujoco.mjv_initGeom(
        geom, mujoco.mjtGeom.mjGEOM_SPHERE, size, np.asarray(center, np.float64), np.eye(3).ravel(), rgba
    )
    scene.ngeom += 1


def _next_geom(scene: Any) -> Any:
    if scene.ngeom >= scene.maxgeom:
        raise RuntimeError(
            f"the MuJoCo scene is full ({scene.maxgeom} geoms): make the renderer with a larger max_geom "
            "or draw fewer plans (a larger --png-every)"
        )
    return scene.geoms[scene.ngeom]


class Drawer(Protocol):
    """What the episode loop needs from a task's drawing."""

    def plans(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def position(self, obs: np.ndarray) -> np.ndarray: ...

    def frame(self, plans: list[np.ndarray], path: np.ndarray, current: bool) -> np.ndarray: ...


class Nav2DDrawer:
    """Plans and frames on a Nav2D task (the env's ``render_trajectories``)."""

    def __init__(self, model: QSTAC, env: gym.Env, deterministic: bool):
        self.model, self.inner, self.deterministic = model, env.unwrapped, deterministic

    def plans(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return planned_paths(self.model, obs, self.deterministic)

    def position(self, obs: np.ndarray) -> np.ndarray:
        return obs[:2].copy()

    def frame(self, plans: list[np.ndarray], path: np.ndarray, current: bool) -> np.ndarray:
        """``plans``: one ``(m, H + 1, 2)`` array per drawn step; ``current``: one step's frame (thicker
        executed plan) rather than the summary picture."""
        if current:
            (step,) = plans
            colors = [RED] + [ORANGE] * (len(step) - 1)
            widths = [0.08] + [0.04] * (len(step) - 1)
            return self.inner.render_trajectories(  # type: ignore[attr-defined]
                [*step[::-1], path], [*colors[::-1], BLUE], path[-1], [*widths[::-1], 0.07]
            )
        drawn = [p for step in plans for p in step[::-1]]
        colors = [c for step in plans for c in [ORANGE] * (len(step) - 1) + [RED]]
        return self.inner.render_trajectories([*drawn, path], [*colors, BLUE], path[-1])  # type: ignore[attr-defined]


class ArmDrawer:
    """Plans (pinch-point paths) and frames on the Kinova arm: MuJoCo's rendering of the scene in its
    current state with the paths added as visual-only geoms.

    :param max_geom: the summary picture's scene capacity (the model's own geoms plus every drawn
        segment); the per-step frames get MuJoCo's default 10 000.
    :param picture_scale: the summary picture's size as a multiple of the env's ``render_size``.
    :raises SystemExit: if MuJoCo cannot render here (no OpenGL context: see ``MUJOCO_GL``).
    """

    def __init__(
        self, model: QSTAC, env: gym.Env, deterministic: bool, max_geom: int, picture_scale: int = 2
    ):
        from sb3_stein.envs.mujoco_scene import import_mujoco

        self.model, self.deterministic = model, deterministic
        self.inner: Any = cast(Any, env.unwrapped)  # a KinovaReachEnv
        try:
            self.inner.render()  # the env's own check: a RuntimeError naming MUJOCO_GL without OpenGL
            mujoco = import_mujoco()
            height, width = self.inner.render_size
            self.renderer = mujoco.Renderer(self.inner.model, height, width)
            visual = self.inner.model.vis.global_  # the offscreen buffer must hold the larger picture
            visual.offheight = max(int(visual.offheight), picture_scale * height)
            visual.offwidth = max(int(visual.offwidth), picture_scale * width)
            self.picture_renderer = mujoco.Renderer(
                self.inner.model, picture_scale * height, picture_scale * width, max_geom=max_geom
            )
        except RuntimeError as error:
            raise SystemExit(
                f"qstac_plans.py: {error}\nThe arm is drawn from MuJoCo's rendering; headless, run with "
                "MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa (system OSMesa, e.g. libosmesa6) or MUJOCO_GL=egl."
            ) from error

    def plans(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return planned_pinch_points(self.model, obs, self.deterministic)

    def position(self, obs: np.ndarray) -> np.ndarray:
        return self.inner.pinch_point()

    def frame(self, plans: list[np.ndarray], path: np.ndarray, current: bool) -> np.ndarray:
        """The scene now, with ``plans`` (one ``(m, H + 1, 3)`` array per drawn step: executed particle
        red, others orange), the path so far (blue) and the target (green); ``current``: one step's
        frame (the GIF's size, thicker plans), else the summary picture."""
        renderer = self.renderer if current else self.picture_renderer
        renderer.update_scene(self.inner.data, camera=self.inner.render_camera)
        scene = renderer.scene
        for step in plans:
            for particle in step[1:]:
                add_path(scene, particle, 0.003 if current else 0.002, ORANGE, 0.8)
            add_path(scene, step[0], 0.005 if current else 0.003, RED)
        add_path(scene, path, 0.006 if current else 0.005, BLUE)
        add_sphere(scene, self.inner.target, 0.015, GREEN)
        return renderer.render()

    def close(self) -> None:
        self.renderer.close()
        self.picture_renderer.close()


def _is_arm(env: gym.Env) -> bool:
    try:
        from sb3_stein.envs.kinova import KinovaReachEnv
    except ImportError:  # no MuJoCo: not an arm env either (gym.make would have failed)
        return False
    return isinstance(env.unwrapped, KinovaReachEnv)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="a saved QSTAC .zip")
    parser.add_argument("--env", default="Nav2DHard-v0")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/qstac_plans"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stochastic", action="store_true", help="random particle instead of highest Q")
    parser.add_argument(
        "--png-every", type=int, default=10, help="the PNG shows the plans of every k-th step"
    )
    parser.add_argument("--frame-every", type=int, default=1, help="one GIF frame every k steps")
    parser.add_argument("--max-steps", type=int, default=None, help="stop the episode after this many steps")
    parser.add_argument("--png-scale", type=int, default=2, help="arm: the PNG's size / the GIF's (360x480)")
    args = parser.parse_args(argv)
    steps_bad = args.max_steps is not None and args.max_steps < 1
    if min(args.png_every, args.frame_every, args.png_scale) < 1 or steps_bad:
        parser.error("--png-every, --frame-every, --png-scale and --max-steps must be positive")
    th.set_num_threads(1)
    env = gym.make(args.env, render_mode="rgb_array")
    model = QSTAC.load(args.model, env=env, device="cpu")
    drawer: Drawer
    if _is_arm(env):
        limit = min(args.max_steps or 10**9, (env.spec.max_episode_steps if env.spec else None) or 1000)
        per_plan = model.policy.n_particles * (model.policy.horizon + 1)
        max_geom = 10_000 + (limit // args.png_every + 1) * per_plan + limit
        drawer = ArmDrawer(model, env, not args.stochastic, max_geom, args.png_scale)
    elif hasattr(env.unwrapped, "render_trajectories") and args.env.startswith("Nav2D"):
        drawer = Nav2DDrawer(model, env, not args.stochastic)
    else:
        parser.error(f"--env {args.env}: this script draws the Nav2D tasks and the Kinova arm tasks")
    obs, _ = env.reset(seed=args.seed)
    path, frames, kept = [drawer.position(obs)], [], []
    done, step, total = False, 0, 0.0
    info: dict[str, Any] = {}
    while not done and (args.max_steps is None or step < args.max_steps):
        plans, action = drawer.plans(obs)
        if step % args.frame_every == 0:
            frames.append(drawer.frame([plans], np.array(path), current=True))
        if step % args.png_every == 0:
            kept.append(plans)
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        path.append(drawer.position(obs))
        done, step = terminated or truncated, step + 1
    picture = drawer.frame(kept, np.array(path), current=False)
    args.out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(args.out / f"{args.env}_plans.png")
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(
        args.out / f"{args.env}_plans.gif", save_all=True, append_images=images[1:], duration=80, loop=0
    )
    if isinstance(drawer, ArmDrawer):
        drawer.close()
    env.close()
    success = bool(info.get("is_success"))
    print(f"{args.env}: {step} steps, return {total:.1f}, success {success}; wrote {args.out}")


if __name__ == "__main__":
    main()
