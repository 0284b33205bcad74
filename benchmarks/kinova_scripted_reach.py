"""How often does the obstacle layout of ``KinovaReachObstacles-v0`` block the direct route? (issue 14)

A scripted reach, no learning: inverse kinematics (``scipy.optimize.least_squares`` on the compiled
MuJoCo model) gives the joint angles that put the pinch point on the target, and joint-velocity
P-control (``clip(gain * error, -1, 1)``) drives the arm there, along a straight line in joint space
("direct") or via two waypoints 0.17 m above the boxes' tops ("over"). Rolled out in the environment
for ``--episodes`` episodes (env seeds ``0..episodes-1``) per obstacle height, with the boxes of
:data:`sb3_stein.envs.kinova.OBSTACLES` scaled to each height (``0``: no boxes). Reports success,
steps and the steps with an obstacle contact; writes ``scripted_reach.md`` and ``.json`` to ``--out``::

    python benchmarks/kinova_scripted_reach.py --out benchmarks/results/kinova_layout
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sb3_stein.envs.kinova import OBSTACLES, PINCH, KinovaReachEnv


def boxes_of_height(height: float) -> np.ndarray:
    """:data:`OBSTACLES`' footprints with tops at ``height`` m (``(0, 6)`` for 0: no boxes)."""
    if height <= 0:
        return np.zeros((0, 6))
    boxes = OBSTACLES.copy()
    boxes[:, 2] = boxes[:, 5] = height / 2
    return boxes


def scripted_episodes(
    obstacles: np.ndarray, route: str, episodes: int, gain: float = 3.0
) -> list[dict[str, float | int | bool]]:
    """One scripted episode per env seed ``0..episodes-1``: success, steps, contact steps, return."""
    import mujoco
    from scipy.optimize import least_squares

    env = KinovaReachEnv(obstacles=obstacles)
    scratch = mujoco.MjData(env.model)
    pinch = env.model.site(PINCH).id
    top = float(obstacles[:, 2].max() + obstacles[:, 5].max()) if len(obstacles) else 0.3

    def inverse_kinematics(goal: np.ndarray, q0: np.ndarray) -> np.ndarray:
        def residual(q: np.ndarray) -> np.ndarray:
            scratch.qpos[env._qadr] = q
            mujoco.mj_kinematics(env.model, scratch)
            return np.r_[scratch.site_xpos[pinch] - goal, 0.01 * (q - q0)]

        return least_squares(residual, q0).x

    results = []
    for seed in range(episodes):
        env.reset(seed=seed)
        q = env.data.qpos[env._qadr].copy()
        goals = []
        if route == "over":
            start, target = env.pinch_point(), env.target
            goals.append(inverse_kinematics(np.array([start[0], 0.1, top + 0.17]), q))
            goals.append(inverse_kinematics(np.array([target[0], -0.1, top + 0.17]), goals[-1]))
        goals.append(inverse_kinematics(env.target, goals[-1] if goals else q))
        goal, episode_return, info, steps = 0, 0.0, {}, 0
        for steps in range(1, env.spec.max_episode_steps + 1 if env.spec else 201):  # noqa: B007
            error = goals[goal] - env.data.qpos[env._qadr]
            if goal < len(goals) - 1 and np.abs(error).max() < 0.1:
                goal += 1
                error = goals[goal] - env.data.qpos[env._qadr]
            _, reward, terminated, _, info = env.step(np.clip(gain * error, -1.0, 1.0))
            episode_return += reward
            if terminated:
                break
        results.append(
            {
                "seed": seed,
                "success": bool(info["is_success"]),
                "steps": steps,
                "contact_steps": int(info["collisions"]),
                "return": episode_return,
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--heights", nargs="+", type=float, default=[0.0, 0.2, 0.25, 0.3, 0.35, 0.45])
    parser.add_argument("--routes", nargs="+", default=["direct", "over"], choices=["direct", "over"])
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    rows = []
    for height in args.heights:
        for route in args.routes:
            if route == "over" and height <= 0:
                continue
            episodes = scripted_episodes(boxes_of_height(height), route, args.episodes)
            rows.append(
                {
                    "height": height,
                    "route": route,
                    "success": sum(e["success"] for e in episodes),
                    "episodes": len(episodes),
                    "mean_steps": float(np.mean([e["steps"] for e in episodes])),
                    "episodes_with_contact": sum(e["contact_steps"] > 0 for e in episodes),
                    "mean_return": float(np.mean([e["return"] for e in episodes])),
                    "per_episode": episodes,
                }
            )
            print({k: v for k, v in rows[-1].items() if k != "per_episode"}, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scripted_reach.json").write_text(json.dumps(rows, indent=1))
    lines = [
        "# Scripted reach on KinovaReachObstacles-v0 by obstacle height (no learning)",
        "",
        f"Command: `python benchmarks/kinova_scripted_reach.py --out {args.out} --episodes {args.episodes}`",
        "",
        "| box height (m) | route | success | mean steps | episodes with contact | mean return |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['height']:.2f} | {r['route']} | {r['success']}/{r['episodes']} | {r['mean_steps']:.1f} | "
            f"{r['episodes_with_contact']} | {r['mean_return']:.1f} |"
        )
    (args.out / "scripted_reach.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
