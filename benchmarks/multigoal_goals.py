"""Which goal do trained agents reach on MultiGoal-v0? (S²AC paper §4.2, Fig. 6 and Fig. 12.)

Reads the models that ``benchmarks/compare.py`` trained through rl_zoo3, e.g.::

    python benchmarks/compare.py --algos s2ac sac --envs MultiGoal-v0 --seeds 0 1 2 3 4 \\
        --timesteps 5000 --out benchmarks/results/multigoal
    python benchmarks/multigoal_goals.py --runs benchmarks/results/multigoal --algos s2ac sac \\
        --seeds 0 1 2 3 4 --episodes 20

and rolls out ``--episodes`` episodes per seed with the stochastic policy (the paper's Fig. 6
draws trajectories from the learned policies), counting the goal each episode ends at
(``info["goal_index"]``, -1: none within the time limit). Writes ``goals.md``, ``goals.json`` and a
picture of the trajectories per algorithm (``trajectories_<algo>.png``) into ``--runs``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th

import sb3_stein  # noqa: F401  (registers MultiGoal-v0)
from sb3_stein.zoo import register_algorithms


def find_model(runs: Path, algo: str, seed: int, env_id: str) -> Path:
    folder = runs / "logs" / f"seed_{seed}" / algo
    candidates = sorted(folder.glob(f"{env_id}_*/{env_id}.zip"))
    if not candidates:
        raise FileNotFoundError(f"no trained {algo} model for seed {seed} under {folder}")
    return candidates[-1]


def rollout_goals(
    model, env: gym.Env, episodes: int, deterministic: bool, seed: int
) -> tuple[list[int], list]:
    goals, paths = [], []
    for episode in range(episodes):
        obs, info = env.reset(seed=seed * 1000 + episode)
        path = [obs.copy()]
        done = False
        while not done:
            action, _ = model.predict(obs, deterministic=deterministic)
            obs, _, terminated, truncated, info = env.step(action)
            path.append(obs.copy())
            done = terminated or truncated
        goals.append(int(info["goal_index"]))
        paths.append(np.array(path))
    return goals, paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=Path, required=True, help="compare.py --out folder")
    parser.add_argument("--algos", nargs="+", default=["s2ac", "sac"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--env", default="MultiGoal-v0")
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    register_algorithms()  # also done by the rl_zoo3 start-up hook; explicit for `python -S`
    from rl_zoo3 import ALGOS as algos

    env = gym.make(args.env, render_mode="rgb_array")
    n_goals = len(env.unwrapped.goals)
    labels = [f"G{i + 1}" for i in range(n_goals)] + ["none"]
    results: dict[str, dict] = {"command": " ".join(["python", *sys.argv])}
    for algo in args.algos:
        per_mode: dict[str, dict] = {}
        for mode in ("stochastic", "deterministic"):
            counts = np.zeros((len(args.seeds), n_goals + 1), dtype=int)
            all_paths = []
            for row, seed in enumerate(args.seeds):
                model = algos[algo].load(find_model(args.runs, algo, seed, args.env), device="cpu")
                goals, paths = rollout_goals(model, env, args.episodes, mode == "deterministic", seed)
                for goal in goals:
                    counts[row, goal if goal >= 0 else n_goals] += 1
                all_paths += paths
            share = counts.sum(0) / counts.sum()
            per_mode[mode] = {
                "counts_per_seed": counts.tolist(),
                "share": dict(zip(labels, share.round(3).tolist())),
                "seeds_reaching_2plus_goals": int(((counts[:, :n_goals] > 0).sum(1) >= 2).sum()),
            }
            if mode == "stochastic":
                frame = env.unwrapped.render_trajectories(all_paths)
                import matplotlib

                matplotlib.use("Agg")
                import matplotlib.pyplot as plt

                plt.imsave(args.runs / f"trajectories_{algo}.png", frame)
        results[algo] = per_mode
    (args.runs / "goals.json").write_text(json.dumps(results, indent=2))
    lines = [
        f"# Goals reached on {args.env}",
        "",
        f"Command: `{results['command']}`",
        "",
        f"{args.episodes} episodes per seed, seeds {args.seeds}. Share of all episodes ending at each goal;"
        " 'seeds with >= 2 goals' counts seeds whose episodes reached at least two different goals.",
        "",
        "| algo | mode | " + " | ".join(labels) + " | seeds with >= 2 goals |",
        "| --- | --- | " + " | ".join("---" for _ in labels) + " | --- |",
    ]
    for algo in args.algos:
        for mode, res in results[algo].items():
            shares = " | ".join(f"{res['share'][label]:.2f}" for label in labels)
            lines.append(
                f"| {algo} | {mode} | {shares} | {res['seeds_reaching_2plus_goals']}/{len(args.seeds)} |"
            )
    (args.runs / "goals.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
