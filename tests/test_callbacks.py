"""Tests of :mod:`sb3_stein.common.callbacks` (training-only environment attributes)."""

from __future__ import annotations

import numpy as np
import pytest
from rl_zoo3.utils import get_callback_list
from sb3_stein.envs.windmaze import START
from stable_baselines3 import SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

import sb3_stein  # noqa: F401  (registers PointMassWindMaze-v0)
from sb3_stein.common.callbacks import TrainingEnvAttributes


def _start_distances(env: DummyVecEnv | VecNormalize, n: int) -> np.ndarray:
    """Distances of ``n`` reset positions from the start disc's centre (original observations)."""
    distances = []
    for _ in range(n):
        obs = env.reset()
        if isinstance(env, VecNormalize):
            obs = env.get_original_obs()
        distances.append(np.hypot(obs[:, 0] - START[0], obs[:, 1] - START[1]))
    return np.concatenate(distances)


@pytest.mark.parametrize("normalize", [False, True])
def test_sets_the_training_env_only_through_monitor_and_vecnormalize(normalize: bool) -> None:
    train_env = make_vec_env("PointMassWindMaze-v0", n_envs=2, seed=0)  # Monitor + TimeLimit inside
    if normalize:
        train_env = VecNormalize(train_env)
    eval_env = make_vec_env("PointMassWindMaze-v0", n_envs=1, seed=1)
    model = SAC("MlpPolicy", train_env, learning_starts=1000, seed=0)
    model.learn(5, callback=TrainingEnvAttributes({"random_start": True}))
    assert train_env.get_attr("random_start") == [True, True]
    assert eval_env.get_attr("random_start") == [False]
    assert _start_distances(train_env, 10).max() > 1.0  # anywhere in the 4 m maze
    assert _start_distances(eval_env, 10).max() <= 0.15 + 1e-6  # the start disc


def test_subprocess_envs() -> None:
    env = make_vec_env("PointMassWindMaze-v0", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv)
    try:
        model = SAC("MlpPolicy", env, learning_starts=1000, seed=0)
        model.learn(2, callback=TrainingEnvAttributes({"random_start": True}))
        assert env.get_attr("random_start") == [True, True]
    finally:
        env.close()


def test_rl_zoo3_builds_it_from_the_yml_syntax() -> None:
    entry = {"sb3_stein.common.callbacks.TrainingEnvAttributes": {"attributes": {"random_start": True}}}
    (callback,) = get_callback_list({"callback": [entry]})
    assert isinstance(callback, TrainingEnvAttributes)
    assert callback.attributes == {"random_start": True}


def test_an_unknown_attribute_raises_when_learn_starts() -> None:
    model = SAC("MlpPolicy", "PointMassWindMaze-v0", learning_starts=1000, seed=0)
    with pytest.raises(ValueError, match="no attribute 'random_strat'"):
        model.learn(2, callback=TrainingEnvAttributes({"random_strat": True}))


@pytest.mark.parametrize("attributes", [{}, None, {"": 1}, {1: 2}])
def test_bad_attributes_raise_at_construction(attributes: object) -> None:
    with pytest.raises(ValueError, match="attributes"):
        TrainingEnvAttributes(attributes)  # type: ignore[arg-type]
