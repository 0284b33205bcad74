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
