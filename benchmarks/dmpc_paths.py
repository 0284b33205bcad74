"""The DMPC paper's Fig. 2a on ``Ballbot-v0``: centre-of-mass paths of a trained agent from the 8 fixed
starts, and its success rate over them (issue 16).

Usage (a model trained by rl_zoo3 or benchmarks/compare.py; any algorithm of the zoo)::

    python benchmarks/dmpc_paths.py --algo dmpc --model logs/dmpc/Ballbot-v0_1/Ballbot-v0.zip \\
        --out benchmarks/results/dmpc_ballbot/paths

One deterministic episode from each of :data:`sb3_stein.envs.ballbot.BENCHMARK_STARTS` (the paper
"average[s] performance over 8 trajectories sampled from different starting positions"); the paths are
drawn over the env's top view (walls, start region, target) in one picture, ``<name>.png``, and the
episodes' outcomes go to ``<name>.json`` and ``.md``: success (at the deadline within the success
radius, no wall hit, no fall), wall hits, falls, final distance and return. ``--name`` defaults to
the algorithm's name.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from sb3_stein.envs.ballbot import BENCHMARK_STARTS, FIELD_HIGH, FIELD_LOW
from sb3_stein.envs.raster import draw_segment, pixel_grid

import sb3_stein  # noqa: F401  (registers the environments and algorithms)
from sb3_stein.zoo import ALGORITHMS, _load

#: One colour per start (RGB, 0-255).
COLOURS = np.array(
    [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [23, 190, 207],
    ],
    dtype=np.float64,
)


def algorithm_class(algo: str) -> Any:
    """The class of a zoo name: the plugin's, or SB3's (``sac``, ``td3``, ``ppo``)."""
    if algo in ALGORITHMS:
        return _load(ALGORITHMS[algo])
    import stable_baselines3

    return getattr(stable_baselines3, algo.upper())


def run_episodes(model: Any, env_id: str = "Ballbot-v0") -> list[dict[str, Any]]:
    """One deterministic episode per benchmark start: the path and the outcome."""
    env = gym.make(env_id)
    episodes = []
    for i, start in enumerate(BENCHMARK_STARTS):
        obs, _ = env.reset(seed=i, options={"start": start})
        path, episode_return, info, done = [np.array(obs[:2], np.float64)], 0.0, {}, False
        first = True
        while not done:
            action, _ = model.predict(obs[None], episode_start=np.array([first]), deterministic=True)
            first = False
            obs, reward, terminated, truncated, info = env.step(action[0])
            path.append(np.array(obs[:2], np.float64))
            episode_return += float(reward)
            done = terminated or truncated
        episodes.append(
            {
                "start": list(start),
                "success": bool(info.get("is_success", False)),
                "wall_hit": bool(info.get("wall_hit", False)),
                "fallen": bool(info.get("fallen", False)),
                "final_distance": float(info.get("distance", np.nan)),
                "return": episode_return,
                "steps": len(path) - 1,
                "path": np.asarray(path).tolist(),
            }
        )
    return episodes


def draw(episodes: list[dict[str, Any]], env_id: str = "Ballbot-v0", size: int = 480) -> np.ndarray:
    """The env's top view with every episode's path (one colour per start, a dot at the start)."""
    env: Any = gym.make(env_id).unwrapped
    env.reset(seed=0)
    xs, px = pixel_grid(size, float(np.max(np.abs(np.r_[FIELD_LOW, FIELD_HIGH]))))
    img = env._draw_background(xs, px)  # walls and start region, without a ball
    goal = env.goal
    draw_segment(img, xs, xs, goal, goal, env.success_radius, np.array([170.0, 225.0, 180.0]), px)
    for d in (np.array([0.08, 0.08]), np.array([0.08, -0.08])):
        draw_segment(img, xs, xs, goal - d, goal + d, 0.015, np.array([20.0, 150.0, 60.0]), px)
    for colour, episode in zip(COLOURS, episodes):
        path = np.asarray(episode["path"])
        for j in range(len(path) - 1):
            draw_segment(img, xs, xs, path[j], path[j + 1], 0.012, colour, px)
        draw_segment(img, xs, xs, path[0], path[0], 0.035, colour, px)
        if episode["wall_hit"] or episode["fallen"]:  # a black cross where the episode ended
            for d in (np.array([0.05, 0.05]), np.array([0.05, -0.05])):
                draw_segment(img, xs, xs, path[-1] - d, path[-1] + d, 0.012, np.zeros(3), px)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--algo", required=True, help="zoo name of the model's algorithm (dmpc, sac, ...)")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default=None, help="file name stem (default: the algorithm)")
    args = parser.parse_args()
    import matplotlib.pyplot as plt

    model = algorithm_class(args.algo).load(args.model, env=gym.make("Ballbot-v0"))
    episodes = run_episodes(model)
    name = args.name or args.algo
    args.out.mkdir(parents=True, exist_ok=True)
    plt.imsave(args.out / f"{name}.png", draw(episodes))
    success = sum(e["success"] for e in episodes)
    summary = {
        "model": str(args.model),
        "success": success,
        "episodes": len(episodes),
        "wall_hits": sum(e["wall_hit"] for e in episodes),
        "falls": sum(e["fallen"] for e in episodes),
        "mean_return": float(np.mean([e["return"] for e in episodes])),
        "episodes_detail": episodes,
    }
    (args.out / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [
        f"# {name} on Ballbot-v0 from the 8 benchmark starts",
        "",
        f"Model: `{args.model}`. Success {success}/8, wall hits {summary['wall_hits']}, "
        f"falls {summary['falls']}, mean return {summary['mean_return']:.2f}.",
        "",
        "| start | success | wall hit | fallen | final distance (m) | return |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {tuple(e['start'])} | {e['success']} | {e['wall_hit']} | {e['fallen']} | "
        f"{e['final_distance']:.2f} | {e['return']:.2f} |"
        for e in episodes
    ]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
