"""Speed of Q-STAC against SB3's SAC, measured in one process, one torch thread.

Usage::

    python benchmarks/speed_qstac.py --out benchmarks/results/speed_qstac
    python benchmarks/speed_qstac.py --env KinovaReachObstacles-v0 --out benchmarks/results/speed_qstac_kinova

On Pendulum-v1 (the default):

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

On another ``--env`` (e.g. the Kinova arm, whose robot ran at 55-60 Hz in the paper): ``predict`` latency
at the env's shipped settings (and with ``act_svgd_steps`` = 1, 0) next to SB3 SAC's, with the control
rate it allows; one gradient step at the shipped settings against SAC's and the floor; 1000 ``learn``
steps of both, SAC with the env's hyperparams/sac.yml settings.
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import rl_zoo3
import torch as th
import yaml
from speed_s2ac import critic_floor_fns, device_label, fill_buffer, floor_ms, interleaved_ms, write_report
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
    parser.add_argument(
        "--device", default="cpu", help="torch device of every model (cuda: benchmarks/gpu_check.sh)"
    )
    parser.add_argument("--learn-steps", type=int, default=1000)
    parser.add_argument("--env", default="Pendulum-v1", help="an env with a qstac.yml and a sac.yml entry")
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    env_id = args.env
    settings = shipped_settings("qstac", env_id)
    results: dict[str, object] = {
        "command": " ".join(["python", *sys.argv]),
        "torch": th.__version__,
        "machine": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "shipped_settings": settings,
        "device": device_label(args.device),
    }

    sac = SAC(
        "MlpPolicy", env_id, seed=0, device=args.device, **shipped_settings("sac", env_id)
    )  # rl_zoo3's settings
    cheaper_steps: tuple[int, ...]
    if env_id == "Pendulum-v1":
        acting_settings, acting_name, cheaper_steps = ACTING_PENDULUM, "qstac_H5_m10_L3", (2, 1, 0)
    else:
        acting_settings, acting_name, cheaper_steps = settings, "qstac_shipped", (1, 0)
    acting = QSTAC("MlpPolicy", env_id, seed=0, device=args.device, **acting_settings)
    cheaper = {
        steps: QSTAC(
            "MlpPolicy", env_id, seed=0, device=args.device, **{**acting_settings, "act_svgd_steps": steps}
        )
        for steps in cheaper_steps
    }
    obs = observation(env_id)
    predict = interleaved_ms(
        {
            "sac": lambda: sac.predict(obs, deterministic=False),
            acting_name: lambda: acting.predict(obs, deterministic=False),
            f"{acting_name}_deterministic": lambda: acting.predict(obs, deterministic=True),
            **{
                f"{acting_name}_act_svgd_steps={steps}": functools.partial(
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

    model = QSTAC("MlpPolicy", env_id, seed=0, device=args.device, **settings)
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
            "sac_batch256": lambda: sac.train(gradient_steps=1, batch_size=sac.batch_size),
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
    shapes = [(1, m), (3, m), (5, m), (8, m), (horizon, 4), (horizon, 16)] if env_id == "Pendulum-v1" else []
    for h, particles in shapes:
        name = f"H={h},m={particles}"
        if name in growth_models:
            continue
        grown = QSTAC(
            "MlpPolicy",
            env_id,
            seed=0,
            device=args.device,
            **{**settings, "horizon": h, "n_particles": particles},
        )
        fill_buffer(grown, 500)
        grown.set_logger(configure(None, []))
        growth_models[name] = grown
    growth = (
        interleaved_ms(
            {
                name: functools.partial(g.train, gradient_steps=1, batch_size=batch)
                for name, g in growth_models.items()
            },
            rounds=max(3, args.repeats // 3),
        )
        if growth_models
        else {}
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
        "predict_qstac_over_sac": predict[acting_name] / predict["sac"],
        "control_rate_hz": 1e3 / predict[acting_name],
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
        extra=[f"Shipped {env_id} settings: `{settings}`", f"SAC: `{shipped_settings('sac', env_id)}`"],
        env_id=env_id,
    )


#: The acting settings of the Pendulum-v1 latency target (issue 4: <= 5 ms at H = 5, m = 10, L = 3).
ACTING_PENDULUM: dict[str, Any] = {"horizon": 5, "n_particles": 10, "svgd_steps": 3}


def shipped_settings(algo: str, env_id: str) -> dict[str, Any]:
    """Constructor arguments from our ``hyperparams/<algo>.yml`` entry for ``env_id``, else rl_zoo3's own
    (SAC on Pendulum-v1), zoo-only keys dropped."""
    path = hyperparams_file(algo)
    ours = yaml.safe_load(path.read_text()) if path.exists() else {}
    if env_id not in (ours or {}):
        path = Path(rl_zoo3.__file__).parent / "hyperparams" / f"{algo}.yml"
        ours = yaml.safe_load(path.read_text())
    entry = ours[env_id]
    zoo_only = ("n_timesteps", "policy", "n_envs", "normalize", "env_wrapper", "callback", "frame_stack")
    settings = {k: v for k, v in entry.items() if k not in zoo_only}
    if isinstance(settings.get("policy_kwargs"), str):
        settings["policy_kwargs"] = eval(settings["policy_kwargs"], {"nn": th.nn, "dict": dict})  # as rl_zoo3
    return settings


def observation(env_id: str) -> np.ndarray:
    """A first observation of ``env_id`` (Pendulum-v1: a fixed one, as in earlier reports)."""
    if env_id == "Pendulum-v1":
        return np.array([0.3, -0.9, 0.5], dtype=np.float32)
    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    env.close()
    return np.asarray(obs, dtype=np.float32)


if __name__ == "__main__":
    main()
