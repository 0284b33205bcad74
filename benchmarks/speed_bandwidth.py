"""What S²AC's default bandwidth change costs (issue 12): ``"median"`` against ``"paper"`` against SB3 SAC.

Usage::

    python benchmarks/speed_bandwidth.py --out benchmarks/results/speed_bandwidth

One process, one torch thread, Pendulum-v1 at the settings of benchmarks/speed_s2ac.py (batch 100,
m = 10, L = 3, two 256x256 critics; SAC at rl_zoo3's batch 256 and at batch 100): median over
interleaved rounds of one gradient step and of one ``predict``, then 1000 ``learn`` steps of each
(two repeats, median) for the per-1k-steps ratio to SB3 SAC.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_s2ac import fill_buffer, interleaved_ms, learn_seconds, run_metadata, write_report

from sb3_stein import S2AC


def s2ac(bandwidth: str, seed: int = 0) -> S2AC:
    return S2AC(
        "MlpPolicy", "Pendulum-v1", learning_rate=1e-3, batch_size=100, n_particles=10, svgd_steps=3,
        kernel_bandwidth=bandwidth, seed=seed,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed_bandwidth"))
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    models = {
        "s2ac_paper": s2ac("paper"),
        "s2ac_median": s2ac("median"),
        "sac": SAC("MlpPolicy", "Pendulum-v1"),
    }
    for model in models.values():
        model.set_logger(configure(None, []))
        fill_buffer(model)
    obs = np.array([[1.0, 0.0, 0.0]], np.float32)
    predict = interleaved_ms(
        {k: functools.partial(m.predict, obs) for k, m in models.items()}, args.rounds, 20
    )
    steps = interleaved_ms(
        {
            "s2ac_paper": lambda: models["s2ac_paper"].train(1, 100),
            "s2ac_median": lambda: models["s2ac_median"].train(1, 100),
            "sac_batch256": lambda: models["sac"].train(1, 256),
            "sac_batch100": lambda: models["sac"].train(1, 100),
        },
        args.rounds,
        3,
    )
    learn_s = learn_seconds(
        {
            "s2ac_paper": lambda seed: s2ac("paper", seed),
            "s2ac_median": lambda seed: s2ac("median", seed),
            "sac": lambda seed: SAC("MlpPolicy", "Pendulum-v1", seed=seed),
        }
    )
    results: dict[str, object] = {
        **run_metadata(),
        "predict_ms": predict,
        "train_step_ms": steps,
        "learn_1k_s": learn_s,
    }
    rows = [
        *[(f"predict {k}", v, 3) for k, v in predict.items()],
        *[(f"train step {k}", v, 2) for k, v in steps.items()],
        *[(f"learn 1k steps {k} (s)", v, 1) for k, v in learn_s.items()],
    ]
    ratios = {
        "train step median / paper": steps["s2ac_median"] / steps["s2ac_paper"],
        "learn 1k median / paper": learn_s["s2ac_median"] / learn_s["s2ac_paper"],
        "learn 1k paper / sac": learn_s["s2ac_paper"] / learn_s["sac"],
        "learn 1k median / sac": learn_s["s2ac_median"] / learn_s["sac"],
    }
    write_report(args.out, "S²AC bandwidth", results, rows, ratios)
    print((args.out / "speed.md").read_text())


if __name__ == "__main__":
    main()
