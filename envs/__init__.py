"""Environments of sb3-stein, registered with gymnasium on import (``import sb3_stein`` imports this).

Registration is cheap (entry points are strings; no environment module, and hence no ``torch``, is imported
here) and idempotent (ids already in ``gymnasium.registry`` are left untouched).

Registered ids (see :data:`ENV_IDS`):

* ``MultiGoal-v0``: the S²AC multi-goal point mass (:class:`sb3_stein.envs.multigoal.MultiGoalEnv`),
  asymmetric goals ``(5, 0), (-4, 3), (-4, -3)`` by default, truncated after 30 steps. Pass
  ``goals="symmetric"`` or ``obstacle=True`` (test-time bar of the paper's Fig. 7) to ``gymnasium.make``.
* ``Nav2DEasy-v0``, ``Nav2DMedium-v0``, ``Nav2DHard-v0``: the Q-STAC point-mass navigation through
  Gaussian obstacles (:class:`sb3_stein.envs.nav2d.Nav2DEnv`), truncated after 200 steps.
* ``CartPoleSwingUp-v0``, ``PointMassWindMaze-v0``, ``Chain-v0``: the leap-c lecture's environments
  (SAC-ZOP/FOP), each with a dynamics model and an OCP (:mod:`sb3_stein.common.ocp`).

Each has a torch dynamics model registered with :func:`sb3_stein.register_dynamics_model`; so has
gymnasium's ``Pendulum-v1`` (:class:`sb3_stein.envs.pendulum.PendulumDynamics`).
"""

from __future__ import annotations

from typing import Any

import gymnasium

__all__ = [
    "ENV_IDS",
    "CartPoleSwingUpDynamics",
    "CartPoleSwingUpEnv",
    "CartPoleSwingUpOCP",
    "ChainDynamics",
    "ChainEnv",
    "ChainOCP",
    "MultiGoalDynamics",
    "MultiGoalEnv",
    "Nav2DDynamics",
    "Nav2DEnv",
    "PendulumDynamics",
    "WindMazeDynamics",
    "WindMazeEnv",
    "WindMazeOCP",
    "register_envs",
]

_LAZY = {
    "MultiGoalEnv": "multigoal",
    "MultiGoalDynamics": "multigoal",
    "Nav2DEnv": "nav2d",
    "Nav2DDynamics": "nav2d",
    "PendulumDynamics": "pendulum",
    "CartPoleSwingUpEnv": "cartpole_swingup",
    "CartPoleSwingUpDynamics": "cartpole_swingup",
    "CartPoleSwingUpOCP": "cartpole_swingup",
    "WindMazeEnv": "windmaze",
    "WindMazeDynamics": "windmaze",
    "WindMazeOCP": "windmaze",
    "ChainEnv": "chain",
    "ChainDynamics": "chain",
    "ChainOCP": "chain",
}

# id -> keyword arguments of gymnasium.register
_REGISTRATIONS: dict[str, dict[str, Any]] = {
    "MultiGoal-v0": {
        "entry_point": "sb3_stein.envs.multigoal:MultiGoalEnv",
        "max_episode_steps": 30,  # == multigoal.MAX_EPISODE_STEPS (not imported, to keep this module light)
    },
    **{
        f"Nav2D{level.capitalize()}-v0": {
            "entry_point": "sb3_stein.envs.nav2d:Nav2DEnv",
            "max_episode_steps": 200,  # == nav2d.MAX_EPISODE_STEPS
            "kwargs": {"level": level},
        }
        for level in ("easy", "medium", "hard")
    },
    # The leap-c lecture's environments (SAC-ZOP/FOP); each also has an OCP (sb3_stein.common.ocp).
    "CartPoleSwingUp-v0": {
        "entry_point": "sb3_stein.envs.cartpole_swingup:CartPoleSwingUpEnv",
        "max_episode_steps": 200,  # 10 s at dt = 0.05
    },
    "PointMassWindMaze-v0": {
        "entry_point": "sb3_stein.envs.windmaze:WindMazeEnv",
        "max_episode_steps": 100,  # 10 s at dt = 0.1
    },
    "Chain-v0": {
        "entry_point": "sb3_stein.envs.chain:ChainEnv",
        "max_episode_steps": 200,  # 10 s at dt = 0.05
    },
}

#: Environment ids registered by this package.
ENV_IDS: list[str] = list(_REGISTRATIONS)


def register_envs() -> None:
    """Register each id of :data:`ENV_IDS` not yet in ``gymnasium.registry`` (safe to call repeatedly)."""
    for env_id, kwargs in _REGISTRATIONS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, **kwargs)


register_envs()


def __getattr__(name: str) -> Any:
    # Lazy access to the environment classes without importing torch at package import time.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
