"""A replay buffer that keeps the MPC's plan next to each transition: the warm start of the updates.

SAC-FOP and SAC-FOA re-solve the MPC for every sample of every minibatch (the actor's actions at
``s`` and the target's at ``s'``). leap-c stores the solver's iterate in its buffer as "context"
for exactly this; here the buffer stores the primal plan ``z`` ``(nz,)`` the agent computed when
it acted in ``s``. An update warm-starts the solve at ``s`` from it and the solve at ``s'`` from
it shifted by one stage (:meth:`~sb3_stein.common.mpc.MPCLayer.shift`). Rows never written (all
zeros) mean "no plan": the update cold-starts them.

Measured on the cart-pole (batch 64, after 600 steps): 10.7 interior-point iterations per solve
warm-started against 11.8 cold, a small saving, because the update's freshly sampled parameters
differ from those the agent acted with. The warm start matters for another reason: the swing-up
OCP is non-convex and its solution depends on the initial guess (two guesses gave first controls
72 N apart for the same state and parameters). Starting from the plan the agent executed keeps the
update's actions on the local solution the agent actually follows, as leap-c's stored solver
context does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

__all__ = ["MPCReplayBuffer"]


class MPCReplayBuffer(ReplayBuffer):
    """SB3's :class:`~stable_baselines3.common.buffers.ReplayBuffer` plus one MPC plan per transition.

    :param buffer_size: capacity (transitions per environment).
    :param observation_space: observation space.
    :param action_space: the space of what the buffer stores as actions.
    :param device: torch device of the samples.
    :param n_envs: number of parallel environments.
    :param optimize_memory_usage: SB3's memory-saving variant.
    :param handle_timeout_termination: SB3's time-limit handling.
    :param plan_size: ``nz``, the MPC's number of decision variables (0: store nothing).

    The plans cost ``buffer_size x n_envs x nz`` float32 numbers: paged in by the OS only where
    written while training, but written in full by ``save_replay_buffer`` (about 0.5 GB for the wind
    maze's ``nz = 124`` and 2 GB for the chain's ``nz = 501`` at ``buffer_size = 1e6``). The pairing
    of plans with samples replays SB3's draw of environment indices (SB3 < 2.10, as pinned);
    tests/test_sac_mpc.py checks it.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: Any = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        plan_size: int = 0,
    ) -> None:
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
        )
        # float32 and lazily paged in by the OS (np.zeros): only the rows written cost memory.
        self.plans = np.zeros((self.buffer_size, self.n_envs, int(plan_size)), dtype=np.float32)
        #: Plans of the transition being added (set by the algorithm before ``add``).
        self.pending_plans: np.ndarray | None = None
        #: Plans of the last sampled minibatch ``(batch, nz)``, float64.
        self.sampled_plans: np.ndarray | None = None

    def add(self, *args: Any, **kwargs: Any) -> None:
        if self.pending_plans is not None and self.plans.shape[-1]:
            self.plans[self.pos] = self.pending_plans
        else:
            self.plans[self.pos] = 0.0
        self.pending_plans = None
        super().add(*args, **kwargs)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> ReplayBufferSamples:
        # SB3 draws the environment index of each sample inside _get_samples from numpy's global
        # generator: draw the same numbers first, then rewind it so that SB3's draw is identical.
        state = np.random.get_state()  # noqa: NPY002
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))  # noqa: NPY002
        np.random.set_state(state)  # noqa: NPY002
        self.sampled_plans = self.plans[batch_inds, env_indices].astype(np.float64)
        return super()._get_samples(batch_inds, env)
