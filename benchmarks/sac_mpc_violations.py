"""Training constraint violations of SAC-ZOP/FOP/FOA runs (the lecture's "Training Violations").

Usage::

    python benchmarks/sac_mpc_violations.py --results benchmarks/results/sac_mpc

Reads the final models that ``benchmarks/compare.py`` left under ``RESULTS/logs/seed_*/ALGO/ENV_1/``
(their saved ``violation_counts``: training steps whose chosen action left the OCP's control
bounds or whose next state left its constraint set, and finished training episodes with at least
one such step) and the MPC's acting failures, and writes ``violations.md`` next to them.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
from stable_baselines3.common.save_util import load_from_zip_file

ALGOS = ("sac_zop", "sac_fop", "sac_foa")


def collect(results: Path) -> dict[tuple[str, str], list[dict[str, float]]]:
    """``(algo, env) -> [per-seed counts]`` from the saved models."""
    table: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    for zip_path in sorted(results.glob("logs/seed_*/*/*_1/*.zip")):
        algo = zip_path.parent.parent.name
        if algo not in ALGOS or f"{zip_path.stem}_1" != zip_path.parent.name:
            continue  # e.g. the evaluation callback's best_model.zip
        env_id = zip_path.stem
        data, _, _ = load_from_zip_file(zip_path, load_data=True, print_system_info=False)
        counts = dict(data["violation_counts"])
        counts["seed"] = int(zip_path.parent.parent.parent.name.removeprefix("seed_"))
        table[(algo, env_id)].append(counts)
    return table


def report(table: dict[tuple[str, str], list[dict[str, float]]]) -> str:
    lines = [
        "| env | algo | seeds | training steps with a violation | training episodes with a violation |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (algo, env_id), runs in sorted(table.items(), key=lambda item: (item[0][1], item[0][0])):
        step_rates = [r["violating_steps"] / max(r["steps"], 1) for r in runs]
        episode_rates = [r["violating_episodes"] / max(r["episodes"], 1) for r in runs]
        per_seed = ", ".join(f"{100 * v:.1f}" for v in step_rates)
        per_seed_ep = ", ".join(f"{100 * v:.1f}" for v in episode_rates)
        lines.append(
            f"| {env_id} | {algo} | {len(runs)} | {100 * np.mean(step_rates):.2f} % (seeds: {per_seed}) | "
            f"{100 * np.mean(episode_rates):.1f} % (seeds: {per_seed_ep}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/sac_mpc"))
    args = parser.parse_args(argv)
    text = report(collect(args.results))
    command = f"python benchmarks/sac_mpc_violations.py --results {args.results}"
    header = f"# Training violations\n\nCommand: `{command}`\n\n"
    (args.results / "violations.md").write_text(header + text + "\n")
    print(text)


if __name__ == "__main__":
    main()
