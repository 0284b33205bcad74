"""Test episodes of trained models: success rate over N episodes (MPQ's Table 2: 100; Q-STAC's Table I: 1000).

Loads the final model each ``benchmarks/compare.py`` run saved (``<runs>/logs/seed_<s>/<algo>/<env>_1/
<env>.zip``; ``--checkpoint best``: rl_zoo3's ``best_model.zip`` of the same run, the model of its best
periodic evaluation, as Q-STAC's Table I tests "the best checkpoint of each algorithm"), for any rl_zoo3
algorithm name (ours and SB3's), and plays ``--episodes`` episodes with the deterministic policy
(``--stochastic`` for sampled actions; MPQ/MPPI's deterministic acting is MPPI with fixed noise) on
environment seeds ``--env-seed + i``, disjoint from training's. An episode
succeeds when ``info["is_success"]`` holds at its last step (rl_zoo3's and SB3's convention; for
BallInCupSparse-v0: the ball is in the cup at the end of the 4 s; for the tasks that end on success,
reaching it). Also reported: the share of steps with success and the mean return.

    python benchmarks/test_episodes.py --runs benchmarks/results/mpq_ball_in_cup/mpq_h4 \
        --algo mpq --env BallInCupSparse-v0 --seeds 0 --episodes 100

``--n-envs N`` steps N environments together and predicts their observations as one batch (much
cheaper for the particle policies on 1000 episodes); ``--stages KEY ...`` also reports, per key, the
share of episodes in which ``info[KEY]`` held at some step (``reached_cube`` for KinovaPickPlace-v0).

Writes ``test_episodes.json`` and ``test_episodes.md`` into ``--runs`` (``--out`` to change). Seeds
tested by earlier commands with the same settings stay in the report and are not played again
(``--redo`` plays them again), so each seed can be tested as soon as its training run finishes.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from rl_zoo3.utils import ALGOS

import sb3_stein
import sb3_stein.zoo  # noqa: F401  (adds our algorithms to rl_zoo3's ALGOS)


def play(
    model: Any,
    env_id: str,
    episodes: int,
    env_seed: int,
    deterministic: bool = True,
    n_envs: int = 1,
    stages: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Play ``episodes`` episodes (episode ``i`` on env seed ``env_seed + i``) in ``n_envs`` environments
    stepped together, their observations predicted as one batch ``(n_envs, obs_dim)`` (the paper's
    parallel test environments; one batch is much cheaper than ``n_envs`` single predictions for the
    particle policies). A slot whose environments have no episode left keeps its last observation in the
    batch and its action is ignored, so the batch (and a planner's per-slot memory) keeps its layout.

    Returns success (``info["is_success"]`` at the last step), the share of steps with success, the return
    and, for each ``stages`` key, the share of episodes in which ``info[key]`` held at some step.
    """
    n_envs = max(1, min(n_envs, episodes))
    envs = [gym.make(env_id) for _ in range(n_envs)]
    success, share, returns = [False] * episodes, [0.0] * episodes, [0.0] * episodes
    reached = {key: [False] * episodes for key in stages}
    obs: list[Any] = [None] * n_envs
    episode_of: list[int | None] = [None] * n_envs  # the episode each slot plays (None: done)
    starts = np.ones(n_envs, dtype=bool)
    totals, hits, lengths = np.zeros(n_envs), np.zeros(n_envs), np.zeros(n_envs, dtype=int)
    next_episode, steps = 0, 0

    def begin(k: int) -> None:
        nonlocal next_episode
        if next_episode >= episodes:
            episode_of[k] = None
            return
        obs[k], _ = envs[k].reset(seed=env_seed + next_episode)
        episode_of[k], starts[k] = next_episode, True
        totals[k] = hits[k] = lengths[k] = 0
        next_episode += 1

    for k in range(n_envs):
        begin(k)
    start = time.perf_counter()
    while any(e is not None for e in episode_of):
        actions, _ = model.predict(np.stack(obs), deterministic=deterministic, episode_start=starts.copy())
        starts[:] = False
        for k, episode in enumerate(episode_of):
            if episode is None:
                continue
            obs[k], reward, terminated, truncated, info = envs[k].step(actions[k])
            totals[k] += float(reward)
            hits[k] += bool(info.get("is_success", False))
            lengths[k] += 1
            steps += 1
            for key in stages:
                reached[key][episode] |= bool(info.get(key, False))
            if terminated or truncated:
                success[episode] = bool(info.get("is_success", False))
                share[episode], returns[episode] = hits[k] / lengths[k], totals[k]
                begin(k)
    seconds = time.perf_counter() - start
    for env in envs:
        env.close()
    return {
        "episodes": episodes,
        "n_envs": n_envs,
        "success_rate": float(np.mean(success)),
        "success_share_of_steps": float(np.mean(share)),
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        **{f"{key}_rate": float(np.mean(flags)) for key, flags in reached.items()},
        "ms_per_step": 1e3 * seconds / steps,
        "per_episode_success": success,
    }


def _saved(
    path: Path, settings: dict[str, Any], command: str, new_runs: dict | None = None
) -> dict[str, Any]:
    """The report in ``path`` with ``new_runs`` merged in (and written back), under a file lock: seeds
    tested by separate commands, also at the same time, accumulate in one report of the same settings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results: dict[str, Any] = {"settings": settings, "commands": [], "runs": {}}
        if path.exists():
            previous = json.loads(path.read_text())
            if previous.get("settings") == settings:
                results = previous
            elif new_runs:
                print(f"{path}: other settings ({previous.get('settings')}); replaced by a new report")
        if command not in results["commands"]:
            results["commands"].append(command)
        if new_runs:
            results["runs"].update(new_runs)
            rates = [r["success_rate"] for r in results["runs"].values()]
            results["success_rate_mean"] = float(np.mean(rates))
            path.write_text(json.dumps(results, indent=2))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=Path, required=True, help="a compare.py output folder")
    parser.add_argument("--algo", choices=sorted(ALGOS), required=True)
    parser.add_argument("--env", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--env-seed", type=int, default=10_000, help="first test episode's env seed")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead")
    parser.add_argument("--out", type=Path, help="output folder (default: --runs)")
    parser.add_argument("--n-envs", type=int, default=1, help="environments stepped together, one batch")
    parser.add_argument(
        "--stages", nargs="*", default=[], help="info keys reported as the share of episodes reaching them"
    )
    parser.add_argument("--redo", action="store_true", help="play seeds already in test_episodes.json again")
    parser.add_argument(
        "--checkpoint",
        choices=["final", "best"],
        default="final",
        help="the run's final model or rl_zoo3's best_model.zip (best evaluation; Q-STAC's Table I)",
    )
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    out = args.out or args.runs
    settings = {
        "algo": args.algo,
        "env": args.env,
        "episodes": args.episodes,
        "env_seed": args.env_seed,
        "stochastic": args.stochastic,
    }
    if args.checkpoint != "final":  # reports written before the option existed stay valid
        settings["checkpoint"] = args.checkpoint
    command = shlex.join(["python", "benchmarks/test_episodes.py", *(sys.argv[1:] if argv is None else argv)])
    path_json = out / "test_episodes.json"
    results = _saved(path_json, settings, command)
    for seed in args.seeds:
        if str(seed) in results["runs"] and not args.redo:
            print(f"[skip] seed {seed}: in {path_json} (--redo to play it again)")
            continue
        run_dir = args.runs / "logs" / f"seed_{seed}" / args.algo / f"{args.env}_1"
        path = run_dir / (f"{args.env}.zip" if args.checkpoint == "final" else "best_model.zip")
        if not path.exists():
            raise SystemExit(f"no saved model at {path}: run benchmarks/compare.py for seed {seed} first")
        model = ALGOS[args.algo].load(path, device="cpu")
        run = play(
            model,
            args.env,
            args.episodes,
            args.env_seed,
            not args.stochastic,
            args.n_envs,
            tuple(args.stages),
        )
        print(seed, {k: v for k, v in run.items() if k != "per_episode_success"})
        results = _saved(path_json, settings, command, {str(seed): run})  # after each seed
    lines = [
        f"# Test episodes: {args.algo} on {args.env}",
        "",
        "Commands:",
        "",
        *[f"    {c}" for c in results["commands"]],
        "",
        f"{args.episodes} {'stochastic' if args.stochastic else 'deterministic'} episodes per seed "
        f"({args.checkpoint} model) on env "
        f"seeds {args.env_seed}..."
        f"{args.env_seed + args.episodes - 1}; success = `info['is_success']` at the last step.",
        "",
    ]
    runs = sorted(results["runs"].items(), key=lambda item: int(item[0]))
    stage_keys = sorted({k for _, r in runs for k in r if k.endswith("_rate") and k != "success_rate"})
    lines += [
        "| seed | success rate | "
        + "".join(f"{k.removesuffix('_rate')} rate | " for k in stage_keys)
        + "share of steps with success | mean return (std) | ms per step |",
        "| --- " * (5 + len(stage_keys)) + "|",
    ]
    for seed, r in runs:
        stage_cells = "".join(f"{r[k]:.3f} | " if k in r else "- | " for k in stage_keys)
        lines.append(
            f"| {seed} | {r['success_rate']:.3f} | {stage_cells}{r['success_share_of_steps']:.3f} | "
            f"{r['mean_return']:.1f} ({r['std_return']:.1f}) | {r['ms_per_step']:.2f} |"
        )
    if len(runs) > 1:
        rates = [r["success_rate"] for _, r in runs]
        lines += ["", f"Success rate over seeds: mean {np.mean(rates):.3f}, std {np.std(rates):.3f}."]
    (out / "test_episodes.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
