"""The optimum of ``KinovaPickPlace-v0`` by a scripted pick-and-place (no learning; issue 14).

The Q-STAC paper's Fig. 4a counts the steps an agent needs to reach 80 % of the *optimal* return; the
reward is ours, so the optimum is measured here. A scripted motion: inverse kinematics
(``scipy.optimize.least_squares`` on a copy of the compiled MuJoCo model, hand pointing down) for six
waypoints (above the cube, at the cube, close the fingers for 60 steps, lift, above the destination,
down to the destination) and joint-velocity P-control (``clip(3 * error, -0.8, 0.8)``) between them.
Rolled out for ``--episodes`` episodes (env seeds ``0..episodes-1``); reports both stages of Table I
(``reached_cube``, ``is_success``), steps and the return, and 80 % of the successful episodes' mean
return (the optimum's estimate: the reward telescopes); writes ``scripted_pickplace.md`` and
``.json`` to ``--out``::

    python benchmarks/kinova_scripted_pickplace.py --out benchmarks/results/kinova_layout
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sb3_stein.envs.kinova import ARM, PINCH, KinovaPickPlaceEnv

#: (waypoint offset from the cube or destination (m), step cap, gripper command, stop when settled)
WAYPOINTS = (
    ("cube", (0.0, 0.0, 0.12), 200, -1.0, True),
    ("cube", (0.0, 0.0, 0.0), 100, -1.0, True),
    ("cube", (0.0, 0.0, 0.0), 60, 1.0, False),  # close: about 1 s
    ("cube", (0.0, 0.0, 0.15), 100, 1.0, True),
    ("destination", (0.0, 0.0, 0.15), 200, 1.0, True),
    ("destination", (0.0, 0.0, 0.01), 100, 1.0, True),
)


def pick_place_script(env: KinovaPickPlaceEnv, gain: float = 3.0, max_speed: float = 0.8) -> Iterator[tuple]:
    """Scripted pick-and-place on ``env`` (already reset): yields ``env.step``'s results until the
    episode ends or the script does."""
    import mujoco
    from scipy.optimize import least_squares

    scratch = mujoco.MjData(env.model)
    pinch, grip = env.model.site(PINCH).id, env.model.site(f"{ARM}hand/gripsite").id

    def inverse_kinematics(goal: np.ndarray, q0: np.ndarray) -> np.ndarray:
        def residual(q: np.ndarray) -> np.ndarray:
            scratch.qpos[env._qadr] = q
            mujoco.mj_kinematics(env.model, scratch)
            axis = scratch.site_xpos[pinch] - scratch.site_xpos[grip]
            return np.r_[
                scratch.site_xpos[pinch] - goal,
                0.2 * (axis / np.linalg.norm(axis) + [0, 0, 1]),  # hand pointing down
                0.01 * (q - q0),
            ]

        return least_squares(residual, q0).x

    anchors = {"cube": env.cube_position(), "destination": env.target.copy()}
    q = env.data.qpos[env._qadr].copy()
    plan = []
    for anchor, offset, steps, gripper, settle in WAYPOINTS:
        q = inverse_kinematics(anchors[anchor] + np.asarray(offset), q)
        plan.append((q, steps, gripper, settle))
    for q_goal, steps, gripper, settle in plan:
        for _ in range(steps):
            error = q_goal - env.data.qpos[env._qadr]
            if settle and np.abs(error).max() < 0.005:
                break
            result = env.step(np.r_[np.clip(gain * error, -max_speed, max_speed), gripper])
            yield result
            if result[2] or result[3]:
                return


def scripted_episodes(episodes: int) -> list[dict[str, Any]]:
    """One scripted episode per env seed ``0..episodes-1``: both stages, steps and return."""
    env = KinovaPickPlaceEnv()
    results = []
    for seed in range(episodes):
        env.reset(seed=seed)
        episode_return, steps, info = 0.0, 0, {}
        for _, reward, _, _, info in pick_place_script(env):  # noqa: B007 (info: the last step's)
            episode_return += reward
            steps += 1
            if steps >= KinovaPickPlaceEnv.MAX_EPISODE_STEPS:
                break
        results.append(
            {
                "seed": seed,
                "reached_cube": bool(info.get("reached_cube", False)),
                "success": bool(info.get("is_success", False)),
                "steps": steps,
                "return": episode_return,
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    episodes = scripted_episodes(args.episodes)
    returns = np.array([e["return"] for e in episodes])
    successful = np.array([e["return"] for e in episodes if e["success"]])
    summary = {
        "episodes": len(episodes),
        "reached_cube": sum(e["reached_cube"] for e in episodes),
        "success": sum(e["success"] for e in episodes),
        "mean_steps": float(np.mean([e["steps"] for e in episodes])),
        "mean_return": float(returns.mean()),
        "mean_return_successful": float(successful.mean()) if len(successful) else None,
        # the optimum is a successful episode's return: the script's failed grasps say nothing about it
        "threshold_80": float(0.8 * successful.mean()) if len(successful) else None,
    }
    print(summary, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scripted_pickplace.json").write_text(
        json.dumps({"summary": summary, "per_episode": episodes}, indent=1)
    )
    lines = [
        "# Scripted pick-and-place on KinovaPickPlace-v0 (no learning)",
        "",
        "Command: `python benchmarks/kinova_scripted_pickplace.py"
        f" --out {args.out} --episodes {args.episodes}`",
        "",
        "The optimum is estimated by the mean return of the successful episodes (the task's reward"
        " telescopes, so every successful pick-and-place earns about the same); 80 % of it is Fig. 4a's"
        " threshold. Failed episodes are the script's failed grasps (the cube slips out or is pushed).",
        "",
        "| episodes | reached cube | success | mean steps | mean return | mean return, successful |"
        " 80 % of it |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {summary['episodes']} | {summary['reached_cube']} | {summary['success']} | "
        f"{summary['mean_steps']:.1f} | {summary['mean_return']:.1f} | "
        f"{summary['mean_return_successful'] or float('nan'):.1f} | "
        f"{summary['threshold_80'] or float('nan'):.1f} |",
        "",
        "| seed | reached cube | success | steps | return |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {e['seed']} | {e['reached_cube']} | {e['success']} | {e['steps']} | {e['return']:.2f} |"
        for e in episodes
    ]
    (args.out / "scripted_pickplace.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
