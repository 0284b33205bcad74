"""Speed of DMPC against SB3's SAC, measured in one process, one torch thread (issue 16's speed evidence).

Usage::

    python benchmarks/speed_dmpc.py --out benchmarks/results/speed_dmpc

On ``Ballbot-v0`` with hyperparams/dmpc.yml's entry (horizon 10, batch 128, one update per step),
medians over interleaved repeats (``interleaved_ms`` in speed_s2ac.py):

* acting latency: one ``predict`` for one observation (the MPC solve, warm-started from the previous
  step's plan of the same episode, as when acting), DMPC at ``--horizons`` and without the running
  cost, against SB3 SAC's ``predict``;
* DMPC's gradient step (the value network's update) against SAC's at the same batch size;
* 1000 ``learn`` steps of DMPC and of SAC (SAC with SB3's defaults and the same batch) for the
  per-1k-steps ratio (two repeats each, median).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import yaml
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_s2ac import fill_buffer, interleaved_ms, learn_seconds, run_metadata, write_report

from sb3_stein import DMPC
from sb3_stein.zoo import hyperparams_file

ENV_ID = "Ballbot-v0"


def shipped_settings() -> dict[str, Any]:
    """hyperparams/dmpc.yml's Ballbot-v0 entry as constructor keywords."""
    entry = dict(yaml.safe_load(hyperparams_file("dmpc").read_text())[ENV_ID])
    entry.pop("n_timesteps", None)
    entry.pop("policy", None)
    return entry


def stepping_predict(model: Any) -> Any:
    """``predict`` along one episode (the warm start of the previous step, as when acting)."""
    env = gym.make(ENV_ID)
    state = {"obs": env.reset(seed=0)[0], "first": True}

    def call() -> None:
        action, _ = model.predict(state["obs"][None], episode_start=np.array([state["first"]]))
        obs, _, terminated, truncated, _ = env.step(action[0])
        state["first"] = terminated or truncated
        state["obs"] = env.reset()[0] if state["first"] else obs

    return call


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed_dmpc"))
    parser.add_argument("--horizons", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    settings = shipped_settings()
    batch = int(settings["batch_size"])
    variants: dict[str, DMPC] = {}
    shipped_name = f"dmpc_h{settings['horizon']}"
    for horizon in sorted({int(settings["horizon"]), *args.horizons}):  # the shipped horizon always
        variants[f"dmpc_h{horizon}"] = DMPC("MlpPolicy", ENV_ID, seed=0, **{**settings, "horizon": horizon})
    variants["dmpc_no_running_cost"] = DMPC(
        "MlpPolicy", ENV_ID, seed=0, **{**settings, "running_cost": False}
    )
    sac = SAC("MlpPolicy", ENV_ID, batch_size=batch, seed=0)
    shipped = variants[shipped_name]
    for model in (*variants.values(), sac):
        model.set_logger(configure(None, []))
    for model in (shipped, sac):
        fill_buffer(model)

    acting = interleaved_ms(
        {**{name: stepping_predict(m) for name, m in variants.items()}, "sac": stepping_predict(sac)},
        rounds=args.rounds,
        per_round=10,
    )
    updates = interleaved_ms(
        {"dmpc_step": lambda: shipped.train(1, batch), "sac_step": lambda: sac.train(1, batch)},
        rounds=args.rounds,
        per_round=5,
    )
    learn_s = learn_seconds(
        {
            "dmpc": lambda seed: DMPC("MlpPolicy", ENV_ID, seed=seed, **settings),
            "sac": lambda seed: SAC("MlpPolicy", ENV_ID, batch_size=batch, seed=seed),
        }
    )

    results: dict[str, object] = {
        **run_metadata(),
        "env": ENV_ID,
        "settings": {k: repr(v) for k, v in settings.items()},
        "acting_ms": acting,
        "update_ms": updates,
        "learn_1k_s": learn_s,
    }
    rows = [("SAC predict, 1 obs", acting["sac"], 3)]
    rows += [(f"{name} predict, 1 obs", acting[name], 2) for name in variants]
    rows += [
        (f"DMPC gradient step, batch {batch}", updates["dmpc_step"], 2),
        (f"SAC gradient step, batch {batch}", updates["sac_step"], 2),
    ]
    rows += [
        ("DMPC learn, 1000 steps (s)", learn_s["dmpc"], 2),
        ("SAC learn, 1000 steps (s)", learn_s["sac"], 2),
    ]
    ratios = {f"predict_{name}_over_sac": acting[name] / acting["sac"] for name in variants}
    ratios["control_rate_hz_shipped"] = 1e3 / acting[shipped_name]
    ratios["train_step_over_sac"] = updates["dmpc_step"] / updates["sac_step"]
    ratios["learn_per_1k_over_sac"] = learn_s["dmpc"] / learn_s["sac"]
    write_report(args.out, "DMPC", results, rows, ratios, env_id=ENV_ID)
    print((args.out / "speed.md").read_text())


if __name__ == "__main__":
    main()
