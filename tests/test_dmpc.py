"""DMPC: the running cost of Eq. 14, the actor with an exact (LQR) value, learning, save/load, bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import scipy.linalg
import torch as th
from gymnasium import spaces
from stable_baselines3.common.noise import NormalActionNoise
from torch import nn

from sb3_stein import DMPC
from sb3_stein.common.backends import NUMPY, TORCH, Backend, rk4_step
from sb3_stein.common.mpc import MPCLayer
from sb3_stein.dmpc.problem import MLPValue, ValueMPCProblem, ValueNetwork

DT = 0.1


def _timed_double_integrator(x, u, be: Backend):
    """``obs = (position, velocity, goal, time_to_go)``: ``p' = v``, ``v' = u``, goal constant, time -1."""
    _, v, _, _ = be.split(x)
    (force,) = be.split(u)
    return be.stack([v, force, 0 * v, 0 * v - 1.0])


class TimedDoubleIntegratorModel(nn.Module):
    """The test task's dynamics (RK4 of :func:`_timed_double_integrator`) and reward."""

    dt = DT

    def continuous_dynamics(self, x, u, be: Backend):
        return _timed_double_integrator(x, u, be)

    def forward(self, obs: th.Tensor, action: th.Tensor) -> th.Tensor:
        return rk4_step(_timed_double_integrator, obs, action.clamp(-1.0, 1.0), self.dt, TORCH)

    def reward(self, obs, action, next_obs):
        return -(next_obs[..., 0] - next_obs[..., 2]).abs() * self.dt


class TimedDoubleIntegratorEnv(gym.Env):
    """Reach ``goal`` on a line within 2 s; reward ``-|p - goal| dt``; the deadline is terminal."""

    observation_space = spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32)
    action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = np.array([self.np_random.uniform(-1, 1), 0.0, 0.5, 2.0])
        return self.state.astype(np.float32), {}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float64).reshape(1), -1.0, 1.0)
        self.state = rk4_step(_timed_double_integrator, self.state, action, DT, NUMPY)
        reward = -abs(self.state[0] - self.state[2]) * DT
        return self.state.astype(np.float32), float(reward), bool(self.state[3] <= 1e-9), False, {}


class LinearModel:
    """``dx = (A x + B u) dt`` as a control-affine model (no time state)."""

    def __init__(self, a: np.ndarray, b: np.ndarray, dt: float) -> None:
        self.a, self.b, self.dt = a, b, dt

    def f(self, t, x):
        import casadi as ca

        return ca.DM(self.a) @ x if isinstance(x, (ca.SX, ca.MX)) else self.a @ x

    def g(self, t, x):
        import casadi as ca

        return ca.DM(self.b) if isinstance(x, (ca.SX, ca.MX)) else self.b


class QuadraticValue:
    """``V(x) = x' P x`` with ``P`` (row-major) as the parameters."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.n_params = n * n

    def symbolic(self, x, p):
        import casadi as ca

        return x.T @ ca.reshape(p, self.n, self.n).T @ x


def test_running_cost_equals_eq_14_by_finite_differences():
    """Eq. 14 with a quadratic value on a nonlinear control-affine model (the pendulum-like drift
    ``f = (v, -sin p)``, ``g = (0, 1 + p^2)``): the casadi expression vs central differences of V."""
    import casadi as ca

    class Pendulumish:
        dt = 0.05

        def continuous_dynamics(self, x, u, be):
            p, v = be.split(x)
            (force,) = be.split(u)
            return be.stack([v, -be.sin(p) + (1 + p**2) * force])

    value = QuadraticValue(2)
    problem = ValueMPCProblem(
        Pendulumish(), 2, np.array([-2.0]), np.array([2.0]), value, horizon=3, control_weight=0.5
    )
    rng = np.random.default_rng(0)
    m = rng.normal(size=(2, 2))
    big_p = m @ m.T + np.eye(2)
    x_sym = ca.SX.sym("x", 2)
    rate = ca.Function("l", [x_sym], [problem.running_cost_rate(x_sym, ca.DM(big_p.reshape(-1)))])
    for _ in range(5):
        x = rng.normal(size=2)
        h = 1e-6
        grad = np.array(
            [(x + h * e) @ big_p @ (x + h * e) - (x - h * e) @ big_p @ (x - h * e) for e in np.eye(2)]
        ) / (2 * h)
        f = np.array([x[1], -np.sin(x[0])])
        g = np.array([0.0, 1 + x[0] ** 2])
        rho = -np.log(0.99) / 0.05  # the discount's part of -d_t V (the default discount 0.99)
        expected = rho * x @ big_p @ x - f @ grad + 0.5 * (g @ grad) ** 2 / 0.5
        assert float(rate(x)) == pytest.approx(expected, rel=1e-6)


def test_with_the_lqr_value_the_actor_gives_the_lqr_control():
    """Continuous LQR ``min int x'Qx + 1/2 u'Ru``: ``V = x'Px`` (CARE with ``R/2``), ``u* = -2 R^-1 B'P x``.
    Eq. 14 turns ``V`` back into ``x'Qx``, so the MPC with that running cost and terminal ``V`` gives
    ``u*`` up to the time discretisation (dt = 0.01)."""
    a = np.array([[0.0, 1.0], [0.5, -0.1]])  # unstable
    b = np.array([[0.0], [1.0]])
    q, r = np.diag([1.0, 0.5]), np.array([[0.4]])
    big_p = scipy.linalg.solve_continuous_are(a, b, q, r / 2)
    gain = 2 * np.linalg.solve(r, b.T @ big_p)

    def problem(running_cost: bool) -> ValueMPCProblem:
        bounds = np.array([-50.0]), np.array([50.0])
        return ValueMPCProblem(
            LinearModel(a, b, 0.01),
            2,
            *bounds,
            QuadraticValue(2),
            horizon=20,
            control_weight=r[0, 0],
            discount=1.0,
            running_cost=running_cost,
        )

    layer = MPCLayer(problem(True), compiled=False)
    states = np.random.default_rng(1).normal(size=(6, 2))
    solution = layer.solve(states, np.tile(big_p.reshape(-1), (6, 1)))
    assert solution.success.all()
    np.testing.assert_allclose(solution.u0[:, 0], -(states @ gain.T)[:, 0], rtol=0.02, atol=0.01)
    # Without the running cost the horizon's costs are only the control's: a different, worse control.
    other = MPCLayer(problem(False), compiled=False).solve(states, np.tile(big_p.reshape(-1), (6, 1)))
    assert np.abs(other.u0 - solution.u0).max() > 0.05


def _discounted_lqr(
    rho: float = 2.0, dt: float = 0.01, horizon: int = 20, running_cost: bool = True
) -> tuple[ValueMPCProblem, np.ndarray, np.ndarray]:
    """Discounted LQR ``min int e^(-rho t) (x'Qx + 1/2 u'Ru)`` on an unstable plant: the actor's OCP with a
    quadratic value, the value's ``P`` (CARE of ``A - rho/2 I`` with ``R/2``) and the gain ``2 R^-1 B'P``."""
    a = np.array([[0.0, 1.0], [0.5, -0.1]])
    b = np.array([[0.0], [1.0]])
    q, r = np.diag([1.0, 0.5]), np.array([[0.4]])
    big_p = scipy.linalg.solve_continuous_are(a - rho / 2 * np.eye(2), b, q, r / 2)
    problem = ValueMPCProblem(
        LinearModel(a, b, dt),
        2,
        np.array([-50.0]),
        np.array([50.0]),
        QuadraticValue(2),
        horizon=horizon,
        control_weight=r[0, 0],
        discount=float(np.exp(-rho * dt)),
        running_cost=running_cost,
    )
    return problem, big_p, 2 * np.linalg.solve(r, b.T @ big_p)


def test_with_the_discounted_lqr_value_the_actor_gives_its_control():
    """Discounted LQR: ``V = x'Px`` solves the CARE of ``A - rho/2 I``, ``u* = -2 R^-1 B'P x``. The MPC
    discounts by ``gamma = e^(-rho dt)`` per stage; only with the ``rho V`` part of Eq. 14's ``-d_t V``
    does it give ``u*`` (the value estimates the cost from the current time, :mod:`sb3_stein.dmpc.problem`).
    """
    problem, big_p, gain = _discounted_lqr(rho=2.0)
    assert problem.discount_rate == pytest.approx(2.0)
    states = np.random.default_rng(2).normal(size=(6, 2))
    params = np.tile(big_p.reshape(-1), (6, 1))
    solution = MPCLayer(problem, compiled=False).solve(states, params)
    assert solution.success.all()
    np.testing.assert_allclose(solution.u0[:, 0], -(states @ gain.T)[:, 0], rtol=0.02, atol=0.01)


def test_with_the_running_cost_every_plan_costs_the_value_plus_a_nonnegative_term():
    """Why Eq. 14's running cost works, as a property of any value ``V`` (not only the optimal one): along
    any control, ``l + 1/2 u'Ru = rho V - dV/dt + 1/2 |R^(1/2) u + R^(-1/2) g' d_x V|^2``, so the discounted
    plan cost telescopes to ``V(x0)`` plus a nonnegative term that V's greedy control zeroes. The MPC's
    optimal cost is therefore ``V(x0)`` up to the time discretisation, for the LQR value and for wrong
    ones alike (a missing ``rho V`` or a sign error leaves the plan cheaper than ``V(x0)``)."""
    problem, lqr, _ = _discounted_lqr()
    layer = MPCLayer(problem, compiled=False)
    states = np.random.default_rng(2).normal(size=(6, 2))
    for big_p in (lqr, 0.5 * lqr, 2 * lqr, np.array([[1.0, 0.3], [0.3, 0.2]])):
        solution = layer.solve(states, np.tile(big_p.reshape(-1), (6, 1)))
        assert solution.success.all()
        plan_cost = solution.nlp_outputs["f"].reshape(-1)
        value = np.einsum("bi,ij,bj->b", states, big_p, states)
        gap = (plan_cost - value) / value
        assert np.all(gap >= 0) and np.all(gap < 0.03), gap  # measured: 0.0003 to 0.018


def test_with_the_running_cost_the_horizon_does_not_change_the_first_control():
    """The consequence of the identity above: when the greedy control ``-R^-1 g' d_x V`` of the value is
    feasible, it zeroes the nonnegative term, so the MPC's first control is that greedy control for *any*
    value and any horizon (up to the time discretisation). With Eq. 14 the horizon matters only through the
    control bounds, an extra running cost (Appendix B's stabilising cost) and the discretisation; without
    Eq. 14 (terminal value only) it changes the control."""
    states = np.random.default_rng(3).normal(size=(6, 2))
    wrong = np.array([[1.0, 0.3], [0.3, 0.2]])  # not the Riccati solution: a value the critic might learn
    params = np.tile(wrong.reshape(-1), (6, 1))
    greedy = -(2 / 0.4) * (states @ wrong)[:, 1]  # -R^-1 B' dV/dx with B = (0, 1), dV/dx = 2 P x
    first = {}
    for running_cost in (True, False):
        for horizon in (5, 40):
            problem, _, _ = _discounted_lqr(horizon=horizon, running_cost=running_cost)
            solution = MPCLayer(problem, compiled=False).solve(states, params)
            assert solution.success.all()
            first[running_cost, horizon] = solution.u0[:, 0]
    for horizon in (5, 40):
        np.testing.assert_allclose(first[True, horizon], greedy, rtol=0.03, atol=0.02)
    assert np.abs(first[False, 5] - first[False, 40]).max() > 0.1


def test_symbolic_value_equals_the_torch_network():
    import casadi as ca

    spec = MLPValue(4, (12, 12, 12), "tanh")
    net = ValueNetwork(spec)
    assert spec.n_params == sum(p.numel() for p in net.parameters())
    x_sym, p_sym = ca.SX.sym("x", 4), ca.SX.sym("p", spec.n_params)
    fn = ca.Function("v", [x_sym, p_sym], [spec.symbolic(x_sym, p_sym)])
    obs = np.random.default_rng(0).normal(size=(5, 4))
    expected = net(th.as_tensor(obs, dtype=th.float32)).detach().numpy()
    got = np.array([float(fn(o, net.flat_parameters())) for o in obs])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


FAST = dict(learning_starts=40, batch_size=16, horizon=4, seed=0, mpc_kwargs=dict(compiled=False))


def test_learns_a_few_hundred_steps_and_logs():
    model = DMPC("MlpPolicy", TimedDoubleIntegratorEnv(), dynamics_model=TimedDoubleIntegratorModel(), **FAST)
    before = model.policy.value.flat_parameters()
    model.learn(200)
    assert model._n_updates > 100
    assert not np.allclose(before, model.policy.value.flat_parameters())
    values = model.logger.name_to_value
    assert "train/value_loss" in values or model._n_updates > 0
    assert model.policy.acting["train"].stats["solves"] == 200
    assert model.policy.acting["train"].stats["failures"] == 0


@pytest.mark.parametrize("with_control_cost", [True, False])
def test_targets_hold_the_control_cost_of_eq_4(with_control_cost):
    """Eq. 11's cost is the path cost of Eq. 4 over a step: ``-r + 1/2 u'Ru dt`` with ``u`` the executed
    action in environment units (``control_cost_in_targets=False``: ``-r`` alone). With the target network's
    output zeroed, the logged mean target is the mean cost of the batch. The action box is [-2, 2] so that
    SB3's stored [-1, 1] actions must be unscaled."""

    class WideActions(TimedDoubleIntegratorEnv):
        action_space = spaces.Box(-2.0, 2.0, shape=(1,), dtype=np.float32)

    model = DMPC(
        "MlpPolicy",
        WideActions(),
        dynamics_model=TimedDoubleIntegratorModel(),
        control_weight=0.7,
        control_cost_in_targets=with_control_cost,
        action_noise=NormalActionNoise(np.zeros(1), np.ones(1)),  # actions across the whole box
        **{**FAST, "learning_starts": 1000},
    )
    model.learn(60)
    data = model.replay_buffer.sample(32)
    model.replay_buffer.sample = lambda *args, **kwargs: data  # type: ignore[method-assign]
    for parameter in model.policy.value_target.parameters():
        parameter.data.zero_()
    model.train(gradient_steps=1, batch_size=32)
    u = 2.0 * data.actions.numpy()  # SB3 stores the scaled action
    expected = -data.rewards.numpy()[:, 0] + with_control_cost * 0.5 * DT * 0.7 * (u**2).sum(-1)
    assert model.logger.name_to_value["train/target_mean"] == pytest.approx(expected.mean(), rel=1e-5)
    assert np.abs(u).max() > 1.0  # the control cost is not negligible in this batch
    with pytest.raises(ValueError, match="control_cost_in_targets"):
        DMPC(
            "MlpPolicy",
            TimedDoubleIntegratorEnv(),
            dynamics_model=TimedDoubleIntegratorModel(),
            control_cost_in_targets="yes",
            **FAST,
        )


def test_save_load_gives_identical_actions_and_training_continues(tmp_path):
    model = DMPC("MlpPolicy", TimedDoubleIntegratorEnv(), dynamics_model=TimedDoubleIntegratorModel(), **FAST)
    model.learn(100)
    model.save(tmp_path / "dmpc")
    loaded = DMPC.load(tmp_path / "dmpc", env=TimedDoubleIntegratorEnv())
    obs = np.array([[0.3, 0.0, 0.5, 1.5], [-0.8, 0.2, 0.5, 0.7]], dtype=np.float32)
    np.testing.assert_allclose(loaded.predict(obs)[0], model.predict(obs)[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(
        loaded.policy.value_target.flat_parameters(), model.policy.value_target.flat_parameters()
    )
    loaded.learn(20, reset_num_timesteps=False)


def test_the_actor_moves_towards_a_low_value():
    """With a value ``V = (p - goal)^2`` the first control pushes the position towards the goal."""
    model = DMPC(
        "MlpPolicy",
        TimedDoubleIntegratorEnv(),
        dynamics_model=TimedDoubleIntegratorModel(),
        **{**FAST, "control_weight": 0.05},
    )
    spec = model.policy.value.spec
    data = []
    rng = np.random.default_rng(0)
    for _ in range(400):
        o = rng.uniform([-1, -1, 0, 0], [1, 1, 1, 2])
        data.append((o, (o[0] - o[2]) ** 2))
    obs = th.as_tensor(np.array([d[0] for d in data]), dtype=th.float32)
    target = th.as_tensor(np.array([d[1] for d in data]), dtype=th.float32)
    optim = th.optim.Adam(model.policy.value.parameters(), lr=1e-2)
    for _ in range(300):
        optim.zero_grad()
        loss = ((model.policy.value(obs) - target) ** 2).mean()
        loss.backward()
        optim.step()
    model.policy.value_target.load_state_dict(model.policy.value.state_dict())
    assert spec.n_params == model.policy.mpc.n_phi
    actions, _ = model.predict(np.array([[-0.8, 0.0, 0.5, 1.5], [1.0, 0.0, 0.2, 1.5]], dtype=np.float32))
    assert actions[0, 0] > 0.1 and actions[1, 0] < -0.1, actions


class NoAffineModel(nn.Module):
    """A dynamics model with ``forward`` only: no control-affine form."""

    dt = DT

    def forward(self, obs: th.Tensor, action: th.Tensor) -> th.Tensor:
        return TimedDoubleIntegratorModel()(obs, action)


def test_bad_input_is_refused_naming_the_parameter():
    env = TimedDoubleIntegratorEnv()
    with pytest.raises(ValueError, match=r"dynamics_model.*control-affine"):
        DMPC("MlpPolicy", env, dynamics_model=NoAffineModel(), **FAST)
    with pytest.raises(ValueError, match="activation_fn"):
        DMPC(
            "MlpPolicy",
            env,
            dynamics_model=TimedDoubleIntegratorModel(),
            policy_kwargs=dict(activation_fn=nn.ReLU),
            **FAST,
        )
    with pytest.raises(ValueError, match="control_weight"):
        DMPC("MlpPolicy", env, dynamics_model=TimedDoubleIntegratorModel(), control_weight=0.0, **FAST)
    with pytest.raises(ValueError, match="stabilizing_weights"):
        DMPC("MlpPolicy", env, dynamics_model=TimedDoubleIntegratorModel(), stabilizing_weights=[1.0], **FAST)
    with pytest.raises(ValueError, match="horizon"):
        DMPC("MlpPolicy", env, dynamics_model=TimedDoubleIntegratorModel(), **{**FAST, "horizon": 0})
    with pytest.raises(ValueError, match=r"action space|Box"):
        DMPC("MlpPolicy", "CartPole-v1", dynamics_model=TimedDoubleIntegratorModel())


def test_a_model_that_is_not_control_affine_is_refused():
    from sb3_stein.common.control_affine import control_affine_form

    class Square:
        dt = 0.1

        def continuous_dynamics(self, x, u, be):
            (force,) = be.split(u)
            return be.stack([be.split(x)[1], force**2])

    with pytest.raises(ValueError, match="not affine in the control"):
        control_affine_form(Square(), 2, 1)


def test_dmpc_on_ballbot_learns_and_the_paths_benchmark_draws_it(tmp_path, monkeypatch):
    """Ballbot-v0 through DMPC (the registered model, Appendix B's stabilising cost), then
    benchmarks/dmpc_paths.py's episodes and picture from two of the benchmark starts."""
    from benchmark_script import load_benchmark

    model = DMPC(
        "MlpPolicy",
        "Ballbot-v0",
        learning_starts=40,
        batch_size=16,
        horizon=5,
        control_weight=0.1,
        stabilizing_weights=[0, 0, 10, 10, 0, 0, 1, 1, 0, 0, 0, 0],
        seed=0,
    )
    model.learn(80)
    assert model._n_updates > 0 and model.policy.acting["train"].stats["failures"] == 0
    bench = load_benchmark("dmpc_paths")
    monkeypatch.setattr(bench, "BENCHMARK_STARTS", bench.BENCHMARK_STARTS[:2])
    episodes = bench.run_episodes(model)
    assert len(episodes) == 2 and all(e["steps"] >= 1 for e in episodes)
    assert np.allclose(episodes[0]["path"][0], bench.BENCHMARK_STARTS[0], atol=1e-6)
    picture = bench.draw(episodes, size=128)
    assert picture.shape == (128, 128, 3) and picture.dtype == np.uint8
    assert bench.algorithm_class("dmpc") is DMPC and bench.algorithm_class("sac").__name__ == "SAC"
    # benchmarks/dmpc_plan_gap.py on the same model: J* is V(x0) plus a nonnegative term (up to dt).
    gap = load_benchmark("dmpc_plan_gap")
    states = gap.visited_states(model, gym.make("Ballbot-v0"), episodes=1, every=30)
    result = gap.plan_gap(model, states)
    assert result["success"].all()
    assert np.all(result["plan_cost"] - result["value"] > -0.05 * np.abs(result["value"]) - 1e-3)
    assert result["greedy"].shape == (len(states), 3) and np.all(np.isfinite(result["greedy"]))


def test_a_model_whose_state_does_not_match_the_observation_is_refused():
    """The MPC's state is the value's input (the observation): a model whose ODE has another size is
    refused at construction, naming dynamics_model and both shapes."""

    class ThreeStates(TimedDoubleIntegratorModel):
        def continuous_dynamics(self, x, u, be):
            return be.stack(be.split(_timed_double_integrator(x, u, be))[:3])

    with pytest.raises(ValueError, match=r"dynamics_model.*shape \(3,\).*expected \(4,\)"):
        DMPC("MlpPolicy", TimedDoubleIntegratorEnv(), dynamics_model=ThreeStates(), **FAST)
