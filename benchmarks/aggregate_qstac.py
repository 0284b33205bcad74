#!/usr/bin/env python
"""Aggregate sample-efficiency figures of the Q-STAC paper (Fig. 4a/4b) across tasks.

Reads the run folders written by ``benchmarks/compare.py`` (one ``--task ENV=FOLDER`` per env id;
a folder may hold several envs) and writes ``aggregate.json``, ``aggregate.md`` and
``aggregate.png`` to ``--out``. Nothing is trained.

Example::

    python benchmarks/aggregate_qstac.py --task Pendulum-v1=benchmarks/results/pendulum \\
        --task Nav2DEasy-v0=benchmarks/results/nav2d --task Nav2DMedium-v0=benchmarks/results/nav2d \\
        --task Nav2DHard-v0=benchmarks/results/nav2d_hard --out benchmarks/results/aggregate_qstac

The paper (§V-C) reports (a) "the percentage of environment steps required ... to reach 80% of the
optimal return" per task and algorithm, and (b) a box plot of "the normalized mean return values over
the first 50 training episodes" ("first 50 data logs" in the caption). It does not say what the
optimal return is, what the normalization's lower end is, how seeds enter or what "reach" means for a
noisy curve. The definitions used here:

* **Evaluation point**: the mean return over the episodes of one rl_zoo3 evaluation
  (``evaluations.npz``), as in compare.py. Curves are not smoothed.
* **Budget** ``B`` of a run: the rl_zoo3 ``-n`` recorded in its compare.py marker (``timesteps``);
  the last evaluation step for a run without a marker. Only evaluation points at steps ``<= B`` are
  used: PPO rounds the budget up to whole rollouts (``n_envs * n_steps``) and evaluates past it, and
  every algorithm is judged on the same budget.
* **References** per task: the high end ``R*`` ("optimal return") is the best evaluation point of any
  run of any compared algorithm on that task (within budget); the low end ``R0`` is the median, over
  the same runs, of their first evaluation point (an almost untrained policy: rl_zoo3 evaluates first
  after ``eval_freq`` steps). ``--reference ENV=LOW:HIGH`` replaces both by given values, e.g. a
  task's known minimum and optimum, to compare numbers across comparisons. Not the minimum return as
  the low end: one diverged run (Nav2DHard-v0: -10167) would squeeze every other score to about 1. Not
  ``0.8 * R*``: with negative returns (Pendulum-v1) that level lies above ``R*``.
* **Normalized return**: ``(R - R0) / (R* - R0)``; 0 = the untrained level, 1 = the best seen. It is
  not clipped (below 0: worse than untrained).
* **Fig. 4a, share of steps to 80 %**: the level ``R0 + 0.8 (R* - R0)`` (normalized 0.8; with all
  algorithms of a folder compared and no evaluation past the budget this is the level of compare.py's
  "share of steps to 80 % of best"). A run *reaches* it at its **first** evaluation point at or above
  the level (even if it falls back later); the share is that step / ``B``; *never* when no evaluation
  point within the budget reaches it. A task x algorithm cell is the median over seeds, never counted
  as +inf (so it reads "never" when at least half of the seeds never reach), with the per-seed values
  and k/n reached.
* **Fig. 4b, normalized mean over the first 50 evaluations**: the paper's "training episodes" / "data
  logs" are read as the points of the learning curves, i.e. evaluation points. Per run, the mean of
  its normalized evaluation points over its first 50 evaluation points within the budget; all of them
  when it has fewer (the tables give the count; 5k-10k-step runs evaluated every 500 steps have
  10-20). A cell is the median [min, max] over seeds.
* **Aggregates over tasks** (rliable, no statistics written here): ``rliable.library.
  get_interval_estimates`` on per-algorithm score arrays of shape (runs x tasks): interquartile mean
  (IQM) and mean with 95 % percentile *stratified* bootstrap confidence intervals (runs are resampled
  within each task, ``task_bootstrap=False``), ``--reps`` replications, seeded by ``--seed``. They use
  the tasks on which every compared algorithm has at least one usable run; the others stay in the
  per-task tables and are listed. rliable needs the same number of runs on every task, so per
  algorithm the first ``n`` seeds (sorted) of each task are used, ``n`` = its smallest seed count on
  those tasks; dropped seeds are listed. For the share, *never* counts as 1.0 (the whole budget, an
  optimistic bound), and the reach rate (share of runs that reach the level, mean with CI) is given
  next to it, so "never" and "at the last evaluation" stay distinguishable.

An algorithm asked for with ``--algos`` that has no usable run on a task is reported as missing (and
so is any failed run); the script then exits with status 1 after writing its files.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import shlex
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_ALGOS = ("qstac", "s2ac", "sac", "td3", "ppo")
FRACTION = 0.8
FIRST_EVALS = 50
# Order of the per-run scores in the arrays handed to rliable (last axis).
SCORE_KEYS = ("normalized_first", "share", "reached")


def _load_compare() -> ModuleType:
    """``benchmarks/compare.py`` as a module (its run-folder reading is reused, not rewritten)."""
    name = "benchmarks_compare"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


compare = _load_compare()


# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------


def parse_tasks(items: Sequence[str]) -> dict[str, Path]:
    """``["Pendulum-v1=benchmarks/results/pendulum", ...]`` -> ``{"Pendulum-v1": Path(...)}`` (in order)."""
    tasks: dict[str, Path] = {}
    for item in items:
        env, sep, folder = item.partition("=")
        if not sep or not env or not folder:
            raise argparse.ArgumentTypeError(f"--task expects ENV=FOLDER, got {item!r}")
        if env in tasks:
            raise argparse.ArgumentTypeError(f"--task {env} given twice")
        tasks[env] = Path(folder)
    return tasks


def parse_references(items: Sequence[str] | None) -> dict[str, tuple[float, float]]:
    """``["Pendulum-v1=-1500:-140"]`` -> ``{"Pendulum-v1": (-1500.0, -140.0)}`` (low, high)."""
    refs: dict[str, tuple[float, float]] = {}
    for item in items or []:
        env, sep, values = item.partition("=")
        low_s, sep2, high_s = values.partition(":")
        try:
            low, high = float(low_s), float(high_s)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"--reference expects ENV=LOW:HIGH, got {item!r}") from e
        if not sep or not sep2 or not env:
            raise argparse.ArgumentTypeError(f"--reference expects ENV=LOW:HIGH, got {item!r}")
        if not high > low:
            raise argparse.ArgumentTypeError(f"--reference {item!r}: HIGH must be above LOW")
        refs[env] = (low, high)
    return refs


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    p = argparse.ArgumentParser(
        description="Q-STAC paper Fig. 4a/4b (steps to 80 %% of the best return, normalized early return) "
        "aggregated over compare.py folders with rliable.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--task",
        action="append",
        required=True,
        metavar="ENV=FOLDER",
        help="env id and the compare.py --out folder holding its runs; once per env",
    )
    p.add_argument("--algos", nargs="+", default=list(DEFAULT_ALGOS), help="algorithms to compare")
    p.add_argument("--out", required=True, help="folder for aggregate.json/.md/.png")
    p.add_argument(
        "--reference",
        action="append",
        metavar="ENV=LOW:HIGH",
        help="fixed normalization references of an env instead of the data's (median first eval, best eval)",
    )
    p.add_argument("--fraction", type=float, default=FRACTION, help="level of Fig. 4a, share of R* - R0")
    p.add_argument(
        "--first-evals", type=int, default=FIRST_EVALS, help="evaluation points averaged for Fig. 4b"
    )
    p.add_argument("--reps", type=int, default=10_000, help="bootstrap replications (rliable)")
    p.add_argument("--ci", type=float, default=0.95, help="confidence interval size")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.tasks = parse_tasks(args.task)
        args.references = parse_references(args.reference)
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    absent = [f"{env}={folder}" for env, folder in args.tasks.items() if not Path(folder).is_dir()]
    if absent:
        parser.error(f"--task folder(s) not found: {', '.join(absent)}")
    unknown = sorted(set(args.references) - set(args.tasks))
    if unknown:
        parser.error(f"--reference names envs without --task: {', '.join(unknown)}")
    if not 0.0 < args.fraction <= 1.0:
        parser.error(f"--fraction must be in (0, 1], got {args.fraction}")
    if args.first_evals < 1 or args.reps < 1 or not 0.0 < args.ci < 1.0:
        parser.error("--first-evals and --reps must be >= 1 and --ci in (0, 1)")
    if len(set(args.algos)) != len(args.algos):
        parser.error("--algos lists an algorithm twice")
    return args


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that made the report (for aggregate.md)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", "benchmarks/aggregate_qstac.py", *argv])


# ---------------------------------------------------------------------------
# Reading runs
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """The evaluation points of one usable run, restricted to its budget."""

    seed: int
    timesteps: np.ndarray
    means: np.ndarray
    budget: int
    n_evals_total: int


def find_seeds(folder: Path, algo: str, env: str) -> list[int]:
    """Seeds of (algo, env) in a compare.py folder: from its markers and its rl_zoo3 run folders."""
    name = compare.env_folder_name(env)
    seeds = set()
    for marker in (folder / "runs" / algo / name).glob("seed_*.json"):
        tail = marker.stem.removeprefix("seed_")
        if tail.lstrip("-").isdigit():
            seeds.add(int(tail))
    for seed_dir in (folder / "logs").glob("seed_*"):
        tail = seed_dir.name.removeprefix("seed_")
        if tail.lstrip("-").isdigit() and compare.list_run_dirs(
            compare.RunSpec(algo, env, int(tail)), folder
        ):
            seeds.add(int(tail))
    return sorted(seeds)


def load_runs(folder: Path, algo: str, env: str) -> tuple[list[Curve], list[dict[str, Any]]]:
    """Usable curves of (algo, env) in ``folder`` (sorted by seed) and the runs that are not usable."""
    curves: list[Curve] = []
    problems: list[dict[str, Any]] = []
    for seed in find_seeds(folder, algo, env):
        rec = compare.collect_run(compare.RunSpec(algo, env, seed), folder)
        if not compare.is_usable(rec):
            problems.append(
                {
                    "algo": algo,
                    "env": env,
                    "seed": seed,
                    "status": rec.get("status"),
                    "error": rec.get("error"),
                    "folder": str(folder),
                }
            )
            continue
        steps = np.asarray(rec["eval_timesteps"], dtype=np.int64)
        means = np.asarray(rec["eval_mean"], dtype=np.float64)
        budget = int(rec.get("timesteps") or steps[-1])
        keep = steps <= budget
        if not keep.any():
            problems.append(
                {
                    "algo": algo,
                    "env": env,
                    "seed": seed,
                    "status": "no evaluation within budget",
                    "error": f"first evaluation at {int(steps[0])} > budget {budget}",
                    "folder": str(folder),
                }
            )
            continue
        curves.append(Curve(seed, steps[keep], means[keep], budget, len(steps)))
    return curves, problems


# ---------------------------------------------------------------------------
# The two figures' per-run scores
# ---------------------------------------------------------------------------


def reference_returns(curves: Sequence[Curve]) -> tuple[float, float]:
    """(R0, R*): median first evaluation point and best evaluation point over all given runs."""
    if not curves:
        raise ValueError("no runs to take references from")
    low = float(np.median([c.means[0] for c in curves]))
    high = float(max(np.max(c.means) for c in curves))
    return low, high


def normalize(values: np.ndarray | float, low: float, high: float) -> np.ndarray:
    """``(R - R0) / (R* - R0)``; NaN everywhere when the references coincide (nothing ever improved)."""
    values = np.asarray(values, dtype=np.float64)
    if not high > low:
        return np.full_like(values, np.nan)
    return (values - low) / (high - low)


def fraction_level(low: float, high: float, fraction: float = FRACTION) -> float:
    """Return level of Fig. 4a: ``R0 + fraction * (R* - R0)`` (compare.py's "80 % of best" level)."""
    return compare.fraction_of_best_threshold([low], high, fraction)


def steps_to_level(curve: Curve, level: float) -> int | None:
    """Step of the first evaluation point at or above ``level`` within the budget (None: never)."""
    return compare.steps_to_threshold(curve.timesteps, curve.means, level)


def early_normalized_mean(curve: Curve, low: float, high: float, first_evals: int = FIRST_EVALS) -> float:
    """Fig. 4b for one run: mean normalized return of the first ``first_evals`` evaluation points."""
    return float(np.mean(normalize(curve.means[:first_evals], low, high)))


def median_share(shares: Sequence[float | None]) -> float | None:
    """Median over seeds with never counted as +inf (None: never, or no seeds)."""
    return compare.threshold_median(shares)


# ---------------------------------------------------------------------------
# Per task
# ---------------------------------------------------------------------------


def summarize_task(
    env: str,
    folder: Path,
    algos: Sequence[str],
    fraction: float = FRACTION,
    first_evals: int = FIRST_EVALS,
    reference: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Per-run and per-algorithm numbers of one task (one env id in one compare.py folder)."""
    per_algo: dict[str, list[Curve]] = {}
    problems: list[dict[str, Any]] = []
    for algo in algos:
        curves, bad = load_runs(folder, algo, env)
        per_algo[algo] = curves
        problems += bad
    everything = [c for cs in per_algo.values() for c in cs]
    task: dict[str, Any] = {"folder": str(folder), "algos": {}, "problems": problems, "reference": None}
    low = high = math.nan
    if reference is not None:
        low, high = reference
        task["reference"] = {"low": low, "high": high, "source": "--reference"}
    elif everything:
        low, high = reference_returns(everything)
        best = max(
            ((algo, c) for algo, cs in per_algo.items() for c in cs),
            key=lambda ac: float(np.max(ac[1].means)),
        )
        algo_b, c_b = best
        task["reference"] = {
            "low": low,
            "high": high,
            "source": "data",
            "best": {"algo": algo_b, "seed": c_b.seed, "step": int(c_b.timesteps[int(np.argmax(c_b.means))])},
        }
    level = fraction_level(low, high, fraction) if task["reference"] else None
    task["level"] = level
    for algo in algos:
        curves = per_algo[algo]
        data: dict[str, Any] = {"status": "ok" if curves else "missing", "runs": []}
        if curves and level is not None:
            for c in curves:
                step = steps_to_level(c, level)
                data["runs"].append(
                    {
                        "seed": c.seed,
                        "budget": c.budget,
                        "n_evals": len(c.timesteps),
                        "n_evals_past_budget": c.n_evals_total - len(c.timesteps),
                        "n_evals_first": min(first_evals, len(c.timesteps)),
                        "steps_to_level": step,
                        "share": None if step is None else step / c.budget,
                        "normalized_first": early_normalized_mean(c, low, high, first_evals),
                        "best_return": float(np.max(c.means)),
                        "first_return": float(c.means[0]),
                    }
                )
            shares = [r["share"] for r in data["runs"]]
            norms = [r["normalized_first"] for r in data["runs"]]
            data["seeds"] = [r["seed"] for r in data["runs"]]
            data["share_median"] = median_share(shares)
            data["n_reached"] = sum(s is not None for s in shares)
            data["normalized_first_median"] = float(np.median(norms))
            data["normalized_first_min"] = float(np.min(norms))
            data["normalized_first_max"] = float(np.max(norms))
            data["n_evals_first"] = sorted({r["n_evals_first"] for r in data["runs"]})
        task["algos"][algo] = data
    return task


# ---------------------------------------------------------------------------
# Aggregates over tasks (rliable)
# ---------------------------------------------------------------------------


def score_arrays(
    tasks: dict[str, dict[str, Any]], algos: Sequence[str], agg_tasks: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, list[int]]]]:
    """Per algorithm an array (runs x tasks x 3) of (normalized_first, share with never = 1, reached).

    Rows are the first ``n`` seeds (sorted) of each task, ``n`` the algorithm's smallest seed count on
    ``agg_tasks``; also returns the seeds used and dropped per algorithm and task.
    """
    arrays: dict[str, np.ndarray] = {}
    seeds_info: dict[str, dict[str, list[int]]] = {}
    for algo in algos:
        runs_per_task = [sorted(tasks[t]["algos"][algo]["runs"], key=lambda r: r["seed"]) for t in agg_tasks]
        n = min(len(r) for r in runs_per_task)
        arr = np.empty((n, len(agg_tasks), len(SCORE_KEYS)), dtype=np.float64)
        info: dict[str, list[int]] = {}
        for j, (task, runs) in enumerate(zip(agg_tasks, runs_per_task)):
            for i, run in enumerate(runs[:n]):
                share = run["share"]
                arr[i, j] = (
                    run["normalized_first"],
                    1.0 if share is None else share,
                    float(share is not None),
                )
            dropped = [r["seed"] for r in runs[n:]]
            if dropped:
                info[task] = dropped
        arrays[algo] = arr
        seeds_info[algo] = info
    return arrays, seeds_info


def _aggregate_metrics(x: np.ndarray) -> np.ndarray:
    """Point estimates from one (bootstrapped) runs x tasks x 3 array, in the order of METRICS."""
    from rliable import metrics

    return np.array(
        [
            metrics.aggregate_iqm(x[..., 0]),
            metrics.aggregate_mean(x[..., 0]),
            metrics.aggregate_iqm(x[..., 1]),
            metrics.aggregate_mean(x[..., 1]),
            metrics.aggregate_mean(x[..., 2]),
        ]
    )


METRICS = (
    ("normalized_first_iqm", "normalized mean over the first evaluations, IQM (higher is better)"),
    ("normalized_first_mean", "normalized mean over the first evaluations, mean (higher is better)"),
    ("share_iqm", "share of steps to the level, never = 1, IQM (lower is better)"),
    ("share_mean", "share of steps to the level, never = 1, mean (lower is better)"),
    ("reach_rate", "share of runs reaching the level, mean (higher is better)"),
)


def rliable_aggregates(
    arrays: dict[str, np.ndarray], reps: int = 10_000, ci: float = 0.95, seed: int = 0
) -> dict[str, dict[str, dict[str, float]]]:
    """IQM / mean with stratified bootstrap CIs (rliable ``get_interval_estimates``) per algorithm."""
    from rliable import library as rly

    out: dict[str, dict[str, dict[str, float]]] = {}
    for algo, arr in arrays.items():
        # rliable 1.2's StratifiedBootstrap draws its resampling indices from numpy's global RNG (its
        # random_state only reaches arch), so seed that for reproducible CIs and restore it afterwards.
        global_state = np.random.get_state()  # noqa: NPY002 (rliable uses the legacy global RNG)
        np.random.seed(seed)  # noqa: NPY002
        try:
            with warnings.catch_warnings():
                # arch (rliable's bootstrap backend) warns that a RandomState is deprecated there
                warnings.simplefilter("ignore", FutureWarning)
                points, intervals = rly.get_interval_estimates(
                    {algo: arr},
                    _aggregate_metrics,
                    reps=reps,
                    confidence_interval_size=ci,
                    random_state=np.random.RandomState(seed),
                )
        finally:
            np.random.set_state(global_state)  # noqa: NPY002
        out[algo] = {
            key: {
                "point": float(points[algo][k]),
                "low": float(intervals[algo][0, k]),
                "high": float(intervals[algo][1, k]),
            }
            for k, (key, _) in enumerate(METRICS)
        }
    return out


def aggregate(
    tasks: dict[str, dict[str, Any]], algos: Sequence[str], reps: int, ci: float, seed: int
) -> dict[str, Any]:
    """The rliable aggregates over the tasks on which every algorithm has a usable run."""
    agg_tasks = [t for t, d in tasks.items() if all(d["algos"][a]["runs"] for a in algos)]
    excluded = {
        t: "no usable run of " + ", ".join(a for a in algos if not d["algos"][a]["runs"])
        for t, d in tasks.items()
        if t not in agg_tasks
    }
    result: dict[str, Any] = {
        "tasks": agg_tasks,
        "excluded_tasks": excluded,
        "reps": reps,
        "ci": ci,
        "seed": seed,
    }
    if not agg_tasks:
        result["metrics"] = {}
        return result
    arrays, dropped = score_arrays(tasks, algos, agg_tasks)
    result["n_runs_per_task"] = {a: int(arr.shape[0]) for a, arr in arrays.items()}
    result["dropped_seeds"] = {a: d for a, d in dropped.items() if d}
    result["scores"] = {
        a: {key: arr[..., k].tolist() for k, key in enumerate(SCORE_KEYS)} for a, arr in arrays.items()
    }
    result["metrics"] = rliable_aggregates(arrays, reps, ci, seed)
    return result


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def jsonable(data: Any) -> Any:
    """``data`` with NaN / inf replaced by None (strict JSON), tuples as lists."""
    if isinstance(data, dict):
        return {k: jsonable(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [jsonable(v) for v in data]
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def fmt_share(share: float | None) -> str:
    """A share of the budget as a percentage, or "never"."""
    return "never" if share is None else f"{share:.0%}"


def _task_table(result: dict[str, Any], algos: Sequence[str], cell: Any) -> list[str]:
    """A task x algorithm markdown table: ``cell(per-algorithm numbers)``, "missing" without runs."""
    lines = ["| task | " + " | ".join(algos) + " |", "|---|" + "---:|" * len(algos)]
    for env, t in result["tasks"].items():
        cells = [cell(t["algos"][a]) if t["algos"][a]["runs"] else "missing" for a in algos]
        lines.append(f"| {env} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(result: dict[str, Any]) -> str:
    """aggregate.md: the two per-task tables, the rliable aggregates, problems and the command."""
    s = result["settings"]
    algos: list[str] = s["algos"]
    frac = s["fraction"]
    lines = [
        "# Q-STAC paper Fig. 4: sample efficiency across tasks",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Date: {result['date']}; git: {result['git']}; rliable {result['rliable_version']}.",
        "",
        "Definitions (module docstring of `benchmarks/aggregate_qstac.py`): R* = best evaluation point "
        "of any compared run on the task, R0 = median first evaluation point (or `--reference`); "
        f"normalized return = (R − R0)/(R* − R0); level = R0 + {frac:g}·(R* − R0); a run reaches it at "
        "its first evaluation at or above it; only evaluations within each run's budget count.",
        "",
        "## Tasks",
        "",
        "| task | folder | R0 (low) | R* (high) | level | source | budget(s) | evaluations used (4b) |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    for env, t in result["tasks"].items():
        ref = t["reference"]
        runs = [r for a in algos for r in t["algos"][a]["runs"]]
        budgets = "/".join(compare.fmt_steps(b) for b in sorted({r["budget"] for r in runs})) or "–"
        used = "/".join(str(n) for n in sorted({r["n_evals_first"] for r in runs})) or "–"
        if ref is None:
            lines.append(f"| {env} | `{t['folder']}` | – | – | – | no usable runs | – | – |")
            continue
        src = ref["source"]
        if "best" in ref:
            b = ref["best"]
            src += f" (R*: {b['algo']} seed {b['seed']} @{compare.fmt_steps(b['step'])})"
        lines.append(
            f"| {env} | `{t['folder']}` | {ref['low']:.1f} | {ref['high']:.1f} | {t['level']:.1f} | {src} | "
            f"{budgets} | {used} |"
        )
    if any(
        r["n_evals_first"] < s["first_evals"]
        for t in result["tasks"].values()
        for a in algos
        for r in t["algos"][a]["runs"]
    ):
        lines += [
            "",
            f"Runs with fewer than {s['first_evals']} evaluations within budget use all of them (Fig. 4b).",
        ]
    lines += [
        "",
        f"## Fig. 4a: share of the budget to reach {frac:.0%} (median over seeds; per seed; reached)",
        "",
    ]

    def share_cell(d: dict[str, Any]) -> str:
        per = ", ".join(fmt_share(r["share"]) for r in d["runs"])
        return f"{fmt_share(d['share_median'])} ({per}; {d['n_reached']}/{len(d['runs'])})"

    lines += _task_table(result, algos, share_cell)
    lines += [
        "",
        "never: no evaluation within the budget reached the level; the median counts never as +∞.",
        "",
        f"## Fig. 4b: normalized mean return over the first {s['first_evals']} evaluations "
        "(median [min, max] over seeds)",
        "",
    ]

    def normalized_cell(d: dict[str, Any]) -> str:
        if len(d["runs"]) == 1:
            return f"{d['normalized_first_median']:.2f} (n=1)"
        return (
            f"{d['normalized_first_median']:.2f} [{d['normalized_first_min']:.2f}, "
            f"{d['normalized_first_max']:.2f}] (n={len(d['runs'])})"
        )

    lines += _task_table(result, algos, normalized_cell)
    agg = result["aggregate"]
    lines += ["", "## Aggregates over tasks (rliable)", ""]
    if not agg["tasks"]:
        lines.append("No task has usable runs of every algorithm: no aggregate.")
    else:
        lines += [
            f"Tasks: {', '.join(agg['tasks'])}. Point estimate [{agg['ci']:.0%} CI], stratified bootstrap "
            f"over runs within tasks (rliable `get_interval_estimates`, percentile, {agg['reps']} "
            f"replications, seed {agg['seed']}). Runs per task: "
            + ", ".join(f"{a} {n}" for a, n in agg["n_runs_per_task"].items())
            + ". For the share, never counts as 1.0.",
            "",
            "| algo | " + " | ".join(label for _, label in METRICS) + " |",
            "|---|" + "---:|" * len(METRICS),
        ]
        for a in algos:
            m = agg["metrics"][a]
            cells = [f"{m[k]['point']:.2f} [{m[k]['low']:.2f}, {m[k]['high']:.2f}]" for k, _ in METRICS]
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        if agg.get("dropped_seeds"):
            lines += [
                "",
                "Seeds left out to give every task the same number of runs: "
                + "; ".join(
                    f"{a}: " + ", ".join(f"{t} {seeds}" for t, seeds in d.items())
                    for a, d in agg["dropped_seeds"].items()
                )
                + ".",
            ]
    if agg["excluded_tasks"]:
        lines += [
            "",
            "Tasks left out of the aggregates: "
            + "; ".join(f"{t} ({why})" for t, why in agg["excluded_tasks"].items())
            + ".",
        ]
    problems = result["problems"]
    if problems:
        lines += [
            "",
            "## Missing or failed runs",
            "",
            "| task | algo | seed | status | error | folder |",
            "|---|---|---:|---|---|---|",
        ]
        for p in problems:
            seed = "–" if p.get("seed") is None else p["seed"]
            lines.append(
                f"| {p['env']} | {p['algo']} | {seed} | {p['status']} | {p.get('error') or ''} | "
                f"`{p['folder']}` |"
            )
    lines += [
        "",
        "## Files",
        "",
        "- `aggregate.json`: every number above, the per-run scores and the score arrays given to rliable.",
        "- `aggregate.png`: (a) the Fig. 4a table as a heat map (lighter = fewer steps), (b) box plots of "
        "the per-run Fig. 4b scores on the aggregate tasks with the IQM and its CI (symlog axis beyond ±1).",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """aggregate.png: Fig. 4a as a task x algorithm heat map, Fig. 4b as box plots per algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algos: list[str] = result["settings"]["algos"]
    tasks = list(result["tasks"])
    frac = result["settings"]["fraction"]
    fig, (ax_a, ax_b) = plt.subplots(
        1, 2, figsize=(5.0 + 1.1 * len(algos) * 2, 1.2 + 0.6 * max(len(tasks), 4))
    )
    grid = np.full((len(tasks), len(algos)), np.nan)
    for i, env in enumerate(tasks):
        for j, a in enumerate(algos):
            d = result["tasks"][env]["algos"][a]
            if d["runs"] and d["share_median"] is not None:
                grid[i, j] = d["share_median"]
    cmap = plt.get_cmap("Blues").with_extremes(bad="lightgrey")
    im = ax_a.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for i, env in enumerate(tasks):
        for j, a in enumerate(algos):
            d = result["tasks"][env]["algos"][a]
            text = "missing" if not d["runs"] else fmt_share(d["share_median"])
            value = grid[i, j]
            color = "white" if not math.isnan(value) and value > 0.6 else "black"
            ax_a.text(j, i, text, ha="center", va="center", fontsize="small", color=color)
    ax_a.set_xticks(range(len(algos)), algos)
    ax_a.set_yticks(range(len(tasks)), tasks)
    ax_a.set_title(f"(a) share of steps to {frac:.0%} of R* (median over seeds)", fontsize="medium")
    fig.colorbar(im, ax=ax_a, fraction=0.046, pad=0.04)

    agg = result["aggregate"]
    if agg["tasks"]:
        data = [np.ravel(agg["scores"][a]["normalized_first"]) for a in algos]
        ax_b.boxplot(data, showmeans=False)
        ax_b.set_xticks(range(1, len(algos) + 1), algos)
        for k, a in enumerate(algos, start=1):
            m = agg["metrics"][a]["normalized_first_iqm"]
            ax_b.errorbar(
                k + 0.25,
                m["point"],
                yerr=[[m["point"] - m["low"]], [m["high"] - m["point"]]],
                fmt="D",
                color="C3",
                markersize=4,
                capsize=3,
                label="IQM, 95 % CI" if k == 1 else None,
            )
        ax_b.set_yscale("symlog", linthresh=1.0)
        low = min(-1.0, float(np.nanmin(np.concatenate(data)))) if data else -1.0
        ticks = [-(10.0**k) for k in range(math.ceil(math.log10(-low)), -1, -1)] + [-0.5, 0, 0.5, 1]
        ax_b.set_yticks(ticks, [f"{t:g}" for t in ticks])
        ax_b.axhline(0.0, color="grey", linewidth=0.8)
        ax_b.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax_b.legend(fontsize="small", loc="lower right")
        ax_b.set_title(
            f"(b) normalized mean return, first {result['settings']['first_evals']} evals\n"
            f"runs × tasks: {', '.join(agg['tasks'])}",
            fontsize="medium",
        )
        ax_b.grid(True, axis="y", alpha=0.3)
    else:
        ax_b.axis("off")
        ax_b.text(0.5, 0.5, "no task with runs of every algorithm", ha="center", va="center")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Compute everything and write the three files; returns the JSON content."""
    import importlib.metadata

    tasks: dict[str, dict[str, Any]] = {}
    problems: list[dict[str, Any]] = []
    for env, folder in args.tasks.items():
        task = summarize_task(
            env, folder, args.algos, args.fraction, args.first_evals, args.references.get(env)
        )
        tasks[env] = task
        problems += task.pop("problems")
        for a in args.algos:
            if task["algos"][a]["status"] == "missing":
                problems.append(
                    {
                        "algo": a,
                        "env": env,
                        "seed": None,
                        "status": "missing",
                        "error": "no usable run",
                        "folder": str(folder),
                    }
                )
    result: dict[str, Any] = {
        "command": command,
        "date": compare.now_iso(),
        "git": compare.git_revision(Path.cwd()),
        "rliable_version": importlib.metadata.version("rliable"),
        "settings": {
            "algos": list(args.algos),
            "tasks": {env: str(folder) for env, folder in args.tasks.items()},
            "references": {env: list(v) for env, v in args.references.items()},
            "fraction": args.fraction,
            "first_evals": args.first_evals,
        },
        "tasks": tasks,
        "aggregate": aggregate(tasks, args.algos, args.reps, args.ci, args.seed),
        "problems": problems,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    compare.write_json(out / "aggregate.json", jsonable(result))
    (out / "aggregate.md").write_text(render_markdown(result))
    plot(result, out / "aggregate.png")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit status 1 when a requested algorithm is missing on a task or a run failed."""
    args = parse_args(argv)
    result = run(args, command_line(argv))
    out = Path(args.out)
    print((out / "aggregate.md").read_text())
    print(f"Wrote {out / 'aggregate.json'}, {out / 'aggregate.md'}, {out / 'aggregate.png'}")
    if result["problems"]:
        print(f"{len(result['problems'])} missing or failed run(s):", file=sys.stderr)
        for p in result["problems"]:
            print(
                f"  {p['algo']} {p['env']} seed={p['seed']}: {p['status']} {p.get('error') or ''}",
                file=sys.stderr,
            )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
