"""Integration and behaviour tests of S²AC (small networks, a few hundred steps, CPU)."""

import weakref

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.utils import polyak_update

import sb3_stein.common.critics as critics_module
from sb3_stein import S2AC
from sb3_stein.common.critics import ParticleCritic
from sb3_stein.common.svgd import SVGDDivergenceError


class TinyExtractor(BaseFeaturesExtractor):
    """A features extractor with parameters, to check what the actor loss may train."""

    def __init__(self, observation_space: gym.spaces.Box):
        super().__init__(observation_space, features_dim=4)
        self.linear = th.nn.Linear(observation_space.shape[0], 4)

    def forward(self, obs: th.Tensor) -> th.Tensor:
        return th.relu(self.linear(obs))


SMALL = dict(
    learning_starts=50,
    batch_size=16,
    n_particles=4,
    svgd_steps=2,
    policy_kwargs=dict(net_arch=[32, 32]),
)


def make(env="Pendulum-v1", **kwargs) -> S2AC:
    return S2AC("MlpPolicy", env, **{**SMALL, "seed": 0, **kwargs})


def test_learns_and_logs_diagnostics():
    model = make().learn(150)
    logged = model.logger.name_to_value
    for key in (
        "train/entropy",
        "train/kernel_bandwidth",
        "train/particle_spread",
        "train/ent_coef",
        "train/actor_loss",
    ):
        assert key in logged and np.isfinite(logged[key])
    # The entropy coefficient moved and the policy's alpha follows it.
    assert float(model.policy.alpha) == pytest.approx(float(th.exp(model.log_ent_coef.detach())))
    assert float(model.policy.alpha) != 1.0


@pytest.mark.parametrize(
    "policy_kwargs",
    [
        dict(net_arch=[32, 32]),  # ReLU fast path
        dict(net_arch=[16], activation_fn=th.nn.Tanh),  # autograd path
        dict(net_arch=[16], share_features_extractor=True, features_extractor_class=TinyExtractor),
    ],
)
def test_actor_loss_reaches_the_initial_gaussian_and_never_the_critic(policy_kwargs):
    model = make(policy_kwargs=policy_kwargs)
    obs = th.randn(6, 3)
    model.policy.zero_grad(set_to_none=True)
    sample = model.policy.sample(obs)
    q, _ = ParticleCritic(model.critic, obs).min_q_and_grad(sample.actions, need_grad=False)
    (0.2 * sample.log_prob - q).mean().backward()
    assert all(p.grad is None for n, p in model.critic.named_parameters() if "features_extractor" not in n)
    if model.policy.share_features_extractor:
        # The shared extractor learns from the actor through the Gaussian only, never through Q's input.
        q, _ = ParticleCritic(model.critic, obs).min_q_and_grad(sample.actions.detach(), need_grad=False)
        assert q.grad_fn is None
    else:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.actor.parameters())


def test_a_training_step_changes_the_initial_gaussian():
    model = make()
    model.learn(60)
    before = [p.detach().clone() for p in model.actor.parameters()]
    model.train(gradient_steps=1, batch_size=16)
    assert any(not th.equal(a, b) for a, b in zip(before, model.actor.parameters()))


def test_fast_critic_path_gives_the_create_graph_gradient(monkeypatch):
    """The closed-form ReLU scores give the same actor gradient as autograd with create_graph=True."""
    model = make()
    obs = th.randn(5, 3)

    def actor_grads():
        th.manual_seed(3)
        model.actor.optimizer.zero_grad()
        sample = model.policy.sample(obs)
        q, _ = ParticleCritic(model.critic, obs).min_q_and_grad(sample.actions, need_grad=False)
        (0.3 * sample.log_prob - q).mean().backward()
        return [p.grad.clone() for p in model.actor.parameters()]

    fast = actor_grads()
    monkeypatch.setattr(critics_module, "_stacked_layers", lambda nets: None)
    monkeypatch.setattr(critics_module, "_STACK_CACHE", weakref.WeakKeyDictionary())
    slow = actor_grads()
    for a, b in zip(fast, slow):
        assert th.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_stacked_critic_weights_follow_every_weight_change():
    """Cached stacked weights are rebuilt after optimizer steps and loads; target critics are not cached."""
    model = make()
    obs, actions = th.randn(4, 3), th.rand(4, 5, 1) * 2 - 1

    def fresh_q(critic):
        rows = th.cat([obs.repeat_interleave(5, 0), actions.view(-1, 1)], 1)
        return th.stack([q(rows).view(4, 5) for q in critic.q_networks]).detach()

    def fast_q(critic=model.critic, cached=True):
        bound = critics_module.ParticleCritic(critic, obs, cache_weights=cached)
        assert th.allclose(bound.values_and_grads(actions, need_grad=False)[0], fresh_q(critic), atol=1e-5)
        return True

    assert fast_q() and fast_q(model.critic_target, cached=False)
    model.critic.optimizer.zero_grad()
    model.critic(obs, actions[:, 0])[0].sum().backward()
    model.critic.optimizer.step()
    assert fast_q()
    polyak_update(model.critic.parameters(), model.critic_target.parameters(), 0.5)  # writes .data
    assert fast_q(model.critic_target, cached=False)
    model.critic.load_state_dict(model.critic_target.state_dict())
    assert fast_q()


def test_save_load_same_deterministic_actions_and_training_continues(tmp_path):
    model = make().learn(120)
    obs = np.random.default_rng(0).uniform(-1, 1, size=(7, 3)).astype(np.float32)
    actions, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "s2ac")
    model.save_replay_buffer(tmp_path / "buffer")
    loaded = S2AC.load(tmp_path / "s2ac", env=gym.make("Pendulum-v1"))
    loaded.load_replay_buffer(tmp_path / "buffer")
    th.manual_seed(0)
    again, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_allclose(actions, again, atol=1e-6)
    assert float(loaded.policy.alpha) == pytest.approx(float(model.policy.alpha))
    assert float(loaded.log_ent_coef.detach()) == pytest.approx(float(model.log_ent_coef.detach()))
    assert loaded.policy.n_particles == 4 and loaded.policy.svgd_steps == 2
    n_updates = loaded._n_updates
    loaded.learn(40, reset_num_timesteps=False)
    assert loaded._n_updates > n_updates


def test_same_seed_same_run():
    a = make().learn(100)
    b = make().learn(100)
    for p, q in zip(a.policy.parameters(), b.policy.parameters()):
        assert th.equal(p, q)


def test_two_envs():
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    model = make(env).learn(120)
    actions, _ = model.predict(env.reset(), deterministic=True)
    assert actions.shape == (2, 1)


def test_deterministic_selection_picks_highest_q_per_state():
    model = make()
    obs = th.randn(6, 3)
    actions = th.rand(6, 5, 1) * 2 - 1
    with th.no_grad():
        q, _ = ParticleCritic(model.critic, obs).min_q_and_grad(actions, need_grad=False)
        chosen = model.policy.select(model.policy.critic_at(obs), actions, deterministic=True)
    expected = actions[th.arange(6), q.argmax(-1)]
    assert th.equal(chosen, expected)
    # Random selection returns particles of the right state.
    with th.no_grad():
        random_choice = model.policy.select(model.policy.critic_at(obs), actions, deterministic=False)
    for b in range(6):
        assert any(th.equal(random_choice[b], actions[b, i]) for i in range(5))


def test_softmax_selection_and_fixed_initial_distribution(tmp_path):
    model = make(eval_action_selection="softmax", learn_init=False, ent_coef=0.2)
    assert model.actor.optimizer is None
    model.learn(80)
    obs = np.zeros((3, 3), dtype=np.float32)
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (3, 1) and np.all(np.abs(actions) <= 2)
    model.save(tmp_path / "fixed")
    loaded = S2AC.load(tmp_path / "fixed")
    assert loaded.policy.learn_init is False and loaded.actor.optimizer is None


def test_amortized_sampler_is_trained_and_used_by_predict_but_not_for_rollouts(tmp_path, monkeypatch):
    model = make(amortized=True)
    sampler = model.policy.amortized_sampler
    before = [p.detach().clone() for p in sampler.parameters()]
    calls = {"svgd": 0, "amortized": 0}
    original_sample, original_predict = model.policy.sample, sampler._predict

    def counting_sample(*args, **kwargs):
        calls["svgd"] += 1
        return original_sample(*args, **kwargs)

    def counting_predict(*args, **kwargs):
        calls["amortized"] += 1
        return original_predict(*args, **kwargs)

    monkeypatch.setattr(model.policy, "sample", counting_sample)
    monkeypatch.setattr(sampler, "_predict", counting_predict)
    model.learn(100)
    assert calls["amortized"] == 0  # Appendix K: f_psi is not used while training
    assert "train/amortized_loss" in model.logger.name_to_value
    assert any(not th.equal(a, b) for a, b in zip(before, sampler.parameters()))
    obs = np.zeros((2, 3), dtype=np.float32)
    with th.no_grad():
        expected = th.tanh(sampler(th.zeros(2, 3), th.zeros(2, 1, 1))[:, 0]).numpy() * 2.0
    actions, _ = model.predict(obs, deterministic=True)
    assert calls["amortized"] == 1
    np.testing.assert_allclose(actions, expected, atol=1e-5)
    model.save(tmp_path / "amortized")
    loaded = S2AC.load(tmp_path / "amortized")
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], actions, atol=1e-6)


def test_non_relu_critics_take_the_autograd_path():
    model = make(policy_kwargs=dict(net_arch=[16], activation_fn=th.nn.Tanh))
    assert not critics_module.supports_fast_path(model.critic)
    model.learn(70)
    assert np.isfinite(model.logger.name_to_value["train/entropy"])


def test_multigoal_runs():
    model = make("MultiGoal-v0", gamma=0.8).learn(80)
    actions, _ = model.predict(np.zeros((1, 2), dtype=np.float32), deterministic=True)
    assert actions.shape == (1, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_particles=1), "n_particles must be an integer >= 2"),
        (dict(svgd_steps=-1), "svgd_steps must be an integer >= 0"),
        (dict(svgd_step_size=0.0), "svgd_step_size must be a finite number > 0"),
        (dict(kernel_bandwidth=-2.0), "kernel_bandwidth must be one of"),
        (dict(kernel_bandwidth="silverman"), "kernel_bandwidth must be one of"),
        (dict(eval_action_selection="mean"), "eval_action_selection must be one of"),
        (dict(bound_std=0.0), "bound_std must be a finite number > 0"),
        (dict(init_std=-1.0), "init_std must be a finite number > 0"),
        (dict(ent_coef=-0.1), "ent_coef must be .auto., .auto_<initial value > 0>. or a finite number > 0"),
        (dict(policy_kwargs=dict(n_particles=1)), "n_particles must be an integer >= 2"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        S2AC("MlpPolicy", "Pendulum-v1", **kwargs)


def test_non_box_action_space_raises():
    with pytest.raises(ValueError, match=r"Box action space.*Discrete"):
        S2AC("MlpPolicy", "CartPole-v1")
    with pytest.raises(ValueError, match="Box action space"):
        S2AC("MlpPolicy", gym.make("CartPole-v1"))


def test_nan_particles_raise_clear_error():
    model = make(svgd_step_size=1e-3)
    with th.no_grad():
        next(model.critic.q_networks[0].parameters()).fill_(float("inf"))
    with pytest.raises(SVGDDivergenceError, match=r"svgd_step_size=0\.001"):
        model.predict(np.zeros((1, 3), dtype=np.float32))
