"""Acting with an MPC layer: one warm start per environment row, fallbacks and statistics.

Shared by every policy whose action is an MPC's first control (SAC-ZOP/FOP/FOA, DMPC): the previous
plan of the same episode, shifted by one stage, warm-starts the next solve; a failed solve falls back
to the previous successful plan's next control (else the middle of the control bounds) and is counted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sb3_stein.common.mpc import MPCLayer, MPCSolution

__all__ = ["ActingContext", "WarmStartedPredict", "record_acting_stats"]


class ActingContext:
    """Per environment row: the last plan ``(n_envs, nz)``, whether it exists, and acting statistics.

    ``stats`` counts, since the context was made: ``solves`` (rows solved), ``failures`` (rows that
    got a fallback action), ``iterations`` (solver iterations of the ``iteration_solves`` rows whose
    count is known: a mapped solve reports none), ``retries`` (rows whose warm-started solve failed
    and was retried cold), ``fallbacks`` (rows ``solver="riccati"`` handed to fatrop), ``u0_solved``
    (first-control entries of the successful solves, ``nu`` per row) and ``u0_at_bound`` (those of
    them at a control bound, :meth:`~sb3_stein.common.mpc.MPCLayer.controls_at_bound`).
    """

    def __init__(self) -> None:
        self.plans = np.zeros((0, 0))
        self.has_plan = np.zeros(0, dtype=bool)
        self.stats = {
            "solves": 0,
            "failures": 0,
            "iterations": 0,
            "iteration_solves": 0,
            "retries": 0,
            "fallbacks": 0,
            "u0_solved": 0,
            "u0_at_bound": 0,
        }
        #: ``stats`` at the previous :func:`record_acting_stats` (its per-window shares start there).
        self.logged: dict[str, int] = {}
        #: The solver of the last layer :meth:`act` used (``MPCLayer.solver_name``).
        self.solver = ""

    def resize(self, batch: int, nz: int) -> None:
        """A different number of rows (or a new problem size) starts every row afresh."""
        if self.plans.shape != (batch, nz):
            self.plans = np.zeros((batch, nz))
            self.has_plan = np.zeros(batch, dtype=bool)

    def forget(self, rows: np.ndarray | None = None) -> None:
        """Rows (all by default) start without a plan; rows not yet seen have none anyway."""
        if rows is None:
            self.has_plan[:] = False
        else:
            rows = np.asarray(rows, dtype=np.int64)
            self.has_plan[rows[rows < len(self.has_plan)]] = False

    def act(
        self, mpc: MPCLayer, states: np.ndarray, params: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, MPCSolution]:
        """Solve the MPC for the environment rows, warm-started, with fallbacks, and count.

        Each row warm-starts from its previous plan shifted by one stage (:meth:`MPCLayer.warm_start`);
        a row whose solve fails gets :meth:`MPCLayer.fallback_controls` of its previous successful plan
        (the plan continues open-loop) or, without one, the middle of the control bounds.

        :param mpc: the layer.
        :param states: ``(n_envs, nx)`` MPC states.
        :param params: ``(n_envs, n_phi)`` MPC parameters.
        :return: ``(actions (n_envs, nu) in environment units, failed (n_envs,) bool, the solution)``.
        """
        batch = len(states)
        self.solver = mpc.solver_name
        self.resize(batch, mpc.nz)
        guess = mpc.warm_start(states, self.plans, self.has_plan, shift=True)
        solution = mpc.solve(states, params, guess)
        ok = solution.success
        actions = solution.u0.copy()
        if not ok.all():
            fallback = mpc.fallback_controls(self.plans, batch)
            middle = mpc.fallback_controls(None, batch)
            fallback[~self.has_plan] = middle[~self.has_plan]
            actions[~ok] = fallback[~ok]
        plans = solution.z.copy()
        plans[~ok] = mpc.shift(self.plans)[~ok]
        self.plans, self.has_plan = plans, ok | self.has_plan
        self.stats["solves"] += batch
        self.stats["failures"] += int((~ok).sum())
        known = solution.iterations >= 0  # a mapped solve reports no iteration count (-1)
        self.stats["iterations"] += int(solution.iterations[known].sum())
        self.stats["iteration_solves"] += int(known.sum())
        self.stats["retries"] += int(np.count_nonzero(solution.retried))
        self.stats["fallbacks"] += int(np.count_nonzero(solution.fallback))
        at_bound = mpc.controls_at_bound(solution.u0[ok])  # the MPC's own controls, not fallbacks
        self.stats["u0_at_bound"] += int(at_bound.sum())
        self.stats["u0_solved"] += at_bound.size
        return actions, ~ok, solution


def record_acting_stats(logger: Any, acting: ActingContext, act_seconds: float, steps: int) -> None:
    """Log an MPC algorithm's acting statistics (``acting``: its training rollouts' context).

    ``mpc/act_failures`` (solves that got a fallback action, in total), ``mpc/act_iterations`` (mean
    solver iterations per solve whose count is known: a mapped solve reports none), ``mpc/act_ms``
    (``act_seconds`` per environment step, over ``steps``), and since the previous call
    ``mpc/retry_rate`` (the share of solves whose warm start failed and that were retried cold), with
    ``solver="riccati"`` ``mpc/fallback_rate`` (the share of solves fatrop redid), and
    ``mpc/act_u0_at_bound`` (the share of first controls at a control bound: it moves as the policy
    learns).

    :param logger: the algorithm's SB3 logger.
    :param acting: the context whose ``stats`` are logged.
    :param act_seconds: time spent acting, over the same span as ``steps``.
    :param steps: environment steps (summed over environments) behind ``act_seconds``.
    """
    stats, previous = acting.stats, acting.logged
    if stats["solves"]:
        logger.record("mpc/act_failures", stats["failures"])
        if stats["iteration_solves"]:
            logger.record("mpc/act_iterations", stats["iterations"] / stats["iteration_solves"])
        logger.record("mpc/act_ms", 1e3 * act_seconds / max(steps, 1))
    solves = stats["solves"] - previous.get("solves", 0)
    if solves > 0:
        logger.record("mpc/retry_rate", (stats["retries"] - previous.get("retries", 0)) / solves)
        if acting.solver == "riccati":
            fallbacks = stats["fallbacks"] - previous.get("fallbacks", 0)
            logger.record("mpc/fallback_rate", fallbacks / solves)
    solved = stats["u0_solved"] - previous.get("u0_solved", 0)
    if solved > 0:
        logger.record("mpc/act_u0_at_bound", (stats["u0_at_bound"] - previous.get("u0_at_bound", 0)) / solved)
    acting.logged = dict(stats)


class WarmStartedPredict:
    """Mixin for an SB3 policy (listed before the SB3 base class) that acts through
    :class:`ActingContext` objects in ``self.acting`` (``"train"``: the algorithm's rollouts,
    ``"predict"``: everything else): ``predict`` forgets the plans of rows whose episode starts."""

    acting: dict[str, ActingContext]

    def reset_warm_start(self, rows: np.ndarray | None = None, context: str | None = None) -> None:
        """Forget the acting plans of some environment rows (all rows of both contexts by default),
        e.g. when their episode ends."""
        for name, acting in self.acting.items():
            if context is None or context == name:
                acting.forget(rows)

    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``predict``; rows whose ``episode_start`` is set start without a previous plan."""
        if episode_start is not None:
            starts = np.asarray(episode_start, dtype=bool).reshape(-1)
            if starts.any():
                self.reset_warm_start(np.flatnonzero(starts), "predict")
        return super().predict(observation, state, episode_start, deterministic)  # type: ignore[misc]
