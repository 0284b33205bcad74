"""Speed of S²AC against SB3's SAC, measured in one process, one torch thread.

Usage::

    python benchmarks/speed_s2ac.py --out benchmarks/results/speed_s2ac

Measures (medians over repeats; see benchmarks/README.md):

* ``predict`` latency for one Pendulum-v1 observation: SB3 SAC, S²AC (m = 10, L = 3, stochastic and
  deterministic) and the amortized sampler (Appendix K), and the predict *floor*: SAC's predict plus
  the bare critic passes of the sampler (3 x forward + action gradient and one forward on 10 rows);
* one training gradient step at the paper's settings (batch 100, m = 10, L = 3, two 256x256
  critics) against its *floor*: the bare critic passes the update needs at the same sizes, timed
  with plain autograd on SB3's critic (L x forward+action-gradient on B*m rows for the target
  sampler and again for the actor sampler, a target forward on B*m rows, the critic's
  forward+backward on B rows, the actor's final Q forward + action gradient on B*m rows). The floor with a
  double backward through every SVGD step (what ``create_graph=True`` would cost) is reported too;
  S²AC's ReLU fast path needs no double backward (see sb3_stein/common/critics.py);
* SB3 SAC's gradient step at rl_zoo3's Pendulum settings (batch 256), and 1000 ``learn`` steps of
  both (env steps + updates) for the per-1k-steps ratio;
* growth of S²AC's gradient step with m and L.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure
from stable_baselines3.common.preprocessing import get_flattened_obs_dim

from sb3_stein import S2AC


def device_label(device: str) -> str:
    """``device`` as the report names it: the GPU's model for CUDA."""
    if th.device(device).type == "cuda" and th.cuda.is_available():
        return f"{device} ({th.cuda.get_device_name(th.device(device))})"
    return device


def run_metadata() -> dict[str, object]:
    """What every benchmark report records about the run that made it."""
    return {
        "command": " ".join(["python", *sys.argv]),
        "torch": th.__version__,
        "threads": th.get_num_threads(),
        "machine": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_report(
    out: Path,
    name: str,
    results: dict[str, object],
    rows: list[tuple[str, float, int]],
    ratios: dict[str, float],
    extra: list[str] | None = None,
    env_id: str = "Pendulum-v1",
    threads: int = 1,
) -> None:
    """``speed.json`` (all of ``results``) and ``speed.md`` (measurement rows, then the ratios) in ``out``;
    ``threads``: the torch threads the measurements ran with (the title says it)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(results, indent=2))
    lines = [
        f"# {name} speed ({env_id}, {threads} torch thread{'s' if threads > 1 else ''}, "
        f"{results.get('device', 'cpu')})",
        "",
        f"Command: `{results['command']}`  ",
        f"torch {results['torch']}, {results['machine']}, {results['date']}  ",
        *(extra or []),
        "",
        "| measurement | ms |",
        "| --- | --- |",
        *[f"| {label} | {value:.{digits}f} |" for label, value, digits in rows],
        "",
        "| ratio | value |",
        "| --- | --- |",
        *[f"| {k} | {v:.2f} |" for k, v in ratios.items()],
    ]
    (out / "speed.md").write_text("\n".join(lines) + "\n")


def write_measurements(
    out: Path, stem: str, title: str, command: str, results: dict[str, float], fmt: str = ".2f"
) -> list[str]:
    """``<stem>.json`` (``results``) and ``<stem>.md`` (a title, the command, one "measurement | value"
    row per result) in ``out``; returns the markdown lines."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    lines = [
        f"# {title}",
        "",
        f"Command: `{command}`",
        "",
        "| measurement | value |",
        "| --- | --- |",
        *[f"| {k} | {v:{fmt}} |" for k, v in results.items()],
    ]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return lines


def synchronize() -> None:
    """Wait for queued GPU work (CUDA runs kernels asynchronously; a timer must not stop before them)."""
    if th.cuda.is_available() and th.cuda.is_initialized():
        th.cuda.synchronize()


def interleaved_ms(fns: dict[str, Callable[[], object]], rounds: int, per_round: int = 1) -> dict[str, float]:
    """Median ms per call of each function, timed round-robin.

    This VM's speed drifts by up to 2x over minutes; timing the candidates in turns, a block of
    ``per_round`` calls each per round, exposes them all to the same drift, so their ratios hold.
    """
    for fn in fns.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            synchronize()
            start = time.perf_counter()
            for _ in range(per_round):
                fn()
            synchronize()
            times[name].append((time.perf_counter() - start) / per_round)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def learn_seconds(
    factories: dict[str, Callable[[int], object]], steps: int = 1000, repeats: int = 2
) -> dict[str, float]:
    """Median wall-clock seconds of ``learn(steps)`` per model, each repeat a fresh model built by its
    factory from the repeat's seed (no logger output)."""
    learn_s = {}
    for name, factory in factories.items():
        times = []
        for repeat in range(repeats):
            fresh: Any = factory(repeat)
            fresh.set_logger(configure(None, []))
            start = time.perf_counter()
            fresh.learn(steps)
            times.append(time.perf_counter() - start)
        learn_s[name] = float(np.median(times))
    return learn_s


def fill_buffer(model, n: int = 2000) -> None:
    """Random transitions so that train() can be timed without learning first."""
    env = model.get_env()
    obs = env.reset()
    for _ in range(n):
        action = np.array([env.action_space.sample() for _ in range(env.num_envs)])
        new_obs, reward, done, infos = env.step(action)
        model.replay_buffer.add(obs, new_obs, model.policy.scale_action(action), reward, done, infos)
        obs = new_obs


def critic_floor_fns(model: S2AC, batch: int, m: int, horizon: int = 1) -> dict[str, Callable[[], None]]:
    """Bare autograd critic passes of one S²AC update, at the same sizes (see :func:`floor_ms`).

    With ``horizon > 1`` (Q-STAC) each SVGD step's pass (``fwd_grad``) runs on ``batch x m x horizon``
    rows, the states and controls of every particle's rollout.
    """
    critic = model.critic
    obs_dim = get_flattened_obs_dim(model.observation_space)
    act_dim = get_flattened_obs_dim(model.action_space)  # a Box: its flat size
    obs = th.randn(batch * m, obs_dim, device=model.device)
    obs_b = th.randn(batch, obs_dim, device=model.device)
    act = th.rand(batch * m, act_dim, device=model.device) * 2 - 1
    obs_h = th.randn(batch * m * horizon, obs_dim, device=model.device)
    act_h = th.rand(batch * m * horizon, act_dim, device=model.device) * 2 - 1
    act_b = th.rand(batch, act_dim, device=model.device) * 2 - 1
    target = th.randn(batch, 1, device=model.device)

    def fwd_grad(create_graph: bool = False, backward: bool = False) -> None:
        a = act_h.clone().requires_grad_(True)
        q1, q2 = critic(obs_h, a)
        (g,) = th.autograd.grad(th.min(q1, q2).sum(), a, create_graph=create_graph)
        if backward:
            (g.sum() + q1.sum()).backward()

    def fwd() -> None:
        with th.no_grad():
            critic(obs, act)

    def critic_update() -> None:
        loss = sum(((q - target) ** 2).mean() for q in critic(obs_b, act_b))
        critic.optimizer.zero_grad()
        loss.backward()  # type: ignore[union-attr]

    def final_q() -> None:  # the actor loss needs dQ/da only (the critic is not trained by it)
        a = act.clone().requires_grad_(True)
        q1, q2 = critic(obs, a)
        th.autograd.grad(th.min(q1, q2).mean(), a)

    return {
        "fwd_grad": fwd_grad,
        "fwd": fwd,
        "critic_update": critic_update,
        "final_q_fwd_grad": final_q,
        "fwd_grad_double_backward": lambda: fwd_grad(create_graph=True, backward=True),
    }


def floor_ms(parts: dict[str, float], steps: int) -> dict[str, float]:
    """The update's floor from its timed parts: ``L`` SVGD steps for the target sampler and again for
    the actor sampler, one target forward, the critic update and the actor's final Q and gradient."""
    floor = dict(parts)
    floor["floor"] = (
        2 * steps * parts["fwd_grad"] + parts["fwd"] + parts["critic_update"] + parts["final_q_fwd_grad"]
    )
    floor["floor_create_graph"] = (
        steps * parts["fwd_grad"]
        + parts["fwd"]
        + parts["critic_update"]
        + steps * parts["fwd_grad_double_backward"]
        + parts["final_q_fwd_grad"]
    )
    return floor


def predict_floor_fn(model: S2AC, m: int, steps: int) -> Callable[[], None]:
    """Bare critic passes of one deterministic S²AC action on one state, with plain autograd.

    ``steps`` x (both critics' forward + action gradient on ``m`` rows) for the SVGD steps, and one
    forward on ``m`` rows to pick the highest-Q particle: the work no implementation can skip.
    """
    critic = model.critic
    obs_dim = get_flattened_obs_dim(model.observation_space)
    obs = th.randn(m, obs_dim, device=model.device)
    act = th.rand(m, 1, device=model.device) * 2 - 1

    def passes() -> None:
        for _ in range(steps):
            a = act.clone().requires_grad_(True)
            q1, q2 = critic(obs, a)
            th.autograd.grad(th.min(q1, q2).sum(), a)
        with th.no_grad():
            critic(obs, act)

    return passes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed_s2ac"))
    parser.add_argument(
        "--repeats", type=int, default=30, help="timed repeats of each gradient-step measurement"
    )
    parser.add_argument("--predict-repeats", type=int, default=1000)
    parser.add_argument(
        "--device", default="cpu", help="torch device of every model (cuda: benchmarks/gpu_check.sh)"
    )
    parser.add_argument(
        "--learn-steps", type=int, default=1000, help="learn() steps timed for the per-1k ratio"
    )
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    env_id = "Pendulum-v1"
    results: dict[str, object] = {**run_metadata(), "device": device_label(args.device)}

    sac = SAC(
        "MlpPolicy", env_id, learning_rate=1e-3, seed=0, device=args.device
    )  # rl_zoo3's Pendulum settings
    s2ac = S2AC(
        "MlpPolicy",
        env_id,
        learning_rate=1e-3,
        batch_size=100,
        n_particles=10,
        svgd_steps=3,
        seed=0,
        device=args.device,
    )
    s2ac_amortized = S2AC(
        "MlpPolicy", env_id, n_particles=10, svgd_steps=3, amortized=True, seed=0, device=args.device
    )
    obs = np.array([0.3, -0.9, 0.5], dtype=np.float32)
    # The floor of S²AC's predict: SB3's predict (SAC's, with its actor forward) plus the bare
    # critic passes of the sampler, which no implementation can skip.
    predict = interleaved_ms(
        {
            "sac": lambda: sac.predict(obs, deterministic=False),
            "s2ac": lambda: s2ac.predict(obs, deterministic=False),
            "s2ac_deterministic": lambda: s2ac.predict(obs, deterministic=True),
            "s2ac_amortized": lambda: s2ac_amortized.predict(obs, deterministic=False),
            "floor_critic_passes": predict_floor_fn(s2ac, m=10, steps=3),
        },
        rounds=args.predict_repeats // 10,
        per_round=10,
    )
    predict["floor"] = predict["sac"] + predict["floor_critic_passes"]
    results["predict_ms"] = predict
    print("predict ms", predict, flush=True)

    fill_buffer(sac)
    fill_buffer(s2ac)
    for model in (sac, s2ac):
        model.set_logger(configure(None, []))
    timed = interleaved_ms(
        {
            "sac_batch256": lambda: sac.train(gradient_steps=1, batch_size=256),
            "s2ac_paper": lambda: s2ac.train(gradient_steps=1, batch_size=100),
            **critic_floor_fns(s2ac, batch=100, m=10),
        },
        rounds=args.repeats,
    )
    step = {name: timed.pop(name) for name in ("sac_batch256", "s2ac_paper")}
    floor = floor_ms(timed, steps=3)
    results["train_step_ms"] = step
    results["floor_ms"] = floor
    print("train step ms", step, "floor", floor, flush=True)

    growth_models: dict[str, S2AC] = {}
    for m, steps in [(5, 3), (10, 3), (20, 3), (40, 3), (10, 0), (10, 1), (10, 5), (10, 10)]:
        model = S2AC(
            "MlpPolicy", env_id, batch_size=100, n_particles=m, svgd_steps=steps, seed=0, device=args.device
        )
        fill_buffer(model, 500)
        model.set_logger(configure(None, []))
        growth_models[f"m={m},L={steps}"] = model
    growth = interleaved_ms(
        {
            name: functools.partial(model.train, gradient_steps=1, batch_size=100)
            for name, model in growth_models.items()
        },
        rounds=max(5, args.repeats // 3),
    )
    results["growth_train_step_ms"] = growth
    print("growth", growth, flush=True)

    learn_s = {"sac": 0.0, "s2ac": 0.0}
    chunk = max(1, args.learn_steps // 5)
    for model in (sac, s2ac):
        model.learning_starts = 0
    for _ in range(args.learn_steps // chunk):  # in turns, for the same reason as interleaved_ms
        for name, model in (("sac", sac), ("s2ac", s2ac)):
            start = time.perf_counter()
            model.learn(chunk, reset_num_timesteps=False)
            learn_s[name] += time.perf_counter() - start
    learn_steps = chunk * (args.learn_steps // chunk)
    results["learn_seconds_per_1k"] = {k: v * 1000 / learn_steps for k, v in learn_s.items()}

    ratios = {
        "predict_s2ac_over_sac": predict["s2ac"] / predict["sac"],
        "predict_s2ac_deterministic_over_sac": predict["s2ac_deterministic"] / predict["sac"],
        "predict_amortized_over_sac": predict["s2ac_amortized"] / predict["sac"],
        "predict_s2ac_deterministic_over_floor": predict["s2ac_deterministic"] / predict["floor"],
        "train_step_over_floor": step["s2ac_paper"] / floor["floor"],
        "train_step_over_create_graph_floor": step["s2ac_paper"] / floor["floor_create_graph"],
        "train_step_over_sac_step": step["s2ac_paper"] / step["sac_batch256"],
        "learn_per_1k_over_sac": learn_s["s2ac"] / learn_s["sac"],
    }
    results["ratios"] = ratios
    print("ratios", ratios, flush=True)
    write_report(
        args.out,
        "S²AC",
        results,
        [
            *[(f"predict {k}", v, 3) for k, v in predict.items()],
            *[(f"train step {k}", v, 2) for k, v in step.items()],
            *[(f"floor part {k}", v, 2) for k, v in floor.items()],
            *[(f"train step {k}", v, 2) for k, v in growth.items()],
            *[(f"learn 1k steps {k} (s)", 1000 * v / learn_steps, 1) for k, v in learn_s.items()],
        ],
        ratios,
    )


if __name__ == "__main__":
    main()
