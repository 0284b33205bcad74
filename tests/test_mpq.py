"""MPQ (and the MPPI baseline) as SB3 algorithms: targets, acting, learning, save/load, bad input.

The planner's mathematics (LQR limit, free energy against quadrature, batching, bounds, numerics) is
tested in tests/test_mppi.py; here the algorithm around it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from sb3_stein.envs.pendulum import PendulumDynamics, biased_pendulum_model
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_stein import MPQ
from sb3_stein.mpq import MPPIController

BIASED = "sb3_stein.envs.pendulum:biased_pendulum_model"
SMALL = dict(n_samples=8, batch_size=16, learning_starts=20, policy_kwargs=dict(net_arch=[16, 16]))


def test_biased_pendulum_model_is_drawn_from_table_1():
    model = biased_pendulum_model()
    assert 0.9 <= model.m <= 1.5 and 0.9 <= model.l <= 1.5 and (model.m, model.l) != (1.0, 1.0)
    again = biased_pendulum_model(seed=0)
    assert (again.m, again.l) == (model.m, model.l)  # one fixed draw per seed: a reload plans alike
    assert (biased_pendulum_model(seed=1).m, biased_pendulum_model(seed=1).l) != (model.m, model.l)


def test_horizon_one_target_is_the_soft_value_of_the_fixed_q():
    """H = 1 (soft Q-learning): V(s') = lambda log E_{a ~ N(0, Sigma)}[exp(Q(s', clip(a)) / lambda)]."""
    lam, sigma2 = 0.5, 4.0
    model = MPQ(
        "MlpPolicy", "Pendulum-v1", horizon=1, n_samples=200_000, noise_sigma=sigma2, temperature=lam, seed=0
    )
    assert model.policy.dynamics is None  # soft Q-learning needs no model

    def q_of(actions: th.Tensor) -> th.Tensor:  # torque in environment units, clipped to [-2, 2]
        return -((actions - 0.7) ** 2) * 1.5

    model.policy.target_planner.terminal_value = lambda states, actions: q_of(actions[..., 0])
    obs = th.zeros(1, 3)
    value = float(model.policy.target_planner.plan(obs, None, iterations=1).value[0])
    grid = np.linspace(-40, 40, 400_001)
    density = np.exp(-(grid**2) / (2 * sigma2)) / np.sqrt(2 * np.pi * sigma2)
    integrand = density * np.exp(q_of(th.as_tensor(np.clip(grid, -2, 2))).numpy() / lam)
    expected = lam * np.log(np.trapezoid(integrand, grid))
    assert value == pytest.approx(expected, abs=0.01)  # Monte-Carlo error ~ lam * 0.005 at N = 2e5


def test_targets_use_the_free_energy_and_mask_terminal_transitions():
    model = MPQ("MlpPolicy", "Pendulum-v1", dynamics_model=BIASED, horizon=3, gamma=0.9, **SMALL, seed=0)
    model.learn(40)
    values = []

    def recording_plan(obs, mean, iterations, generator=None, _plan=model.policy.target_planner.plan):
        result = _plan(obs, mean, iterations, generator)
        values.append(result.value.clone())
        assert iterations == model.n_target_iterations == 3
        return result

    model.policy.target_planner.plan = recording_plan  # type: ignore[method-assign]
    sample = model.replay_buffer.sample
    batch = sample(16)
    dones = th.zeros_like(batch.dones)
    dones[:8] = 1.0
    batch = batch._replace(dones=dones)
    model.replay_buffer.sample = lambda *args, **kwargs: batch  # type: ignore[method-assign]
    critic = model.policy.critic
    before = [p.detach().clone() for p in critic.parameters()]
    captured = {}
    original_loss = th.nn.functional.mse_loss

    def capture(q, target):
        captured["target"] = target.detach().clone()
        return original_loss(q, target)

    th.nn.functional.mse_loss, saved = capture, th.nn.functional.mse_loss  # type: ignore[assignment]
    try:
        model.train(gradient_steps=1, batch_size=16)
    finally:
        th.nn.functional.mse_loss = saved
    expected = batch.rewards + (1 - dones) * 0.9 * values[0].view(-1, 1)
    assert th.allclose(captured["target"], expected)
    assert th.allclose(captured["target"][:8], batch.rewards[:8])  # terminal: no bootstrap
    assert any(not th.equal(a, b) for a, b in zip(before, critic.parameters(), strict=True))


@pytest.mark.parametrize("horizon", [1, 4])
def test_learns_a_few_hundred_steps_and_logs(horizon, tmp_path):
    from stable_baselines3.common.logger import configure

    kwargs = dict(dynamics_model=BIASED) if horizon > 1 else {}
    model = MPQ("MlpPolicy", "Pendulum-v1", horizon=horizon, **kwargs, **SMALL, seed=0)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(250, log_interval=1)
    text = (tmp_path / "progress.csv").read_text()
    for key in ("train/critic_loss", "train/target_value", "train/target_ess", "train/target_ms"):
        assert key in text
    assert "rollout/plan_ms" in text
    assert model.replay_buffer.size() == 250
    q = model.policy.critic(th.zeros(4, 3), th.zeros(4, 1))[0]
    assert bool(th.isfinite(q).all())


def test_mppi_baseline_learns_nothing_and_plans_on_the_model_alone():
    model = MPPIController("MlpPolicy", "Pendulum-v1", dynamics_model=BIASED, horizon=4, n_samples=8, seed=0)
    assert model.policy.planner.terminal_value is None
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(150)
    assert all(th.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))
    with pytest.raises(ValueError, match="horizon must be > 1"):
        MPPIController("MlpPolicy", "Pendulum-v1", horizon=1)


def test_acting_warm_starts_and_resets_at_episode_start():
    model = MPQ("MlpPolicy", "Pendulum-v1", dynamics_model=BIASED, horizon=4, **SMALL, seed=0)
    obs = np.zeros((2, 3), np.float32)
    obs[:, 0] = 1.0
    model.predict(obs, deterministic=True)
    plan = model.policy._plan
    assert plan is not None and plan.shape == (2, 4, 1) and bool((plan[:, -1] == 0).all())
    model.predict(obs, episode_start=np.array([True, False]), deterministic=True)
    # a reset row plans from scratch: the same action as a fresh policy's
    fresh = MPQ("MlpPolicy", "Pendulum-v1", dynamics_model=BIASED, horizon=4, **SMALL, seed=0)
    fresh.policy.load_state_dict(model.policy.state_dict())
    a_reset, _ = model.predict(obs[:1], episode_start=np.array([True]), deterministic=True)
    a_fresh, _ = fresh.predict(obs[:1], deterministic=True)
    np.testing.assert_allclose(a_reset, a_fresh)


def test_save_load_restores_critic_and_gives_identical_deterministic_actions(tmp_path):
    env = gym.make("Pendulum-v1")
    model = MPQ("MlpPolicy", env, dynamics_model=BIASED, horizon=3, **SMALL, seed=0)
    model.learn(60)
    model.save(tmp_path / "mpq")
    loaded = MPQ.load(tmp_path / "mpq", env=env)
    assert (
        isinstance(loaded.policy.dynamics, PendulumDynamics)
        and loaded.policy.dynamics.m == model.policy.dynamics.m
    )
    for a, b in zip(model.policy.state_dict().values(), loaded.policy.state_dict().values(), strict=True):
        assert th.equal(a, b)
    obs = np.stack([env.observation_space.sample() for _ in range(5)])
    model.policy.reset_plan()
    first, _ = model.predict(obs, deterministic=True)
    second, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(first, second)
    loaded.learn(30)  # training continues from the restored buffer-less state


def test_target_network_option_is_polyak_averaged():
    model = MPQ(
        "MlpPolicy",
        "Pendulum-v1",
        dynamics_model=BIASED,
        horizon=2,
        use_target_network=True,
        tau=0.5,
        **SMALL,
    )
    target = model.policy.critic_target
    assert target is not None and model.policy.target_planner is not model.policy.planner
    before = [p.detach().clone() for p in target.parameters()]
    model.learn(40)
    assert any(not th.equal(a, b) for a, b in zip(before, target.parameters(), strict=True))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_samples=1), "n_samples"),
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(mppi_step_size=1.5), "mppi_step_size"),
        (dict(mppi_step_size=0.0), "mppi_step_size"),
        (dict(horizon=0), "horizon"),
        (dict(noise_sigma=-1.0), "noise_sigma"),
        (dict(noise_sigma=[1.0, 2.0]), "noise_sigma"),
        (dict(n_target_iterations=0), "n_target_iterations"),
        (dict(gamma=0.0), "gamma"),
    ],
)
def test_bad_hyperparameters_raise_naming_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MPQ("MlpPolicy", "Pendulum-v1", **kwargs)


def test_bad_spaces_and_models_raise_clearly():
    with pytest.raises(ValueError, match="Box action space"):
        MPQ("MlpPolicy", "CartPole-v1")
    with pytest.raises(ValueError, match="no dynamics model is registered"):
        MPQ("MlpPolicy", "MountainCarContinuous-v0", horizon=3)
    # horizon=1 needs no model at all
    MPQ("MlpPolicy", "MountainCarContinuous-v0", horizon=1, n_samples=4)

    class NoReward(th.nn.Module):
        def forward(self, obs, action):
            return obs

    with pytest.raises(ValueError, match="reward_model='auto'"):
        MPQ("MlpPolicy", "Pendulum-v1", dynamics_model=NoReward(), horizon=3)
    with pytest.raises(ValueError, match=r"reward_model .* expected a float32 tensor of shape"):
        MPQ("MlpPolicy", "Pendulum-v1", horizon=3, reward_model=lambda o, a, n: o)
    with pytest.raises(ValueError, match=r"reward_model .* NaN"):
        MPQ("MlpPolicy", "Pendulum-v1", horizon=3, reward_model=lambda o, a, n: o[..., 0] * np.nan)

    class WrongShape(th.nn.Module):
        def forward(self, obs, action):
            return obs[..., :2]

    with pytest.raises(ValueError, match="dynamics model WrongShape"):
        MPQ("MlpPolicy", "Pendulum-v1", dynamics_model=WrongShape(), horizon=3)
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    with pytest.raises(ValueError, match="VecNormalize"):
        MPQ("MlpPolicy", venv, horizon=3)


def test_reward_model_for_every_registered_env_matches_env_step():
    """'auto' resolves to the registered dynamics model's reward, which equals env.step's (per env in
    tests/test_dynamics.py); here: the resolution itself, for the registered ids with a reward."""
    from sb3_stein.common.dynamics import (
        make_dynamics_model,
        registered_dynamics_models,
        resolve_reward_model,
    )

    for env_id in registered_dynamics_models():
        model = make_dynamics_model(env_id)
        if not hasattr(model, "reward"):
            with pytest.raises(ValueError, match="reward_model"):
                resolve_reward_model("auto", model, env_id, "MPQ")
            continue
        reward = resolve_reward_model("auto", model, env_id, "MPQ")
        assert reward == model.reward
