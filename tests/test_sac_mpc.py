"""SAC-ZOP, SAC-FOP and SAC-FOA: learning runs on the lecture's environments, what each variant
trains on, masking of failed solves, violation counting, acting fallbacks, save/load, bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from benchmark_script import load_benchmark
from gymnasium import spaces
from sb3_stein.envs.cartpole_swingup import CartPoleSwingUpOCP
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

import sb3_stein
from sb3_stein import SACFOA, SACFOP, SACZOP
from sb3_stein.common.mpc import MPCLayer, MPCSolution

ALGOS = (SACZOP, SACFOP, SACFOA)
ENVS = ("CartPoleSwingUp-v0", "PointMassWindMaze-v0", "Chain-v0")

# Small and quick: the Chain's MPC (21 states, 20 stages) costs ~25 ms per solve.
FAST = dict(learning_starts=120, batch_size=8, train_freq=4, seed=0, policy_kwargs=dict(net_arch=[32, 32]))


@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("cls", ALGOS, ids=lambda c: c.__name__)
def test_learns_a_few_hundred_steps(cls, env_id):
    steps = 140 if env_id == "Chain-v0" else 200  # the Chain's MPC is ~20x costlier
    model = cls("MlpPolicy", env_id, **FAST)
    model.learn(steps)
    assert model._n_updates >= 5
    counts = model.violation_counts
    assert counts["steps"] == steps
    assert model.policy.act_stats["solves"] == steps
    # What the buffer stores: parameters (ZOP) or actions (FOP, FOA), in [-1, 1].
    stored = model.replay_buffer.actions[: model.replay_buffer.pos, 0]
    width = model.policy.parameter_space.shape[0] if cls is SACZOP else model.action_space.shape[0]
    assert stored.shape == (steps, width)
    assert np.abs(stored).max() <= 1.0 and np.isfinite(stored).all()
    for name, param in model.actor.named_parameters():
        assert th.isfinite(param).all(), name


def test_parameter_policy_acts_through_the_mpc_and_stores_parameters():
    model = SACZOP("MlpPolicy", "CartPoleSwingUp-v0", **FAST)
    assert model.policy.parameter_space.shape == (1,)
    assert model.critic.q_networks[0][0].in_features == 4 + 1  # Q(s, phi)
    obs = model.env.reset()
    with th.no_grad():
        obs_t = model.policy.obs_to_tensor(obs)[0]
        phi = model.policy.params_from_scaled(model.policy.sample_params(obs_t, deterministic=True))
    expected = model.policy.mpc.solve(obs.astype(np.float64), phi.double().numpy()).u0
    model.policy.reset_warm_start()
    action, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(action, expected, rtol=1e-4, atol=1e-4)


def test_zop_updates_never_call_the_mpc(monkeypatch):
    model = SACZOP("MlpPolicy", "PointMassWindMaze-v0", **FAST)
    model.learn(130)  # collects; few updates

    def forbidden(*args, **kwargs):
        raise AssertionError("SAC-ZOP called the MPC in an update")

    monkeypatch.setattr(model.policy.mpc, "solve", forbidden)
    before = [p.detach().clone() for p in model.actor.parameters()]
    model.train(gradient_steps=3, batch_size=8)
    assert any(not th.equal(a, b) for a, b in zip(before, model.actor.parameters()))


def test_fop_actor_gradient_flows_through_the_mpc(monkeypatch):
    model = SACFOP("MlpPolicy", "PointMassWindMaze-v0", **FAST)
    model.learn(130)
    calls = []
    original = MPCLayer.vjp

    def counting(self, solution, grad_u0):
        calls.append(np.abs(grad_u0).sum())
        return original(self, solution, grad_u0)

    monkeypatch.setattr(MPCLayer, "vjp", counting)
    mu = model.actor.mu.weight.detach().clone()
    model.train(gradient_steps=2, batch_size=8)
    assert len(calls) == 2 and all(c > 0 for c in calls)  # one backward through the MPC per step
    assert not th.equal(mu, model.actor.mu.weight)
    assert model.critic.q_networks[0][0].in_features == 6 + 2  # Q(s, a)


def _failing(original, every: int):
    """A solve that flags rows ``0, every, 2 every, ...`` as failed."""

    def solve(self, states, params, initial_guess=None):
        solution: MPCSolution = original(self, states, params, initial_guess)
        solution.success[::every] = False
        return solution

    return solve


def test_fop_masks_failed_solves_and_refuses_a_batch_where_all_fail(monkeypatch):
    model = SACFOP("MlpPolicy", "PointMassWindMaze-v0", **FAST)
    model.learn(130)
    monkeypatch.setattr(MPCLayer, "solve", _failing(MPCLayer.solve, every=2))
    model.train(gradient_steps=2, batch_size=8)
    for param in model.actor.parameters():
        assert th.isfinite(param).all()
    monkeypatch.setattr(MPCLayer, "solve", _failing(MPCLayer.solve, every=1))
    with pytest.raises(RuntimeError, match="MPC failed on every sample of a batch of 8"):
        model.train(gradient_steps=1, batch_size=8)


def test_acting_falls_back_to_a_safe_action_and_counts(monkeypatch):
    model = SACZOP("MlpPolicy", "CartPoleSwingUp-v0", **FAST)
    obs = model.env.reset()
    model.predict(obs, deterministic=True)  # one good plan
    plan = model.policy.acting["predict"].plans.copy()
    monkeypatch.setattr(MPCLayer, "solve", _failing(MPCLayer.solve, every=1))
    action, _ = model.predict(obs, deterministic=True)
    # The previous successful plan's next control, and a counted failure.
    np.testing.assert_allclose(action, model.policy.mpc.fallback_controls(plan, 1), rtol=1e-5, atol=1e-5)
    assert model.policy.acting["predict"].stats["failures"] == 1
    model.policy.reset_warm_start()
    action, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(action, [[0.0]], atol=1e-6)  # no plan yet: the middle of the bounds
    assert model.policy.acting["predict"].stats["failures"] == 2
    assert model.policy.act_stats["failures"] == 0  # training rollouts count their own


def test_action_noise_violates_constraints_and_parameter_noise_does_not():
    kwargs = {**FAST, "learning_starts": 1000}  # no update: just the exploration of each variant
    zop = SACZOP("MlpPolicy", "PointMassWindMaze-v0", **kwargs)
    zop.learn(150)
    foa = SACFOA("MlpPolicy", "PointMassWindMaze-v0", **{**kwargs, "policy_kwargs": dict(log_std_init=0.0)})
    foa.learn(150)
    zop_actions = zop.policy.mpc.ocp.action_violation
    assert zop.violation_counts["violating_steps"] <= zop.violation_counts["steps"]
    assert not zop_actions(np.array([[10.0, -10.0]])).any() and zop_actions(np.array([[10.1, 0.0]])).all()
    # ZOP's actions come out of the MPC: never outside its control bounds.
    stored = zop.replay_buffer.actions[:150, 0]
    assert stored.shape[1] == 10
    assert foa.violation_counts["violating_steps"] > 0.3 * foa.violation_counts["steps"]
    assert foa.violation_counts["episodes"] >= 1


def test_state_violations_count_the_terminal_state():
    model = SACZOP("MlpPolicy", "CartPoleSwingUp-v0", **FAST)
    model._pending_violation = np.array([False])
    inside, outside = np.zeros((1, 4), np.float32), np.array([[2.5, 0, 0, 0]], np.float32)
    model._count_violations(inside, np.array([True]), [{"terminal_observation": outside[0]}])
    model._count_violations(inside, np.array([False]), [{}])
    assert model.violation_counts == {
        "steps": 2,
        "violating_steps": 1,
        "episodes": 1,
        "violating_episodes": 1,
    }
    env_says = [{"violation": True, "terminal_observation": inside[0]}]  # e.g. 1e-9 past a bound
    model._count_violations(inside, np.array([True]), env_says)
    assert model.violation_counts["violating_episodes"] == 2  # the environment's own verdict counts


@pytest.mark.parametrize("cls", ALGOS, ids=lambda c: c.__name__)
def test_save_load_gives_identical_deterministic_actions(cls, tmp_path):
    model = cls("MlpPolicy", "CartPoleSwingUp-v0", **FAST)
    model.learn(150)
    model.save(tmp_path / "model")
    loaded = cls.load(tmp_path / "model", env=make_vec_env("CartPoleSwingUp-v0", n_envs=1))
    obs = np.array([[0.3, 2.0, -0.5, 1.0], [0.0, 3.1, 0.0, 0.0]], dtype=np.float32)
    model.policy.reset_warm_start()
    np.testing.assert_allclose(
        loaded.predict(obs, deterministic=True)[0],
        model.predict(obs, deterministic=True)[0],
        rtol=1e-5,
        atol=1e-5,
    )
    assert loaded.violation_counts == model.violation_counts
    assert loaded.target_entropy == model.target_entropy
    assert loaded.policy.mpc.param_interface == "global"
    loaded.learn(20, reset_num_timesteps=False)  # training continues


def test_entropy_targets_live_in_parameter_space_for_zop_fop_and_action_space_for_foa():
    env = "PointMassWindMaze-v0"
    assert SACZOP("MlpPolicy", env, **FAST).target_entropy == -10.0
    assert SACFOP("MlpPolicy", env, **FAST).target_entropy == -10.0
    assert SACFOA("MlpPolicy", env, **FAST).target_entropy == -2.0
    stage = SACZOP("MlpPolicy", env, param_interface="stage", **FAST)
    assert stage.policy.parameter_space.shape == (21 * 10,) and stage.target_entropy == -210.0


def test_stage_interface_learns():
    model = SACFOP("MlpPolicy", "CartPoleSwingUp-v0", param_interface="stage", **FAST)
    model.learn(150)
    assert model.policy.parameter_space.shape == (6,)
    assert model._n_updates > 0


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_are_refused_with_clear_errors():
    with pytest.raises(ValueError, match="Box action space"):
        SACZOP("MlpPolicy", "CartPole-v1")
    with pytest.raises(ValueError, match=r"no OCP is registered for environment 'Pendulum-v1'.*Chain-v0"):
        SACZOP("MlpPolicy", "Pendulum-v1")
    with pytest.raises(ValueError, match=r"control_dim=1 .* cannot drive this environment"):
        SACFOP("MlpPolicy", "PointMassWindMaze-v0", ocp=CartPoleSwingUpOCP())
    with pytest.raises(ValueError, match="param_interface must be one of"):
        SACZOP("MlpPolicy", "CartPoleSwingUp-v0", param_interface="per_stage")
    with pytest.raises(ValueError, match="action_noise must be None"):
        from stable_baselines3.common.noise import NormalActionNoise

        SACFOA("MlpPolicy", "CartPoleSwingUp-v0", action_noise=NormalActionNoise(np.zeros(1), np.ones(1)))
    with pytest.raises(ValueError, match="VecNormalize"):
        SACZOP("MlpPolicy", VecNormalize(make_vec_env("CartPoleSwingUp-v0", n_envs=1)))
    with pytest.raises(ValueError, match="solver must be one of"):
        SACZOP("MlpPolicy", "CartPoleSwingUp-v0", mpc_kwargs=dict(solver="acados"))


def test_an_ocp_with_infeasible_bounds_is_refused():
    ocp = CartPoleSwingUpOCP()
    ocp.param_low = np.array([1.0])
    ocp.param_high = np.array([-1.0])
    with pytest.raises(ValueError, match="param_low < param_high"):
        SACZOP("MlpPolicy", "CartPoleSwingUp-v0", ocp=ocp)


def test_an_ocp_for_other_observations_is_refused():
    ocp = CartPoleSwingUpOCP()
    ocp.state_dim = 5  # e.g. an OCP written for a cart-pole that also observes its motor current
    with pytest.raises(ValueError, match=r"states of shape \(4,\), expected \(5,\)"):
        SACZOP("MlpPolicy", "CartPoleSwingUp-v0", ocp=ocp)


def test_an_ocp_that_cannot_be_built_is_refused():
    from sb3_stein.envs.windmaze import WindMazeOCP

    ocp = WindMazeOCP()  # its costs index two controls
    ocp.u_low, ocp.u_high, ocp.control_dim = np.array([-10.0]), np.array([10.0]), 1
    with pytest.raises(ValueError, match="could not build the MPC for WindMazeOCP"):
        MPCLayer(ocp)


# ----------------------------------------------------------------------------- warm starts of updates


def test_plan_buffer_returns_each_sample_its_own_plan():
    from gymnasium import spaces

    from sb3_stein.sac_mpc.buffers import MPCReplayBuffer

    box = spaces.Box(-1.0, 1.0, (2,), np.float32)
    buffer = MPCReplayBuffer(300, box, box, device="cpu", n_envs=3, plan_size=4)  # 100 rows per env
    for t in range(40):
        obs = np.array([[t, env] for env in range(3)], dtype=np.float32)
        buffer.pending_plans = np.array([[t, env, 0, 1] for env in range(3)], dtype=np.float32)
        buffer.add(obs, obs, np.zeros((3, 2)), np.zeros(3), np.zeros(3), [{} for _ in range(3)])
    samples = buffer.sample(64)
    np.testing.assert_array_equal(buffer.sampled_plans[:, :2], samples.observations.numpy())
    buffer.add(obs, obs, np.zeros((3, 2)), np.zeros(3), np.zeros(3), [{} for _ in range(3)])  # no plan given
    assert not buffer.plans[40].any()


def test_fop_updates_warm_start_from_the_plans_the_agent_acted_with(monkeypatch):
    model = SACFOP("MlpPolicy", "CartPoleSwingUp-v0", **FAST)
    model.learn(130)
    guesses = []
    original = MPCLayer.solve

    def recording(self, states, params, initial_guess=None):
        guesses.append((np.array(states), None if initial_guess is None else np.array(initial_guess)))
        return original(self, states, params, initial_guess)

    monkeypatch.setattr(MPCLayer, "solve", recording)
    model.train(gradient_steps=1, batch_size=8)
    (actor_states, actor_guess), (target_states, target_guess) = guesses
    plans = model.replay_buffer.sampled_plans
    np.testing.assert_allclose(actor_guess[:, 4:], plans[:, 4:])  # the acted plan, at s
    np.testing.assert_allclose(actor_guess[:, :4], actor_states)
    np.testing.assert_allclose(target_guess[:, 4:], model.policy.mpc.shift(plans)[:, 4:])  # shifted, at s'
    np.testing.assert_allclose(target_guess[:, :4], target_states)


def test_violation_report_reads_the_saved_models(tmp_path):

    module = load_benchmark("sac_mpc_violations")

    model = SACFOA("MlpPolicy", "CartPoleSwingUp-v0", **FAST)
    model.violation_counts = {"steps": 200, "violating_steps": 50, "episodes": 4, "violating_episodes": 3}
    run = tmp_path / "logs" / "seed_1" / "sac_foa" / "CartPoleSwingUp-v0_1"
    model.save(run / "CartPoleSwingUp-v0")
    table = module.collect(tmp_path)
    assert table[("sac_foa", "CartPoleSwingUp-v0")][0]["seed"] == 1
    assert (
        "| CartPoleSwingUp-v0 | sac_foa | 1 | 25.00 % (seeds: 25.0) | 75.0 % (seeds: 75.0) |"
        in module.report(table)
    )


def test_load_without_an_env_acts_like_the_saved_model(tmp_path):
    model = SACZOP("MlpPolicy", "PointMassWindMaze-v0", **FAST)
    model.save(tmp_path / "model")
    loaded = SACZOP.load(tmp_path / "model")  # what rl_zoo3's enjoy does
    obs = model.env.reset()
    model.policy.reset_warm_start()
    np.testing.assert_allclose(
        loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
    )


def test_terminal_next_states_need_no_solve_and_stay_in_the_critic_loss(monkeypatch):
    model = SACFOP("MlpPolicy", "PointMassWindMaze-v0", **FAST)
    model.learn(130)
    model.replay_buffer.dones[: model.replay_buffer.pos] = 1.0  # every sampled s' is terminal
    calls = []
    original = MPCLayer.solve

    def target_fails(self, states, params, initial_guess=None):
        solution = original(self, states, params, initial_guess)
        calls.append(len(calls))
        if len(calls) % 2 == 0:  # the second solve of a step is the target's, at s'
            solution.success[:] = False
        return solution

    monkeypatch.setattr(MPCLayer, "solve", target_fails)
    before = [p.detach().clone() for p in model.critic.parameters()]
    model.train(gradient_steps=1, batch_size=8)  # no "failed on every sample" error
    assert any(not th.equal(a, b) for a, b in zip(before, model.critic.parameters()))


def test_predict_forgets_the_plan_at_an_episode_start_and_keeps_training_plans_apart(monkeypatch):
    model = SACZOP("MlpPolicy", "CartPoleSwingUp-v0", **FAST)
    obs = model.env.reset()
    model.predict(obs, episode_start=np.array([True]), deterministic=True)  # as evaluate_policy starts
    assert model.policy.acting["predict"].has_plan.all()
    assert model.policy.acting["train"].plans.shape == (0, 0)  # evaluation never touches training plans
    monkeypatch.setattr(MPCLayer, "solve", _failing(MPCLayer.solve, every=1))
    action, _ = model.predict(obs, episode_start=np.array([True]), deterministic=True)
    np.testing.assert_allclose(action, [[0.0]], atol=1e-6)  # no plan of the new episode: middle


def test_load_with_an_env_and_an_unregistered_ocp(tmp_path):
    from gymnasium.wrappers import TimeLimit
    from sb3_stein.envs.cartpole_swingup import CartPoleSwingUpEnv

    env = TimeLimit(CartPoleSwingUpEnv(), 200)  # no registered id: the OCP must come with the model
    model = SACZOP("MlpPolicy", env, ocp=CartPoleSwingUpOCP(), **FAST)
    model.save(tmp_path / "model")
    loaded = SACZOP.load(tmp_path / "model", env=env)
    assert isinstance(loaded.policy.mpc.ocp, CartPoleSwingUpOCP)


def test_ocp_bounds_given_as_lists_are_normalised():
    ocp = CartPoleSwingUpOCP()
    ocp.u_low, ocp.u_high = [-80.0], [80.0]
    ocp.validate()
    assert ocp.action_violation(np.array([[81.0], [0.0]])).tolist() == [True, False]


def test_register_ocp_makes_auto_find_it_and_refuses_duplicates(monkeypatch):
    from sb3_stein.common import ocp as ocp_module

    monkeypatch.setitem(ocp_module._REGISTRY, "MyCartPole-v0", lambda env: CartPoleSwingUpOCP(horizon=3))
    assert "MyCartPole-v0" in sb3_stein.registered_ocps()
    with pytest.raises(ValueError, match="an OCP is already registered for 'MyCartPole-v0'"):
        sb3_stein.register_ocp("MyCartPole-v0", CartPoleSwingUpOCP)
    resolved = ocp_module.resolve_ocp("auto", "MyCartPole-v0", "test")
    assert resolved.horizon == 3
    with pytest.raises(TypeError, match="factory must be callable"):
        sb3_stein.register_ocp("Other-v0", 3)


# ----------------------------------------------------------------------------- diagnostics


def _recording_logger(model):
    recorded = {}
    original = model.logger.record

    def record(key, value, exclude=None):
        recorded[key] = value
        original(key, value, exclude)

    model.logger.record = record
    return recorded


def test_fop_logs_first_controls_at_a_bound_and_the_sensitivity_norm(monkeypatch):
    model = SACFOP("MlpPolicy", "CartPoleSwingUp-v0", **FAST)
    model.learn(130)
    model.du0_dphi_interval = 1  # the sensitivity norm on every update
    solutions = []
    original = MPCLayer.solve

    def recording(self, states, params, initial_guess=None):
        solution = original(self, states, params, initial_guess)
        solutions.append((np.array(states), np.array(params), solution))
        return solution

    monkeypatch.setattr(MPCLayer, "solve", recording)
    recorded = _recording_logger(model)
    model.train(gradient_steps=2, batch_size=8)
    monkeypatch.setattr(MPCLayer, "solve", original)
    actor = [solutions[0], solutions[2]]  # each gradient step solves at s (actor), then at s' (target)
    layer, force_max = model.policy.mpc, 80.0
    margin = np.sqrt(layer.tol) * (1.0 + force_max)  # the interior point's distance to an active bound
    shares = [np.mean(np.abs(sol.u0[sol.success]) >= force_max - margin) for _, _, sol in actor]
    assert recorded["train/mpc_u0_at_bound"] == pytest.approx(np.mean(shares))
    # The last step's mean |d a / d phi| in [-1, 1] units, against central differences that restart
    # from the solution itself (the swing-up OCP is non-convex: stay on the same local solution).
    states, params, solution = actor[-1]
    h, fd = 1e-5, []
    for b in np.flatnonzero(solution.success):
        plus, minus = params[b : b + 1] + h, params[b : b + 1] - h
        guess = solution.z[b : b + 1]
        du = layer.solve(states[b : b + 1], plus, guess).u0 - layer.solve(states[b : b + 1], minus, guess).u0
        fd.append(abs(du[0, 0] / (2 * h)))
    low, high = model.policy.parameter_space.low[0], model.policy.parameter_space.high[0]
    expected = np.mean(fd) * (2.0 / (2 * force_max)) * (high - low) / 2.0
    assert recorded["train/mpc_du0_dphi_norm"] == pytest.approx(expected, rel=1e-3, abs=1e-6)
    norms = model.policy.scaled_sensitivity_norms(solution)
    at_bound = layer.controls_at_bound(solution.u0)[:, 0] & solution.success
    np.testing.assert_allclose(norms[at_bound], 0.0, atol=1e-9)  # saturated: no actor gradient


def test_acting_counts_first_controls_at_a_bound_and_logs_the_share_per_window():
    model = SACZOP("MlpPolicy", "CartPoleSwingUp-v0", **{**FAST, "learning_starts": 1000})
    obs = np.array([[0.0, 0.0, 0.0, 0.0], [0.5, 3.0, 0.0, 0.0], [0.0, 0.1, 0.0, 0.0]], dtype=np.float32)
    actions, _ = model.predict(obs, deterministic=True)
    stats = model.policy.acting["predict"].stats
    assert stats["failures"] == 0 and stats["u0_solved"] == 3
    assert stats["u0_at_bound"] == int(model.policy.mpc.controls_at_bound(actions).sum())
    model.learn(40)  # no update: acting only
    recorded = _recording_logger(model)
    act = model.policy.act_stats
    model.dump_logs()
    assert recorded["mpc/act_u0_at_bound"] == pytest.approx(act["u0_at_bound"] / act["u0_solved"])
    act["u0_solved"] += 4  # the next window: 4 more controls, one at a bound
    act["u0_at_bound"] += 1
    model.dump_logs()
    assert recorded["mpc/act_u0_at_bound"] == pytest.approx(0.25)


# ----------------------------------------------------------------------------- more bad input


class _DictObservationEnv(gym.Env):
    """A Dict observation space with a Box action space: refused before SB3's policy check."""

    observation_space = spaces.Dict({"x": spaces.Box(-1.0, 1.0, (4,), np.float32)})
    action_space = spaces.Box(-80.0, 80.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        return {"x": np.zeros(4, np.float32)}, {}

    def step(self, action):
        return {"x": np.zeros(4, np.float32)}, 0.0, False, False, {}


@pytest.mark.parametrize("cls", ALGOS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(ent_coef=0.0), "ent_coef must be"),
        (dict(ent_coef=-1.0), "ent_coef must be"),
        (dict(ent_coef="auto_0"), "ent_coef must be"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(target_update_interval=0), "target_update_interval must be an integer >= 1"),
    ],
)
def test_settings_that_fail_later_are_refused_at_construction(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls("MlpPolicy", "CartPoleSwingUp-v0", **kwargs)


@pytest.mark.parametrize("cls", ALGOS, ids=lambda c: c.__name__)
def test_dict_observations_are_refused_naming_what_is_supported(cls):
    with pytest.raises(ValueError, match="flat observation spaces only") as info:
        cls("MlpPolicy", _DictObservationEnv(), ocp=CartPoleSwingUpOCP())
    assert "use MultiInputPolicy" not in str(info.value)


def _normalized(norm_obs: bool = True) -> VecNormalize:
    return VecNormalize(make_vec_env("CartPoleSwingUp-v0", n_envs=1), norm_obs=norm_obs)


@pytest.mark.parametrize("cls", ALGOS, ids=lambda c: c.__name__)
def test_set_env_refuses_normalized_observations(cls):
    model = cls("MlpPolicy", "CartPoleSwingUp-v0", **FAST)
    with pytest.raises(ValueError, match=r"VecNormalize\(norm_obs=True\)"):
        model.set_env(_normalized())
    model.set_env(_normalized(norm_obs=False))  # normalised rewards only: the MPC sees raw states
    assert model.get_vec_normalize_env() is not None


@pytest.mark.parametrize("cls", ALGOS, ids=lambda c: c.__name__)
def test_load_with_an_env_refuses_normalized_observations(cls, tmp_path):
    cls("MlpPolicy", "CartPoleSwingUp-v0", **FAST).save(tmp_path / "model")
    with pytest.raises(ValueError, match=r"VecNormalize\(norm_obs=True\)"):
        cls.load(tmp_path / "model", env=_normalized())
    assert cls.load(tmp_path / "model", env=_normalized(norm_obs=False)).get_vec_normalize_env() is not None


@pytest.mark.parametrize(
    ("ocp", "match"),
    [
        ("no_such_package_xyz:Missing", r"ocp='no_such_package_xyz:Missing': cannot import module"),
        ("sb3_stein:NoSuchOCP", r"ocp='sb3_stein:NoSuchOCP': 'sb3_stein' has no attribute"),
        ("numpy:linspace", r"ocp='numpy:linspace': linspace.* needs arguments"),
    ],
)
def test_ocp_import_path_errors_name_the_ocp_parameter(ocp, match):
    # The message comes from the registry (common/ocp.py); what SAC-ZOP/FOP/FOA users see is checked here.
    with pytest.raises(ValueError, match=match) as info:
        SACFOP("MlpPolicy", "CartPoleSwingUp-v0", ocp=ocp)
    assert "dynamics_model" not in str(info.value)


def test_mapped_mpc_learns_and_logs_retries_without_iteration_counts():
    """``mpc_kwargs={"batch_mode": "map"}`` (the compiled layer's default): SAC-FOP learns, the
    iteration counts (unknown for mapped solves) are not averaged in, the retry rates are logged."""
    model = SACFOP("MlpPolicy", "CartPoleSwingUp-v0", **FAST, mpc_kwargs={"batch_mode": "map"})
    assert model.policy.mpc.mapped
    from stable_baselines3.common.logger import configure

    model.set_logger(configure(None, []))
    recorded = _recording_logger(model)
    model.learn(200)
    assert model._n_updates >= 5
    act = model.policy.act_stats
    assert act["solves"] == 200 and act["iteration_solves"] == 0 and act["iterations"] == 0
    model.dump_logs()
    assert "mpc/act_iterations" not in recorded and "train/mpc_iterations" not in recorded
    assert 0.0 <= recorded["mpc/retry_rate"] <= 1.0 and 0.0 <= recorded["train/mpc_retry_rate"] <= 1.0


def test_fop_with_a_control_barrier_learns_saves_and_keeps_saturated_gradients_alive(tmp_path):
    """``mpc_kwargs=dict(control_barrier=mu)`` reaches the layer, survives save/load, and the actor
    batch's first controls near the bound keep a nonzero ``d a / d phi`` (exactly zero without it)."""
    model = SACFOP("MlpPolicy", "CartPoleSwingUp-v0", mpc_kwargs=dict(control_barrier=10.0), **FAST)
    assert model.policy.mpc.control_barrier == 10.0
    model.learn(130)
    model.save(tmp_path / "model")
    loaded = SACFOP.load(tmp_path / "model")
    assert loaded.policy.mpc.control_barrier == 10.0
    obs = th.as_tensor(model.replay_buffer.sample(32).observations)  # type: ignore[union-attr]
    with th.no_grad():
        solution = model._actor_actions(obs).solution
    near = (80.0 - np.abs(solution.u0[:, 0]) < 1.0) & solution.success
    assert near.any(), "the batch must hold first controls near the +-80 N bound"
    assert np.all(np.abs(solution.u0) < 80.0)
    assert model.policy.scaled_sensitivity_norms(solution)[near].min() > 1e-4


def test_fop_with_the_riccati_solver_learns_logs_fallbacks_and_saves_it(tmp_path):
    """``mpc_kwargs={"solver": "riccati"}`` reaches the layer, SAC-FOP learns through it (its updates solve
    batches warm-started from the acting plans), the fallback rates are logged, and save/load keeps it."""
    model = SACFOP("MlpPolicy", "CartPoleSwingUp-v0", **FAST, mpc_kwargs={"solver": "riccati"})
    assert model.policy.mpc.solver_name == "riccati"
    from stable_baselines3.common.logger import configure

    model.set_logger(configure(None, []))
    recorded = _recording_logger(model)
    model.learn(200)
    assert model._n_updates >= 5
    model.dump_logs()
    assert 0.0 <= recorded["mpc/fallback_rate"] <= 1.0 and 0.0 <= recorded["train/mpc_fallback_rate"] <= 1.0
    assert model.policy.act_stats["failures"] < model.policy.act_stats["solves"]
    model.save(tmp_path / "model")
    loaded = SACFOP.load(tmp_path / "model")
    assert loaded.policy.mpc.solver_name == "riccati" and loaded.policy.mpc._riccati is not None
    obs = model.replay_buffer.sample(4).observations.cpu().numpy()  # type: ignore[union-attr]
    np.testing.assert_allclose(
        loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0], atol=1e-6
    )


def test_fop_computes_the_sensitivity_norm_on_every_interval_th_update(monkeypatch):
    model = SACFOP("MlpPolicy", "CartPoleSwingUp-v0", **FAST)
    model.learn(130)
    assert SACFOP.du0_dphi_interval == 10
    passes = []
    original = MPCLayer.params_jacobian
    monkeypatch.setattr(
        MPCLayer, "params_jacobian", lambda self, sol: passes.append(1) or original(self, sol)
    )
    recorded = _recording_logger(model)
    logged, calls = [], []
    for _ in range(25):
        recorded.clear()
        calls.append(model._train_calls)
        model.train(gradient_steps=2, batch_size=8)  # train() calls count, not gradient steps
        if "train/mpc_du0_dphi_norm" in recorded:
            logged.append(model._train_calls - 1)
    assert calls == list(range(calls[0], calls[0] + 25)) and calls[0] > 0  # learn() called train() too
    assert logged == [c for c in calls if c % 10 == 0]
    assert len(passes) == len(logged) in (2, 3)


def test_the_shipped_sac_fop_entries_name_their_solver():
    """sac_fop.yml ships riccati for the cart-pole only; the other entries share its YAML anchor and must
    override it (benchmarks/results/sac_fop_riccati_50k/ is the evidence for the cart-pole)."""
    import yaml

    from sb3_stein.zoo import hyperparams_file

    entries = yaml.safe_load(hyperparams_file("sac_fop").read_text())
    assert entries["CartPoleSwingUp-v0"]["mpc_kwargs"] == {"solver": "riccati"}
    assert entries["PointMassWindMaze-v0"]["mpc_kwargs"] == {} == entries["Chain-v0"]["mpc_kwargs"]
