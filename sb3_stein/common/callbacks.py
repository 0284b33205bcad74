"""Callbacks that rl_zoo3's ``callback:`` hyperparameter key can name.

:class:`TrainingEnvAttributes` sets attributes of the *training* environments only. rl_zoo3 passes a
yml entry's ``env_kwargs`` to the evaluation environment as well (and ``enjoy`` replays them), so a
setting that belongs to training alone, such as leap-c's training-mode starts on the wind maze
(``random_start=True``: every training episode starts anywhere in the maze, evaluation episodes in
the start disc), cannot be written as an ``env_kwargs`` entry. As a callback it reaches
``model.get_env()`` and nothing else: ``EvalCallback``'s environment, Optuna's trial evaluations and
``rl_zoo3.enjoy`` keep the environment's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

__all__ = ["TrainingEnvAttributes"]


class TrainingEnvAttributes(BaseCallback):
    """Set attributes of every training environment when ``learn`` starts.

    Each attribute is set with gymnasium's ``set_wrapper_attr`` on the wrapper or environment that
    already defines it (through ``Monitor``, ``TimeLimit`` and ``VecNormalize``; with ``DummyVecEnv``
    and ``SubprocVecEnv`` alike). rl_zoo3 example::

        PointMassWindMaze-v0:
          callback:
            - sb3_stein.common.callbacks.TrainingEnvAttributes:
                attributes: {random_start: true}

    The environments are reset by ``learn`` *before* callbacks start, so the first training
    episode of a fresh ``learn`` still runs with the old values; every later one uses the new
    ones. (A reset here would discard the observation SB3 already stored and, for
    ``VecNormalize``, its unnormalised copy.)

    :param attributes: attribute name -> value, e.g. ``{"random_start": True}``. Every name must
        already exist on the environment: a typo raises instead of creating an unused attribute.
    :param verbose: 1 prints the attributes set.
    :raises ValueError: (at construction) for an empty or non-string-keyed ``attributes``;
        (when ``learn`` starts) if a training environment has no attribute of that name.
    """

    def __init__(self, attributes: Mapping[str, Any], verbose: int = 0) -> None:
        super().__init__(verbose=verbose)
        if not isinstance(attributes, Mapping) or not attributes:
            raise ValueError(f"attributes must be a non-empty dict name -> value, got {attributes!r}")
        if not all(isinstance(name, str) and name for name in attributes):
            raise ValueError(f"attributes' names must be non-empty strings, got {list(attributes)!r}")
        self.attributes = dict(attributes)

    def _init_callback(self) -> None:
        env = self.training_env
        for name, value in self.attributes.items():
            # force=False: set only where the attribute exists, report False otherwise.
            found = env.env_method("set_wrapper_attr", name, value, force=False)
            if not all(found):
                raise ValueError(
                    f"TrainingEnvAttributes: the training environment has no attribute {name!r} "
                    f"(attributes={self.attributes!r}); name an attribute the environment defines"
                )
            if self.verbose >= 1:
                print(f"TrainingEnvAttributes: {name} = {value!r} on {env.num_envs} training env(s)")

    def _on_step(self) -> bool:
        return True
