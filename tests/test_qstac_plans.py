"""Fast tests of benchmarks/qstac_plans.py on the Kinova arm: an untrained QSTAC's plans as end-effector
paths, and the paths as visual-only geoms of a MuJoCo scene (no OpenGL needed: ``mjv_updateScene``)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th

pytest.importorskip("mujoco", reason="the Kinova tasks need the [mujoco] extra")
pytest.importorskip("dm_control", reason="the Kinova tasks need the [mujoco] extra")

import mujoco
from benchmark_script import load_benchmark
from sb3_stein.envs.kinova import KinovaReachEnv

from sb3_stein import QSTAC

plans = load_benchmark("qstac_plans")


@pytest.fixture(scope="module")
def env_and_model() -> tuple[KinovaReachEnv, QSTAC]:
    th.manual_seed(0)
    made = gym.make("KinovaReachObstacles-v0")  # the id resolves the kinematic model
    env = made.unwrapped
    assert isinstance(env, KinovaReachEnv)
    model = QSTAC("MlpPolicy", made, horizon=3, n_particles=4, svgd_steps=1, device="cpu", seed=0)
    return env, model


@pytest.mark.parametrize("deterministic", [True, False])
def test_plans_become_pinch_point_paths_from_the_current_pinch_point(env_and_model, deterministic):
    env, model = env_and_model
    obs, _ = env.reset(seed=3)
    points, action = plans.planned_pinch_points(model, obs, deterministic)
    assert points.shape == (4, 3 + 1, 3) and np.all(np.isfinite(points))
    assert action.shape == (6,) and np.all(np.abs(action) <= 1.0)
    np.testing.assert_allclose(points[:, 0], np.broadcast_to(env.pinch_point(), (4, 3)), atol=1e-4)
    # the executed particle (first) starts with the executed action: one model step gives its next point
    nxt = model.policy.dynamics(th.as_tensor(obs)[None], th.as_tensor(action, dtype=th.float64)[None])
    np.testing.assert_allclose(points[0, 1], nxt[0, 12:15].numpy(), atol=1e-4)
    assert np.linalg.norm(points[:, -1] - points[:, 0], axis=-1).max() > 1e-3  # the plans move the hand


def test_paths_are_added_as_visual_geoms_within_maxgeom(env_and_model):
    env, _ = env_and_model
    scene = mujoco.MjvScene(env.model, maxgeom=400)
    mujoco.mjv_updateScene(
        env.model, env.data, mujoco.MjvOption(), None, mujoco.MjvCamera(), mujoco.mjtCatBit.mjCAT_ALL, scene
    )
    before = scene.ngeom
    path = np.array([[0.4, 0.3, 0.3], [0.4, 0.2, 0.3], [0.4, 0.2, 0.3], [0.5, 0.1, 0.4]])  # one repeat
    plans.add_path(scene, path, 0.005, (220, 30, 30))
    plans.add_sphere(scene, np.array([0.4, -0.3, 0.3]), 0.02, (30, 200, 60))
    assert scene.ngeom == before + 3  # two segments (the zero-length one skipped) and the sphere
    first = scene.geoms[before]
    assert first.type == mujoco.mjtGeom.mjGEOM_CAPSULE
    np.testing.assert_allclose(first.pos, path[:2].mean(0), atol=1e-6)
    np.testing.assert_allclose(first.rgba, [220 / 255, 30 / 255, 30 / 255, 1.0], atol=1e-6)
    with pytest.raises(RuntimeError, match=r"maxgeom|max_geom"):
        plans.add_path(scene, np.linspace([0, 0, 0], [1, 1, 1], 500), 0.005, (0, 0, 255))
