"""Speed of MPQ against SB3's SAC, measured in one process, one torch thread (issue 13's speed evidence).

Usage::

    python benchmarks/speed_mpq.py --out benchmarks/results/speed_mpq

    python benchmarks/speed_mpq.py --env BallInCupSparse-v0 --out benchmarks/results/speed_mpq_ball_in_cup

Measures, on ``--env`` (Pendulum-v1 or BallInCupSparse-v0) with hyperparams/mpq.yml's planner and
update schedule for it (biased model; Pendulum: N = 24, H = 8, batch 64, one update per step;
ball-in-cup: N = 36, H = 4, batch 32, 4 updates per episode; ``--horizon``, ``--batch`` override),
medians over interleaved repeats (see ``interleaved_ms`` in speed_s2ac.py):

* acting latency: one ``predict`` (one MPPI iteration from the warm start) for one observation, MPQ
  and the MPPI baseline with the long horizon (64), against SB3 SAC's ``predict``;
* the target computation for one minibatch of ``--batch`` transitions (``n_target_iterations`` = 3
  MPPI iterations from every ``s'``) and MPQ's whole gradient step, against SAC's gradient step at
  the same batch size;
* the model rollout throughput of the planner (model steps per second, batched over states and samples;
  for the MuJoCo simulator also physics steps per second, 10 per control step);
* 1000 ``learn`` steps of MPQ and of SAC (environment steps and updates, each with its shipped
  schedule: SAC per step with SB3's defaults and the same batch) for the per-1k-steps ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_s2ac import fill_buffer, interleaved_ms, learn_seconds, run_metadata, write_report

from sb3_stein import MPQ
from sb3_stein.mpq import MPPIController

#: hyperparams/mpq.yml's entries (planner, schedule) per environment.
CONFIGS: dict[str, dict[str, Any]] = {
    "Pendulum-v1": dict(
        dynamics_model="sb3_stein.envs.pendulum:biased_pendulum_model",
        planner=dict(n_samples=24, noise_sigma=4.0, temperature=0.15, mppi_step_size=0.5, gamma=0.9),
        horizon=8,
        batch=64,
        schedule=dict(learning_starts=100),
        substeps=1,
    ),
    "BallInCupSparse-v0": dict(
        dynamics_model="sb3_stein.envs.ball_in_cup:biased_ball_in_cup_model",
        planner=dict(n_samples=36, noise_sigma=4.0, temperature=0.15, mppi_step_size=0.55, gamma=0.9),
        horizon=4,
        batch=32,
        schedule=dict(learning_starts=200, train_freq=(1, "episode"), gradient_steps=4),
        substeps=10,
    ),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", choices=sorted(CONFIGS), default="Pendulum-v1")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed_mpq"))
    parser.add_argument("--horizon", type=int, help="default: the yml's")
    parser.add_argument("--batch", type=int, help="default: the yml's")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    config = CONFIGS[args.env]
    env_id, planner, model_path = args.env, config["planner"], config["dynamics_model"]
    horizon = args.horizon or config["horizon"]
    batch = args.batch or config["batch"]

    def make_mpq(seed: int) -> MPQ:
        return MPQ(
            "MlpPolicy",
            env_id,
            dynamics_model=model_path,
            horizon=horizon,
            batch_size=batch,
            seed=seed,
            **config["schedule"],
            **planner,
        )

    mpq = make_mpq(0)
    mppi64 = MPPIController("MlpPolicy", env_id, dynamics_model=model_path, horizon=64, seed=0, **planner)
    sac = SAC("MlpPolicy", env_id, batch_size=batch, seed=0)
    for model in (mpq, sac):
        model.set_logger(configure(None, []))
        fill_buffer(model)
    obs = np.asarray(mpq.get_env().reset())  # type: ignore[union-attr]

    acting = interleaved_ms(
        {
            "mpq": lambda: mpq.predict(obs),
            "mppi_h64": lambda: mppi64.predict(obs),
            "sac": lambda: sac.predict(obs),
        },
        rounds=args.rounds,
        per_round=20,
    )
    data = mpq.replay_buffer.sample(batch)  # type: ignore[union-attr]
    next_obs = data.next_observations.float()
    updates = interleaved_ms(
        {
            "mpq_targets": lambda: mpq.policy.target_planner.plan(next_obs, None, mpq.n_target_iterations),
            "mpq_step": lambda: mpq.train(1, batch),
            "sac_step": lambda: sac.train(1, batch),
        },
        rounds=args.rounds,
        per_round=3,
    )
    # Throughput of the model rollouts alone: B * N sequences of H - 1 model steps, 3 iterations.
    result = mpq.policy.target_planner.plan(next_obs, None, mpq.n_target_iterations)
    model_steps = batch * planner["n_samples"] * (horizon - 1) * mpq.n_target_iterations
    throughput = model_steps / (result.rollout_ms / 1e3)

    learn_s = learn_seconds(
        {"mpq": make_mpq, "sac": lambda seed: SAC("MlpPolicy", env_id, batch_size=batch, seed=seed)}
    )

    results: dict[str, object] = {
        **run_metadata(),
        "env": env_id,
        "horizon": horizon,
        "batch": batch,
        "planner": planner,
        "schedule": config["schedule"],
        "acting_ms": acting,
        "update_ms": updates,
        "model_steps_per_s": throughput,
        "learn_1k_s": learn_s,
    }
    rows = [
        ("SAC predict, 1 obs", acting["sac"], 3),
        (f"MPQ predict (H = {horizon}, 1 MPPI iteration), 1 obs", acting["mpq"], 3),
        ("MPPI H = 64 predict, 1 obs", acting["mppi_h64"], 3),
        (f"MPQ targets, batch {batch} (3 MPPI iterations)", updates["mpq_targets"], 2),
        (f"MPQ gradient step, batch {batch}", updates["mpq_step"], 2),
        (f"SAC gradient step, batch {batch}", updates["sac_step"], 2),
        ("MPQ learn, 1000 steps (s)", learn_s["mpq"], 2),
        ("SAC learn, 1000 steps (s)", learn_s["sac"], 2),
    ]
    ratios = {
        "MPQ / SAC predict": acting["mpq"] / acting["sac"],
        "MPQ / SAC gradient step": updates["mpq_step"] / updates["sac_step"],
        "MPQ / SAC per 1k learn steps": learn_s["mpq"] / learn_s["sac"],
    }
    extra = [f"{env_id}: model rollout throughput (targets): {throughput:,.0f} model steps/s"]
    if config["substeps"] > 1:
        extra.append(
            f"= {throughput * config['substeps']:,.0f} MuJoCo physics steps/s ({config['substeps']} per step)"
        )
    write_report(args.out, "MPQ", results, rows, ratios, extra, env_id=env_id)
    print((args.out / "speed.md").read_text())


if __name__ == "__main__":
    main()
