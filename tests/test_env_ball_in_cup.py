"""BallInCupSparse-v0 and its simulator model (MPQ's MuJoCo task, issue 13)."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch as th

pytest.importorskip("mujoco", reason="BallInCupSparse-v0 needs the [mujoco] extra")
pytest.importorskip("dm_control", reason="BallInCupSparse-v0 needs the [mujoco] extra")

from sb3_stein.envs.ball_in_cup import (
    BIASED_RANGES,
    MAX_EPISODE_STEPS,
    TRUE_PARAMS,
    BallInCupParams,
    BallInCupSimulator,
    BallInCupSparseEnv,
    biased_ball_in_cup_model,
)

import sb3_stein  # noqa: F401  (registers the ids)
from sb3_stein.common.dynamics import check_dynamics_model, make_dynamics_model
from sb3_stein.common.mppi import MPPI


def test_spaces_episode_length_and_true_parameters():
    env = gym.make("BallInCupSparse-v0")
    assert env.spec is not None and env.spec.max_episode_steps == MAX_EPISODE_STEPS == 200
    assert env.observation_space.shape == (12,) and env.action_space.shape == (2,)
    assert env.action_space.low.tolist() == [-1, -1] and env.action_space.high.tolist() == [1, 1]
    core = env.unwrapped
    assert isinstance(core, BallInCupSparseEnv)
    ball = core.model.body("ball").id
    assert core.model.body_mass[ball] == pytest.approx(0.058)  # Table 1, not dm_control's 0.0654
    assert core.model.body_inertia[ball].tolist() == pytest.approx([1.47e-5] * 3)
    assert core.model.tendon_stiffness[0] == pytest.approx(0.05)
    assert core.dt == pytest.approx(0.02) and core.frame_skip == 10


def test_reset_follows_the_suite_and_the_observation_is_app_b():
    env = BallInCupSparseEnv()
    balls = []
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        assert env.data.ncon == 0  # redrawn until nothing touches
        qpos = env.data.qpos
        assert -0.2 <= qpos[2] <= 0.2 and 0.2 <= qpos[3] <= 0.5 and qpos[:2].tolist() == [0, 0]
        # [x_ball, x_target, v_ball, v_target, x_target - x_ball, cos, sin]
        ball, target = (
            env.data.xpos[env.model.body("ball").id],
            env.data.site_xpos[env.model.site("target").id],
        )
        assert obs[0:2] == pytest.approx(ball[[0, 2]]) and obs[2:4] == pytest.approx(target[[0, 2]])
        assert obs[8:10] == pytest.approx(obs[2:4] - obs[0:2])
        theta = np.arctan2(obs[9], obs[8])
        assert obs[10:12] == pytest.approx([np.cos(theta), np.sin(theta)])
        assert info["is_success"] is False
        balls.append(obs[0])
    assert np.std(balls) > 0.05  # randomised every episode


def test_reward_is_sparse_and_success_means_ball_in_cup():
    env = BallInCupSparseEnv()
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(np.zeros(2))
    assert (reward, terminated, truncated, info["is_success"]) == (-1.0, False, False, False)
    # Put the ball at rest inside the cup: reward 0 and success.
    env.data.qpos[:] = [0.0, 0.0, 0.0, 0.6 - 0.05 - 0.2]  # ball centre at the target box's centre
    env.data.qvel[:] = 0.0
    _, reward, _, _, info = env.step(np.zeros(2))
    assert reward == 0.0 and info["is_success"] is True
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0.0]))


def test_simulator_with_the_true_parameters_reproduces_env_step():
    """Observations to 1e-9 and rewards exactly, one step at a time from the environment's own states,
    over random controls: from a reset (free flight, the string going taut) and with the ball dropped
    into the cup (contacts with its walls and bottom)."""
    env = BallInCupSparseEnv()
    sim = make_dynamics_model("BallInCupSparse-v0")
    assert isinstance(sim, BallInCupSimulator) and sim.params == TRUE_PARAMS
    rng = np.random.default_rng(0)
    worst, contacts, taut, successes = 0.0, 0, 0, 0
    for start in ("reset", "in cup"):
        obs, _ = env.reset(seed=3)
        if start == "in cup":
            env.data.qpos[:] = [
                0.0,
                0.0,
                0.01,
                0.6 - 0.1 + 0.008 + 0.025 + 0.001 - 0.2,
            ]  # just above the bottom
            env.data.qvel[:] = 0.0
            obs = env.layout.observation(env.data.qpos.copy(), env.data.qvel.copy())
        for _ in range(150):
            action = rng.uniform(-1.2, 1.2, size=2) * (
                0.3 if start == "in cup" else 1.0
            )  # beyond the Box: clips
            predicted = sim(th.as_tensor(obs[None]), th.as_tensor(action[None]))[0].numpy()
            obs, reward, _, _, info = env.step(action)
            contacts += env.data.ncon > 0
            taut += env.data.ten_length[0] >= 0.3 - 1e-3
            successes += info["is_success"]
            worst = max(worst, float(np.abs(predicted - obs).max()))
            assert float(sim.reward(None, None, th.as_tensor(obs))) == reward
    assert worst < 1e-9
    assert contacts > 10 and taut > 10 and successes > 10  # the cases were exercised


def test_rollout_sequence_equals_step_by_step_and_batches():
    sim = BallInCupSimulator()
    env = BallInCupSparseEnv()
    obs = th.as_tensor(np.stack([env.reset(seed=s)[0] for s in range(3)]))  # (3, 12)
    obs = obs[:, None].expand(3, 4, 12).clone()  # (B, N, 12)
    actions = th.as_tensor(np.random.default_rng(1).uniform(-1, 1, size=(3, 4, 6, 2)))
    seq, rewards = sim.rollout_sequence(obs, actions)
    assert seq.shape == (3, 4, 6, 12) and rewards.shape == (3, 4, 6)
    state = obs
    for t in range(6):
        state = sim(state, actions[:, :, t])
        th.testing.assert_close(seq[:, :, t], state, rtol=0, atol=1e-12)
    th.testing.assert_close(rewards, sim.reward(obs, actions, seq))
    # float32 in, float32 out (the planner's dtype); threads do not change the result.
    seq32, _ = BallInCupSimulator(n_threads=2).rollout_sequence(obs.float(), actions.float())
    assert seq32.dtype == th.float32
    th.testing.assert_close(seq32.double(), seq, rtol=0, atol=1e-5)


def test_biased_model_is_drawn_from_table_1_and_differs_from_the_truth():
    model = biased_ball_in_cup_model()
    for name, (low, high) in BIASED_RANGES.items():
        assert low <= getattr(model.params, name) <= high
    assert model.params != TRUE_PARAMS
    assert biased_ball_in_cup_model(seed=0).params == model.params
    assert biased_ball_in_cup_model(seed=1).params != model.params
    ball = model.mj_model.body("ball").id
    assert model.mj_model.body_mass[ball] == pytest.approx(model.params.ball_mass)
    # The bias matters: the same controls from the same state end elsewhere.
    env = BallInCupSparseEnv()
    obs = th.as_tensor(env.reset(seed=0)[0])[None, None]
    actions = th.full((1, 1, 20, 2), 0.8, dtype=th.float64)
    true_end = BallInCupSimulator().rollout_sequence(obs, actions)[0][..., -1, :]
    biased_end = model.rollout_sequence(obs, actions)[0][..., -1, :]
    assert float((true_end - biased_end).abs().max()) > 1e-3


def test_simulator_pickles_and_passes_the_protocol_check():
    model = biased_ball_in_cup_model(seed=2)
    clone = pickle.loads(pickle.dumps(model))
    assert clone.params == model.params
    obs = th.zeros(2, 12, dtype=th.float64)
    obs[:, 2:4] = th.tensor([0.0, 0.55], dtype=th.float64)
    action = th.ones(2, 2, dtype=th.float64)
    th.testing.assert_close(clone(obs, action), model(obs, action))
    env = BallInCupSparseEnv()
    check_dynamics_model(model, env.observation_space, env.action_space, "MPQ")


def test_planner_uses_the_simulator_through_rollout_sequence():
    sim = BallInCupSimulator()
    calls = []
    original = sim.rollout_sequence

    def counting(obs, actions):
        calls.append(tuple(actions.shape))
        return original(obs, actions)

    sim.rollout_sequence = counting  # type: ignore[method-assign]
    planner = MPPI(
        sim, sim.reward, 4, 12, 4.0, 0.15, 0.55, 0.9, th.tensor([-1.0, -1.0]), th.tensor([1.0, 1.0]),
        terminal_value=lambda s, a: th.zeros(s.shape[:-1]),
    )  # fmt: skip
    env = BallInCupSparseEnv()
    obs = th.as_tensor(np.stack([env.reset(seed=s)[0] for s in range(2)]), dtype=th.float32)
    result = planner.plan(obs, iterations=2)
    assert calls == [(2, 12, 3, 2), (2, 12, 3, 2)]  # one call per iteration, H - 1 model steps
    assert result.mean.shape == (2, 4, 2) and bool(th.isfinite(result.value).all())


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="ball_mass"):
        BallInCupParams(ball_mass=0.0)
    with pytest.raises(ValueError, match="tendon_stiffness"):
        BallInCupParams(tendon_stiffness=float("nan"))
    with pytest.raises(ValueError, match="n_threads"):
        BallInCupSimulator(n_threads=0)
    with pytest.raises(ValueError, match="render_mode"):
        BallInCupSparseEnv(render_mode="human")


def test_gymnasium_and_sb3_env_checkers_pass():
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    gym_check_env(BallInCupSparseEnv(), skip_render_check=True)
    sb3_check_env(BallInCupSparseEnv(), warn=True, skip_render_check=True)


def test_a_simulator_model_for_another_env_is_refused_by_mpq():
    from sb3_stein import MPQ

    with pytest.raises(ValueError, match="dynamics model BallInCupSimulator"):
        MPQ("MlpPolicy", "Pendulum-v1", dynamics_model=BallInCupSimulator(), horizon=3)


def test_mpq_learns_a_few_hundred_steps_on_the_biased_simulator_and_reloads(tmp_path):
    from sb3_stein import MPQ

    model = MPQ(
        "MlpPolicy",
        "BallInCupSparse-v0",
        dynamics_model="sb3_stein.envs.ball_in_cup:biased_ball_in_cup_model",
        horizon=3,
        n_samples=8,
        batch_size=16,
        learning_starts=50,
        train_freq=(1, "episode"),
        gradient_steps=3,
        policy_kwargs=dict(net_arch=[16, 16]),
        seed=0,
    )
    assert isinstance(model.policy.dynamics, BallInCupSimulator)
    before = [p.detach().clone() for p in model.policy.critic.parameters()]
    model.learn(200)  # one episode: train_freq=(1, "episode") updates once, at its end
    assert model.num_timesteps == 200 and model._n_updates == 3
    assert any(not th.equal(a, b) for a, b in zip(before, model.policy.critic.parameters(), strict=True))
    model.save(tmp_path / "mpq_bic")
    loaded = MPQ.load(tmp_path / "mpq_bic")
    assert loaded.policy.dynamics.params == model.policy.dynamics.params  # the same biased draw
    obs, _ = BallInCupSparseEnv().reset(seed=5)
    first, _ = model.predict(obs, deterministic=True, episode_start=np.array([True]))
    again, _ = loaded.predict(obs, deterministic=True, episode_start=np.array([True]))
    assert np.array_equal(first, again)
