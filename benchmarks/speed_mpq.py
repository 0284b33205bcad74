"""Speed of MPQ against SB3's SAC, measured in one process, one torch thread (issue 13's speed evidence).

Usage::

    python benchmarks/speed_mpq.py --out benchmarks/results/speed_mpq

Measures, on Pendulum-v1 with hyperparams/mpq.yml's planner (biased model, N = 24, H = 8 unless
``--horizon``), medians over interleaved repeats (see ``interleaved_ms`` in speed_s2ac.py):

* acting latency: one ``predict`` (one MPPI iteration from the warm start) for one observation, MPQ
  and the MPPI baseline with the long horizon (64), against SB3 SAC's ``predict``;
* the target computation for one minibatch of ``--batch`` transitions (``n_target_iterations`` = 3
  MPPI iterations from every ``s'``) and MPQ's whole gradient step, against SAC's gradient step at
  the same batch size;
* the model rollout throughput of the planner (model steps per second, batched over states and samples);
* 1000 ``learn`` steps of MPQ and of SAC (environment steps and updates; ``learning_starts`` = 100)
  for the per-1k-steps ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_s2ac import fill_buffer, interleaved_ms, run_metadata, write_report

from sb3_stein import MPQ
from sb3_stein.mpq import MPPIController

BIASED = "sb3_stein.envs.pendulum:biased_pendulum_model"
PLANNER: dict[str, Any] = dict(n_samples=24, noise_sigma=4.0, temperature=0.15, mppi_step_size=0.5, gamma=0.9)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed_mpq"))
    parser.add_argument("--horizon", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    mpq = MPQ(
        "MlpPolicy",
        "Pendulum-v1",
        dynamics_model=BIASED,
        horizon=args.horizon,
        batch_size=args.batch,
        seed=0,
        **PLANNER,
    )
    mppi64 = MPPIController("MlpPolicy", "Pendulum-v1", dynamics_model=BIASED, horizon=64, seed=0, **PLANNER)
    sac = SAC("MlpPolicy", "Pendulum-v1", batch_size=args.batch, seed=0)
    for model in (mpq, sac):
        model.set_logger(configure(None, []))
        fill_buffer(model)
    obs = np.array([[1.0, 0.0, 0.0]], np.float32)

    acting = interleaved_ms(
        {
            "mpq": lambda: mpq.predict(obs),
            "mppi_h64": lambda: mppi64.predict(obs),
            "sac": lambda: sac.predict(obs),
        },
        rounds=args.rounds,
        per_round=20,
    )
    data = mpq.replay_buffer.sample(args.batch)  # type: ignore[union-attr]
    next_obs = data.next_observations.float()
    updates = interleaved_ms(
        {
            "mpq_targets": lambda: mpq.policy.target_planner.plan(next_obs, None, mpq.n_target_iterations),
            "mpq_step": lambda: mpq.train(1, args.batch),
            "sac_step": lambda: sac.train(1, args.batch),
        },
        rounds=args.rounds,
        per_round=3,
    )
    # Throughput of the model rollouts alone: B * N sequences of H - 1 model steps, 3 iterations.
    result = mpq.policy.target_planner.plan(next_obs, None, mpq.n_target_iterations)
    model_steps = args.batch * PLANNER["n_samples"] * (args.horizon - 1) * mpq.n_target_iterations
    throughput = model_steps / (result.rollout_ms / 1e3)

    learn_s = {}
    for name in ("mpq", "sac"):
        times = []
        for repeat in range(2):
            fresh: MPQ | SAC
            if name == "mpq":
                fresh = MPQ(
                    "MlpPolicy",
                    "Pendulum-v1",
                    dynamics_model=BIASED,
                    horizon=args.horizon,
                    batch_size=args.batch,
                    seed=repeat,
                    **PLANNER,
                )
            else:
                fresh = SAC("MlpPolicy", "Pendulum-v1", batch_size=args.batch, seed=repeat)
            fresh.set_logger(configure(None, []))
            start = time.perf_counter()
            fresh.learn(1000)
            times.append(time.perf_counter() - start)
        learn_s[name] = float(np.median(times))

    results: dict[str, object] = {
        **run_metadata(),
        "horizon": args.horizon,
        "batch": args.batch,
        "planner": PLANNER,
        "acting_ms": acting,
        "update_ms": updates,
        "model_steps_per_s": throughput,
        "learn_1k_s": learn_s,
    }
    rows = [
        ("SAC predict, 1 obs", acting["sac"], 3),
        (f"MPQ predict (H = {args.horizon}, 1 MPPI iteration), 1 obs", acting["mpq"], 3),
        ("MPPI H = 64 predict, 1 obs", acting["mppi_h64"], 3),
        (f"MPQ targets, batch {args.batch} (3 MPPI iterations)", updates["mpq_targets"], 2),
        (f"MPQ gradient step, batch {args.batch}", updates["mpq_step"], 2),
        (f"SAC gradient step, batch {args.batch}", updates["sac_step"], 2),
        ("MPQ learn, 1000 steps (s)", learn_s["mpq"], 2),
        ("SAC learn, 1000 steps (s)", learn_s["sac"], 2),
    ]
    ratios = {
        "MPQ / SAC predict": acting["mpq"] / acting["sac"],
        "MPQ / SAC gradient step": updates["mpq_step"] / updates["sac_step"],
        "MPQ / SAC per 1k learn steps": learn_s["mpq"] / learn_s["sac"],
    }
    extra = [f"model rollout throughput (targets): {throughput:,.0f} model steps/s"]
    write_report(args.out, "MPQ", results, rows, ratios, extra)
    print((args.out / "speed.md").read_text())


if __name__ == "__main__":
    main()
