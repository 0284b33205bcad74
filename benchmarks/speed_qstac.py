"""Speed of Q-STAC against SB3's SAC, measured in one process, one torch thread.

Usage::

    python benchmarks/speed_qstac.py --out benchmarks/results/speed_qstac

Measures (medians, candidates timed round-robin; see benchmarks/README.md):

* ``predict`` latency for one Pendulum-v1 observation at H = 5, m = 10, L = 3 (the issue's acting
  target: <= 5 ms), deterministic and stochastic, next to SB3 SAC's, and of the cheaper acting
  variant ``act_svgd_steps`` = 2, 1, 0 (training keeps L = 3);
* one gradient step at the shipped Pendulum-v1 settings (hyperparams/qstac.yml) against its floor:
  the bare critic passes it needs at the same sizes (2 L forward + action-gradient passes on
  ``batch x m x H`` rows, a target forward and the actor's final Q on ``batch x m`` rows, the critic
  update), as in benchmarks/speed_s2ac.py;
* the cost of a gradient step against the horizon H and the number of particles m;
* 1000 ``learn`` steps of Q-STAC (shipped settings) and SAC (rl_zoo3's), for the per-1k-steps ratio and the
  projected wall-clock of the 10k-step Pendulum benchmark.
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch as th
import yaml
from speed_s2ac import critic_floor_fns, fill_buffer, floor_ms, interleaved_ms, write_report
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure

from sb3_stein import QSTAC
from sb3_stein.zoo import hyperparams_file


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed_qstac"))
    parser.add_argument("--repeats", type=int, default=15, help="rounds of each gradient-step measurement")
    parser.add_argument("--predict-repeats", type=int, default=300)
    parser.add_argument("--learn-steps", type=int, default=1000)
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    env_id = "Pendulum-v1"
    shipped = yaml.safe_load(hyperparams_file("qstac").read_text())[env_id]
    settings = {k: v for k, v in shipped.items() if k not in ("n_timesteps", "policy")}
    results: dict[str, object] = {
        "command": " ".join(["python", *sys.argv]),
        "torch": th.__version__,
        "machine": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "shipped_settings": settings,
    }

    sac = SAC("MlpPolicy", env_id, learning_rate=1e-3, seed=0)  # rl_zoo3's Pendulum settings
    acting = QSTAC("MlpPolicy", env_id, horizon=5, n_particles=10, svgd_steps=3, seed=0)
    cheaper = {
        steps: QSTAC(
            "MlpPolicy", env_id, horizon=5, n_particles=10, svgd_steps=3, act_svgd_steps=steps, seed=0
        )
        for steps in (2, 1, 0)
    }
    obs = np.array([0.3, -0.9, 0.5], dtype=np.float32)
    predict = interleaved_ms(
        {
            "sac": lambda: sac.predict(obs, deterministic=False),
            "qstac_H5_m10_L3": lambda: acting.predict(obs, deterministic=False),
            "qstac_H5_m10_L3_deterministic": lambda: acting.predict(obs, deterministic=True),
            **{
                f"qstac_H5_m10_L3_act_svgd_steps={steps}": functools.partial(
                    variant.predict, obs, deterministic=False
                )
                for steps, variant in cheaper.items()
            },
        },
        rounds=args.predict_repeats // 10,
        per_round=10,
    )
    results["predict_ms"] = predict
    print("predict ms", predict, flush=True)

    model = QSTAC("MlpPolicy", env_id, seed=0, **settings)
    batch, m, horizon, steps = (
        settings["batch_size"],
        settings["n_particles"],
        settings["horizon"],
        settings["svgd_steps"],
    )
    fill_buffer(sac)
    fill_buffer(model)
    for algo in (sac, model):
        algo.set_logger(configure(None, []))
    timed = interleaved_ms(
        {
            "sac_batch256": lambda: sac.train(gradient_steps=1, batch_size=256),
            "qstac_shipped": lambda: model.train(gradient_steps=1, batch_size=batch),
            **critic_floor_fns(model, batch=batch, m=m, horizon=horizon),
        },
        rounds=args.repeats,
    )
    step = {name: timed.pop(name) for name in ("sac_batch256", "qstac_shipped")}
    floor = floor_ms(timed, steps=steps)
    results["train_step_ms"], results["floor_ms"] = step, floor
    print("train step ms", step, "floor", floor, flush=True)

    growth_models: dict[str, QSTAC] = {}
    for h, particles in [(1, m), (3, m), (5, m), (8, m), (horizon, 4), (horizon, 16)]:
        name = f"H={h},m={particles}"
        if name in growth_models:
            continue
        grown = QSTAC("MlpPolicy", env_id, seed=0, **{**settings, "horizon": h, "n_particles": particles})
        fill_buffer(grown, 500)
        grown.set_logger(configure(None, []))
        growth_models[name] = grown
    growth = interleaved_ms(
        {
            name: functools.partial(g.train, gradient_steps=1, batch_size=batch)
            for name, g in growth_models.items()
        },
        rounds=max(3, args.repeats // 3),
    )
    results["growth_train_step_ms"] = growth
    print("growth", growth, flush=True)

    learn_s = {"sac": 0.0, "qstac": 0.0}
    chunk = max(1, args.learn_steps // 5)
    for algo in (sac, model):
        algo.learning_starts = 0
    for _ in range(args.learn_steps // chunk):  # in turns: the VM's speed drifts
        for name, algo in (("sac", sac), ("qstac", model)):
            start = time.perf_counter()
            algo.learn(chunk, reset_num_timesteps=False)
            learn_s[name] += time.perf_counter() - start
    learn_steps = chunk * (args.learn_steps // chunk)
    per_1k = {k: v * 1000 / learn_steps for k, v in learn_s.items()}
    results["learn_seconds_per_1k"] = per_1k
    ratios = {
        "predict_qstac_over_sac": predict["qstac_H5_m10_L3"] / predict["sac"],
        "train_step_over_floor": step["qstac_shipped"] / floor["floor"],
        "train_step_over_create_graph_floor": step["qstac_shipped"] / floor["floor_create_graph"],
        "train_step_over_sac_step": step["qstac_shipped"] / step["sac_batch256"],
        "learn_per_1k_over_sac": per_1k["qstac"] / per_1k["sac"],
        "projected_10k_minutes": per_1k["qstac"] * 10 / 60,
    }
    results["ratios"] = ratios
    print("ratios", ratios, flush=True)
    write_report(
        args.out,
        "Q-STAC",
        results,
        [
            *[(f"predict {k}", v, 3) for k, v in predict.items()],
            *[(f"train step {k}", v, 2) for k, v in step.items()],
            *[(f"floor part {k}", v, 2) for k, v in floor.items()],
            *[(f"train step {k} (shipped batch)", v, 2) for k, v in growth.items()],
            *[(f"learn 1k steps {k} (s)", v, 1) for k, v in per_1k.items()],
        ],
        ratios,
        extra=[f"Shipped Pendulum-v1 settings: `{settings}`"],
    )


if __name__ == "__main__":
    main()
