"""Dynamics models (vs the real env.step), the registry, and the probe of user models."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium.utils.env_checker import check_env
from sb3_stein.envs.cartpole_swingup import CartPoleSwingUpOCP
from sb3_stein.envs.nav2d import LEVELS, Nav2DDynamics, Nav2DEnv
from sb3_stein.envs.pendulum import PendulumDynamics
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

import sb3_stein
from sb3_stein.common import dynamics as dyn
from sb3_stein.common.ocp import resolve_ocp

# float32 model vs float64/float32 env arithmetic: 1e-5 relative, 1e-4 absolute.
TOL = dict(rtol=1e-5, atol=1e-4)


def _compare_on_random_transitions(env_id: str, set_state, n: int = 200, seed: int = 0, **make_kwargs):
    env = gym.make(env_id, **make_kwargs)
    model = sb3_stein.make_dynamics_model(env)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    for _ in range(n):
        obs = set_state(env.unwrapped, rng)
        # Actions beyond the Box too, to exercise the clipping.
        action = rng.uniform(1.5 * env.action_space.low, 1.5 * env.action_space.high).astype(np.float32)
        next_obs, reward, *_ = env.unwrapped.step(action)
        pred = model(th.as_tensor(obs)[None], th.as_tensor(action)[None])[0].numpy()
        np.testing.assert_allclose(pred, next_obs, **TOL)
        if hasattr(model, "reward"):
            r = model.reward(
                th.as_tensor(obs)[None], th.as_tensor(action)[None], th.as_tensor(next_obs)[None]
            )
            np.testing.assert_allclose(float(r[0]), reward, rtol=1e-4, atol=1e-3)


def _pendulum_state(env, rng):
    # Speeds near the clip and angles beyond [-pi, pi] (the env does not wrap theta).
    env.state = np.array([rng.uniform(-3 * np.pi, 3 * np.pi), rng.uniform(-8.0, 8.0)])
    return env._get_obs()


def _nav_state(env, rng):
    env._state = np.concatenate([rng.uniform(-10, 10, 2), rng.uniform(-5, 5, 2)])
    return env._state.astype(np.float32)


def _multigoal_state(env, rng):
    env.set_state(rng.uniform(-7, 7, 2))
    return env.state.copy()


def test_pendulum_model_matches_env_step():
    _compare_on_random_transitions("Pendulum-v1", _pendulum_state)


def test_pendulum_model_takes_the_env_parameters():
    _compare_on_random_transitions("Pendulum-v1", _pendulum_state, n=50, g=3.7)
    model = sb3_stein.make_dynamics_model(gym.make("Pendulum-v1", g=3.7))
    assert isinstance(model, PendulumDynamics) and model.g == pytest.approx(3.7)


def test_pendulum_continuous_dynamics_is_the_env_ode():
    """DMPC's control-affine ODE of the pendulum: its angular acceleration is exactly gymnasium's Euler
    increment per second (speeds inside the clip), the observation's rates follow from ``theta'``, and one RK4
    step of it stays close to ``env.step`` (the integrators differ by up to 0.064 here)."""
    from sb3_stein.common.backends import NUMPY, rk4_step

    env = gym.make("Pendulum-v1", g=9.81).unwrapped
    env.reset(seed=0)
    model = PendulumDynamics.from_env(env)
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(50):
        env.state = np.array([rng.uniform(-np.pi, np.pi), rng.uniform(-4.0, 4.0)])
        obs = env._get_obs().astype(np.float64)
        action = rng.uniform(-2.0, 2.0, size=1)
        rate = model.continuous_dynamics(obs, action, NUMPY)
        next_obs, *_ = env.step(action.astype(np.float32))
        np.testing.assert_allclose(rate[2], (next_obs[2] - obs[2]) / model.dt, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(rate[:2], [-obs[1] * obs[2], obs[0] * obs[2]], rtol=1e-12)
        worst = max(
            worst,
            float(np.abs(rk4_step(model.continuous_dynamics, obs, action, model.dt, NUMPY) - next_obs).max()),
        )
    assert worst < 0.08, worst  # measured 0.064: semi-implicit Euler's angle uses the new speed


@pytest.mark.parametrize("env_id", ["Nav2DEasy-v0", "Nav2DMedium-v0", "Nav2DHard-v0"])
def test_nav2d_model_matches_env_step(env_id):
    _compare_on_random_transitions(env_id, _nav_state)


def test_nav2d_model_takes_custom_mass_friction_obstacles():
    rows = [(1.0, 2.0, 0.7, 5.0), (-3.0, 0.0, 2.0, 1.0)]
    _compare_on_random_transitions("Nav2DEasy-v0", _nav_state, n=50, mass=2.5, friction=0.7, obstacles=rows)


def test_multigoal_model_matches_env_step():
    _compare_on_random_transitions("MultiGoal-v0", _multigoal_state)


def test_models_are_batched_and_differentiable():
    for env_id in ("Pendulum-v1", "Nav2DHard-v0", "MultiGoal-v0"):
        env = gym.make(env_id)
        model = sb3_stein.make_dynamics_model(env)
        obs = th.as_tensor(np.stack([env.observation_space.sample() for _ in range(12)])).view(3, 4, -1)
        act = th.zeros(3, 4, env.action_space.shape[0], requires_grad=True)
        out = model(obs, act)
        assert out.shape == obs.shape and out.dtype == obs.dtype
        out.sum().backward()
        assert act.grad is not None and th.isfinite(act.grad).all()


# ------------------------------------------------------------------ termination (is_terminal)
def _cartpole_state(env, rng):
    # Around the track's ends, so that about half the steps leave it.
    return env.set_state([rng.uniform(-2.7, 2.7), rng.uniform(-np.pi, np.pi), *rng.uniform(-6, 6, 2)])


def _windmaze_state(env, rng):
    if rng.uniform() < 0.5:  # near the goal disc
        position = env.goal + rng.uniform(-0.4, 0.4, 2)
    else:  # near the walls
        position = rng.uniform([-0.3, -0.3], [4.3, 1.3])
    # Speeds beyond max_speed too: the next speed a * v + b * F stays inside, the position may not.
    return env.set_state([*position, *rng.uniform(-25.0, 25.0, 2) * rng.uniform() ** 2])


def _nav_state_near_target(env, rng):
    env._state = np.concatenate([env.target + rng.uniform(-1.2, 1.2, 2), rng.uniform(-5, 5, 2)])
    return env._state.astype(np.float32)


def _multigoal_state_near_goals(env, rng):
    env.set_state(env.goals[rng.integers(len(env.goals))] + rng.uniform(-1.0, 1.0, 2))
    return env.state.copy()


@pytest.mark.parametrize(
    ("env_id", "set_state", "make_kwargs"),
    [
        ("CartPoleSwingUp-v0", _cartpole_state, {}),
        ("CartPoleSwingUp-v0", _cartpole_state, {"x_threshold": 1.0}),
        ("PointMassWindMaze-v0", _windmaze_state, {}),
        ("PointMassWindMaze-v0", _windmaze_state, {"goal": (2.0, 0.5), "radius": 0.3, "max_speed": 8.0}),
        ("Nav2DEasy-v0", _nav_state_near_target, {}),
        ("Nav2DHard-v0", _nav_state_near_target, {"target": (1.3, -2.7), "target_radius": 0.8}),
        ("MultiGoal-v0", _multigoal_state_near_goals, {}),
        ("MultiGoal-v0", _multigoal_state_near_goals, {"goals": "symmetric", "goal_threshold": 0.9}),
    ],
)
def test_is_terminal_is_the_env_termination(env_id, set_state, make_kwargs):
    env = gym.make(env_id, **make_kwargs)
    model = sb3_stein.make_dynamics_model(env)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    next_obs, terminated = [], []
    for _ in range(300):
        set_state(env.unwrapped, rng)
        action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        obs, _, term, _, _ = env.unwrapped.step(action)
        next_obs.append(obs)
        terminated.append(term)
    batch = th.as_tensor(np.stack(next_obs)).view(3, 100, -1)  # batched over leading dimensions
    flags = model.is_terminal(batch)
    assert flags.dtype == th.bool and flags.shape == (3, 100)
    assert flags.flatten().tolist() == terminated  # exactly the environment's verdict
    assert 0.1 < np.mean(terminated) < 0.9  # both outcomes were exercised
    assert not flags.requires_grad


def test_models_without_termination_have_no_is_terminal():
    # Pendulum and the chain never terminate: a planner treats a model without is_terminal so.
    for env_id in ("Pendulum-v1", "Chain-v0"):
        assert not hasattr(sb3_stein.make_dynamics_model(gym.make(env_id)), "is_terminal")


class _BadTerminal(nn.Module):
    def forward(self, obs, action):
        return obs

    def is_terminal(self, obs):
        return obs[..., 0] > 0  # fine


class _TerminalWrongShape(_BadTerminal):
    def is_terminal(self, obs):
        return obs > 0


class _TerminalNotBool(_BadTerminal):
    def is_terminal(self, obs):
        return (obs[..., 0] > 0).float()


def test_check_dynamics_model_probes_is_terminal():
    env = gym.make("Pendulum-v1")
    dyn.check_dynamics_model(_BadTerminal(), env.observation_space, env.action_space, "QSTAC")
    for model in (_TerminalWrongShape(), _TerminalNotBool()):
        with pytest.raises(
            ValueError, match=r"is_terminal maps .* expected a torch.bool tensor of shape \(3, 2\)"
        ):
            dyn.check_dynamics_model(model, env.observation_space, env.action_space, "QSTAC")


def test_registry_lists_and_errors():
    assert {"Pendulum-v1", "MultiGoal-v0", "Nav2DEasy-v0", "Nav2DMedium-v0", "Nav2DHard-v0"} <= set(
        sb3_stein.registered_dynamics_models()
    )
    with pytest.raises(ValueError, match=r"no dynamics model is registered for environment 'CartPole-v1'.*"):
        sb3_stein.make_dynamics_model("CartPole-v1")
    with pytest.raises(ValueError, match="already registered"):
        sb3_stein.register_dynamics_model("Pendulum-v1", PendulumDynamics)


def test_register_and_resolve_user_models(monkeypatch):
    monkeypatch.setattr(dyn, "_REGISTRY", dict(dyn._REGISTRY))
    sb3_stein.register_dynamics_model("MountainCarContinuous-v0", lambda env: _Shift(2))
    env = gym.make("MountainCarContinuous-v0")
    assert isinstance(dyn.resolve_dynamics_model("auto", env, "QSTAC"), _Shift)
    instance = _Shift(2)
    assert dyn.resolve_dynamics_model(instance, env, "QSTAC") is instance
    by_path = dyn.resolve_dynamics_model("sb3_stein.envs.pendulum:PendulumDynamics", None, "QSTAC")
    assert isinstance(by_path, PendulumDynamics)
    with pytest.raises(ValueError, match="cannot import module"):
        dyn.resolve_dynamics_model("no_such_pkg.mod:Thing", env, "QSTAC")
    with pytest.raises(TypeError, match="dynamics_model must be"):
        dyn.resolve_dynamics_model(3, env, "QSTAC")


def make_linear(env, size):  # a factory that needs more than the environment
    return nn.Linear(size, size)


def make_nothing(env):
    return "not a model"


#: A module-level model instance, as an import path may name one.
SHARED_MODEL = PendulumDynamics()


@pytest.mark.parametrize(
    ("path", "match"),
    [
        (f"{__name__}:make_linear", r"make_linear\(env, size\) needs arguments it cannot be given"),
        ("torch.nn:Linear", r"the class Linear\(in_features.*needs constructor arguments"),
        (f"{__name__}:make_nothing", r"make_nothing\(\.\.\.\) returned str, not a torch.nn.Module"),
        ("math:pi", r"is float 3.14159.*, neither a torch.nn.Module"),
        ("collections:OrderedDict", r"is the class OrderedDict, not a subclass of a torch.nn.Module"),
        ("sb3_stein.envs.nav2d", r"is module <module 'sb3_stein.envs.nav2d'.*neither a torch.nn.Module"),
        ("nav2d", "is not an import path"),
        ("sb3_stein.envs.nav2d:NoSuchModel", "has no attribute 'NoSuchModel'"),
    ],
)
def test_import_paths_that_give_no_model_are_clear_value_errors(path, match):
    with pytest.raises(ValueError, match=match) as error:
        dyn.resolve_dynamics_model(path, gym.make("Pendulum-v1"), "QSTAC")
    message = str(error.value)
    assert message.startswith(f"QSTAC: dynamics_model={path!r}")  # the parameter and the path
    if "import path of the form" not in message and "has no attribute" not in message:
        assert "Allowed: 'auto', a torch.nn.Module instance" in message  # and what is allowed


def test_import_paths_to_instances_classes_and_factories():
    env = gym.make("Pendulum-v1", g=3.7)
    assert dyn.resolve_dynamics_model(f"{__name__}:SHARED_MODEL", env, "QSTAC") is SHARED_MODEL
    by_class = dyn.resolve_dynamics_model("sb3_stein.envs.pendulum:PendulumDynamics", env, "QSTAC")
    assert by_class.g == pytest.approx(3.7)  # through from_env
    by_factory = dyn.resolve_dynamics_model(f"{__name__}:_Shift", env, "QSTAC")  # no from_env
    assert isinstance(by_factory, _Shift)


class _Shift(nn.Module):
    def __init__(self, obs_dim: int = 3):
        super().__init__()
        self.obs_dim = obs_dim

    def forward(self, obs, action):
        return obs + action.sum(-1, keepdim=True)


class _WrongShape(nn.Module):
    def forward(self, obs, action):
        return obs[..., :1]


class _WrongDtype(nn.Module):
    def forward(self, obs, action):
        return obs.double()


class _Broken(nn.Module):
    def forward(self, obs, action):
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    "model, match",
    [
        (_WrongShape(), r"to \(3, 2, 1\); expected the observation's shape \(3, 2, 3\)"),
        (_WrongDtype(), "must keep its inputs' dtype and device"),
        (_Broken(), "failed on a probe batch.*boom"),
    ],
)
def test_check_dynamics_model_rejects_mismatches(model, match):
    env = gym.make("Pendulum-v1")
    with pytest.raises(ValueError, match=match):
        dyn.check_dynamics_model(model, env.observation_space, env.action_space, "QSTAC")


def test_vec_normalize_observations_are_refused():
    venv = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1))
    with pytest.raises(ValueError, match="VecNormalize"):
        dyn.refuse_normalized_observations(venv, "QSTAC")
    dyn.refuse_normalized_observations(VecNormalize(make_vec_env("Pendulum-v1"), norm_obs=False), "QSTAC")


# ------------------------------------------------------------------ Nav2D environments
@pytest.mark.parametrize("level", list(LEVELS))
def test_nav2d_checkers_and_render(level):
    env = Nav2DEnv(level=level, render_mode="rgb_array")
    check_env(env, skip_render_check=False)
    sb3_check_env(Nav2DEnv(level=level))
    env.reset(seed=0)
    env.step(env.action_space.sample())
    frame = env.render()
    assert frame.shape == (400, 400, 3) and frame.dtype == np.uint8


def test_nav2d_reward_success_and_truncation():
    env = gym.make("Nav2DEasy-v0")
    _obs, _ = env.reset(seed=0)
    assert env.spec.max_episode_steps == 200
    inner = env.unwrapped
    inner._state = np.array([7.8, 7.8, 0.0, 0.0])
    _, reward, terminated, _, info = env.step(np.array([10.0, 10.0], dtype=np.float32))
    assert terminated and info["is_success"] and reward > 100.0
    # Progress telescopes: two steps' progress equals the change of distance.
    inner._state = np.array([-8.0, -8.0, 0.0, 0.0])
    rewards, costs = [], []
    start = np.linalg.norm(inner._state[:2] - inner.target)
    for _ in range(2):
        _, r, *_, info = env.step(np.array([10.0, 10.0], dtype=np.float32))
        rewards.append(r)
        costs.append(info["obstacle_cost"])
    end = info["distance"]
    assert sum(rewards) + sum(costs) == pytest.approx(10.0 * (start - end), rel=1e-6)


def test_hard_level_blocks_the_straight_line_but_not_the_detour():
    env = Nav2DEnv(level="hard")
    line = np.linspace([-8, -8], [8, 8], 200)
    detour = np.concatenate([np.linspace([-8, -8], [-8, 7], 100), np.linspace([-8, 7], [8, 8], 100)])
    assert env.obstacle_cost(line).max() > 10.0
    assert env.obstacle_cost(detour).max() < 1.0


def _drive_through(env, waypoints):
    """Return and success of a full-speed waypoint follower (a proportional velocity controller)."""
    obs, _ = env.reset(seed=0)
    ret, k = 0.0, 0
    for _ in range(200):
        if k < len(waypoints) - 1 and np.linalg.norm(obs[:2] - waypoints[k]) < 1.0:
            k += 1
        heading = np.asarray(waypoints[k]) - obs[:2]
        desired = 5.0 * heading / max(np.linalg.norm(heading), 1e-6)
        obs, reward, terminated, _, info = env.step(np.clip(10.0 * (desired - obs[2:]), -10, 10))
        ret += reward
        if terminated:
            break
    return ret, info["is_success"]


def test_hard_level_makes_pushing_through_the_wall_at_full_speed_cost_the_whole_reward():
    # Peak cost on a slow path is not enough: at full speed a thin wall is crossed in a few steps.
    env = Nav2DEnv(level="hard", start_noise=0.0)
    straight, straight_ok = _drive_through(env, [(8.0, 8.0)])
    detour, detour_ok = _drive_through(env, [(-7.0, 4.0), (-6.0, 7.0), (8.0, 8.0)])
    assert straight_ok and detour_ok
    assert straight < 0.1 * detour and detour > 250.0


def test_nav2d_bad_arguments():
    with pytest.raises(ValueError, match="level must be one of"):
        Nav2DEnv(level="extreme")
    with pytest.raises(ValueError, match=r"obstacles must be a \(K, 4\)"):
        Nav2DEnv(obstacles=[[0.0, 0.0, -1.0, 1.0]])


def test_nav2d_default_is_the_papers_double_integrator():
    # Q-STAC §V-A: x'' = u / m, no friction, by default; friction stays an option (and in the model).
    env = Nav2DEnv(mass=2.0, start_noise=0.0)
    assert env.friction == 0.0 and Nav2DDynamics().friction == 0.0
    env.reset(seed=0)
    env._state = np.array([0.0, 0.0, 1.0, -2.0])
    obs, *_ = env.step(np.array([3.0, 4.0], dtype=np.float32))
    v = np.array([1.0, -2.0]) + np.array([3.0, 4.0]) / 2.0 * env.dt
    np.testing.assert_allclose(obs, [*(v * env.dt), *v], rtol=1e-6)
    assert gym.make("Nav2DMedium-v0").unwrapped.friction == 0.0
    assert sb3_stein.make_dynamics_model(gym.make("Nav2DHard-v0", friction=0.1)).friction == 0.1
    _compare_on_random_transitions("Nav2DMedium-v0", _nav_state, n=50, friction=0.1)  # the old setting


# ------------------------------------------------------------------ OCP import paths (resolved like models)
def make_ocp_with_arguments(env, horizon):
    return CartPoleSwingUpOCP.from_env(env)


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("pkg:Missing", "cannot import module 'pkg'"),
        (f"{__name__}:make_ocp_with_arguments", r"make_ocp_with_arguments\(env, horizon\) needs arguments"),
        (f"{__name__}:make_nothing", r"returned str, not an OptimalControlProblem"),
        ("sb3_stein.envs.nav2d:Nav2DDynamics", "is the class Nav2DDynamics, not a subclass of an Optimal"),
        ("math:pi", "is float 3.14159.*, neither an OptimalControlProblem"),
    ],
)
def test_ocp_import_paths_name_the_ocp_parameter(path, match):
    with pytest.raises(ValueError, match=match) as error:
        resolve_ocp(path, gym.make("CartPoleSwingUp-v0"), "SACZOP")
    assert str(error.value).startswith(f"SACZOP: ocp={path!r}")
    assert "dynamics_model" not in str(error.value)


def test_ocp_import_path_to_a_class_uses_from_env():
    env = gym.make("CartPoleSwingUp-v0", x_threshold=1.5)
    ocp = resolve_ocp("sb3_stein.envs.cartpole_swingup:CartPoleSwingUpOCP", env, "SACZOP")
    assert isinstance(ocp, CartPoleSwingUpOCP) and ocp.x_threshold == 1.5
