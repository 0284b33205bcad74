"""Chain-v0 (the leap-c lecture's chain of masses): environment, torch model and OCP."""

import pickle

import casadi as ca
import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium.utils.env_checker import check_env
from sb3_stein.envs.chain import (
    ChainDynamics,
    ChainEnv,
    ChainOCP,
    ChainPhysics,
    last_mass_target,
    rest_state,
)
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import sb3_stein
from sb3_stein.common.backends import CASADI, NUMPY, TORCH, rk4_step
from sb3_stein.common.ocp import resolve_ocp

# float32 model vs float64 env (same tolerance as tests/test_dynamics.py).
TOL = dict(rtol=1e-5, atol=1e-4)


def _random_state(env: ChainEnv, rng: np.random.Generator) -> np.ndarray:
    """A resting chain from the start region, shaken: positions +-5 cm, velocities +-1 m/s."""
    env.reset(seed=int(rng.integers(1 << 31)))
    x = env.state
    k = env.n_pos_states
    x[:k] += rng.uniform(-0.05, 0.05, k)
    x[k:] = rng.uniform(-1.0, 1.0, x.size - k)
    return x


def test_registration_spaces_and_layout():
    env = gym.make("Chain-v0")
    assert env.spec.max_episode_steps == 200
    assert env.observation_space.shape == (21,) and env.action_space.shape == (3,)
    np.testing.assert_array_equal(env.action_space.high, np.ones(3, np.float32))
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    inner = env.unwrapped
    # Positions of masses 2..5 then velocities of masses 2..4; the chain starts at rest.
    np.testing.assert_array_equal(obs[12:], 0.0)
    radius = np.linalg.norm(obs[9:12])
    assert radius == pytest.approx(4 * 0.033, rel=1e-6)  # leap-c's start sphere
    assert obs[11] > 0.0  # polar angle within +-pi/4: the last mass starts above the anchor
    np.testing.assert_allclose(inner.p_ref, [0.132, 0.0, 0.0])
    assert not info["is_success"]


def test_checkers_and_render():
    env = gym.make("Chain-v0", render_mode="rgb_array").unwrapped  # with its spec: all render modes
    check_env(env, skip_render_check=False)
    sb3_check_env(ChainEnv())
    env.reset(seed=1)
    env.step(env.action_space.sample())
    frame = env.render()
    assert frame.shape == (300, 600, 3) and frame.dtype == np.uint8
    assert frame.min() < 100  # something was drawn
    with pytest.warns(UserWarning, match="render_mode"):
        assert ChainEnv().render() is None


def test_rest_states_are_equilibria():
    physics = ChainPhysics()
    env = ChainEnv()
    for seed in range(5):
        env.reset(seed=seed)  # a resting chain from leap-c's start region
        np.testing.assert_allclose(physics.ode(env.state, np.zeros(3), NUMPY), 0.0, atol=1e-8)
    np.testing.assert_allclose(physics.ode(env.x_ref, np.zeros(3), NUMPY), 0.0, atol=1e-8)
    # The resting chain hangs below the anchor, symmetric about the middle mass, last mass at p_ref.
    positions = env.x_ref[:12].reshape(4, 3)
    np.testing.assert_allclose(positions[-1], last_mass_target(physics))
    assert np.all(positions[:3, 2] < -0.3)
    np.testing.assert_allclose(positions[0, [0, 2]], [0.132 - positions[2, 0], positions[2, 2]], atol=1e-9)
    # A step from rest with zero control stays at rest.
    env.set_state(env.x_ref)
    obs, *_ = env.step(np.zeros(3, np.float32))
    np.testing.assert_allclose(obs, env.x_ref, atol=1e-7)
    # Another chain length and a cached, copied result.
    other = ChainPhysics(n_mass=4, rest_length=0.05)
    x = rest_state(other, [0.1, 0.05, 0.02])
    assert x.shape == (15,)
    np.testing.assert_allclose(other.ode(x, np.zeros(3), NUMPY), 0.0, atol=1e-8)
    x[:] = 7.0
    assert rest_state(other, [0.1, 0.05, 0.02])[0] != 7.0


def test_model_matches_env_step_and_reward():
    env = gym.make("Chain-v0")
    model = sb3_stein.make_dynamics_model(env)
    assert isinstance(model, ChainDynamics) and model.obs_dim == 21 and model.act_dim == 3
    inner = env.unwrapped
    rng = np.random.default_rng(0)
    for _ in range(100):
        obs = inner.set_state(_random_state(inner, rng))
        # Actions beyond the Box too, to exercise the clipping.
        action = rng.uniform(-1.5, 1.5, 3).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = inner.step(action)
        assert not terminated and not truncated
        o, a, n = th.as_tensor(obs)[None], th.as_tensor(action)[None], th.as_tensor(next_obs)[None]
        np.testing.assert_allclose(model(o, a)[0].numpy(), next_obs, **TOL)
        np.testing.assert_allclose(float(model.reward(o, a, n)[0]), reward, rtol=1e-4, atol=1e-3)


def test_model_batched_float64_differentiable():
    model = ChainDynamics.from_env(None)
    env = ChainEnv()
    rng = np.random.default_rng(1)
    states = np.stack([_random_state(env, rng) for _ in range(6)])
    obs = th.as_tensor(states).view(2, 3, 21)
    act = th.zeros(2, 3, 3, dtype=th.float64, requires_grad=True)
    out = model(obs, act)
    assert out.shape == obs.shape and out.dtype == th.float64
    out.sum().backward()
    assert act.grad is not None and th.isfinite(act.grad).all()
    # float64 model == float64 env step (same arithmetic, same ODE).
    env.set_state(states[0])
    expected, *_ = env.step(np.zeros(3))
    np.testing.assert_allclose(out[0, 0].detach().numpy(), env.state, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(expected, env.state.astype(np.float32))
    # Gradients at a resting chain (zero relative velocities: |dv| dv is differentiable there).
    x_ref = th.tensor(env.x_ref, dtype=th.float32, requires_grad=True)
    model(x_ref, th.zeros(3)).sum().backward()
    assert th.isfinite(x_ref.grad).all()


def test_reward_as_defined():
    env = ChainEnv()
    x = env.x_ref.copy()
    assert env.reward_of(x) == 0.0
    x[9:12] += [0.1, -0.2, 0.05]  # last mass off target: l1 distance 0.35
    x[12:] = 0.0
    x[12] = 3.0
    x[20] = 4.0  # free-mass speed 5
    assert env.reward_of(x) == pytest.approx(10 * (-0.35 - 0.1 * 5.0))
    # The reward is that of the state after the step.
    env.set_state(env.x_ref)
    _, reward, *_ = env.step(np.array([1.0, 0.0, 0.0], np.float32))
    assert reward == pytest.approx(env.reward_of(env.state)) and reward < 0


def test_ocp_validates_with_the_lecture_parameters():
    env = gym.make("Chain-v0")
    ocp = resolve_ocp("auto", env, "SACZOP")  # validates
    assert isinstance(ocp, ChainOCP)
    assert (ocp.state_dim, ocp.control_dim, ocp.horizon) == (21, 3, 20)
    assert ocp.dt == pytest.approx(0.25 / 20)  # leap-c planner: N = 20 over T = 0.25 s
    assert ocp.n_params == 24 and len(set(ocp.param_names)) == 24
    assert ocp.param_names[0] == "q_p2x" and ocp.param_names[12] == "q_v2x" and ocp.param_names[-1] == "r_uz"
    np.testing.assert_array_equal(ocp.param_low, [0.5] * 21 + [0.05] * 3)
    np.testing.assert_array_equal(ocp.param_high, [1.5] * 21 + [0.15] * 3)
    np.testing.assert_array_equal(ocp.param_default, [1.0] * 21 + [0.1] * 3)
    np.testing.assert_array_equal(ocp.u_low, -np.ones(3))
    np.testing.assert_array_equal(ocp.u_high, np.ones(3))
    assert ocp.x_low is None and ocp.x_high is None
    np.testing.assert_allclose(ocp.x_ref, env.unwrapped.x_ref)
    clone = pickle.loads(pickle.dumps(ocp))
    np.testing.assert_array_equal(clone.x_ref, ocp.x_ref)


def test_ocp_dynamics_equal_the_env_step():
    env = ChainEnv()
    rng = np.random.default_rng(2)
    x, u = ca.SX.sym("x", 21), ca.SX.sym("u", 3)
    for ocp, step_env in (
        (ChainOCP.from_env(env, horizon_time=20 * env.dt), env),  # intervals = the env's step
        (ChainOCP.from_env(env), ChainEnv(dt=0.0125)),  # the default 0.0125 s intervals
    ):
        f = ca.Function("f", [x, u], [ocp.dynamics(x, u)])
        for _ in range(5):
            state = _random_state(env, rng)
            action = rng.uniform(-1.0, 1.0, 3)
            step_env.set_state(state)
            step_env.step(action)
            np.testing.assert_allclose(
                np.asarray(f(state, action)).ravel(), step_env.state, rtol=1e-12, atol=1e-12
            )


def test_ocp_costs():
    ocp = ChainOCP()
    x, u, p = ca.SX.sym("x", 21), ca.SX.sym("u", 3), ca.SX.sym("p", 24)
    stage = ca.Function("l", [x, u, p], [ocp.stage_cost(x, u, p)])
    terminal = ca.Function("V", [x, p], [ocp.terminal_cost(x, p)])
    assert float(stage(ocp.x_ref, np.zeros(3), ocp.param_default)) == 0.0
    assert float(terminal(ocp.x_ref, ocp.param_default)) == 0.0
    rng = np.random.default_rng(3)
    dx, du = rng.normal(size=21), rng.normal(size=3)
    params = rng.uniform(ocp.param_low, ocp.param_high)
    q, r = params[:21], params[21:]
    expected = ocp.dt * 0.5 * (np.sum((q * dx) ** 2) + np.sum((r * du) ** 2))
    assert float(stage(ocp.x_ref + dx, du, params)) == pytest.approx(expected, rel=1e-12)
    assert float(ocp.stage_cost_numpy(ocp.x_ref + dx, du, params)) == pytest.approx(expected, rel=1e-12)
    assert float(terminal(ocp.x_ref + dx, params)) == pytest.approx(0.5 * np.sum((q * dx) ** 2), rel=1e-12)


def test_one_ode_three_backends():
    physics = ChainPhysics()
    env = ChainEnv()
    state = _random_state(env, np.random.default_rng(4))
    u = np.array([0.3, -0.7, 0.2])
    ref = rk4_step(physics.ode, state, u, 0.05, NUMPY)
    out = rk4_step(physics.ode, th.as_tensor(state), th.as_tensor(u), 0.05, TORCH)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-13, atol=1e-13)
    cas = rk4_step(physics.ode, ca.DM(state), ca.DM(u), 0.05, CASADI)
    np.testing.assert_allclose(np.asarray(cas).ravel(), ref, rtol=1e-13, atol=1e-13)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_mass must be an integer >= 3"):
        ChainEnv(n_mass=2)
    with pytest.raises(ValueError, match="mass must be > 0"):
        ChainEnv(mass=0.0)
    with pytest.raises(ValueError, match="damping must be >= 0"):
        ChainEnv(damping=-1.0)
    with pytest.raises(ValueError, match="dt must be"):
        ChainEnv(dt=0.0)
    with pytest.raises(ValueError, match="vmax must be"):
        ChainEnv(vmax=-1.0)
    with pytest.raises(ValueError, match="render_mode"):
        ChainEnv(render_mode="human")
    with pytest.raises(ValueError, match="horizon must be"):
        ChainOCP(horizon=0)
    with pytest.raises(ValueError, match="horizon_time"):
        ChainOCP(horizon_time=-0.25)
    with pytest.raises(ValueError, match="state must be 21 finite numbers"):
        ChainEnv().set_state(np.zeros(20))
