"""Per-run success table of a compare.py results folder: when evaluations first succeed, how often per
window, and how the training episodes ended (the wind maze's goal and violations; any env with
``info["is_success"]``).

Usage::

    python benchmarks/success_table.py --results benchmarks/results/sac_mpc_windmaze_1m \
        --env PointMassWindMaze-v0 --window 100000 --goal-return 20

For every ``logs/seed_<s>/<algo>/<env>_<id>/`` (the newest ``<id>`` per algo and seed, as compare.py's
report uses) it reads ``evaluations.npz`` (rl_zoo3's EvalCallback: ``successes`` per episode) and
``0.monitor.csv`` and writes ``success.md`` next to the runs:

* steps run (the last evaluation) and the first evaluation with a success;
* the evaluation success rate averaged over each ``--window`` steps (the last window may be partial);
* the last ten evaluations' success rates and mean returns;
* training episodes that reached the goal (return above ``--goal-return``) and that ended early without it
  (fewer steps than the env's registered ``max_episode_steps``, return at most ``--goal-return``: on the wind
  maze, a violation).

A run stopped before its budget (compare.py's marker ``failed``) is listed with the steps it ran.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from compare import RunSpec, list_run_dirs


@dataclass
class RunSuccess:
    """The success numbers of one run."""

    algo: str
    seed: int
    folder: Path
    steps: int
    first_success: int | None
    window_success: list[float]
    last_success: list[float]
    last_returns: list[float]
    episodes: int
    goal_episodes: int
    early_episodes: int


def newest_runs(results: Path, env: str) -> list[tuple[str, int, Path]]:
    """``(algo, seed, folder)`` of the newest run folder with evaluations per algo and seed under
    ``results/logs`` (compare.py's own folder rule, :func:`compare.list_run_dirs`)."""
    found = []
    for algo_folder in sorted(results.glob("logs/seed_*/*")):
        seed = algo_folder.parent.name.removeprefix("seed_")
        if not seed.isdigit():
            continue
        spec = RunSpec(algo_folder.name, env, int(seed))
        folders = [f for f in list_run_dirs(spec, results) if (f / "evaluations.npz").is_file()]
        if folders:
            found.append((spec.algo, spec.seed, folders[-1]))
    return sorted(found, key=lambda run: (run[0], run[1]))


def run_success(
    algo: str, seed: int, folder: Path, window: int, goal_return: float, episode_steps: int
) -> RunSuccess:
    """The numbers of the module docstring for one run folder."""
    evaluations = np.load(folder / "evaluations.npz")
    if "successes" not in evaluations.files or len(evaluations["successes"]) == 0:
        raise ValueError(
            f"{folder / 'evaluations.npz'} has no successes (the env reports no info['is_success'])"
        )
    steps = evaluations["timesteps"]  # (n_evals,)
    success = np.asarray(evaluations["successes"], dtype=float).mean(axis=1)  # (n_evals,)
    returns = np.asarray(evaluations["results"], dtype=float).mean(axis=1)  # (n_evals,)
    reached = np.flatnonzero(success > 0)
    windows = (steps - 1) // window
    window_success = [float(success[windows == w].mean()) for w in range(int(windows.max()) + 1)]
    monitor = pd.read_csv(folder / "0.monitor.csv", skiprows=1)
    goal = monitor["r"] > goal_return
    early = (monitor["l"] < episode_steps) & ~goal
    return RunSuccess(
        algo=algo,
        seed=seed,
        folder=folder,
        steps=int(steps[-1]),
        first_success=int(steps[reached[0]]) if len(reached) else None,
        window_success=window_success,
        last_success=[float(v) for v in success[-10:]],
        last_returns=[float(v) for v in returns[-10:]],
        episodes=len(monitor),
        goal_episodes=int(goal.sum()),
        early_episodes=int(early.sum()),
    )


def _steps(n: int | None) -> str:
    if n is None:
        return "none"
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k"


def table(runs: list[RunSuccess], window: int, goal_return: float) -> str:
    """``success.md``'s table."""
    lines = [
        "| algo | seed | steps run | first evaluation with a success "
        f"| evaluation success per {_steps(window)} steps | last 10 evaluations: success "
        f"| last 10: mean return | training episodes: return > {goal_return:g} "
        "| training episodes ended early otherwise |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        lines.append(
            f"| {run.algo} | {run.seed} | {_steps(run.steps)} | {_steps(run.first_success)} | "
            f"{', '.join(f'{v:.2f}' for v in run.window_success)} | "
            f"{', '.join(f'{v:.1f}' for v in run.last_success)} | "
            f"{', '.join(f'{v:.1f}' for v in run.last_returns)} | "
            f"{run.goal_episodes} of {run.episodes} | "
            f"{run.early_episodes} ({100 * run.early_episodes / max(run.episodes, 1):.1f} %) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, required=True, help="a compare.py --out folder")
    parser.add_argument("--env", required=True, help="the environment id, e.g. PointMassWindMaze-v0")
    parser.add_argument("--window", type=int, default=100_000, help="steps per success window (> 0)")
    parser.add_argument(
        "--goal-return", type=float, default=20.0, help="a training return above it reached the goal"
    )
    args = parser.parse_args(argv)
    if args.window <= 0:
        parser.error(f"--window must be > 0, got {args.window}")
    import gymnasium as gym

    import sb3_stein  # noqa: F401  (registers the environments)

    episode_steps = gym.spec(args.env).max_episode_steps
    if episode_steps is None:
        parser.error(f"{args.env} has no max_episode_steps: an early end cannot be told from a time limit")
    found = newest_runs(args.results, args.env)
    if not found:
        parser.error(f"no run folders with evaluations.npz under {args.results}/logs/seed_*/*/{args.env}_*")
    runs = [run_success(a, s, f, args.window, args.goal_return, episode_steps) for a, s, f in found]
    command = "python benchmarks/success_table.py " + " ".join(
        [
            f"--results {args.results}",
            f"--env {args.env}",
            f"--window {args.window}",
            f"--goal-return {args.goal_return:g}",
        ]
    )
    text = f"# Evaluation success and training episodes ({args.env})\n\nCommand: `{command}`\n\n"
    text += table(runs, args.window, args.goal_return)
    text += "\nRun folders: " + ", ".join(f"`{run.folder.relative_to(args.results)}`" for run in runs) + "\n"
    (args.results / "success.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
