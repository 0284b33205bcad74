"""Tests of the S²AC multi-goal environment (``MultiGoal-v0``) and its torch dynamics model."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import sb3_stein.envs as sb3_envs
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from sb3_stein.envs.multigoal import (
    GOAL_LAYOUTS,
    MAX_EPISODE_STEPS,
    MultiGoalDynamics,
    MultiGoalEnv,
)
from stable_baselines3.common.env_checker import check_env as sb3_check_env

ASYM = np.array(GOAL_LAYOUTS["asymmetric"])


def _expected_reward(a: np.ndarray, s_next: np.ndarray, goals: np.ndarray = ASYM) -> float:
    d2 = ((s_next[None] - goals) ** 2).sum(-1)
    r = -30.0 * float(a @ a) - float(d2.min())
    return r + (10.0 if np.sqrt(d2.min()) < 0.5 else 0.0)


# ------------------------------------------------------------------------------------------ registration
def test_registration_idempotent_and_env_ids() -> None:
    assert "MultiGoal-v0" in sb3_envs.ENV_IDS
    spec = gym.spec("MultiGoal-v0")
    assert spec.max_episode_steps == MAX_EPISODE_STEPS == 30
    sb3_envs.register_envs()  # second registration is a no-op (no warning, same spec)
    assert gym.spec("MultiGoal-v0") is spec


def test_make_default_is_asymmetric_and_truncates() -> None:
    env = gym.make("MultiGoal-v0")
    np.testing.assert_allclose(env.unwrapped.goals, [[5, 0], [-4, 3], [-4, -3]])  # type: ignore[attr-defined]
    env.reset(seed=0)
    for t in range(MAX_EPISODE_STEPS):
        _, _, terminated, truncated, info = env.step(np.zeros(2, dtype=np.float32))
        assert not terminated
        assert info["goal_index"] == -1
        assert truncated == (t == MAX_EPISODE_STEPS - 1)
    env.close()


def test_symmetric_goals_selectable() -> None:
    env = gym.make("MultiGoal-v0", goals="symmetric")
    np.testing.assert_allclose(env.unwrapped.goals, [[5, 0], [-5, 0], [0, 5], [0, -5]])  # type: ignore[attr-defined]
    custom = MultiGoalEnv(goals=[[1.0, 1.0]])
    assert custom.num_goals == 1
    with pytest.raises(ValueError):
        MultiGoalEnv(goals="nope")


# -------------------------------------------------------------------------------------------- checkers
@pytest.mark.parametrize(
    "kwargs", [{}, {"obstacle": True}, {"goals": "symmetric", "render_mode": "rgb_array"}]
)
def test_gymnasium_check_env(kwargs: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker reports problems as warnings
        # through gymnasium.make so that the env has a spec (needed to check the render modes)
        gym_check_env(gym.make("MultiGoal-v0", **kwargs).unwrapped, skip_render_check=False)


def test_sb3_check_env() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(MultiGoalEnv(), warn=True)
        sb3_check_env(MultiGoalEnv(obstacle=True, render_mode="rgb_array"), warn=True)


# ------------------------------------------------------------------------------------------- semantics
def test_reset_starts_at_origin() -> None:
    env = MultiGoalEnv()
    for seed in (0, 1, 2):
        obs, info = env.reset(seed=seed)
        assert obs.dtype == np.float32 and obs.shape == (2,)
        np.testing.assert_array_equal(obs, [0.0, 0.0])
        assert info["goal_index"] == -1
    obs, _ = env.reset(options={"init_state": (3.0, -20.0)})
    np.testing.assert_array_equal(obs, [3.0, -7.0])


def test_hand_computed_transition() -> None:
    env = MultiGoalEnv()
    env.reset()
    obs, r, term, trunc, info = env.step(np.array([-0.8, 0.6], dtype=np.float32))
    np.testing.assert_allclose(obs, [-0.8, 0.6], atol=1e-7)
    # -30 * (0.64 + 0.36) - ||(-0.8, 0.6) - (-4, 3)||^2 = -30 - (3.2^2 + 2.4^2) = -30 - 16
    assert r == pytest.approx(-46.0, abs=1e-5)
    assert not term and not trunc and info["goal_index"] == -1
    # Out-of-range actions are clipped before both the move and the action cost.
    env.reset()
    obs, r, *_ = env.step(np.array([3.0, 0.0], dtype=np.float32))
    np.testing.assert_allclose(obs, [1.0, 0.0])
    assert r == pytest.approx(-30.0 - 16.0, abs=1e-5)  # closest goal G1 = (5, 0) at distance 4


@pytest.mark.parametrize(
    ("start", "action", "goal"),
    [((4.0, 0.0), (0.7, 0.1), 0), ((-3.5, 2.5), (-0.3, 0.2), 1), ((-3.5, -2.5), (-0.4, -0.3), 2)],
)
def test_goal_bonus_termination_and_goal_index(start: tuple, action: tuple, goal: int) -> None:
    env = MultiGoalEnv()
    env.reset(options={"init_state": start})
    a = np.array(action, dtype=np.float32)
    obs, r, term, trunc, info = env.step(a)
    s_next = np.array(start) + np.array(action)
    np.testing.assert_allclose(obs, s_next, atol=1e-6)
    assert np.linalg.norm(s_next - ASYM[goal]) < 0.5
    assert term and not trunc
    assert info["goal_index"] == goal and info["is_success"]
    assert r == pytest.approx(_expected_reward(a.astype(np.float64), obs.astype(np.float64)), abs=1e-5)
    # 10 bonus on top of the (negative) cost terms
    cost = -30.0 * float(a.astype(np.float64) @ a) - float(((obs - ASYM[goal]) ** 2).sum())
    assert r == pytest.approx(cost + 10.0, abs=1e-5)


def test_just_outside_goal_radius_no_bonus() -> None:
    env = MultiGoalEnv()
    env.reset(options={"init_state": (4.0, 0.0)})
    _, r, term, _, info = env.step(np.array([0.45, 0.0], dtype=np.float32))  # distance 0.55 to (5, 0)
    assert not term and info["goal_index"] == -1
    assert r == pytest.approx(-30.0 * 0.45**2 - 0.55**2, abs=1e-5)


def test_symmetric_goal_reached() -> None:
    env = MultiGoalEnv(goals="symmetric")
    env.reset(options={"init_state": (0.0, -4.2)})
    _, r, term, _, info = env.step(np.array([0.0, -0.6], dtype=np.float32))
    assert term and info["goal_index"] == 3
    assert r == pytest.approx(-30 * 0.36 - 0.2**2 + 10.0, abs=1e-5)


def test_clipping_at_boundary() -> None:
    env = MultiGoalEnv()
    env.reset(options={"init_state": (6.5, -6.8)})
    obs, r, *_ = env.step(np.array([1.0, -1.0], dtype=np.float32))
    np.testing.assert_array_equal(obs, [7.0, -7.0])
    assert r == pytest.approx(_expected_reward(np.array([1.0, -1.0]), np.array([7.0, -7.0])), abs=1e-5)
    obs, *_ = env.step(np.array([1.0, 0.5], dtype=np.float32))
    np.testing.assert_array_equal(obs, [7.0, -6.5])
    assert env.observation_space.contains(obs)


# ---------------------------------------------------------------------------------------------- obstacle
def test_obstacle_default_off_and_geometry() -> None:
    assert MultiGoalEnv().obstacles.shape == (0, 2, 2)
    np.testing.assert_allclose(MultiGoalEnv(obstacle=True).obstacles, [[[-2, 0], [0, 2]]])
    np.testing.assert_allclose(
        MultiGoalEnv(goals="symmetric", obstacle=True).obstacles, [[[-1.5, 3], [1.5, 3]]]
    )


@pytest.mark.parametrize("mode", ["stop", "stay"])
def test_obstacle_blocks_straight_path_to_g2(mode: str) -> None:
    direction = (ASYM[1] / np.linalg.norm(ASYM[1]) * 0.9).astype(np.float32)  # straight towards G2
    free = MultiGoalEnv()
    free.reset()
    blocked = MultiGoalEnv(obstacle=True, obstacle_mode=mode)  # type: ignore[arg-type]
    blocked.reset()
    reached_free = reached_blocked = False
    hit_any = False
    for _ in range(MAX_EPISODE_STEPS):
        _, _, term_f, _, info_f = free.step(direction)
        reached_free |= term_f and info_f["goal_index"] == 1
        if not reached_blocked:
            obs_b, _, term_b, _, info_b = blocked.step(direction)
            reached_blocked |= term_b
            hit_any |= info_b["hit_obstacle"]
            # never on the far side of the bar x - y = -2 (the start side has x - y > -2)
            assert obs_b[0] - obs_b[1] > -2.0
        if term_f:
            break
    assert reached_free and not reached_blocked and hit_any
    assert info_b["hit_obstacle_episode"]
    pos = blocked.state
    if mode == "stop":  # stopped at the wall: within a few WALL_MARGINs of the line x - y = -2
        assert abs((pos[0] - pos[1] + 2.0) / np.sqrt(2.0)) < 1e-2
    else:  # stays at the last position before the crossing move: (-0.72, 0.54)
        np.testing.assert_allclose(pos, direction, atol=1e-6)


def test_obstacle_does_not_block_other_paths() -> None:
    env = MultiGoalEnv(obstacle=True)
    for goal in (0, 2):
        env.reset()
        step = (ASYM[goal] / np.linalg.norm(ASYM[goal]) * 0.9).astype(np.float32)
        for _ in range(MAX_EPISODE_STEPS):
            _, _, term, _, info = env.step(step)
            assert not info["hit_obstacle"]
            if term:
                break
        assert info["goal_index"] == goal


# ----------------------------------------------------------------------------------------------- dynamics
@pytest.mark.parametrize("obstacle", [False, True])
def test_dynamics_model_matches_env_step(obstacle: bool) -> None:
    env = MultiGoalEnv(obstacle=obstacle)
    model = env.dynamics_model(with_obstacles=obstacle)
    rng = np.random.default_rng(0)
    n = 300
    states = rng.uniform(-7.5, 7.5, size=(n, 2)).astype(np.float32).clip(-7, 7)
    if obstacle:  # concentrate half of the states around the bar so that many moves hit it
        states[: n // 2] = rng.uniform(-1.2, 1.2, size=(n // 2, 2)).astype(np.float32) + np.array(
            [-1.0, 1.0], dtype=np.float32
        )
    actions = rng.uniform(-1.3, 1.3, size=(n, 2)).astype(np.float32)
    next_env, rew_env, term_env, goal_env = [], [], [], []
    for s, a in zip(states, actions):
        env.reset()
        env.set_state(s)
        o, r, term, _, info = env.step(a)
        next_env.append(o)
        rew_env.append(r)
        term_env.append(term)
        goal_env.append(info["goal_index"])
    for dtype in (torch.float32, torch.float64):
        s_t, a_t = torch.as_tensor(states, dtype=dtype), torch.as_tensor(actions, dtype=dtype)
        nxt = model(s_t, a_t)
        assert nxt.shape == (n, 2) and nxt.dtype == dtype
        np.testing.assert_allclose(nxt.numpy(), np.stack(next_env), atol=1e-6, rtol=0)
        rew = model.reward(s_t, a_t, torch.as_tensor(np.stack(next_env), dtype=dtype))
        assert rew.shape == (n,) and rew.dtype == dtype
        np.testing.assert_allclose(
            rew.numpy(), rew_env, rtol=1e-5 if dtype == torch.float32 else 1e-9, atol=1e-5
        )
        assert model.terminated(nxt).tolist() == term_env
        assert model.goal_index(nxt).tolist() == goal_env
    # With the obstacle, a good share of the sampled moves were actually blocked (the test is not vacuous).
    n_blocked = int(
        (
            np.linalg.norm(np.stack(next_env) - np.clip(states + actions.clip(-1, 1), -7, 7), axis=-1) > 1e-6
        ).sum()
    )
    assert (n_blocked > 30) if obstacle else (n_blocked == 0)


def test_dynamics_batched_shapes_and_reward_on_trajectory() -> None:
    model = MultiGoalDynamics()
    b, m = 5, 7
    g = torch.Generator().manual_seed(0)
    obs = torch.rand(b, m, 2, generator=g, dtype=torch.float64) * 14 - 7
    act = torch.rand(b, m, 2, generator=g, dtype=torch.float64) * 2 - 1
    nxt = model(obs, act)
    assert nxt.shape == (b, m, 2)
    np.testing.assert_allclose(
        nxt.reshape(-1, 2).numpy(), model(obs.reshape(-1, 2), act.reshape(-1, 2)).numpy()
    )
    assert model.reward(obs, act, nxt).shape == (b, m)
    # Broadcasting: one state, m candidate actions (e.g. particles).
    assert model(obs[:, :1], act).shape == (b, m, 2)
    # Gradient flows to the action (for model-based planners).
    a = act.clone().mul(0.5).requires_grad_(True)
    model.reward(obs, a, model(obs, a)).sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_reward_matches_env_along_rollout() -> None:
    env = gym.make("MultiGoal-v0")
    model = env.unwrapped.dynamics_model()  # type: ignore[attr-defined]
    obs, _ = env.reset(seed=1)
    env.action_space.seed(1)
    for _ in range(MAX_EPISODE_STEPS):
        a = env.action_space.sample()
        nxt, r, term, trunc, _ = env.step(a)
        s_t, a_t, n_t = (torch.as_tensor(x, dtype=torch.float64) for x in (obs, a, nxt))
        assert model.reward(s_t, a_t, n_t).item() == pytest.approx(r, abs=1e-9)
        obs = nxt
        if term or trunc:
            break


def test_dynamics_model_is_module_and_moves_device_dtype() -> None:
    model = MultiGoalDynamics(goals="symmetric")
    assert isinstance(model, torch.nn.Module)
    assert model.state_dict() == {}  # buffers are non-persistent: nothing to checkpoint
    out = model(torch.zeros(3, 2, dtype=torch.float16), torch.ones(3, 2, dtype=torch.float16))
    assert out.dtype == torch.float16
    np.testing.assert_allclose(out.float().numpy(), np.ones((3, 2)))


# --------------------------------------------------------------------------------------------- rendering
def test_render_rgb_array() -> None:
    env = gym.make("MultiGoal-v0", render_mode="rgb_array", obstacle=True, render_size=128)
    env.reset(seed=0)
    assert env.metadata["render_fps"] > 0 and "rgb_array" in env.metadata["render_modes"]
    frame0 = env.render()
    assert isinstance(frame0, np.ndarray)
    for _ in range(5):
        env.step(np.array([0.5, 0.5], dtype=np.float32))
    frame = env.render()
    assert isinstance(frame, np.ndarray) and frame.shape == (128, 128, 3) and frame.dtype == np.uint8
    assert not np.array_equal(frame, frame0)  # the trajectory and agent moved
    many = env.unwrapped.render_trajectories(  # type: ignore[attr-defined]
        [np.zeros((1, 2)), np.array([[0, 0], [3, 3]])], colors=[(0, 200, 0), (200, 0, 0)], size=64
    )
    assert many.shape == (64, 64, 3) and many.dtype == np.uint8
    env.close()


def test_render_without_mode_returns_none() -> None:
    env = MultiGoalEnv()
    env.reset()
    with pytest.warns(UserWarning):
        assert env.render() is None
