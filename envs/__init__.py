"""Environments of sb3-stein, registered with gymnasium on import (``import sb3_stein`` imports this).

Registration is cheap (entry points are strings; no environment module, and hence no ``torch``, is imported
here) and idempotent (ids already in ``gymnasium.registry`` are left untouched). The same table is registered
by the start-up hook (``_sb3_stein_zoo``, installed as a ``.pth``) as soon as any process imports gymnasium,
so the ids are known wherever the package is installed, ``SubprocVecEnv`` workers started by spawn or
forkserver included. Where ``.pth`` files do not run (``python -S``, ``pip install --target``,
PYTHONPATH-only installs), ``import sb3_stein`` in that process first, or name the module in the id:
``gymnasium.make("sb3_stein.envs:Nav2DEasy-v0")``.

Registered ids (see :data:`ENV_IDS`):

* ``MultiGoal-v0``: the S²AC multi-goal point mass (:class:`sb3_stein.envs.multigoal.MultiGoalEnv`),
  asymmetric goals ``(5, 0), (-4, 3), (-4, -3)`` by default, truncated after 30 steps. Pass
  ``goals="symmetric"`` or ``obstacle=True`` (test-time bar of the paper's Fig. 7) to ``gymnasium.make``.
* ``MultiModalBandit-v0``: one-step tasks whose soft-optimal policy ``exp(r / alpha)`` is a known
  multimodal density (:class:`sb3_stein.envs.bandit.MultiModalBanditEnv`); pass ``n_modes``,
  ``separation``, ``width``, ``action_dim``, ``weights`` to ``gymnasium.make``.
* ``Nav2DEasy-v0``, ``Nav2DMedium-v0``, ``Nav2DHard-v0``: the Q-STAC point-mass navigation through
  Gaussian obstacles (:class:`sb3_stein.envs.nav2d.Nav2DEnv`), truncated after 200 steps.
* ``CartPoleSwingUp-v0``, ``PointMassWindMaze-v0``, ``Chain-v0``: the leap-c lecture's environments
  (SAC-ZOP/FOP), each with a dynamics model and an OCP (:mod:`sb3_stein.common.ocp`).

* ``BallInCupSparse-v0``: MPQ's sparse ball-in-cup on dm_control's MuJoCo model
  (:class:`sb3_stein.envs.ball_in_cup.BallInCupSparseEnv`, 200 steps of 0.02 s; needs the ``[mujoco]``
  extra), with a simulator model (:class:`sb3_stein.envs.ball_in_cup.BallInCupSimulator`) that rolls a
  second MuJoCo model out through ``mujoco.rollout``.

* ``KinovaReachObstacles-v0``: Q-STAC's reaching with obstacles on dm_control's Kinova Jaco arm
  (:class:`sb3_stein.envs.kinova.KinovaReachEnv`, joint-velocity control, 200 steps of 0.02 s; needs the
  ``[mujoco]`` extra), with the kinematic partial model :class:`sb3_stein.envs.kinova.KinovaKinematicModel`;
  ``KinovaPickPlace-v0``: pick up a cube and put it at a destination
  (:class:`sb3_stein.envs.kinova.KinovaPickPlaceEnv`, 400 steps), with the partial model
  :class:`sb3_stein.envs.kinova.KinovaPickPlaceModel` (the arm's kinematics and a grasp rule for the cube).
  Both take Q-STAC's sim-to-real adaptive action integrator (Eq. 16), a wrapper that turns each
  joint-velocity action into ``n`` position-tracking servo set-points per step
  (:class:`sb3_stein.envs.action_integrator.AdaptiveActionIntegrator`).

* ``Ballbot-v0``: DMPC's ballbot reaching a target within 3 s past a wall
  (:class:`sb3_stein.envs.ballbot.BallbotEnv`, 60 steps of 0.05 s; the deadline terminates: the time to go is
  part of the observation), with the torch model :class:`sb3_stein.envs.ballbot.BallbotDynamics`
  (control-affine ``f``/``g`` for DMPC).

Each has a torch dynamics model registered with :func:`sb3_stein.register_dynamics_model`; so has
gymnasium's ``Pendulum-v1`` (:class:`sb3_stein.envs.pendulum.PendulumDynamics`).
"""

from __future__ import annotations

from typing import Any

from _sb3_stein_zoo import ENVIRONMENTS, register_environments

__all__ = [
    "ENV_IDS",
    "AdaptiveActionIntegrator",
    "BallInCupSimulator",
    "BallInCupSparseEnv",
    "BallbotDynamics",
    "BallbotEnv",
    "CartPoleSwingUpDynamics",
    "CartPoleSwingUpEnv",
    "CartPoleSwingUpOCP",
    "ChainDynamics",
    "ChainEnv",
    "ChainOCP",
    "KinovaKinematicModel",
    "KinovaPickPlaceEnv",
    "KinovaPickPlaceModel",
    "KinovaReachEnv",
    "MultiGoalDynamics",
    "MultiGoalEnv",
    "MultiModalBanditEnv",
    "Nav2DDynamics",
    "Nav2DEnv",
    "PendulumDynamics",
    "WindMazeDynamics",
    "WindMazeEnv",
    "WindMazeOCP",
    "register_envs",
]

_LAZY = {
    "AdaptiveActionIntegrator": "action_integrator",
    "BallInCupSparseEnv": "ball_in_cup",
    "BallInCupSimulator": "ball_in_cup",
    "KinovaReachEnv": "kinova",
    "KinovaKinematicModel": "kinova",
    "KinovaPickPlaceEnv": "kinova",
    "KinovaPickPlaceModel": "kinova",
    "MultiGoalEnv": "multigoal",
    "MultiModalBanditEnv": "bandit",
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
    "BallbotEnv": "ballbot",
    "BallbotDynamics": "ballbot",
}

#: Environment ids registered by this package. The table itself lives in the standard-library-only
#: start-up hook (``_sb3_stein_zoo.ENVIRONMENTS``), which registers it whenever gymnasium is imported,
#: so that processes that never import ``sb3_stein`` (e.g. ``SubprocVecEnv`` workers) know the ids.
ENV_IDS: list[str] = list(ENVIRONMENTS)


def register_envs() -> None:
    """Register each id of :data:`ENV_IDS` not yet in ``gymnasium.registry`` (safe to call repeatedly)."""
    register_environments()


register_envs()


def __getattr__(name: str) -> Any:
    # Lazy access to the environment classes without importing torch at package import time.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
