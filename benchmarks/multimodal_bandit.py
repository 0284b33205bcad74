"""Do S²AC's policies keep the modes of a multimodal soft-optimal policy? S²AC vs SB3 SAC (issue 12).

Usage (the committed run's command is in ``results/multimodality/NOTE.md``)::

    python benchmarks/multimodal_bandit.py --out benchmarks/results/multimodality/bandit \\
        --tasks 1d2 --configs sac s2ac_paper3 s2ac_median3 --alphas 0.2 auto 1.0 --seeds 0 1 2 3 4 \\
        --timesteps 800

Trains each (task, configuration, temperature, seed) on ``MultiModalBandit-v0``
(:mod:`sb3_stein.envs.bandit`: one step, reward the log of a Gaussian mixture, so the soft-optimal
policy ``exp(r / alpha)`` is known) for ``--timesteps`` steps with the Python API, then draws
``--samples`` actions from the trained stochastic policy (``predict(deterministic=False)`` on as many
copies of the one observation) and records where they sit: the share near a mode and the split between
the modes, against the soft-optimal policy at the final temperature; whether every mode keeps at
least ``--keep`` of the samples; the reported entropy (S²AC: the closed form of Eq. 11; SAC: its
Gaussian's tanh-corrected ``-log pi``) against a k-NN estimate of the sampled actions. Rows are
appended to ``results.json`` as they finish and a run already there is skipped, so an interrupted
command resumes. One torch thread per process.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from sb3_stein.envs.bandit import MultiModalBanditEnv
from stable_baselines3 import SAC

import sb3_stein  # noqa: F401  (registers MultiModalBandit-v0)
from sb3_stein import S2AC

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bandwidth_entropy import knn_entropy

#: task name -> MultiModalBandit-v0 keyword arguments
TASKS: dict[str, dict[str, Any]] = {
    "1d2": dict(n_modes=2, separation=1.2, width=0.15, action_dim=1),
    "1d2wide": dict(n_modes=2, separation=1.0, width=0.3, action_dim=1),
    "1d3": dict(n_modes=3, separation=0.8, width=0.12, action_dim=1),
    "2d2": dict(n_modes=2, separation=1.2, width=0.15, action_dim=2),
    "2d2wide": dict(n_modes=2, separation=1.2, width=0.3, action_dim=2),
    "2d3": dict(n_modes=3, separation=1.0, width=0.15, action_dim=2),
    "3d2": dict(n_modes=2, separation=1.2, width=0.2, action_dim=3),
}

#: configuration name -> (algorithm, constructor keyword arguments beyond the shared ones)
CONFIGS: dict[str, tuple[type, dict[str, Any]]] = {
    "sac": (SAC, {}),
    # Explicit settings, not "the defaults", so that a row means the same after a default changes
    # ("s2ac_median3" is the default since issue 12; "s2ac_paper3" was before).
    "s2ac_paper3": (S2AC, dict(kernel_bandwidth="paper", svgd_steps=3)),
    "s2ac_paper10": (S2AC, dict(kernel_bandwidth="paper", svgd_steps=10)),
    "s2ac_median3": (S2AC, dict(kernel_bandwidth="median", svgd_steps=3)),
    "s2ac_median10": (S2AC, dict(kernel_bandwidth="median", svgd_steps=10)),
    "s2ac_median10_fixedq0": (S2AC, dict(kernel_bandwidth="median", svgd_steps=10, learn_init=False)),
    "s2ac_median3_fixedq0": (S2AC, dict(kernel_bandwidth="median", svgd_steps=3, learn_init=False)),
}


def run_one(task: str, config: str, alpha: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    env_kwargs = TASKS[task]
    algo, kwargs = CONFIGS[config]
    ent_coef: float | str = "auto" if alpha == "auto" else float(alpha)
    model = algo(
        "MlpPolicy", gym.make("MultiModalBandit-v0", **env_kwargs), ent_coef=ent_coef, seed=seed, **kwargs
    )
    start = time.perf_counter()
    model.learn(args.timesteps)
    seconds = time.perf_counter() - start
    final_alpha = (
        float(th.exp(model.log_ent_coef.detach())) if model.log_ent_coef is not None else float(ent_coef)
    )

    env = MultiModalBanditEnv(**env_kwargs)
    obs = np.zeros((args.samples, 1), dtype=np.float32)
    with th.no_grad():
        actions, _ = model.predict(obs, deterministic=False)
        obs_t = th.as_tensor(obs[: args.entropy_states])
        if isinstance(model, S2AC):
            sample = model.policy.sample(obs_t)
            assert sample.log_prob is not None
            reported = float(-sample.log_prob.mean())
        else:
            _, log_prob = model.actor.action_log_prob(obs_t)
            reported = float(-log_prob.mean())
    summary = env.mode_summary(actions, final_alpha)
    target = env.soft_optimal(final_alpha)
    return {
        "task": task,
        "config": config,
        "alpha": alpha,
        "seed": seed,
        "final_alpha": round(final_alpha, 4),
        **summary,
        "target_near": round(target["near"], 4),
        "target_weights": target["weights"],
        "entropy_reported": round(reported, 3),
        "entropy_knn": round(knn_entropy(np.asarray(actions, dtype=np.float64)), 3),
        "entropy_target": round(target["entropy"], 3),
        "seconds": round(seconds, 1),
    }


def key(row: dict[str, Any]) -> tuple:
    return row["task"], row["config"], row["alpha"], row["seed"]


def write_table(rows: list[dict[str, Any]], out: Path, keep: float) -> None:
    lines = [
        "# One-step multimodal tasks: S²AC vs SB3 SAC",
        "",
        f"kept: seeds where every mode holds >= {keep} of the samples; near: share of the samples within two "
        "tempered standard deviations of a mode (median, per seed; the soft-optimal policy's in brackets).",
        "",
        "| task | config | alpha | seeds | kept | near (target) | near per seed | mode weights per seed | "
        "final alpha | H reported / kNN / target | s per run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["config"], row["alpha"]), []).append(row)
    for (task, config, alpha), group in groups.items():
        group.sort(key=lambda r: r["seed"])

        def med(name: str, group: list[dict[str, Any]] = group) -> float:
            return float(np.median([r[name] for r in group]))

        weights = " ".join("/".join(f"{w:.2f}" for w in r["weights"]) for r in group)
        kept = sum(min(r["shares"]) >= keep for r in group)
        near = " ".join(f"{r['near']:.2f}" for r in group)
        entropies = f"{med('entropy_reported'):.2f} / {med('entropy_knn'):.2f} / {med('entropy_target'):.2f}"
        lines.append(
            f"| {task} | {config} | {alpha} | {len(group)} | {kept}/{len(group)} | "
            f"{med('near'):.2f} ({med('target_near'):.2f}) | {near} | {weights} | {med('final_alpha'):.3f} | "
            f"{entropies} | {med('seconds'):.0f} |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tasks", nargs="+", default=["1d2", "2d2"], choices=sorted(TASKS))
    parser.add_argument("--configs", nargs="+", default=["sac", "s2ac_median3"], choices=sorted(CONFIGS))
    parser.add_argument(
        "--alphas", nargs="+", default=["0.2", "auto"], help="fixed ent_coef values or 'auto'"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--timesteps", type=int, default=1500)
    parser.add_argument("--samples", type=int, default=2000, help="actions drawn from each trained policy")
    parser.add_argument("--entropy-states", type=int, default=200, help="states for the reported entropy")
    parser.add_argument("--keep", type=float, default=0.1, help="share every mode must keep to count as kept")
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    data = json.loads(path.read_text()) if path.exists() else {"rows": []}
    data.setdefault("commands", []).append(" ".join(["python", *sys.argv]))
    data["environment"] = f"torch {th.__version__}, {platform.platform()}"
    done = {key(r) for r in data["rows"]}
    for task in args.tasks:
        for alpha in args.alphas:
            for config in args.configs:
                for seed in args.seeds:
                    if (task, config, alpha, seed) in done:
                        continue
                    row = run_one(task, config, alpha, seed, args)
                    print(json.dumps(row), flush=True)
                    data["rows"].append(row)
                    path.write_text(json.dumps(data, indent=1))
                    write_table(data["rows"], args.out, args.keep)
    write_table(data["rows"], args.out, args.keep)


if __name__ == "__main__":
    main()
