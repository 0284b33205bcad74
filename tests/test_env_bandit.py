"""MultiModalBandit-v0: the one-step multimodal tasks of issue 12 and their known soft-optimal policies."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from sb3_stein.envs.bandit import MultiModalBanditEnv

import sb3_stein  # noqa: F401  (registers the id)


def test_passes_gymnasium_checker_and_ends_after_one_step():
    env = gym.make("MultiModalBandit-v0", action_dim=2, n_modes=3)
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (1,) and not obs.any()
    _, reward, terminated, truncated, info = env.step(env.unwrapped.centers[1].astype(np.float32))
    assert terminated and not truncated and info["mode"] == 1
    assert reward == pytest.approx(np.log(1 / 3), abs=1e-6)  # a centre of an equal 3-mixture


@pytest.mark.parametrize(("action_dim", "n_modes"), [(1, 2), (1, 3), (2, 2), (2, 3), (3, 2)])
def test_neighbouring_centres_are_separation_apart_and_are_the_maxima(action_dim, n_modes):
    env = MultiModalBanditEnv(n_modes=n_modes, separation=0.9, action_dim=action_dim)
    c = env.centers
    gaps = np.linalg.norm(c - np.roll(c, 1, axis=0), axis=-1)
    assert np.min(gaps[1:] if action_dim == 1 else gaps) == pytest.approx(0.9)
    # every centre is a local maximum of the reward
    rng = np.random.default_rng(0)
    for center in c:
        nearby = center + 0.02 * rng.standard_normal((50, action_dim))
        assert np.all(env.reward(nearby) <= env.reward(center) + 1e-12)


def test_soft_optimal_weights_follow_the_tempered_mixture():
    """For separated modes ``exp(r / alpha)`` has mode weights ``∝ w_k^(1 / alpha)``."""
    env = MultiModalBanditEnv(n_modes=2, separation=1.2, width=0.15, weights=[0.7, 0.3])
    for alpha in (1.0, 0.5, 0.2):
        expected = np.array([0.7, 0.3]) ** (1 / alpha)
        expected /= expected.sum()
        assert env.soft_optimal(alpha)["mode_mass"] == pytest.approx(expected, abs=2e-3)
    # the tempered mode of width 0.15 sqrt(alpha): a Gaussian's 2-sigma mass in 1-D
    assert MultiModalBanditEnv().soft_optimal(0.2)["near"] == pytest.approx(0.9545, abs=2e-3)


def test_soft_optimal_entropy_is_the_tempered_gaussians():
    """Two equal separated modes: entropy = log 2 + the entropy of N(0, width^2 alpha)."""
    env = MultiModalBanditEnv(width=0.1)
    alpha = 0.5
    std = 0.1 * np.sqrt(alpha)
    expected = np.log(2) + 0.5 * np.log(2 * np.pi * np.e * std**2)
    assert env.soft_optimal(alpha)["entropy"] == pytest.approx(expected, abs=1e-3)


def test_mode_summary_counts_samples_near_each_mode():
    env = MultiModalBanditEnv()  # centres -0.6, 0.6
    actions = np.array([[-0.6], [-0.58], [0.61], [0.0], [0.95]])
    summary = env.mode_summary(actions, alpha=1.0)  # near radius 0.3
    assert summary["shares"] == pytest.approx([0.4, 0.2])
    assert summary["near"] == pytest.approx(0.6)
    assert summary["weights"] == pytest.approx([2 / 3, 1 / 3], abs=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_modes=1), "n_modes"),
        (dict(action_dim=4), "action_dim"),
        (dict(width=0.0), "width"),
        (dict(separation=float("nan")), "separation"),
        (dict(weights=[1.0]), "weights"),
        (dict(weights=[1.0, -1.0]), "weights"),
        (dict(n_modes=3, separation=1.2), "outside the action box"),
    ],
)
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiModalBanditEnv(**kwargs)
