"""Early, explicit checks of user input shared by every algorithm of the package."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


def _action_space_of(env: Any) -> spaces.Space | None:
    if env is None:
        return None
    if isinstance(env, str):
        made = gym.make(env)
        try:
            return made.action_space
        finally:
            made.close()
    return getattr(env, "action_space", None)


def check_box_action_space(env: Any, owner: str) -> None:
    """Refuse anything but a bounded ``Box`` action space, before SB3 builds the algorithm.

    :param env: environment instance, VecEnv or registered id.
    :param owner: algorithm name for the message.
    :raises ValueError: naming the space that was given and what is allowed.
    """
    space = _action_space_of(env)
    if space is None:
        return
    if not isinstance(space, spaces.Box):
        raise ValueError(
            f"{owner} needs a continuous gymnasium.spaces.Box action space (env parameter), "
            f"but the environment's action space is {space!r}. Discrete, MultiDiscrete, MultiBinary "
            "and Dict action spaces are not supported; use SB3's DQN/PPO for those."
        )
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        raise ValueError(
            f"{owner} squashes actions with tanh into the Box bounds, so they must be finite; "
            f"got low={space.low}, high={space.high}. Wrap the environment to rescale its actions."
        )


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` must be an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive(name: str, value: Any, allow_none: bool = False) -> float | None:
    """``value`` must be a finite number ``> 0`` (or ``None`` if allowed)."""
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.floating))
        or not np.isfinite(value)
        or value <= 0
    ):
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a finite number > 0{extra}, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` must be one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_range(name: str, value: Any, low: float, high: float | None, open_low: bool = False) -> float:
    """``value`` must be a finite number in ``[low, high]`` (``(low, high]`` with ``open_low``)."""
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and (high is None or value <= high)
    if not ok:
        upper = "inf)" if high is None else f"{high}]"
        raise ValueError(
            f"{name} must be a number in {'(' if open_low else '['}{low}, {upper}, got {value!r}"
        )
    return float(value)


def check_observation_space(env: Any, owner: str) -> None:
    """Refuse observation spaces the package's policies cannot read (Dict, Tuple), before SB3 does.

    SB3's own message for a Dict space says "use MultiInputPolicy", which no algorithm here has.

    :param env: environment instance, VecEnv or registered id (``None``: nothing to check).
    :param owner: algorithm name for the message.
    :raises ValueError: naming the space.
    """
    if env is None:
        return
    space: spaces.Space | None
    if isinstance(env, str):
        made = gym.make(env)
        try:
            space = made.observation_space
        finally:
            made.close()
    else:
        space = getattr(env, "observation_space", None)
    if isinstance(space, (spaces.Dict, spaces.Tuple)):
        raise ValueError(
            f"{owner} supports flat observation spaces only (a Box, as with SB3's MlpPolicy); the "
            f"environment's observation space is {type(space).__name__}, which is not supported "
            "(there is no MultiInputPolicy here). Flatten it first, e.g. with "
            "gymnasium.wrappers.FlattenObservation."
        )


def check_ent_coef(ent_coef: Any) -> str | float:
    """``ent_coef`` must be ``"auto"``, ``"auto_<init>"`` with ``init > 0``, or a finite number > 0.

    SB3's SAC takes ``0`` and negative values, which turn the maximum-entropy objective off or
    upside down; every algorithm here is a maximum-entropy method, so they are refused.
    """
    if isinstance(ent_coef, str):
        if ent_coef == "auto":
            return ent_coef
        if ent_coef.startswith("auto_"):
            try:
                init = float(ent_coef[len("auto_") :])
            except ValueError:
                init = float("nan")
            if np.isfinite(init) and init > 0:
                return ent_coef
        raise ValueError(
            f"ent_coef must be 'auto', 'auto_<initial value > 0>' or a finite number > 0, got {ent_coef!r}"
        )
    if (
        isinstance(ent_coef, bool)
        or not isinstance(ent_coef, (int, float, np.floating))
        or not (np.isfinite(ent_coef) and ent_coef > 0)
    ):
        raise ValueError(
            f"ent_coef must be 'auto', 'auto_<initial value > 0>' or a finite number > 0, got {ent_coef!r}"
        )
    return float(ent_coef)


def check_update_schedule(batch_size: Any, target_update_interval: Any) -> None:
    """Refuse at construction what SB3's SAC only fails on mid-training.

    ``batch_size`` must be an integer >= 1 (0 samples an empty batch and the losses become NaN);
    ``target_update_interval`` an integer >= 1 (0 is a modulo by zero at the first gradient step).
    """
    check_int("batch_size", batch_size, 1)
    check_int("target_update_interval", target_update_interval, 1)
