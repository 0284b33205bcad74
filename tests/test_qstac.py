"""Q-STAC: reduction to S²AC, the augmented Lagrangian, model rollouts, learning, save/load, bad input."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from sb3_stein.envs.pendulum import PendulumDynamics
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

from sb3_stein import QSTAC, S2AC
from sb3_stein.common.constraints import BoxAugmentedLagrangian
from sb3_stein.common.svgd import pairwise_sq_dists, rbf_kernel, stein_trace

SMALL = dict(
    learning_starts=50,
    batch_size=16,
    n_particles=4,
    svgd_steps=2,
    horizon=2,
    policy_kwargs=dict(net_arch=[32, 32]),
)


def make(env="Pendulum-v1", **kwargs) -> QSTAC:
    return QSTAC("MlpPolicy", env, **{**SMALL, "seed": 0, **kwargs})


# ------------------------------------------------------------------ reduction to S²AC
@pytest.mark.parametrize("bandwidth", ["paper", "median"])
def test_horizon_one_without_prior_and_constraint_is_s2ac(bandwidth):
    """H = 1, prior_weight = 0, constraint off: the same particles, log-likelihoods and actor gradient
    as S²AC on the same weights and noise. (What Q-STAC adds: the prior term of Eq. 11, the
    augmented Lagrangian, and for H > 1 the model rollout; tested separately below.) The bandwidth is
    given to both: their defaults differ (S²AC "median" since issue 12, Q-STAC "paper")."""
    common = dict(
        n_particles=4,
        svgd_steps=3,
        svgd_step_size=0.1,
        kernel_bandwidth=bandwidth,
        policy_kwargs=dict(net_arch=[32, 32]),
        seed=0,
    )
    s2ac = S2AC("MlpPolicy", "Pendulum-v1", **common)
    qstac = QSTAC("MlpPolicy", "Pendulum-v1", horizon=1, prior_weight=0.0, constraint=False, **common)
    qstac.policy.load_state_dict(s2ac.policy.state_dict())
    obs = th.randn(6, 3)

    def run(model):
        model.actor.optimizer.zero_grad()
        th.manual_seed(7)
        sample = model.policy.sample(obs)
        q, _ = model.policy.critic_at(obs).min_q_and_grad(sample.actions, need_grad=False)
        (0.2 * sample.log_prob - q).mean().backward()
        return sample, [p.grad.clone() for p in model.actor.parameters()]

    (a, grads_a), (b, grads_b) = run(s2ac), run(qstac)
    assert th.allclose(a.actions, b.actions, atol=1e-6)
    assert th.allclose(a.log_prob, b.log_prob, atol=1e-5)
    for ga, gb in zip(grads_a, grads_b):
        assert th.allclose(ga, gb, rtol=1e-4, atol=1e-6)


def test_closed_form_critic_gradients_give_the_autograd_actor_gradient(monkeypatch):
    """H = 3 through the Pendulum model: the closed-form ReLU input gradients + autograd through the
    dynamics give the same particles and actor gradient as autograd through everything."""
    model = make(horizon=3, svgd_steps=2)
    obs = th.randn(5, 3)

    def run():
        model.actor.optimizer.zero_grad()
        th.manual_seed(3)
        sample = model.policy.sample(obs)
        q, _ = model.policy.critic_at(obs).min_q_and_grad(sample.actions, need_grad=False)
        (0.3 * sample.log_prob - q).mean().backward()
        return sample.pre_tanh.detach(), [p.grad.clone() for p in model.actor.parameters()]

    fast_particles, fast = run()
    from sb3_stein.common import critics

    monkeypatch.setattr(critics, "stacked_critic_layers", lambda critic, cache=False: None)
    slow_particles, slow = run()
    assert th.allclose(fast_particles, slow_particles, atol=1e-5)
    for a, b in zip(fast, slow):
        assert th.allclose(a, b, rtol=1e-3, atol=1e-5)


def test_per_coordinate_trace_sums_to_the_trace():
    x, score = th.randn(3, 5, 6), th.randn(3, 5, 6)
    sq = pairwise_sq_dists(x)
    sigma2 = th.full((3, 1, 1), 0.7)
    kernel = rbf_kernel(sq, sigma2)
    full = stein_trace(x, score, kernel, sigma2, sq, repulsion_weight=0.3)
    parts = stein_trace(x, score, kernel, sigma2, sq, repulsion_weight=0.3, per_coordinate=True)
    assert parts.shape == (3, 5, 6)
    assert th.allclose(parts.sum(-1), full, atol=1e-5)


# ------------------------------------------------------------------ augmented Lagrangian
def test_augmented_lagrangian_pushes_particles_back_inside():
    """An outward force of 2 (in score units): the quadratic penalty alone settles at a violation
    of 2 / c; the multipliers remove it over steps (Eq. 14 with the method of multipliers), down to
    the drift of a single step (eps * 2 = 0.2) by which the outward force re-enters the band's edge."""
    lower, upper = th.full((1, 1, 3), -1.0), th.full((1, 1, 3), 1.0)
    x0 = th.tensor([[[1.5, -2.0, 0.0]]])
    outward = th.tensor([[[2.0, -2.0, 0.0]]])

    def final_violation(multiplier_step: float) -> th.Tensor:
        bounds = BoxAugmentedLagrangian(lower, upper, penalty=1.0, multiplier_step=multiplier_step)
        x = x0.clone()
        for _ in range(300):
            x = x + 0.1 * (outward + bounds.force(x))
        return bounds.violation(x).abs()

    without_multipliers = final_violation(1e-12)
    with_multipliers = final_violation(1.0)
    assert th.allclose(without_multipliers[..., :2], th.full((1, 1, 2), 2.0), atol=0.05)
    assert with_multipliers.max() <= 0.2 + 1e-5
    assert with_multipliers[..., 2] == 0  # an inside coordinate feels nothing


def test_a_multiplier_built_on_one_side_never_pushes_outwards_on_the_other():
    bounds = BoxAugmentedLagrangian(th.full((1, 1, 1), -1.0), th.full((1, 1, 1), 1.0), 1.0, 1.0)
    for _ in range(3):
        bounds.force(th.tensor([[[2.0]]]))  # above upper: the multiplier builds up downwards
    assert bounds.multiplier.item() < 0
    force = bounds.force(th.tensor([[[-1.5]]]))  # now below lower: only an upward push
    assert force.item() == pytest.approx(0.5)  # c * g, the multiplier restarts from zero
    assert bounds.multiplier.item() == pytest.approx(0.5)


def test_constraint_keeps_sampler_particles_within_the_band():
    model = make(svgd_step_size=1.0, svgd_steps=10, constraint_penalty=2.0)
    obs = th.randn(8, 3)
    with th.no_grad():
        model.policy.alpha.fill_(0.01)
        constrained = model.policy.sample(obs).pre_tanh
    free = make(svgd_step_size=1.0, svgd_steps=10, constraint=False)
    free.policy.load_state_dict(model.policy.state_dict())
    with th.no_grad():
        th.manual_seed(0)
        unconstrained = free.policy.sample(obs).pre_tanh

    def outside(u):
        mean, log_std = model.actor(obs)
        z = (u - mean.unsqueeze(1)) / log_std.exp().unsqueeze(1)
        return (z.abs() > 3.0).float().mean()

    assert outside(constrained) <= outside(unconstrained)
    assert outside(constrained) < 0.05


def test_a_collapsed_prior_cannot_make_the_flow_diverge():
    """A prior network that shrinks sigma (as training did on Pendulum-v1) meets the stiffness floor."""
    model = make(svgd_steps=5, svgd_step_size=0.5)
    with th.no_grad():
        model.actor.log_std.weight.zero_()
        model.actor.log_std.bias.fill_(-15.0)
        model.policy.alpha.fill_(0.2)
    sample = model.policy.sample(th.randn(16, 3))
    assert th.isfinite(sample.log_prob).all() and th.isfinite(sample.pre_tanh).all()
    floor = 0.5 * np.log(0.5 * 0.2 * 1.0 / 0.25)
    assert th.allclose(sample.init_std.log(), th.full_like(sample.init_std, floor), atol=1e-5)


def test_the_prior_std_head_learns_while_the_floor_is_above_it():
    """At alpha = 1 the floor (0.63) lies above init_std (0.5): the std head must still get a gradient."""
    model = make(svgd_step_size=0.1, init_std=0.5)
    assert float(model.policy.alpha) == 1.0
    sample = model.policy.sample(th.randn(8, 3))
    assert (sample.init_std > np.sqrt(0.1 * 1.0 / 0.25)).all()  # above the floor: it is added, not clamped
    sample.log_prob.mean().backward()
    assert model.actor.log_std.weight.grad.abs().sum() > 0
    assert model.actor.log_std.bias.grad.abs().sum() > 0


def test_dynamics_model_parameters_are_frozen():
    class Learned(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(th.ones(1))

        def forward(self, obs, action):
            return obs * self.gain

    learned = Learned()
    model = make(dynamics_model=learned)
    model.policy.sample(th.randn(4, 3)).log_prob.mean().backward()
    assert learned.gain.grad is None and not learned.gain.requires_grad


# ------------------------------------------------------------------ model rollout
class _Shift(nn.Module):
    def forward(self, obs, action):
        return obs + 0.5 * action


def test_rollout_applies_the_model_in_environment_units():
    model = make(horizon=3)
    policy = model.policy
    obs = th.tensor([[1.0, 0.0, 0.5]])
    actions = th.tensor([[[[0.5], [-1.0], [1.0]]]])  # (B=1, m=1, H=3, A=1) in [-1, 1]
    states, alive = policy.rollout(obs, actions)
    assert alive is None  # the Pendulum model has no terminal states
    dynamics = PendulumDynamics()
    x1 = dynamics(obs, th.tensor([[1.0]]))  # 0.5 in SB3 units is a torque of 1.0
    x2 = dynamics(x1, th.tensor([[-2.0]]))
    assert states.shape == (1, 1, 3, 3)
    assert th.allclose(states[0, 0], th.cat([obs, x1, x2]), atol=1e-6)


def test_first_control_score_depends_on_the_dynamics_model():
    """With H > 1 the score of u_0 includes dQ(x_1, u_1)/du_0 through the model."""
    a = make(horizon=2)
    obs, u = th.randn(2, 3), th.randn(2, 4, 2)
    critic = a.policy.critic_at(obs)
    score_a = a.policy.q_score(obs, u, critic)
    a.policy.dynamics = _Shift()
    score_b = a.policy.q_score(obs, u, critic)
    assert not th.allclose(score_a[..., 0], score_b[..., 0])


def test_user_model_by_instance_and_import_path():
    env = gym.make("MountainCarContinuous-v0")
    model = QSTAC("MlpPolicy", env, dynamics_model=_Shift(), **SMALL)
    assert isinstance(model.policy.dynamics, _Shift)
    by_path = QSTAC(
        "MlpPolicy", "Pendulum-v1", dynamics_model="sb3_stein.envs.pendulum:PendulumDynamics", **SMALL
    )
    assert isinstance(by_path.policy.dynamics, PendulumDynamics)


# ------------------------------------------------------------------ learning
@pytest.mark.parametrize(
    "env_id", ["Pendulum-v1", "MultiGoal-v0", "Nav2DEasy-v0", "Nav2DMedium-v0", "Nav2DHard-v0"]
)
def test_learns_a_few_hundred_steps_and_logs(env_id):
    model = make(env_id, svgd_steps=1, n_particles=3).learn(120)
    logged = model.logger.name_to_value
    for key in (
        "train/entropy",
        "train/sequence_entropy",
        "train/kernel_bandwidth",
        "train/particle_spread",
        "train/model_rollout_ms",
        "train/sequence_score_ms",
        "train/constraint_violation",
        "train/multiplier_abs_mean",
        "train/actor_loss",
    ):
        assert key in logged and np.isfinite(logged[key]), key


def test_save_load_same_deterministic_actions_and_training_continues(tmp_path):
    model = make().learn(100)
    obs = np.random.default_rng(0).uniform(-1, 1, size=(5, 3)).astype(np.float32)
    actions, _ = model.predict(obs, deterministic=True)
    again, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(actions, again)
    model.save(tmp_path / "qstac")
    loaded = QSTAC.load(tmp_path / "qstac", env=gym.make("Pendulum-v1"))
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], actions, atol=1e-6)
    assert loaded.policy.horizon == 2 and isinstance(loaded.policy.dynamics, PendulumDynamics)
    without_env = QSTAC.load(tmp_path / "qstac")
    np.testing.assert_allclose(without_env.predict(obs, deterministic=True)[0], actions, atol=1e-6)
    n_updates = loaded._n_updates
    loaded.learn(40, reset_num_timesteps=False)
    assert loaded._n_updates > n_updates


def test_act_svgd_steps_plans_with_fewer_steps_only_when_acting(tmp_path):
    obs = np.random.default_rng(1).uniform(-1, 1, size=(4, 3)).astype(np.float32)
    full = make(svgd_steps=3)
    cheap = make(svgd_steps=3, act_svgd_steps=1)
    one_step = make(svgd_steps=1)  # same seed, same weights: acts as cheap must
    act = {
        name: m.predict(obs, deterministic=True)[0]
        for name, m in [("full", full), ("cheap", cheap), ("one", one_step)]
    }
    np.testing.assert_allclose(act["cheap"], act["one"], atol=1e-6)
    assert not np.allclose(act["cheap"], act["full"], atol=1e-4)
    # Gradient steps keep svgd_steps: the sampler used by train() runs L = 3.
    obs_t = th.as_tensor(obs)
    np.testing.assert_allclose(
        cheap.policy.sample(obs_t, with_log_prob=False, fixed_noise=True).pre_tanh.detach().numpy(),
        full.policy.sample(obs_t, with_log_prob=False, fixed_noise=True).pre_tanh.detach().numpy(),
        atol=1e-6,
    )
    cheap.save(tmp_path / "cheap")
    assert QSTAC.load(tmp_path / "cheap").policy.act_svgd_steps == 1


def test_same_seed_same_run():
    a, b = make().learn(80), make().learn(80)
    for p, q in zip(a.policy.parameters(), b.policy.parameters()):
        assert th.equal(p, q)


def test_two_envs():
    model = make(make_vec_env("Pendulum-v1", n_envs=2, seed=0)).learn(100)
    assert model.num_timesteps == 100


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(horizon=0), "horizon must be an integer >= 1"),
        (dict(n_particles=1), "n_particles must be an integer >= 2"),
        (dict(bound_std=None), "bound_std must be a number > 0"),
        (dict(bound_std=0.0), "bound_std must be a finite number > 0"),
        (dict(constraint_penalty=0.0), "constraint_penalty must be"),
        (dict(horizon_discount=0.0), r"horizon_discount must be a number in \(0.0, 1.0\]"),
        (dict(prior_weight=-1.0), "prior_weight must be"),
        (dict(svgd_step_size=0.5, constraint_penalty=5.0), r"svgd_step_size \* constraint_penalty must be"),
        (dict(policy_kwargs=dict(amortized=True)), "no amortized sampler"),
        (dict(act_svgd_steps=-1), "act_svgd_steps must be an integer >= 0"),
        (dict(act_svgd_steps=1.5), "act_svgd_steps must be an integer >= 0"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_env_without_a_model_lists_the_registered_ones():
    with pytest.raises(
        ValueError,
        match=r"no dynamics model is registered for environment 'MountainCarContinuous-v0'.*Nav2DHard-v0",
    ):
        QSTAC("MlpPolicy", "MountainCarContinuous-v0")


def test_mismatched_model_raises_at_construction():
    class Wrong(nn.Module):
        def forward(self, obs, action):
            return th.cat([obs, action], -1)

    with pytest.raises(ValueError, match="expected the observation's shape"):
        QSTAC("MlpPolicy", "Pendulum-v1", dynamics_model=Wrong())


def test_vec_normalize_raises():
    venv = VecNormalize(make_vec_env("Pendulum-v1"))
    with pytest.raises(ValueError, match="VecNormalize"):
        QSTAC("MlpPolicy", venv)


def test_discrete_actions_raise():
    with pytest.raises(ValueError, match="QSTAC needs a continuous"):
        QSTAC("MlpPolicy", "CartPole-v1")
