"""CartPoleSwingUp-v0: environment checks, the torch model vs env.step, angle folding, rendering, the OCP."""

import math
import pickle

import casadi
import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium.utils.env_checker import check_env
from sb3_stein.envs.cartpole_swingup import (
    CartPoleSwingUpDynamics,
    CartPoleSwingUpEnv,
    CartPoleSwingUpOCP,
    cartpole_step,
    fold_angle,
    swingup_reward,
    wrap_angle,
)
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import sb3_stein
from sb3_stein.common.backends import NUMPY
from sb3_stein.common.ocp import resolve_ocp

# float32 model vs float64 env arithmetic (as tests/test_dynamics.py): 1e-5 relative, 1e-4 absolute.
RTOL, ATOL = 1e-5, 1e-4
ENV_ID = "CartPoleSwingUp-v0"


def _random_states(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.stack(
        [
            rng.uniform(-2.4, 2.4, n),
            rng.uniform(-2 * np.pi, 2 * np.pi, n),
            rng.uniform(-8.0, 8.0, n),
            rng.uniform(-15.0, 15.0, n),
        ],
        axis=-1,
    )


def _reference_buggy_fold(theta: float) -> float:
    # leap-c's env.py: `theta % 2 * np.pi` parses as `(theta % 2) * np.pi`.
    if theta > 2 * np.pi:
        return theta % 2 * np.pi
    if theta < -2 * np.pi:
        return -(-theta % 2 * np.pi)
    return theta


# ----------------------------------------------------------------------------- environment


def test_gymnasium_and_sb3_env_checkers_pass():
    check_env(CartPoleSwingUpEnv(), skip_render_check=True)
    check_env(CartPoleSwingUpEnv(render_mode="rgb_array", init_noise=0.1))
    check_env(gym.make(ENV_ID).unwrapped, skip_render_check=True)
    sb3_check_env(CartPoleSwingUpEnv(), warn=False)


def test_registration_start_state_and_time_limit():
    env = gym.make(ENV_ID)
    assert env.spec is not None and env.spec.max_episode_steps == 200
    obs, info = env.reset(seed=3)
    assert obs.dtype == np.float32 and obs.shape == (4,) and info == {"violation": False, "is_success": False}
    np.testing.assert_array_equal(obs, np.array([0.0, np.pi, 0.0, 0.0], dtype=np.float32))
    assert env.action_space.shape == (1,) and env.action_space.dtype == np.float32
    assert isinstance(env.action_space, gym.spaces.Box)
    np.testing.assert_array_equal(env.action_space.high, [80.0])
    noisy = CartPoleSwingUpEnv(init_noise=0.05)
    first, _ = noisy.reset(seed=1)
    again, _ = noisy.reset(seed=1)
    np.testing.assert_array_equal(first, again)
    assert np.all(np.abs(first - [0.0, np.pi, 0.0, 0.0]) <= 0.05 + 1e-6) and not np.allclose(first[1], np.pi)
    direct = CartPoleSwingUpEnv(max_episode_steps=3)
    direct.reset(seed=0)
    flags = [direct.step(np.zeros(1, dtype=np.float32))[3] for _ in range(3)]
    assert flags == [False, False, True]
    assert not any(CartPoleSwingUpEnv().step(np.zeros(1))[2:4])  # no truncation of its own by default


def test_reward_upright_and_hanging_down():
    env = CartPoleSwingUpEnv()
    env.reset(seed=0)
    env.set_state([0.0, 0.0, 0.0, 0.0])
    for k in range(10):
        obs, reward, terminated, truncated, info = env.step(np.zeros(1, dtype=np.float32))
        assert reward == pytest.approx(0.1, abs=1e-12)
        assert info["is_success"] == (k == 9) and not terminated and not truncated
    np.testing.assert_array_equal(obs, np.zeros(4, dtype=np.float32))  # an exact equilibrium
    env.set_state([0.0, np.pi, 0.0, 0.0])
    _, reward, *_ = env.step(np.zeros(1))
    assert reward == pytest.approx(0.0, abs=1e-9)
    assert swingup_reward(0.0) == pytest.approx(0.1)
    assert swingup_reward(np.pi) == pytest.approx(0.0) and swingup_reward(-np.pi) == pytest.approx(0.0)
    assert swingup_reward(2 * np.pi) == pytest.approx(0.1) and swingup_reward(np.pi / 2) == pytest.approx(
        0.05
    )


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_termination_outside_the_track(sign):
    env = CartPoleSwingUpEnv()
    env.reset(seed=0)
    env.set_state([sign * 2.39, np.pi, sign * 1.0, 0.0])
    obs, reward, terminated, truncated, info = env.step(np.array([sign * 80.0]))
    assert abs(obs[0]) > 2.4 and terminated and not truncated and info["violation"]
    assert 0.0 <= reward <= 0.1  # no termination penalty (leap-c)
    env.set_state([sign * 2.3, np.pi, 0.0, 0.0])
    obs, _, terminated, _, info = env.step(np.zeros(1))
    assert abs(obs[0]) <= 2.4 and not terminated and not info["violation"]


def test_angle_wrap_and_fold():
    eps = 1e-3
    cases = {np.pi - eps: np.pi - eps, np.pi + eps: -np.pi + eps, -np.pi - eps: np.pi - eps}
    cases |= {-np.pi + eps: -np.pi + eps, 7.0: 7.0 - 2 * np.pi, -7.0: 2 * np.pi - 7.0, 4 * np.pi + 0.5: 0.5}
    for theta, expected in cases.items():
        assert wrap_angle(theta) == pytest.approx(expected, abs=1e-12), theta
    grid = np.linspace(-30.0, 30.0, 2001)
    wrapped = wrap_angle(grid)
    assert np.all(wrapped >= -np.pi) and np.all(wrapped < np.pi)
    np.testing.assert_allclose(np.cos(wrapped), np.cos(grid), atol=1e-12)
    np.testing.assert_allclose(np.sin(wrapped), np.sin(grid), atol=1e-12)
    np.testing.assert_allclose(wrap_angle(th.as_tensor(grid)).numpy(), wrapped, atol=1e-12)
    # Folding: the identity inside (-2 pi, 2 pi), whole turns removed (sign kept) outside.
    inside = np.linspace(-6.28, 6.28, 101)
    np.testing.assert_array_equal(fold_angle(inside), inside)
    folded = fold_angle(grid)
    assert np.all(np.abs(folded) < 2 * np.pi) and np.all(np.sign(folded) * np.sign(grid) >= 0)
    np.testing.assert_allclose(np.sin(folded), np.sin(grid), atol=1e-12)
    assert fold_angle(7.0) == pytest.approx(7.0 - 2 * np.pi) and fold_angle(-7.0) == pytest.approx(
        2 * np.pi - 7.0
    )
    assert fold_angle(13.0) == pytest.approx(13.0 - 4 * np.pi)


def test_environment_folds_the_angle_correctly_beyond_two_pi():
    env = CartPoleSwingUpEnv()
    env.reset(seed=0)
    obs = env.set_state([0.0, 7.0, 0.0, 0.0])
    expected = 7.0 - 2 * np.pi
    assert obs[1] == pytest.approx(expected, abs=1e-6)
    # The reference's precedence bug would put the pole at pi (hanging down, reward 0): this test fails on it.
    assert _reference_buggy_fold(7.0) == pytest.approx(np.pi)
    # Crossing 2 pi during a step: the observation comes back near 0, the reward stays near upright.
    env.set_state([0.0, 2 * np.pi - 0.01, 0.0, 1.0])
    obs, reward, *_ = env.step(np.zeros(1))
    assert 0.0 < obs[1] < 0.1 and reward > 0.098
    env.set_state([0.0, -2 * np.pi + 0.01, 0.0, -1.0])
    obs, reward, *_ = env.step(np.zeros(1))
    assert -0.1 < obs[1] < 0.0 and reward > 0.098
    # The reward of an unfolded angle equals that of its folded one (leap-c's bug gives 0 here).
    assert swingup_reward(7.0) == pytest.approx(abs(np.pi - expected) / (10 * np.pi))
    assert swingup_reward(_reference_buggy_fold(7.0)) == pytest.approx(0.0)


def test_constructor_errors():
    with pytest.raises(ValueError, match="render_mode"):
        CartPoleSwingUpEnv(render_mode="human")
    with pytest.raises(ValueError, match="masspole"):
        CartPoleSwingUpEnv(masspole=0.0)
    with pytest.raises(ValueError, match="dt and x_threshold"):
        CartPoleSwingUpEnv(dt=-0.1)
    with pytest.raises(ValueError, match="init_noise"):
        CartPoleSwingUpEnv(init_noise=-1.0)
    with pytest.raises(ValueError, match="max_episode_steps"):
        CartPoleSwingUpEnv(max_episode_steps=0)
    with pytest.raises(ValueError, match="state must be 4 finite"):
        CartPoleSwingUpEnv().set_state([0.0, np.nan, 0.0, 0.0])
    with pytest.raises(ValueError, match="position_constraint"):
        CartPoleSwingUpOCP(position_constraint="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="horizon"):
        CartPoleSwingUpOCP(horizon=0)


def test_rgb_array_render():
    env = CartPoleSwingUpEnv(render_mode="rgb_array", render_size=300)
    env.reset(seed=0)
    hanging = env.render()
    assert isinstance(hanging, np.ndarray) and hanging.dtype == np.uint8 and hanging.shape == (120, 300, 3)
    env.set_state([0.0, 0.0, 0.0, 0.0])
    upright = env.render()
    assert upright is not None and upright.shape == hanging.shape
    assert np.abs(upright.astype(int) - hanging.astype(int)).sum() > 1000
    env.set_state([1.0, 0.0, 0.0, 0.0])
    moved = env.render()
    assert moved is not None and not np.array_equal(moved, upright)
    with pytest.warns(UserWarning, match="render_mode"):
        assert CartPoleSwingUpEnv().render() is None


# ----------------------------------------------------------------------------- torch model


def test_model_matches_env_step_on_random_states_and_actions():
    env = gym.make(ENV_ID)
    model = sb3_stein.make_dynamics_model(env)
    assert isinstance(model, CartPoleSwingUpDynamics) and (model.obs_dim, model.act_dim) == (4, 1)
    base = env.unwrapped
    assert isinstance(base, CartPoleSwingUpEnv)
    base.reset(seed=0)
    rng = np.random.default_rng(0)
    states = _random_states(rng, 200)
    # Actions beyond the Box too, to exercise the clipping.
    actions = rng.uniform(-120.0, 120.0, size=(200, 1)).astype(np.float32)
    obs, next_obs, rewards = [], [], []
    for state, action in zip(states, actions):
        obs.append(base.set_state(state))
        step = base.step(action)
        next_obs.append(step[0])
        rewards.append(step[1])
    obs_t, act_t = th.as_tensor(np.stack(obs)), th.as_tensor(actions)
    pred = model(obs_t, act_t)
    assert pred.dtype == th.float32
    np.testing.assert_allclose(pred.numpy(), np.stack(next_obs), rtol=RTOL, atol=ATOL)
    r = model.reward(obs_t, act_t, th.as_tensor(np.stack(next_obs)))
    np.testing.assert_allclose(r.numpy(), np.array(rewards, dtype=np.float64), rtol=1e-4, atol=1e-6)


def test_model_is_batched_differentiable_and_takes_env_parameters():
    model = CartPoleSwingUpDynamics()
    obs = th.as_tensor(_random_states(np.random.default_rng(1), 12)).view(3, 4, 4)
    act = th.zeros(3, 4, 1, dtype=th.float64, requires_grad=True)
    out = model(obs, act)
    assert out.shape == obs.shape and out.dtype == th.float64
    out.sum().backward()
    assert act.grad is not None and th.isfinite(act.grad).all() and (act.grad != 0).any()
    heavy = CartPoleSwingUpEnv(masspole=0.3, length=0.5, force_max=20.0)
    fitted = CartPoleSwingUpDynamics.from_env(gym.wrappers.TimeLimit(heavy, 10))
    assert (fitted.masspole, fitted.length, fitted.force_max) == (0.3, 0.5, 20.0)
    heavy.reset(seed=0)
    state = np.array([0.3, 2.0, -1.0, 3.0])
    obs0 = heavy.set_state(state)
    expected = heavy.step(np.array([50.0]))[0]
    got = fitted(th.as_tensor(obs0), th.tensor([50.0]))
    np.testing.assert_allclose(got.numpy(), expected, rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------- OCP


def _casadi_functions(ocp: CartPoleSwingUpOCP) -> tuple[casadi.Function, casadi.Function, casadi.Function]:
    x, u, p = casadi.SX.sym("x", 4), casadi.SX.sym("u", 1), casadi.SX.sym("p", 1)
    return (
        casadi.Function("f", [x, u], [ocp.dynamics(x, u)]),
        casadi.Function("l", [x, u, p], [ocp.stage_cost(x, u, p)]),
        casadi.Function("lN", [x, p], [ocp.terminal_cost(x, p)]),
    )


def test_ocp_attributes_validate_and_pickle():
    ocp = CartPoleSwingUpOCP.from_env(gym.make(ENV_ID))
    ocp.validate()
    assert (ocp.state_dim, ocp.control_dim, ocp.horizon, ocp.dt) == (4, 1, 5, 0.05)
    assert ocp.param_names == ("theta_ref",) and ocp.n_params == 1
    np.testing.assert_array_equal(ocp.u_low, [-80.0])
    np.testing.assert_array_equal(ocp.u_high, [80.0])
    np.testing.assert_allclose(ocp.param_low, [-2 * np.pi])
    np.testing.assert_allclose(ocp.param_high, [2 * np.pi])
    np.testing.assert_array_equal(ocp.param_default, [0.0])
    assert ocp.x_low is None and ocp.x_high is None  # soft position bound by default (leap-c)
    clone = pickle.loads(pickle.dumps(ocp))
    assert vars(clone).keys() == vars(ocp).keys()
    hard = CartPoleSwingUpOCP(position_constraint="hard")
    hard.validate()
    np.testing.assert_array_equal(hard.x_low, [-2.4, -np.inf, -np.inf, -np.inf])
    np.testing.assert_array_equal(hard.x_high, [2.4, np.inf, np.inf, np.inf])
    assert hard.constraint_violation(np.array([[2.5, 0, 0, 0], [0, 0, 0, 0]]), np.zeros((2, 1))).tolist() == [
        True,
        False,
    ]
    custom = CartPoleSwingUpOCP.from_env(CartPoleSwingUpEnv(masspole=0.2, dt=0.02), horizon=7)
    assert (custom.masspole, custom.dt, custom.horizon) == (0.2, 0.02, 7)
    assert isinstance(resolve_ocp("auto", gym.make(ENV_ID), "test"), CartPoleSwingUpOCP)


def test_ocp_dynamics_equal_the_numpy_step():
    ocp = CartPoleSwingUpOCP()
    f, _, _ = _casadi_functions(ocp)
    rng = np.random.default_rng(2)
    for state in _random_states(rng, 5):
        u = rng.uniform(-80.0, 80.0, size=1)
        expected = cartpole_step(state, u, 0.05, NUMPY)
        np.testing.assert_allclose(np.asarray(f(state, u)).ravel(), expected, rtol=1e-12, atol=1e-12)


def test_ocp_cost_is_minimal_at_the_reference():
    ocp = CartPoleSwingUpOCP()
    _, stage, terminal = _casadi_functions(ocp)
    upright = np.zeros(4)
    assert float(stage(upright, 0.0, 0.0)) == 0.0 and float(terminal(upright, 0.0)) == 0.0
    rng = np.random.default_rng(3)
    for _ in range(20):
        dx, du = rng.normal(scale=0.1, size=4), rng.normal(scale=1.0, size=1)
        assert float(stage(upright + dx, du, 0.0)) > 0.0 and float(terminal(upright + dx, 0.0)) > 0.0
    # The weights and scaling of leap-c / acados: dt * 0.5 * (2e3 theta^2 + 0.2 u^2) at the stages.
    assert float(stage([0.0, 0.1, 0.0, 0.0], 2.0, 0.0)) == pytest.approx(
        0.05 * 0.5 * (2e3 * 0.01 + 0.2 * 4.0)
    )
    assert float(terminal([0.0, 0.1, 0.0, 0.0], 0.0)) == pytest.approx(0.5 * 2e3 * 0.01)
    # theta_ref moves the minimum: zero cost at theta = theta_ref.
    assert float(stage([0.0, 2 * np.pi - 0.1, 0.0, 0.0], 0.0, 2 * np.pi - 0.1)) == 0.0
    # Soft position bound: a penalty only beyond |x| = 2.4.
    inside = float(terminal([2.3, 0.0, 0.0, 0.0], 0.0))
    assert inside == pytest.approx(0.5 * 2e3 * 2.3**2)
    beyond = float(terminal([2.5, 0.0, 0.0, 0.0], 0.0))
    assert beyond == pytest.approx(0.5 * (2e3 * 2.5**2 + 1e3 * 0.1**2))
    hard = CartPoleSwingUpOCP(position_constraint="hard")
    _, _, hard_terminal = _casadi_functions(hard)
    assert float(hard_terminal([2.5, 0.0, 0.0, 0.0], 0.0)) == pytest.approx(0.5 * 2e3 * 2.5**2)
    # A stationary point: the gradient vanishes at the reference.
    x, u, p = casadi.SX.sym("x", 4), casadi.SX.sym("u", 1), casadi.SX.sym("p", 1)
    grad = casadi.Function("g", [x, u, p], [casadi.gradient(ocp.stage_cost(x, u, p), casadi.vertcat(x, u))])
    np.testing.assert_allclose(np.asarray(grad(upright, 0.0, 0.0)).ravel(), 0.0, atol=1e-12)
    assert math.isfinite(float(stage(upright, 80.0, 0.0)))
