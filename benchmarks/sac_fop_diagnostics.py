"""How much actor gradient SAC-FOP gets through the MPC: first controls at a bound, ``||d a / d phi||``.

Usage::

    python benchmarks/sac_fop_diagnostics.py --steps 2000 --out benchmarks/results/sac_mpc_diagnostics

One SAC-FOP run (one process, one torch thread) at the shipped ``hyperparams/sac_fop.yml`` settings
for the environment (cart-pole: batch 64, MLP 256x3, entropy coefficient auto from 0.02, one update
every 4 steps, 100 warm-up steps with random MPC parameters). It records every update's
``train/mpc_u0_at_bound`` (share of the actor batch's first controls at a control bound, where the
actor gets no gradient through the MPC) and ``train/mpc_du0_dphi_norm`` (mean Frobenius norm of
``d a / d phi`` in SB3's ``[-1, 1]`` units), the acting share ``mpc/act_u0_at_bound`` per log
window, and, at the end, one replay batch of ``--final-batch`` states solved with the final policy:
the share at the lower and at the upper bound and the norms of the samples that are not at a bound.
The time spent in the diagnostic's extra reverse passes is reported next to the run's wall-clock.

Writes ``summary.json`` and ``summary.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
import yaml
from stable_baselines3.common.logger import Logger

import sb3_stein  # noqa: F401  (registers the environments)
from sb3_stein import SACFOP
from sb3_stein.common.mpc import MPCLayer
from sb3_stein.zoo import hyperparams_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_s2ac import run_metadata

KEYS = ("train/mpc_u0_at_bound", "train/mpc_du0_dphi_norm", "mpc/act_u0_at_bound", "train/mpc_failure_rate")


class HistoryLogger(Logger):
    """An SB3 logger without outputs that keeps every recorded value of ``KEYS`` with its step."""

    def __init__(self, model_steps: Any) -> None:
        super().__init__(folder=None, output_formats=[])
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self._steps = model_steps

    def record(self, key: str, value: Any, exclude: Any = None) -> None:
        super().record(key, value, exclude)
        if key in KEYS:
            self.history[key].append((int(self._steps()), float(value)))


def shipped_settings(env_id: str) -> dict[str, Any]:
    """The yml entry as constructor keywords (``policy_kwargs`` evaluated as rl_zoo3 does). Since
    2026-12-07 the cart-pole entry names ``mpc_kwargs={"solver": "riccati"}``; the results committed
    before used fatrop."""
    entry = dict(yaml.safe_load(hyperparams_file("sac_fop").read_text())[env_id])
    entry.pop("n_timesteps", None)
    entry.pop("policy", None)
    if isinstance(entry.get("policy_kwargs"), str):
        entry["policy_kwargs"] = eval(entry["policy_kwargs"])  # rl_zoo3 does the same
    return entry


def final_batch(model: SACFOP, size: int) -> dict[str, float]:
    """The final policy on ``size`` replay states (fresh samples, warm-started from the acted plans)."""
    data = model.replay_buffer.sample(size)  # type: ignore[union-attr]
    with th.no_grad():
        actions = model._actor_actions(data.observations)
    solution = actions.solution
    layer, ok = model.policy.mpc, solution.success
    u0 = solution.u0[ok]
    at_bound = layer.controls_at_bound(u0)
    at_low = at_bound & (np.abs(u0 - layer.ocp.u_low) < np.abs(u0 - layer.ocp.u_high))
    norms = model.policy.scaled_sensitivity_norms(solution)[ok]
    interior = ~at_bound.any(axis=1)
    return {
        "batch": size,
        "solved": int(ok.sum()),
        "u0_at_bound": float(at_bound.mean()),
        "u0_at_lower_bound": float(at_low.mean()),
        "u0_at_upper_bound": float((at_bound & ~at_low).mean()),
        "du0_dphi_norm_mean": float(norms.mean()),
        "du0_dphi_norm_at_bound_max": float(norms[~interior].max()) if (~interior).any() else 0.0,
        "du0_dphi_norm_interior_mean": float(norms[interior].mean()) if interior.any() else 0.0,
        "du0_dphi_norm_interior_median": float(np.median(norms[interior])) if interior.any() else 0.0,
        "interior_samples": int(interior.sum()),
    }


def _windows(history: list[tuple[int, float]], bounds: list[int]) -> list[dict[str, float]]:
    """Mean of the recorded values per step window ``[bounds[i], bounds[i + 1])``."""
    rows = []
    for lo, hi in itertools.pairwise(bounds):
        values = [v for step, v in history if lo <= step < hi]
        if values:
            rows.append({"from": lo, "to": hi, "mean": float(np.mean(values)), "updates": len(values)})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="CartPoleSwingUp-v0")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=int, default=500, help="steps per row of the summary table")
    parser.add_argument("--final-batch", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sac_mpc_diagnostics"))
    args = parser.parse_args(argv)
    th.set_num_threads(1)

    settings = shipped_settings(args.env)
    model = SACFOP("MlpPolicy", args.env, seed=args.seed, **settings)
    logger = HistoryLogger(lambda: model.num_timesteps)
    model.set_logger(logger)

    jacobian_seconds = [0.0]
    original = MPCLayer.params_jacobian

    def timed(self: MPCLayer, solution: Any) -> np.ndarray:
        start = time.perf_counter()
        try:
            return original(self, solution)
        finally:
            jacobian_seconds[0] += time.perf_counter() - start

    MPCLayer.params_jacobian = timed  # type: ignore[method-assign]
    start = time.perf_counter()
    model.learn(args.steps, log_interval=1)  # a log dump per episode: acting windows of 200 steps
    learn_seconds = time.perf_counter() - start
    MPCLayer.params_jacobian = original  # type: ignore[method-assign]

    act = model.policy.act_stats
    bounds = list(range(0, args.steps + args.window, args.window))
    results: dict[str, Any] = {
        **run_metadata(),
        "env": args.env,
        "seed": args.seed,
        "steps": args.steps,
        "settings": {k: repr(v) for k, v in settings.items()},
        "learn_seconds": learn_seconds,
        "diagnostic_reverse_seconds": jacobian_seconds[0],
        "updates": model._n_updates,
        "acting_u0_at_bound_whole_run": act["u0_at_bound"] / max(act["u0_solved"], 1),
        "acting_failures": act["failures"],
        "windows": {key: _windows(logger.history[key], bounds) for key in KEYS},
        "history": {key: logger.history[key] for key in KEYS},
        "final_batch": final_batch(model, args.final_batch),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "summary.md").write_text(report(results))
    print(report(results))


def report(results: dict[str, Any]) -> str:
    """Markdown: per step window, the mean of each diagnostic; then the final batch."""
    lines = [
        f"# SAC-FOP diagnostics, {results['env']}, seed {results['seed']}, {results['steps']} steps",
        "",
        f"Command: `{results['command']}` (torch {results['torch']}, {results['threads']} thread).",
        "",
        "Per step window: the mean over its updates of the two train/ keys, and the mean of the acting",
        "share over the log dumps in the window (one dump per episode, covering that episode).",
        "",
        "| steps | train/mpc_u0_at_bound | train/mpc_du0_dphi_norm | mpc/act_u0_at_bound | updates |",
        "| --- | --- | --- | --- | --- |",
    ]
    windows = results["windows"]
    for row in windows["train/mpc_u0_at_bound"] or windows["mpc/act_u0_at_bound"]:
        cells = []
        for key in ("train/mpc_u0_at_bound", "train/mpc_du0_dphi_norm", "mpc/act_u0_at_bound"):
            match = [r for r in windows[key] if r["from"] == row["from"]]
            cells.append(f"{match[0]['mean']:.3f}" if match else "–")
        lines.append(f"| {row['from']}-{row['to']} | " + " | ".join(cells) + f" | {row['updates']} |")
    final = results["final_batch"]
    lines += [
        "",
        f"Whole run, acting: {results['acting_u0_at_bound_whole_run']:.3f} of the first controls at a bound "
        f"({results['acting_failures']} failed solves).",
        "",
        f"Final policy on {final['batch']} replay states ({final['solved']} solved): "
        f"{final['u0_at_bound']:.3f} at a bound ({final['u0_at_lower_bound']:.3f} lower, "
        f"{final['u0_at_upper_bound']:.3f} upper); ||d a / d phi|| mean {final['du0_dphi_norm_mean']:.3f}, "
        f"over the {final['interior_samples']} samples off the bounds mean "
        f"{final['du0_dphi_norm_interior_mean']:.3f} (median {final['du0_dphi_norm_interior_median']:.3f}); "
        f"largest at a bound {final['du0_dphi_norm_at_bound_max']:.2e}.",
        "",
        f"Wall-clock: {results['learn_seconds']:.0f} s for {results['updates']} updates; the diagnostic's "
        f"extra reverse passes took {results['diagnostic_reverse_seconds']:.1f} s of it "
        f"({100 * results['diagnostic_reverse_seconds'] / results['learn_seconds']:.1f} %).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
