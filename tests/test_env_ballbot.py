"""Ballbot-v0 (DMPC): env checkers, the torch model vs env.step, the ODE (control-affine, three backends,
equilibrium, instability, energy), the task's rules (walls, deadline, success), rendering and bad inputs."""

from __future__ import annotations

import math
import pickle

import casadi
import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium.utils.env_checker import check_env
from sb3_stein.envs.ballbot import (
    BENCHMARK_STARTS,
    DEFAULT_PHYSICS,
    GOAL_SLICE,
    MAX_EPISODE_STEPS,
    OBS_DIM,
    STATE_DIM,
    TARGET,
    TIME_INDEX,
    BallbotDynamics,
    BallbotEnv,
    ballbot_energy,
    ballbot_ode,
    ballbot_step,
    torque_map,
    wall_distance,
)
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from sb3_stein.common.backends import CASADI, NUMPY, TORCH
from sb3_stein.common.dynamics import check_dynamics_model, make_dynamics_model

ENV_ID = "Ballbot-v0"
# The model and env.step run the same float64 arithmetic: equal to round-off.
STATE_TOL = 1e-9
# float32 model vs the float64 environment (as tests/test_dynamics.py): 1e-5 relative, 1e-4 absolute.
RTOL32, ATOL32 = 1e-5, 1e-4


def _random_obs(rng: np.random.Generator, n: int, tilt: float = 0.6) -> np.ndarray:
    """Observations with positions in the field (some in the walls' band), tilts beyond the fall angle."""
    return np.concatenate(
        [
            rng.uniform(-1.5, 1.5, (n, 2)),
            rng.uniform(-tilt, tilt, (n, 2)),
            rng.uniform(-2.0, 2.0, (n, 2)),
            rng.uniform(-3.0, 3.0, (n, 3)),
            rng.uniform(-1.5, 1.5, (n, 2)),
            rng.uniform(0.0, 3.0, (n, 1)),
        ],
        axis=-1,
    )


def _ode_numpy(x: np.ndarray, u: np.ndarray, **physics: float) -> np.ndarray:
    return ballbot_ode(x, u, NUMPY, **physics)


def _ode_torch(x: np.ndarray, u: np.ndarray, **physics: float) -> np.ndarray:
    return ballbot_ode(th.as_tensor(x), th.as_tensor(u), TORCH, **physics).numpy()


_X_SYM, _U_SYM = casadi.SX.sym("x", OBS_DIM), casadi.SX.sym("u", 3)
_ODE_CASADI = casadi.Function("ode", [_X_SYM, _U_SYM], [ballbot_ode(_X_SYM, _U_SYM, CASADI)])


def _ode_casadi(x: np.ndarray, u: np.ndarray, **physics: float) -> np.ndarray:
    assert not physics
    rows = [np.asarray(_ODE_CASADI(xi, ui)).ravel() for xi, ui in zip(x, u)]
    return np.stack(rows)


# ----------------------------------------------------------------------------- environment


def test_gymnasium_and_sb3_env_checkers_pass():
    check_env(BallbotEnv(), skip_render_check=True)
    check_env(BallbotEnv(render_mode="rgb_array", random_target=True, render_size=96))
    check_env(gym.make(ENV_ID).unwrapped, skip_render_check=True)
    sb3_check_env(BallbotEnv(), warn=False)


def test_registration_spaces_and_reset():
    env = gym.make(ENV_ID)
    assert env.spec is not None and env.spec.max_episode_steps == MAX_EPISODE_STEPS == 60
    obs, info = env.reset(seed=4)
    assert obs.dtype == np.float32 and obs.shape == (OBS_DIM,) == (12,)
    assert info["is_success"] is False and info["wall_hit"] is False and info["fallen"] is False
    np.testing.assert_array_equal(obs[2:STATE_DIM], 0.0)  # upright at rest
    np.testing.assert_array_equal(obs[GOAL_SLICE], TARGET)
    assert obs[TIME_INDEX] == 3.0
    assert -1.2 <= obs[0] <= 1.2 and -1.0 <= obs[1] <= -0.7  # the start region
    assert isinstance(env.action_space, gym.spaces.Box) and env.action_space.shape == (3,)
    np.testing.assert_array_equal(env.action_space.high, [10.0, 10.0, 10.0])
    again, _ = env.reset(seed=4)
    np.testing.assert_array_equal(obs, again)
    # Fixed starts and targets, e.g. the eight benchmark starts.
    base = BallbotEnv(random_target=True)
    for start in BENCHMARK_STARTS:
        obs, _ = base.reset(seed=0, options={"start": start, "target": (0.5, 1.0)})
        np.testing.assert_allclose(obs[:2], start, atol=1e-7)
        np.testing.assert_allclose(obs[GOAL_SLICE], (0.5, 1.0), atol=1e-7)
    targets = np.array([base.reset(seed=s)[0][GOAL_SLICE] for s in range(20)])
    assert np.all(targets[:, 0] >= -1.2) and np.all(targets[:, 0] <= 1.2) and np.ptp(targets[:, 0]) > 0.5
    assert np.all(targets[:, 1] >= 0.7) and np.all(targets[:, 1] <= 1.2)


def test_the_wall_blocks_the_straight_path_from_most_starts():
    env = BallbotEnv()
    rng = np.random.default_rng(0)
    starts = np.concatenate([rng.uniform((-1.2, -1.0), (1.2, -0.7), (200, 2)), np.array(BENCHMARK_STARTS)])
    s = np.linspace(0.0, 1.0, 201)[:, None, None]
    lines = starts[None] * (1 - s) + np.asarray(TARGET) * s  # (201, n, 2)
    blocked = (wall_distance(lines, env.walls) < env.hit_distance).any(axis=0)
    assert blocked.mean() > 0.9
    assert np.all(wall_distance(starts, env.walls) >= env.hit_distance)


# ----------------------------------------------------------------------------- the torch model


def _env_transitions(
    rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    env = BallbotEnv()
    obs = _random_obs(rng, n, tilt=0.9)  # beyond the fall angle pi/4 at times
    actions = rng.uniform(-12.0, 12.0, (n, 3))  # some beyond the bound: clipped by both
    out: dict[str, list] = {"next": [], "reward": [], "terminated": []}
    for i in range(n):
        env.reset(seed=i)
        env._obs[:] = obs[i]  # any goal and time to go (not reachable through the public API)
        _, reward, terminated, _, _ = env.step(actions[i].astype(np.float32))
        out["next"].append(env.observation)
        out["reward"].append(reward)
        out["terminated"].append(terminated)  # first step: never the step counter's deadline
    return obs, actions.astype(np.float32).astype(np.float64), {k: np.asarray(v) for k, v in out.items()}


def test_torch_model_matches_env_step_on_random_states_and_actions():
    rng = np.random.default_rng(1)
    obs, actions, env_out = _env_transitions(rng, 200)
    model = BallbotDynamics.from_env(gym.make(ENV_ID))
    x, u = th.as_tensor(obs), th.as_tensor(actions)
    nxt = model(x, u)
    assert nxt.dtype == th.float64 and nxt.shape == (200, OBS_DIM)
    np.testing.assert_allclose(nxt.numpy(), env_out["next"], rtol=0, atol=STATE_TOL)
    reward = model.reward(x, u, nxt).numpy()
    np.testing.assert_allclose(reward, env_out["reward"], rtol=0, atol=STATE_TOL)
    terminal = model.is_terminal(nxt).numpy()
    failed = env_out["reward"] < -5.0  # the penalty
    assert 5 < failed.sum() < 195  # both kinds occur in the sample
    # is_terminal adds the deadline (time to go <= dt / 2), which the step counter tracks in the env.
    deadline = env_out["next"][:, TIME_INDEX] <= 0.5 * model.dt
    np.testing.assert_array_equal(terminal, failed | deadline)
    np.testing.assert_array_equal(env_out["terminated"], failed)
    # Any leading batch shape, float32 in float32 out (float32 arithmetic: its tolerance).
    nxt32 = model(x.float().reshape(4, 50, OBS_DIM), u.float().reshape(4, 50, 3))
    assert nxt32.dtype == th.float32 and nxt32.shape == (4, 50, OBS_DIM)
    np.testing.assert_allclose(nxt32.reshape(200, OBS_DIM).numpy(), env_out["next"], rtol=RTOL32, atol=ATOL32)
    assert model.reward(x.float(), u.float(), nxt32.reshape(200, OBS_DIM)).shape == (200,)


def test_model_registry_contract_and_gradients():
    env = gym.make(ENV_ID, penalty=3.0, ball_mass=3.0)
    model = make_dynamics_model(env)
    assert isinstance(model, BallbotDynamics) and model.penalty == 3.0 and model.physics["ball_mass"] == 3.0
    assert isinstance(make_dynamics_model(ENV_ID), BallbotDynamics)
    check_dynamics_model(model, env.observation_space, env.action_space, "DMPC")
    assert model.dt == 0.05
    x = th.as_tensor(_random_obs(np.random.default_rng(2), 8, tilt=0.3), dtype=th.float32).requires_grad_()
    u = th.zeros(8, 3, requires_grad=True)
    model.reward(x, u, model(x, u)).sum().backward()
    assert x.grad is not None and u.grad is not None and th.isfinite(u.grad).all() and u.grad.abs().sum() > 0
    clone = pickle.loads(pickle.dumps(model))
    assert clone.physics == model.physics and clone.walls == model.walls
    # continuous_dynamics is the ODE with the model's physics, on any backend.
    xs = x.detach().double()
    np.testing.assert_allclose(
        model.continuous_dynamics(xs.numpy(), np.ones((8, 3)), NUMPY),
        ballbot_ode(xs.numpy(), np.ones((8, 3)), NUMPY, **model.physics),
    )
    assert model.continuous_dynamics(_X_SYM, _U_SYM, CASADI).shape == (OBS_DIM, 1)


# ----------------------------------------------------------------------------- the ODE


@pytest.mark.parametrize("ode", [_ode_numpy, _ode_torch, _ode_casadi], ids=["numpy", "torch", "casadi"])
def test_ode_is_control_affine_and_backends_agree(ode):
    rng = np.random.default_rng(3)
    x = _random_obs(rng, 16, tilt=1.0)
    u = rng.uniform(-10.0, 10.0, (16, 3))
    zero = np.zeros((16, 3))
    drift = ode(x, zero)
    affine = drift + sum(u[:, [i]] * (ode(x, np.tile(np.eye(3)[i], (16, 1))) - drift) for i in range(3))
    np.testing.assert_allclose(ode(x, u), affine, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ode(x, u), _ode_numpy(x, u), rtol=1e-12, atol=1e-12)
    assert np.all(drift[:, GOAL_SLICE] == 0.0) and np.all(ode(x, u)[:, TIME_INDEX] == -1.0)


def test_model_f_and_g_are_the_control_affine_form():
    model = BallbotDynamics()
    rng = np.random.default_rng(4)
    x = th.as_tensor(_random_obs(rng, 6).reshape(2, 3, OBS_DIM))
    u = th.as_tensor(rng.uniform(-10.0, 10.0, (2, 3, 3)))
    f, g = model.f(0.0, x), model.g(0.0, x)
    assert f.shape == (2, 3, OBS_DIM) and g.shape == (2, 3, OBS_DIM, 3)
    th.testing.assert_close(f + (g @ u.unsqueeze(-1)).squeeze(-1), model.continuous_dynamics(x, u))
    # The wheel map is invertible: all three wheels matter; it is constant in the state.
    assert abs(np.linalg.det(torque_map())) > 1.0
    assert th.linalg.matrix_rank(g[0, 0, 4:9]) == 3


def test_upright_rest_is_an_unstable_equilibrium():
    x = np.zeros(OBS_DIM)
    x[GOAL_SLICE], x[TIME_INDEX] = TARGET, 3.0
    np.testing.assert_array_equal(_ode_numpy(x, np.zeros(3))[:STATE_DIM], 0.0)
    # Linearisation: one eigenvalue per plane ~ +sqrt(M c g / D) (module docstring: 4.3 1/s).
    eps = 1e-7
    jac = np.stack(
        [
            (_ode_numpy(x + eps * e, np.zeros(3)) - _ode_numpy(x - eps * e, np.zeros(3))) / (2 * eps)
            for e in np.eye(12)
        ],
        axis=-1,
    )[:STATE_DIM, :STATE_DIM]
    assert np.max(np.linalg.eigvals(jac).real) == pytest.approx(4.3, abs=0.05)
    # A small tilt grows without torque, in the environment.
    env = BallbotEnv()
    env.reset(seed=0, options={"start": (0.0, -0.8)})
    env.set_state([0.0, -0.8, 0.01, -0.005, 0.0, 0.0, 0.0, 0.0, 0.0])
    tilts = [abs(env.step(np.zeros(3, dtype=np.float32))[0][2]) for _ in range(15)]
    assert np.all(np.diff(tilts) > 0) and tilts[-1] > 0.1


def test_energy_is_conserved_without_torque_and_friction_and_the_power_balance_holds():
    rng = np.random.default_rng(5)
    x = _random_obs(rng, 4, tilt=0.8)
    e0 = ballbot_energy(x, NUMPY)
    state = x.copy()
    for _ in range(500):  # 0.5 s, finer steps than the env's: the check is on the equations, not RK4
        state = ballbot_step(state, np.zeros((4, 3)), 1e-3, NUMPY)
    assert np.all(np.abs(state[:, 2:4] - x[:, 2:4]) > 1e-3)  # it moved
    np.testing.assert_allclose(ballbot_energy(state, NUMPY), e0, rtol=1e-9)
    # With torques and friction: dE/dt = T_xz (vx/r - theta_x') + T_yz (vy/r - theta_y') + T_yaw omega_z
    # - b (vx^2 + vy^2) / r^2 - b_z omega_z^2 (the generalized forces of the derivation).
    physics = {**DEFAULT_PHYSICS, "ball_friction": 0.3, "yaw_friction": 0.2}
    xt = th.as_tensor(x, dtype=th.float64).requires_grad_()
    u = th.as_tensor(rng.uniform(-10.0, 10.0, (4, 3)))
    (grad,) = th.autograd.grad(ballbot_energy(xt, TORCH, **physics).sum(), xt)
    rate = (grad * ballbot_ode(xt, u, TORCH, **physics)).sum(-1).detach().numpy()
    t = u.numpy() @ torque_map().T
    r = physics["ball_radius"]
    power = t[:, 0] * (x[:, 4] / r - x[:, 6]) + t[:, 1] * (x[:, 5] / r - x[:, 7]) + t[:, 2] * x[:, 8]
    power -= 0.3 * (x[:, 4] ** 2 + x[:, 5] ** 2) / r**2 + 0.2 * x[:, 8] ** 2
    np.testing.assert_allclose(rate, power, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- the task's rules


def test_scripted_motion_into_the_wall_ends_with_the_penalty():
    env = BallbotEnv(penalty=7.0)
    env.reset(seed=0, options={"start": (0.0, -0.5)})
    env.set_state([0.0, -0.5, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0])  # upright, gliding to +y (frictionless)
    model = env.dynamics_model()
    for _ in range(10):
        before = env.observation
        obs, reward, terminated, truncated, info = env.step(np.zeros(3, dtype=np.float32))
        if terminated:
            break
        assert reward == pytest.approx(-info["distance"] * env.dt) and not info["wall_hit"]
    assert terminated and not truncated and info["wall_hit"] and not info["is_success"]
    assert -0.15 < obs[1] < 0.0 and reward == pytest.approx(-info["distance"] * env.dt - 7.0)
    x = th.as_tensor(before)[None]
    nxt = model(x, th.zeros(1, 3, dtype=th.float64))
    assert bool(model.is_terminal(nxt)) and model.wall_clearance(nxt).item() < 0.0
    assert model.reward(x, th.zeros(1, 3), nxt).item() == pytest.approx(reward)


def test_a_fall_ends_with_the_penalty():
    env = BallbotEnv()
    env.reset(seed=0)
    env.set_state([0.0, -0.8, 0.0, 0.78, 0.0, 0.0, 0.0, 1.0, 0.0])
    _, reward, terminated, _, info = env.step(np.zeros(3, dtype=np.float32))
    assert terminated and info["fallen"] and not info["wall_hit"] and reward < -10.0


def test_the_deadline_terminates_at_60_steps():
    env = gym.make(ENV_ID)
    obs, _ = env.reset(seed=1)
    for k in range(1, 61):
        obs, reward, terminated, _, info = env.step(np.zeros(3, dtype=np.float32))
        assert obs[TIME_INDEX] == pytest.approx(3.0 - 0.05 * k, abs=1e-6)
        assert terminated == (k == 60), k
        assert reward == pytest.approx(-info["distance"] * 0.05)
    assert 0.0 <= obs[TIME_INDEX] < 1e-12 and not info["is_success"]  # round-off only; it stayed at its start
    # The registered TimeLimit coincides with the deadline. Gymnasium's TimeLimit then also truncates,
    # but rl_zoo3's import patches TimeLimit to truncate only episodes that did not end otherwise, so
    # `truncated` depends on what else the process imported: only the terminal flag is the env's.
    assert env.spec is not None and env.spec.max_episode_steps == 60
    direct = BallbotEnv()
    direct.reset(seed=1)
    flags = [direct.step(np.zeros(3, dtype=np.float32))[2:4] for _ in range(60)]
    assert flags[-1] == (True, False) and not any(f[0] or f[1] for f in flags[:-1])


def test_success_flag_at_the_deadline():
    env = BallbotEnv()
    for offset, expected in ((0.19, True), (0.21, False)):
        env.reset(seed=0, options={"target": (0.3, 1.0)})
        for _ in range(59):
            _, _, terminated, _, info = env.step(np.zeros(3, dtype=np.float32))
            assert not terminated and not info["is_success"]
        env.set_state([0.3 + offset, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # teleported, at rest
        _, _, terminated, _, info = env.step(np.zeros(3, dtype=np.float32))
        assert terminated and info["is_success"] is expected and info["distance"] == pytest.approx(offset)


def test_render_top_view():
    env = BallbotEnv(render_mode="rgb_array", render_size=128)
    env.reset(seed=0)
    first = env.render()
    assert first is not None and first.shape == (128, 128, 3) and first.dtype == np.uint8
    for _ in range(20):
        env.step(np.array([0.0, 5.0, -5.0], dtype=np.float32))
    later = env.render()
    assert later is not None and later.shape == first.shape and np.any(later != first)  # the path
    with pytest.warns(UserWarning):
        assert BallbotEnv().render() is None


# ----------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_clear_errors():
    env = BallbotEnv()
    env.reset(seed=0)
    for action, match in (
        (np.array([np.nan, 0.0, 0.0]), "action must be finite"),
        (np.array([np.inf, 0.0, 0.0]), "action must be finite"),
        (np.zeros(2), r"action must have shape \(3,\)"),
        (np.zeros((1, 3)), r"action must have shape \(3,\)"),
        ("abc", "action"),
    ):
        with pytest.raises(ValueError, match=match):
            env.step(action)
    for options, match in (
        ({"start": (0.0, 0.05)}, r"options\['start'\] .* inside a wall"),
        ({"start": (2.0, 0.0)}, r"options\['start'\] .* outside the field"),
        ({"start": (0.0, np.nan)}, r"options\['start'\] must be 2 finite numbers"),
        ({"target": (0.0, 1.6)}, r"options\['target'\] .* outside the field"),
        ({"goal": (0.0, 1.0)}, "unknown reset option"),
    ):
        with pytest.raises(ValueError, match=match):
            env.reset(options=options)
    for kwargs, match in (
        ({"target": (0.0, 2.0)}, "target .* outside the field"),
        ({"target": (0.5, 0.1)}, "target .* inside a wall"),
        ({"ball_mass": 0.0}, "ball_mass must be a finite number > 0"),
        ({"com_height": -0.2}, "com_height must be a finite number > 0"),
        ({"body_inertia_xz": float("nan")}, "body_inertia_xz must be a finite number > 0"),
        ({"gravity": 0}, "gravity must be a finite number > 0"),
        ({"ball_friction": -1.0}, "ball_friction must be a finite number >= 0"),
        ({"zenith_angle": math.pi / 2}, "zenith_angle must lie in"),
        ({"dt": 0.0}, "dt must be a finite number > 0"),
        ({"max_time": 3.01}, "max_time .* whole number"),
        ({"torque_bound": -1.0}, "torque_bound must be"),
        ({"walls": [[0.0, 0.0, 1.0]]}, "walls must be"),
        ({"start_region": ((1.0, -1.0), (0.0, -0.7))}, "start_region must be"),
        ({"start_region": ((-0.1, -0.05), (0.1, 0.05))}, "start_region .* within the walls"),
        ({"render_mode": "human"}, "render_mode"),
    ):
        with pytest.raises(ValueError, match=match):
            BallbotEnv(**kwargs)
    with pytest.raises(ValueError, match="wheel_radius must be a finite number > 0"):
        BallbotDynamics(wheel_radius=0.0)
    with pytest.raises(ValueError, match="unknown ballbot physics parameter"):
        BallbotDynamics(ball_weight=1.0)
    with pytest.raises(ValueError, match="state must be 9 finite numbers"):
        env.set_state(np.zeros(8))
