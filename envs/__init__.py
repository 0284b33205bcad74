"""Environments of sb3-stein, registered with gymnasium on import (``import sb3_stein`` imports this).

Registration is cheap (entry points are strings; no environment module, and hence no ``torch``, is imported
here) and idempotent (ids already in ``gymnasium.registry`` are left untouched).

Registered ids (see :data:`ENV_IDS`):

* ``MultiGoal-v0``: the S²AC multi-goal point mass (:class:`sb3_stein.envs.multigoal.MultiGoalEnv`),
  asymmetric goals ``(5, 0), (-4, 3), (-4, -3)`` by default, truncated after 30 steps. Pass
  ``goals="symmetric"`` or ``obstacle=True`` (test-time bar of the paper's Fig. 7) to ``gymnasium.make``.
"""

from __future__ import annotations

from typing import Any

import gymnasium

__all__ = ["ENV_IDS", "MultiGoalDynamics", "MultiGoalEnv", "register_envs"]

# id -> keyword arguments of gymnasium.register
_REGISTRATIONS: dict[str, dict[str, Any]] = {
    "MultiGoal-v0": {
        "entry_point": "sb3_stein.envs.multigoal:MultiGoalEnv",
        "max_episode_steps": 30,  # == multigoal.MAX_EPISODE_STEPS (not imported, to keep this module light)
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
    if name in ("MultiGoalEnv", "MultiGoalDynamics"):
        from . import multigoal

        return getattr(multigoal, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
