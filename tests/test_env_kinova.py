"""KinovaReachObstacles-v0 and its kinematic partial model (Q-STAC's arm tasks, issue 14)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th

pytest.importorskip("mujoco", reason="the Kinova tasks need the [mujoco] extra")
pytest.importorskip("dm_control", reason="the Kinova tasks need the [mujoco] extra")

import mujoco
from sb3_stein.envs.kinova import (
    HOME,
    MAX_EPISODE_STEPS,
    OBSTACLES,
    KinovaKinematicModel,
    KinovaReachEnv,
)

import sb3_stein  # noqa: F401  (registers the ids)
from sb3_stein.common.dynamics import check_dynamics_model, make_dynamics_model


@pytest.fixture(scope="module")
def env() -> KinovaReachEnv:
    return KinovaReachEnv()


def test_spaces_and_registration():
    made = gym.make("KinovaReachObstacles-v0")
    assert made.spec is not None and made.spec.max_episode_steps == MAX_EPISODE_STEPS == 200
    assert made.observation_space.shape == (18,) and made.action_space.shape == (6,)
    assert made.action_space.high.tolist() == [1.0] * 6
    core = made.unwrapped
    assert isinstance(core, KinovaReachEnv) and core.dt == pytest.approx(0.02)
    assert isinstance(make_dynamics_model("KinovaReachObstacles-v0"), KinovaKinematicModel)


def test_forward_kinematics_equals_mujoco_for_random_joint_angles(env):
    model = KinovaKinematicModel.from_env(env)
    rng = np.random.default_rng(0)
    qs = rng.uniform(-np.pi, np.pi, size=(64, 6))
    qs[:, 1], qs[:, 2] = rng.uniform(1.0, 5.3, 64), rng.uniform(0.5, 5.8, 64)
    expected = []
    for q in qs:
        env.data.qpos[:6] = q
        mujoco.mj_forward(env.model, env.data)
        expected.append(env.pinch_point())
    predicted = model.pinch_point(th.as_tensor(qs)).numpy()  # one batched call
    assert np.abs(predicted - np.array(expected)).max() < 1e-9


def test_kinematic_model_tracks_env_step_in_free_space(env):
    """Free space (no contact in the step): joints within 0.04 rad per step under random commands (the
    servo's lag, the model's blind spot), the pinch point within 3 cm, the target exactly."""
    model = KinovaKinematicModel.from_env(env)
    obs, _ = env.reset(seed=1)
    rng = np.random.default_rng(1)
    joint_err, point_err, free = [], [], 0
    for _ in range(150):
        action = rng.uniform(-1, 1, 6) * 0.5
        predicted = model(th.as_tensor(obs[None]), th.as_tensor(action[None]))[0].numpy()
        obs, _, terminated, _, info = env.step(action)
        if info["obstacle_contact"] or env.data.ncon:
            continue
        free += 1
        joint_err.append(np.abs(predicted[:6] - obs[:6]).max())
        point_err.append(np.abs(predicted[12:15] - obs[12:15]).max())
        assert predicted[15:].tolist() == obs[15:].tolist()
        if terminated:
            break
    assert free > 50
    assert max(joint_err) < 0.04 and np.median(joint_err) < 0.015
    assert max(point_err) < 0.03


def test_obstacles_stop_the_arm_and_contacts_are_counted(env):
    """Lowering the hand, then turning joint 1 at full speed towards the target side drives the arm into
    the boxes: the pinch point stops before the boxes' far side and the steps with contact are counted;
    nothing penetrates deeply."""
    obs, _ = env.reset(seed=0)
    for _ in range(15):
        env.step(np.array([0, 0.3, -0.3, 0, 0, 0]))
    deepest = 0.0
    for _ in range(100):
        obs, reward, _, _, info = env.step(np.array([1.0, 0, 0, 0, 0, 0]))
        for contact in env.data.contact[: env.data.ncon]:
            deepest = min(deepest, float(contact.dist))
    assert info["collisions"] > 50 and info["obstacle_contact"]
    assert obs[13] > OBSTACLES[:, 1].max() - OBSTACLES[:, 4].max()  # not past the boxes (their y < 0 face)
    assert deepest > -0.01  # solid: at most millimetres of contact penetration
    assert reward < 0  # the collision penalty


def test_success_flag_bonus_and_termination_on_a_scripted_reach():
    """Script a free-space motion, put the target where it ends, replay it: success, bonus, termination."""
    probe = KinovaReachEnv()
    probe.reset(seed=3)
    actions = [np.array([0.0, 0.3, -0.3, 0.5, 0.0, 0.0])] * 20
    for action in actions:
        probe.step(action)
    target = probe.pinch_point()
    env = KinovaReachEnv(target=target)
    obs, info = env.reset(seed=3)
    assert obs[15:].tolist() == target.tolist() and info["distance"] > 0.05
    model = KinovaKinematicModel.from_env(env)
    for step, action in enumerate(actions):  # noqa: B007
        before = obs
        obs, reward, terminated, truncated, info = env.step(action)
        if terminated:
            break
    assert info["is_success"] and terminated and not truncated and step < len(actions)
    assert reward > env.success_reward - 1  # bonus plus a little progress
    assert bool(model.is_terminal(th.as_tensor(obs)))
    model_reward = float(model.reward(th.as_tensor(before), None, th.as_tensor(obs)))
    assert model_reward == pytest.approx(reward, abs=1e-9)  # no contact: the same reward


def test_model_reward_penalises_the_pinch_point_inside_an_inflated_obstacle(env):
    model = KinovaKinematicModel.from_env(env)
    obs = th.zeros(2, 18, dtype=th.float64)
    obs[:, 15:18] = th.tensor([0.4, -0.3, 0.3])
    inside = obs.clone()
    inside[0, 12:15] = th.as_tensor(OBSTACLES[0, :3] + [0.0, 0.0, 0.1])
    inside[1, 12:15] = th.tensor([0.4, 0.3, 0.3])
    r = model.reward(obs, None, inside)
    distance = th.linalg.vector_norm(inside[:, 12:15] - inside[:, 15:], dim=-1)
    expected = -model.collision_penalty + model.progress_coeff * float(distance[1] - distance[0])
    assert float(r[0] - r[1]) == pytest.approx(expected, abs=1e-9)


def test_model_joint_limits_and_action_clipping(env):
    model = KinovaKinematicModel.from_env(env)
    obs = th.zeros(1, 18, dtype=th.float64)
    obs[0, :6] = th.as_tensor(HOME)
    obs[0, 1] = float(env.model.jnt_range[1, 1]) - 0.001  # joint 2 at its upper limit
    nxt = model(obs, th.full((1, 6), 5.0, dtype=th.float64))  # commands beyond the bound clip to 1 rad/s
    assert float(nxt[0, 1]) == pytest.approx(env.model.jnt_range[1, 1])
    assert float(nxt[0, 0] - obs[0, 0]) == pytest.approx(0.02)
    assert float(nxt[0, 6]) == pytest.approx(1.0) and float(nxt[0, 7]) == pytest.approx(0.05)
    action = th.zeros(1, 6, dtype=th.float64, requires_grad=True)
    model(obs, action)[..., 12:15].sum().backward()  # Q-STAC differentiates through the model
    assert (
        action.grad is not None
        and bool(th.isfinite(action.grad).all())
        and float(action.grad.abs().sum()) > 0
    )


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="start region"):
        KinovaReachEnv(obstacles=[[0.45, 0.35, 0.35, 0.1, 0.1, 0.1]])  # a box on the home pose's hand
    with pytest.raises(ValueError, match="out of reach"):
        KinovaReachEnv(target=[2.0, 0.0, 0.3])
    with pytest.raises(ValueError, match="within"):
        KinovaReachEnv(target=OBSTACLES[0, :3])
    with pytest.raises(ValueError, match=r"\(K, 6\)"):
        KinovaReachEnv(obstacles=[[0.3, 0.0, 0.2]])
    with pytest.raises(ValueError, match="render_mode"):
        KinovaReachEnv(render_mode="human")
    with pytest.raises(ValueError, match="finite"):
        env = KinovaReachEnv()
        env.reset(seed=0)
        env.step(np.full(6, np.nan))


def test_a_kinematic_model_for_another_env_is_refused():
    pend = gym.make("Pendulum-v1")
    with pytest.raises(ValueError, match="KinovaKinematicModel"):
        check_dynamics_model(KinovaKinematicModel(), pend.observation_space, pend.action_space, "QSTAC")


def test_gymnasium_and_sb3_env_checkers_pass():
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    gym_check_env(KinovaReachEnv(), skip_render_check=True)
    sb3_check_env(KinovaReachEnv(), warn=True, skip_render_check=True)


@pytest.mark.parametrize("env_id", ["KinovaReachObstacles-v0", "KinovaPickPlace-v0"])
@pytest.mark.parametrize("algo", ["qstac", "s2ac", "sac", "td3", "ppo"])
def test_each_algorithm_runs_a_few_hundred_steps_and_reloads(algo, env_id, tmp_path):
    """Small networks, few particles: the five algorithms of the comparison run and save/load on the arm."""
    from stable_baselines3 import PPO, SAC, TD3

    from sb3_stein import QSTAC, S2AC

    small: dict = dict(policy_kwargs=dict(net_arch=[32, 32]), seed=0)
    off_policy = dict(learning_starts=100, batch_size=32, **small)
    cls, kwargs = {
        "qstac": (QSTAC, dict(horizon=3, n_particles=4, svgd_steps=1, **off_policy)),
        "s2ac": (S2AC, dict(n_particles=4, svgd_steps=1, **off_policy)),
        "sac": (SAC, off_policy),
        "td3": (TD3, off_policy),
        "ppo": (PPO, dict(n_steps=128, batch_size=32, n_epochs=1, **small)),
    }[algo]
    model = cls("MlpPolicy", env_id, **kwargs)
    model.learn(256)
    model.save(tmp_path / algo)
    loaded = cls.load(tmp_path / algo)
    obs, _ = gym.make(env_id).reset(seed=4)
    first, _ = model.predict(obs, deterministic=True)
    again, _ = loaded.predict(obs, deterministic=True)
    assert first.shape == model.action_space.shape and np.allclose(first, again)


def test_pick_and_place_stages_by_a_scripted_grasp():
    """The scripted motion (benchmarks/kinova_scripted_pickplace.py) reaches the cube (stage 1), lifts
    and carries it (the cube leaves the floor) and puts it at the destination (success ends the
    episode); the model's grasp rule carries the cube along with the pinch point over the same commands
    while the fingers are closed."""
    from benchmark_script import load_benchmark
    from sb3_stein.envs.kinova import KinovaPickPlaceEnv, KinovaPickPlaceModel

    env = KinovaPickPlaceEnv()
    obs, info = env.reset(seed=2)
    assert obs.shape == (22,) and not info["reached_cube"]
    model = KinovaPickPlaceModel.from_env(env)
    highest, carried, steps = 0.0, [], 0
    script = load_benchmark("kinova_scripted_pickplace").pick_place_script(env)
    for obs_next, _, terminated, _, info in script:  # noqa: B007 (info: the last step)
        highest = max(highest, float(obs_next[18]))
        steps += 1
        if obs[12] > 1.0 and obs_next[18] > 0.05:  # fingers closed and the cube in the air: held
            command = np.r_[(obs_next[:6] - obs[:6]) / env.dt, 1.0]  # the joint motion that happened
            predicted = model(th.as_tensor(obs[None]), th.as_tensor(command[None]))[0].numpy()
            carried.append(np.abs(predicted[16:19] - obs_next[16:19]).max())
        obs = obs_next
        if terminated:
            break
    assert info["reached_cube"] and highest > 0.1  # lifted off the floor (cube centre from 0.025)
    assert info["is_success"] and terminated and steps <= KinovaPickPlaceEnv.MAX_EPISODE_STEPS
    assert len(carried) > 20 and np.median(carried) < 0.01  # the grasp rule moves the cube with the hand


def test_pick_place_model_tracks_the_arm_and_fingers_and_leaves_an_untouched_cube():
    """Away from the cube (no grasp): joints as for reaching, fingers within 0.1 rad per step (the
    environment's fingers accelerate against damping, the model's move at the commanded speed: a blind
    spot), the cube and the destination unchanged in both."""
    from sb3_stein.envs.kinova import KinovaPickPlaceEnv, KinovaPickPlaceModel

    env = KinovaPickPlaceEnv()
    obs, _ = env.reset(seed=5)
    model = make_dynamics_model("KinovaPickPlace-v0")
    assert isinstance(model, KinovaPickPlaceModel)
    rng = np.random.default_rng(2)
    joint_err, finger_err = [], []
    for _ in range(60):
        action = np.r_[rng.uniform(-0.3, 0.3, 6), rng.uniform(-1, 1)]
        predicted = model(th.as_tensor(obs[None]), th.as_tensor(action[None]))[0].numpy()
        obs, _, _, _, info = env.step(action)
        joint_err.append(np.abs(predicted[:6] - obs[:6]).max())
        finger_err.append(abs(predicted[12] - obs[12]))
        assert np.allclose(predicted[16:], obs[16:], atol=1e-3)  # the cube rests (settles 0.2 mm)
    assert not info["reached_cube"]
    assert max(joint_err) < 0.04 and max(finger_err) < 0.1


def test_pick_place_checkers_and_bad_input():
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from sb3_stein.envs.kinova import KinovaPickPlaceEnv
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    gym_check_env(KinovaPickPlaceEnv(), skip_render_check=True)
    sb3_check_env(KinovaPickPlaceEnv(), warn=True, skip_render_check=True)
    made = gym.make("KinovaPickPlace-v0")
    assert made.spec is not None and made.spec.max_episode_steps == KinovaPickPlaceEnv.MAX_EPISODE_STEPS
    assert made.observation_space.shape == (22,) and made.action_space.shape == (7,)
    with pytest.raises(ValueError, match="render_mode"):
        KinovaPickPlaceEnv(render_mode="human")
    env = KinovaPickPlaceEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        env.step(np.full(7, np.nan))


def test_scripted_reach_benchmark_reaches_in_free_space_and_scales_the_boxes():
    from benchmark_script import load_benchmark

    bench = load_benchmark("kinova_scripted_reach")
    assert bench.boxes_of_height(0.0).shape == (0, 6)
    boxes = bench.boxes_of_height(0.3)
    assert np.allclose(boxes[:, 2] + boxes[:, 5], 0.3) and np.allclose(boxes[:, :2], OBSTACLES[:, :2])
    (episode,) = bench.scripted_episodes(bench.boxes_of_height(0.0), "direct", episodes=1)
    assert episode["success"] and episode["contact_steps"] == 0 and episode["steps"] < 150
