"""Returns of trained Q-STAC agents when acting with fewer SVGD steps (``act_svgd_steps``).

Usage::

    python benchmarks/qstac_acting.py --env Pendulum-v1 --models RUN1.zip RUN2.zip ... \\
        --steps 3 2 1 0 --episodes 10 --out benchmarks/results/qstac_acting/Pendulum-v1

Each model (trained with its own ``svgd_steps``) is evaluated with ``deterministic=True`` on the same
``--episodes`` seeded episodes for every acting setting: ``L`` SVGD steps while planning, ``0``
meaning the highest-Q sample of the prior with no planning. The training is the same for every
column, so the columns isolate what planning at acting time adds; the latency of each setting is
measured by ``benchmarks/speed_qstac.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th

import sb3_stein  # noqa: F401  (registers the environments)
from sb3_stein import QSTAC


def episode_returns(model: QSTAC, env_id: str, episodes: int, seed: int) -> tuple[list[float], list[bool]]:
    """Deterministic returns (and success flags) on episodes seeded ``seed, seed + 1, ...``."""
    env = gym.make(env_id)
    returns, successes = [], []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        total, done, info = 0.0, False, {}
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        successes.append(bool(info.get("is_success", False)))
    return returns, successes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", required=True)
    parser.add_argument("--models", nargs="+", type=Path, required=True, help="Q-STAC .zip files")
    parser.add_argument("--steps", nargs="+", type=int, default=[3, 2, 1, 0], help="act_svgd_steps values")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1000, help="seed of the first evaluation episode")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    rows = []
    for path in args.models:
        model = QSTAC.load(path, env=gym.make(args.env), device="cpu")
        trained_steps = model.policy.svgd_steps
        for steps in args.steps:
            model.policy.act_svgd_steps = steps
            th.manual_seed(0)
            returns, successes = episode_returns(model, args.env, args.episodes, args.seed)
            row = {
                "model": str(path),
                "trained_svgd_steps": trained_steps,
                "act_svgd_steps": steps,
                "mean_return": float(np.mean(returns)),
                "success_rate": float(np.mean(successes)),
                "returns": returns,
            }
            rows.append(row)
            print(
                f"{path} act_svgd_steps={steps}: {row['mean_return']:.1f} ({row['success_rate']:.0%})",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"command": " ".join(["python", *sys.argv]), "env": args.env, "rows": rows}
    (args.out / "acting.json").write_text(json.dumps(summary, indent=1))
    lines = [
        f"# Q-STAC on {args.env}: deterministic return by SVGD steps when acting",
        "",
        f"Command: `{summary['command']}`",
        "",
        f"{args.episodes} episodes per cell (seeds {args.seed}..{args.seed + args.episodes - 1}), "
        "mean return (success rate).",
        "",
        "| model | " + " | ".join(f"L_act = {s}" for s in args.steps) + " |",
        "| --- | " + " | ".join("---" for _ in args.steps) + " |",
    ]
    for path in args.models:
        cells = [r for r in rows if r["model"] == str(path)]
        lines.append(
            f"| {path.parent.name}/{path.name} | "
            + " | ".join(f"{r['mean_return']:.1f} ({r['success_rate']:.0%})" for r in cells)
            + " |"
        )
    medians = [np.median([r["mean_return"] for r in rows if r["act_svgd_steps"] == s]) for s in args.steps]
    lines.append("| **median over models** | " + " | ".join(f"**{v:.1f}**" for v in medians) + " |")
    (args.out / "acting.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
