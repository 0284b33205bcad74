"""Tests of the lecture's point-mass wind maze (``PointMassWindMaze-v0``): environment, torch model, OCP."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium.utils.env_checker import check_env as gym_check_env
from sb3_stein.envs.windmaze import (
    WIND_BOXES,
    WindMazeDynamics,
    WindMazeEnv,
    WindMazeOCP,
    pointmass_step,
    velocity_coefficients,
)
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import sb3_stein
from sb3_stein.common import dynamics as dyn
from sb3_stein.common.backends import NUMPY
from sb3_stein.common.ocp import resolve_ocp

HARD = np.array(WIND_BOXES["hard"])  # rows (x_lo, y_lo, x_hi, y_hi)


def _inside_hard(p: np.ndarray) -> bool:
    return bool(
        np.any((HARD[:, 0] <= p[0]) & (p[0] <= HARD[:, 2]) & (HARD[:, 1] <= p[1]) & (p[1] <= HARD[:, 3]))
    )


# ------------------------------------------------------------------------------------ environment
def test_registration_and_checkers() -> None:
    spec = gym.spec("PointMassWindMaze-v0")
    assert spec.max_episode_steps == 100
    env = gym.make("PointMassWindMaze-v0")
    assert isinstance(env.unwrapped, WindMazeEnv)
    assert env.observation_space.shape == (6,) and env.observation_space.dtype == np.float32
    np.testing.assert_array_equal(env.observation_space.low, [0, 0, -20, -20, -10.5, -10.5])
    np.testing.assert_array_equal(env.observation_space.high, [4, 1, 20, 20, 10.5, 10.5])
    np.testing.assert_array_equal(env.action_space.low, [-10, -10])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(WindMazeEnv())
        gym_check_env(gym.make("PointMassWindMaze-v0", render_mode="rgb_array").unwrapped)
        sb3_check_env(WindMazeEnv(), warn=False)


def test_reset_starts_at_rest_in_the_start_disc() -> None:
    env = WindMazeEnv()
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        assert obs.dtype == np.float32 and obs in env.observation_space
        assert np.hypot(obs[0] - 0.25, obs[1] - 0.8) <= 0.15 + 1e-6
        np.testing.assert_array_equal(obs[2:], 0.0)
        assert not info["is_success"]
    spread = np.array([env.reset(seed=s, options={"mode": "train"})[0][:2] for s in range(50)])
    assert spread[:, 0].max() - spread[:, 0].min() > 1.5
    assert not any(_inside_hard(p) for p in spread)
    first, _ = env.reset(seed=3)
    again, _ = env.reset(seed=3)
    np.testing.assert_array_equal(first, again)


def test_wind_is_minus_10_5_in_x_inside_the_boxes_only() -> None:
    env = WindMazeEnv()
    inside = [(1.0, 0.5), (0.5, 0.1), (1.5, 1.0), (3.0, 0.0), (3.5, 0.9), (2.5, 0.45)]  # edges inclusive
    outside = [(0.25, 0.8), (1.0, 0.05), (3.0, 0.95), (2.0, 0.5), (0.49, 0.5), (3.51, 0.5), (3.75, 0.2)]
    np.testing.assert_array_equal(env.wind_force(inside), np.tile([-10.5, 0.0], (len(inside), 1)))
    np.testing.assert_array_equal(env.wind_force(outside), np.zeros((len(outside), 2)))
    env.reset(seed=0)
    obs = env.set_state([1.0, 0.5, 0.0, 0.0])
    np.testing.assert_array_equal(obs[4:], [-10.5, 0.0])
    # At rest with zero force, the wind alone accelerates the mass to -x: v' = b * (-10.5).
    _, b = velocity_coefficients(1.0, 15.0, 0.1)
    nxt, *_ = env.step(np.zeros(2, dtype=np.float32))
    np.testing.assert_allclose(nxt[:4], [1.0, 0.5, -10.5 * b, 0.0], rtol=1e-6)
    easy = WindMazeEnv(difficulty="easy")
    assert easy.wind_force([1.0, 0.15])[0] == 0.0 and env.wind_force([1.0, 0.15])[0] == -10.5
    assert not WindMazeEnv(wind_boxes=[]).wind_force([1.0, 0.5]).any()


def test_step_follows_the_reference_discretisation() -> None:
    env = WindMazeEnv()
    env.reset(seed=0)
    state = np.array([2.0, 0.5, 0.3, -0.2])
    env.set_state(state)
    obs, reward, terminated, truncated, info = env.step(np.array([25.0, -4.0], dtype=np.float32))
    a, b = np.exp(-15 * 0.1), (1 / 15) * (1 - np.exp(-15 * 0.1))
    expected = [2.0 + 0.1 * 0.3, 0.5 - 0.1 * 0.2, a * 0.3 + b * 10.0, a * -0.2 + b * -4.0]  # force clipped
    np.testing.assert_allclose(obs[:4], expected, rtol=1e-6)
    assert reward == pytest.approx(0.1 * (1 - abs(expected[0] - 3.75) / 4))
    assert not terminated and not truncated and not info["violation"] and not info["is_success"]


def test_reaching_the_goal_gives_the_time_discounted_bonus_and_terminates() -> None:
    env = WindMazeEnv()
    env.reset(seed=0)
    for _ in range(9):  # let 0.9 s pass (at the start, zero force, no wind: the mass stays put)
        *_, terminated, truncated, _ = env.step(np.zeros(2, dtype=np.float32))
        assert not (terminated or truncated)
    env.set_state([3.75, 0.3, 0.0, -0.5])  # one step moves it 0.05 down, into the goal disc
    obs, reward, terminated, truncated, info = env.step(np.zeros(2, dtype=np.float32))
    assert np.hypot(obs[0] - 3.75, obs[1] - 0.2) <= 0.15
    assert terminated and not truncated and info["is_success"] and not info["violation"]
    assert info["time"] == pytest.approx(1.0)
    assert reward == pytest.approx(0.1 * 1.0 + 60.0 * (1 - 0.5 * 1.0 / 10.0))


def test_leaving_the_maze_terminates_without_penalty_or_clipping() -> None:
    env = WindMazeEnv()
    env.reset(seed=0)
    env.set_state([3.99, 0.5, 0.5, 0.0])
    obs, reward, terminated, truncated, info = env.step(np.zeros(2, dtype=np.float32))
    assert terminated and not truncated and info["violation"] and not info["is_success"]
    assert obs[0] == pytest.approx(4.04)  # not clipped back into the maze
    assert obs not in env.observation_space
    assert reward == pytest.approx(0.1 * (1 - 0.29 / 4), rel=1e-5)
    env.set_state([2.0, 0.02, 0.0, -0.3])  # through the floor
    *_, terminated, _, info = env.step(np.zeros(2, dtype=np.float32))
    assert terminated and info["violation"]


def test_episode_is_truncated_after_10_seconds() -> None:
    env = gym.make("PointMassWindMaze-v0")
    env.reset(seed=1)
    for step in range(1, 101):
        _, _, terminated, truncated, info = env.step(np.zeros(2, dtype=np.float32))
        assert not terminated
        assert truncated == (step == 100)
    assert info["time"] == pytest.approx(10.0)


def test_render_returns_an_rgb_frame() -> None:
    env = WindMazeEnv(render_mode="rgb_array", render_width=300)
    env.reset(seed=0)
    env.step(np.array([10.0, 0.0], dtype=np.float32))
    frame = env.render()
    assert frame is not None and frame.dtype == np.uint8 and frame.ndim == 3
    assert frame.shape[1] == 300 and frame.shape[2] == 3 and 0 < frame.shape[0] < 300
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 5  # maze, wind, discs, path and mass drawn
    with pytest.warns(UserWarning, match="render_mode"):
        assert WindMazeEnv().render() is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"difficulty": "medium"}, "difficulty must be one of"),
        ({"wind_boxes": [[0, 0, 1]]}, "wind_boxes must be"),
        ({"wind_boxes": [[1, 0, 0, 1]]}, "x_lo <= x_hi"),
        ({"mass": 0.0}, "mass must be a finite number > 0"),
        ({"damping": -1.0}, "damping must be"),
        ({"dt": float("nan")}, "dt must be"),
        ({"goal": (5.0, 0.5)}, "outside the maze"),
        ({"start": (0.1,)}, "start must be 2 finite numbers"),
        ({"render_mode": "human"}, "render_mode must be"),
    ],
)
def test_env_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WindMazeEnv(**kwargs)


# ------------------------------------------------------------------------------------ torch model
def _random_states(rng: np.random.Generator, n: int) -> np.ndarray:
    states = np.empty((n, 4))
    states[:, :2] = rng.uniform([-0.2, -0.2], [4.2, 1.2], size=(n, 2))
    boxes = HARD[rng.integers(0, len(HARD), size=n // 3)]  # a third inside the wind boxes
    states[: n // 3, :2] = rng.uniform(boxes[:, :2], boxes[:, 2:])
    states[:, 2:] = rng.uniform(-3.0, 3.0, size=(n, 2))
    return states


def test_model_matches_env_step() -> None:
    env = gym.make("PointMassWindMaze-v0")
    model = sb3_stein.make_dynamics_model(env)
    assert isinstance(model, WindMazeDynamics) and model.obs_dim == 6 and model.act_dim == 2
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    states = _random_states(rng, 200)
    actions = rng.uniform(-15.0, 15.0, size=(200, 2)).astype(np.float32)  # beyond the bounds too
    observations, expected = [], []
    for state, action in zip(states, actions):
        obs = env.unwrapped.set_state(state.astype(np.float32))  # the float32 obs is the exact state
        observations.append(obs)
        expected.append(env.unwrapped.step(action)[0])
    observations_array = np.array(observations)
    assert sum(_inside_hard(p) for p in observations_array[:, :2]) >= 60
    predicted = model(th.as_tensor(observations_array), th.as_tensor(actions)).numpy()
    np.testing.assert_allclose(predicted, np.array(expected), rtol=1e-5, atol=1e-5)


def test_model_takes_the_env_parameters_and_is_batched_and_differentiable() -> None:
    env = gym.make("PointMassWindMaze-v0", difficulty="easy", damping=4.0, mass=2.0, wind_magnitude=3.0)
    model = WindMazeDynamics.from_env(env)
    assert model.damping == 4.0 and model.mass == 2.0 and model.wind_boxes == WIND_BOXES["easy"]
    env.reset(seed=0)
    obs = env.unwrapped.set_state([1.0, 0.5, 0.2, 0.1])
    action = np.array([3.0, -2.0], dtype=np.float32)
    nxt = env.unwrapped.step(action)[0]
    np.testing.assert_allclose(model(th.as_tensor(obs), th.as_tensor(action)).numpy(), nxt, rtol=1e-5)
    dyn.check_dynamics_model(model, env.observation_space, env.action_space, "test")
    obs_b = th.as_tensor(np.stack([env.observation_space.sample() for _ in range(12)])).view(3, 4, 6).double()
    act = th.zeros(3, 4, 2, dtype=th.float64, requires_grad=True)
    out = model(obs_b, act)
    assert out.shape == obs_b.shape and out.dtype == th.float64
    out[..., 2:4].sum().backward()
    assert act.grad is not None and th.all(act.grad > 0)  # d v' / d u = b > 0 inside the bounds
    assert isinstance(WindMazeDynamics.from_env(None), WindMazeDynamics)


# ------------------------------------------------------------------------------------------- OCP
def test_ocp_attributes_match_the_lecture_table() -> None:
    env = gym.make("PointMassWindMaze-v0")
    ocp = resolve_ocp("auto", env, "test")  # validates
    assert isinstance(ocp, WindMazeOCP)
    assert (ocp.state_dim, ocp.control_dim, ocp.horizon, ocp.obs_dim) == (4, 2, 20, 6)
    assert ocp.horizon * ocp.dt == pytest.approx(2.0)
    assert ocp.n_params == 10
    np.testing.assert_array_equal(ocp.param_low, [0, 0, -20, -20, -10, -10, 0.5, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(ocp.param_high, [4, 1, 20, 20, 10, 10, 1.5, 1.5, 1.5, 1.5])
    np.testing.assert_array_equal(ocp.param_default, [3.75, 0.2, 0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(ocp.u_low, [-10, -10])
    np.testing.assert_array_equal(ocp.u_high, [10, 10])
    # The plan keeps 1 mm from the walls; violations are counted against the maze itself.
    np.testing.assert_allclose(ocp.x_low, [1e-3, 1e-3, -20, -20])
    np.testing.assert_allclose(ocp.x_high, [4 - 1e-3, 1 - 1e-3, 20, 20])
    low, high = ocp.violation_bounds()
    np.testing.assert_array_equal(low, [0, 0, -20, -20])
    np.testing.assert_array_equal(high, [4, 1, 20, 20])
    clone = pickle.loads(pickle.dumps(ocp))
    clone.validate()
    np.testing.assert_array_equal(clone.param_default, ocp.param_default)


def test_ocp_dynamics_are_the_env_step_without_wind() -> None:
    import casadi as ca

    ocp = WindMazeOCP()
    x, u = ca.SX.sym("x", 4), ca.SX.sym("u", 2)
    f = ca.Function("f", [x, u], [ocp.dynamics(x, u)])
    env = WindMazeEnv()
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    for state in _random_states(rng, 30):
        action = rng.uniform(-10.0, 10.0, size=2)
        no_wind = pointmass_step(state, action, NUMPY, 0.1, *velocity_coefficients(1.0, 15.0, 0.1))
        np.testing.assert_allclose(np.asarray(f(state, action)).ravel(), no_wind, rtol=1e-12)
        env.set_state(state)
        wind = env.wind_force(state[:2])
        nxt = env.step(action)[0]
        np.testing.assert_allclose(nxt[:4], no_wind + np.r_[0, 0, wind * (1 - np.exp(-1.5)) / 15], rtol=1e-5)


def test_ocp_costs() -> None:
    import casadi as ca

    ocp = WindMazeOCP()
    x, u, p = ca.SX.sym("x", 4), ca.SX.sym("u", 2), ca.SX.sym("p", 10)
    stage = ca.Function("l", [x, u, p], [ocp.stage_cost(x, u, p)])
    terminal = ca.Function("V", [x, p], [ocp.terminal_cost(x, p)])
    xv, uv = np.array([1.0, 0.5, 0.2, -0.1]), np.array([3.0, -1.0])
    pv = np.array([3.0, 0.2, 0.5, 0.0, 1.0, 0.0, 1.2, 0.8, 1.0, 0.6])
    state_part = 0.5 * np.sum(pv[6:] ** 2 * (xv - pv[:4]) ** 2)
    control_part = 0.5 * 0.01 * np.sum((uv - pv[4:6]) ** 2)
    assert float(stage(xv, uv, pv)) == pytest.approx(state_part + control_part)
    assert float(terminal(xv, pv)) == pytest.approx(state_part)


def test_ocp_state_from_obs_and_constraint_violation() -> None:
    ocp = WindMazeOCP()
    obs = th.tensor([[1.0, 0.5, 0.1, 0.2, -10.5, 0.0], [2.0, 0.3, 0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    state = ocp.state_from_obs(obs)
    assert state.shape == (2, 4)
    np.testing.assert_array_equal(state.detach().numpy(), obs.detach().numpy()[:, :4])
    state.sum().backward()
    assert obs.grad is not None and obs.grad[:, 4:].abs().sum() == 0
    np.testing.assert_array_equal(ocp.state_from_obs_numpy(obs.detach().numpy()), obs.detach().numpy()[:, :4])
    states = np.array(
        [
            [2.0, 0.5, 0.0, 0.0],  # interior
            [2.0, 0.5, 0.0, 0.0],  # action beyond the bound
            [4.1, 0.5, 0.0, 0.0],  # out of the maze in x
            [2.0, -0.05, 0.0, 0.0],  # out of the maze in y
            [2.0, 0.5, 21.0, 0.0],  # speed beyond 20
            [4.0, 1.0, 0.0, 0.0],  # on the wall: still inside
        ]
    )
    actions = np.array([[10.0, -10.0], [10.5, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(
        ocp.constraint_violation(states, actions), [False, True, True, True, True, False]
    )


def test_ocp_from_env_and_arguments() -> None:
    env = WindMazeEnv(damping=5.0, goal=(3.5, 0.5))
    ocp = WindMazeOCP.from_env(env)
    assert ocp.damping == 5.0
    np.testing.assert_array_equal(ocp.param_default[:2], [3.5, 0.5])
    tight = WindMazeOCP(position_margin=0.05)  # leap-c's (soft) margin, here hard
    np.testing.assert_allclose(tight.x_low[:2], [0.05, 0.05])
    np.testing.assert_allclose(tight.x_high[:2], [3.95, 0.95])
    for kwargs, match in [
        ({"horizon": 0}, "horizon must be an integer"),
        ({"damping": 0.0}, "damping must be"),
        ({"position_margin": 0.6}, "position_margin must be"),
        ({"goal": (4.5, 0.5)}, "outside the maze"),
    ]:
        with pytest.raises(ValueError, match=match):
            WindMazeOCP(**kwargs)
