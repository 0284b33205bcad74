"""What an outside test pass found in S²AC and Q-STAC (issue 11): each test fails on the code before it.

Parametrised over both Stein algorithms where the behaviour is shared, as sb3-contrib's suites are.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from torch import nn

from sb3_stein import QSTAC, S2AC
from sb3_stein.common.svgd import kernel_bandwidth, pairwise_sq_dists

SMALL = dict(learning_starts=30, batch_size=8, n_particles=3, svgd_steps=1, policy_kwargs=dict(net_arch=[16]))
ALGOS = [S2AC, QSTAC]


def make(algo, env="Pendulum-v1", **kwargs):
    settings = {**SMALL, **kwargs}
    if algo is QSTAC:
        settings.setdefault("horizon", 2)
    return algo("MlpPolicy", env, seed=0, **settings)


class _Shift(nn.Module):
    """A user's dynamics model for an environment without a registered one."""

    def forward(self, obs, action):
        return obs + 0.1 * action


class _AlwaysTerminal(nn.Module):
    def forward(self, obs, action):
        return obs + 0.1 * action[..., :1]

    def is_terminal(self, obs):
        return th.ones(obs.shape[:-1], dtype=th.bool)


class _WrongShapeOnBigBatches(nn.Module):
    """Passes the construction probe (small batches) but drops a dimension on real ones."""

    def forward(self, obs, action):
        out = obs + 0.0 * action[..., :1]
        return out[..., :2] if obs.shape[0] > 4 else out


class _Float64Observations(gym.ObservationWrapper):
    def __init__(self, env):
        super().__init__(env)
        box = env.observation_space
        self.observation_space = spaces.Box(
            box.low.astype(np.float64), box.high.astype(np.float64), dtype=np.float64
        )

    def observation(self, observation):
        return observation.astype(np.float64)


class _DictObservations(gym.ObservationWrapper):
    def __init__(self, env):
        super().__init__(env)
        self.observation_space = spaces.Dict({"state": env.observation_space})

    def observation(self, observation):
        return {"state": observation}


# ------------------------------------------------------------------ crashes a user hits
@pytest.mark.parametrize(
    "algo,env_id", [(S2AC, "MultiGoal-v0"), (QSTAC, "Pendulum-v1"), (QSTAC, "MultiGoal-v0")]
)
def test_a_linear_critic_net_arch_empty_learns(algo, env_id):
    """net_arch=[] (one linear layer): its input gradient is the weight row, for any input size."""
    make(algo, env_id, policy_kwargs=dict(net_arch=[])).learn(40)


@pytest.mark.parametrize("algo", ALGOS)
def test_float64_observations(algo):
    env = _Float64Observations(gym.make("Pendulum-v1"))
    kwargs = dict(dynamics_model="sb3_stein.envs.pendulum:PendulumDynamics") if algo is QSTAC else {}
    model = make(algo, env, **kwargs).learn(40)
    action, _ = model.predict(env.observation_space.sample(), deterministic=True)
    assert action.shape == (1,)


def test_qstac_resumes_with_a_users_dynamics_model(tmp_path):
    env = gym.make("MountainCarContinuous-v0")  # no registered model
    model = make(QSTAC, env, dynamics_model=_Shift()).learn(40)
    obs = env.observation_space.sample()
    expected, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "user_model")
    loaded = QSTAC.load(tmp_path / "user_model", env=gym.make("MountainCarContinuous-v0"))
    assert isinstance(loaded.policy.dynamics, _Shift)
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], expected, atol=1e-6)
    loaded.learn(20, reset_num_timesteps=False)
    assert QSTAC.load(tmp_path / "user_model").policy.dynamics is not None  # without env too


@pytest.mark.parametrize("algo", ALGOS)
def test_nan_observation_is_named_as_the_cause(algo):
    model = make(algo)
    obs = th.tensor([[float("nan"), 0.0, 0.0]] * 2)
    with pytest.raises(ValueError, match="observation is not finite"):
        model.policy.sample(obs)
    with pytest.raises(ValueError, match="observation is not finite"):
        model.predict(np.array([np.nan, 0.0, 0.0], dtype=np.float32))


def test_dict_observations_are_refused_clearly():
    env = _DictObservations(gym.make("Pendulum-v1"))
    for algo in ALGOS:
        with pytest.raises(ValueError, match=r"not supported.*no MultiInputPolicy"):
            algo("MlpPolicy", env)


def test_a_model_returning_wrong_shapes_on_real_batches_is_named():
    model = make(QSTAC, dynamics_model=_WrongShapeOnBigBatches())
    with pytest.raises(
        ValueError, match="dynamics_model _WrongShapeOnBigBatches returned a next state of shape"
    ):
        model.policy.sample(th.zeros(8, 3))


# ------------------------------------------------------------------ refused early
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(ent_coef=0.0), "ent_coef must be"),
        (dict(ent_coef=-1.0), "ent_coef must be"),
        (dict(ent_coef="auto_-1"), "ent_coef must be"),
        (dict(kernel_bandwidth=float("inf")), "kernel_bandwidth"),
        (dict(kernel_bandwidth=float("nan")), "kernel_bandwidth"),
        (dict(target_update_interval=0), "target_update_interval must be an integer >= 1"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
    ],
)
def test_impossible_hyperparameters_are_refused_at_construction(algo, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(algo, **kwargs)


def test_unknown_bandwidth_string_is_refused_by_the_core():
    with pytest.raises(ValueError, match="kernel_bandwidth must be one of"):
        kernel_bandwidth(pairwise_sq_dists(th.randn(1, 4, 2)), "mean")


def test_qstac_penalty_step_check_sees_the_step_size_in_policy_kwargs():
    with pytest.raises(ValueError, match="svgd_step_size \\* constraint_penalty must be <= 2"):
        # 0.5 * 5 > 2, while the argument's default 0.1 * 5 would pass
        QSTAC("MlpPolicy", "Pendulum-v1", constraint_penalty=5.0, policy_kwargs=dict(svgd_step_size=0.5))


@pytest.mark.parametrize("algo", ALGOS)
def test_fixed_noise_with_another_particle_count_is_refused(algo):
    model = make(algo)
    with pytest.raises(ValueError, match=r"fixed_noise=True .* n_particles=3"):
        model.policy.sample(th.zeros(2, 3), n_particles=5, fixed_noise=True)


@pytest.mark.parametrize("algo", ALGOS)
def test_vec_normalize_is_refused_by_set_env_and_load(algo, tmp_path):
    def normalized():
        return VecNormalize(make_vec_env("Pendulum-v1", n_envs=1), norm_obs=True)

    model = make(algo)
    if algo is QSTAC:
        with pytest.raises(ValueError, match="VecNormalize"):
            model.set_env(normalized())
        model.save(tmp_path / "m")
        with pytest.raises(ValueError, match="VecNormalize"):
            QSTAC.load(tmp_path / "m", env=normalized())
    # S²AC plans nothing through a model: normalised observations are fine for it.
    model.set_env(DummyVecEnv([lambda: gym.make("Pendulum-v1")]))


# ------------------------------------------------------------------ deterministic means deterministic
@pytest.mark.parametrize("algo", ALGOS)
def test_softmax_selection_is_deterministic_when_asked(algo, tmp_path):
    model = make(algo, eval_action_selection="softmax")
    obs = np.array([0.3, -0.2, 0.5], dtype=np.float32)
    first = [model.predict(obs, deterministic=True)[0] for _ in range(5)]
    assert all(np.array_equal(first[0], a) for a in first)
    model.save(tmp_path / "softmax")
    loaded = type(model).load(tmp_path / "softmax")
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], first[0], atol=1e-6)


def test_softmax_selection_draws_particles_with_softmax_probabilities():
    """Over the draw of the saved Gumbel noise, argmax(Q / alpha + G) is a softmax(Q / alpha) draw."""
    model = make(S2AC, eval_action_selection="softmax", n_particles=4)
    policy = model.policy
    actions = th.linspace(-0.9, 0.9, 4).view(1, 4, 1)
    critic = policy.critic_at(th.zeros(1, 3))
    q, _ = critic.min_q_and_grad(actions, need_grad=False)
    expected = th.softmax(q[0] / policy.alpha, -1)
    counts = th.zeros(4)
    th.manual_seed(0)
    for _ in range(3000):
        policy.eval_gumbel.copy_(-th.log(-th.log(th.rand(4))))
        chosen = policy.select(critic, actions, deterministic=True)
        counts += (actions[0, :, 0] == chosen[0, 0]).float()
    assert th.allclose(counts / counts.sum(), expected, atol=0.03)


# ------------------------------------------------------------------ Q-STAC rollouts stop at terminal states
def test_q_terms_after_a_terminal_state_are_masked():
    """Every next state is terminal: only Q(x_0, u_0) counts, so later controls get no Q gradient."""
    model = make(QSTAC, "MountainCarContinuous-v0", dynamics_model=_AlwaysTerminal(), horizon=3)
    policy = model.policy
    obs = th.zeros(2, 2)
    u = th.randn(2, 3, 3)
    score = policy.q_score(obs, u, policy.critic_at(obs))
    assert th.count_nonzero(score[..., 1:]) == 0
    assert score[..., 0].abs().sum() > 0
    policy.sample(obs)  # the share of masked steps is recorded once per sample
    assert policy.stats["terminal_masked"][-1] == pytest.approx(2 / 3)


def test_without_is_terminal_every_step_counts():
    model = make(QSTAC, "MountainCarContinuous-v0", dynamics_model=_Shift(), horizon=3)
    obs, u = th.zeros(2, 2), th.randn(2, 3, 3)
    score = model.policy.q_score(obs, u, model.policy.critic_at(obs))
    assert (score[..., 1:].abs().sum(-1) > 0).all()


# ------------------------------------------------------------------ names and old files
def test_policy_actor_is_the_initial_distribution_and_old_state_dicts_load():
    model = make(S2AC)
    policy = model.policy
    assert policy.actor is policy.initial_distribution
    old = {
        ("actor." + k[len("initial_distribution.") :] if k.startswith("initial_distribution.") else k): v
        for k, v in policy.state_dict().items()
        if k != "eval_gumbel"
    }
    assert any(k.startswith("actor.") for k in old)
    fresh = make(S2AC)
    fresh.policy.load_state_dict(old)
    for name, tensor in policy.initial_distribution.state_dict().items():
        assert th.equal(fresh.policy.initial_distribution.state_dict()[name], tensor)


@pytest.mark.parametrize("algo", ALGOS)
def test_floored_share_is_logged(algo):
    model = make(algo, kernel_bandwidth="median").learn(60)
    share = model.logger.name_to_value["train/bandwidth_floored"]
    assert 0.0 <= share <= 1.0


def test_the_saved_gumbel_noise_leaves_the_global_random_stream_alone():
    """Seeded runs initialise their networks as before eval_gumbel existed."""
    th.manual_seed(0)
    before = th.rand(3)
    th.manual_seed(0)
    from sb3_stein.s2ac.policies import saved_gumbel_noise

    saved_gumbel_noise(10, th.initial_seed())
    assert th.equal(th.rand(3), before)


def test_an_integer_bandwidth_is_a_fixed_kernel_variance():
    sq = pairwise_sq_dists(th.randn(1, 4, 2))
    assert float(kernel_bandwidth(sq, 1)) == 1.0
