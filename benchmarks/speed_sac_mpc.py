"""Speed of the MPC layer and of SAC-ZOP / SAC-FOP against SB3's SAC, one process, one torch thread.

Usage::

    python benchmarks/speed_sac_mpc.py --out benchmarks/results/speed_sac_mpc

Measures (medians; candidates timed round-robin, see benchmarks/speed_s2ac.py:interleaved_ms):

* the MPC layer on the cart-pole at T = 20 stages (``CartPoleSwingUpOCP(horizon=20)``), batch 256:
  the forward solve (cold start, and warm-started from the previous solution of nearby states) and
  the backward pass (vector-Jacobian product), per sample, for each of :data:`LAYER_VARIANTS`
  (interpreted; compiled with one call per sample; compiled with one mapped call per batch on 1 and
  2 threads; the batched Riccati interior point method, ``solver="riccati"``); targets (issue 15):
  solve plus sensitivities <= 1.5 ms per sample cold, <= 0.5 ms warm; and the compiled layer's build
  time with an empty cache and from the cache;
* one gradient step of SAC-ZOP, SAC-FOP and SB3 SAC at the shipped CartPoleSwingUp-v0 settings
  (hyperparams/sac_zop.yml: batch 64), next to the MPC layer's own time for what an FOP step
  solves (forward for the actor batch and the target batch, backward for the actor batch), with
  the layer configured as the shipped models' (``compiled=None``: compiled and mapped where a C
  compiler exists): targets FOP's step <= 1.3x that and <= 3x ZOP's (the lecture: 2 h vs 6 h for
  1M WindMaze steps, acados with 4 threads); and SAC-FOP's step with ``mpc_kwargs={"solver": "riccati"}``
  (and that layer's MPC work);
* ``learn`` wall-clock per 1000 steps of SAC-ZOP and SB3 SAC at the same shipped settings
  (target: ZOP <= 1.5x SAC; the MPC runs only when acting).

``--step-threads N`` runs the gradient steps and ``learn`` with N torch threads (the mapped layer of
the shipped models follows torch's setting): rl_zoo3 leaves torch at all cores unless
``--num-threads`` is given, and the lecture's acados ran 4 threads. ``--no-layer`` skips the
layer-variant section (e.g. for a second run at another thread count).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch as th
import yaml
from sb3_stein.envs.cartpole_swingup import CartPoleSwingUpOCP
from speed_s2ac import interleaved_ms, run_metadata, write_report
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure

import sb3_stein  # noqa: F401  (registers the environments)
from sb3_stein import SACFOP, SACZOP
from sb3_stein.common import jit_cache
from sb3_stein.common.mpc import MPCLayer
from sb3_stein.zoo import hyperparams_file

ENV_ID = "CartPoleSwingUp-v0"
#: Gradient steps per timed call (SAC-FOP's sensitivity diagnostic runs on every 10th update).
STEPS_PER_CALL = SACFOP.du0_dphi_interval


def _states(rng: np.random.Generator, batch: int) -> np.ndarray:
    """Cart-pole states of a swing-up: anywhere on the track and circle, moderate speeds."""
    return rng.uniform([-1.5, -np.pi, -2.0, -4.0], [1.5, np.pi, 2.0, 4.0], size=(batch, 4))


#: The MPC layer's variants timed side by side: interpreted (the loop of one casadi call per sample),
#: compiled with the same loop, compiled with one mapped call per batch on 1 and 2 threads, and the
#: batched Riccati interior point method (``solver="riccati"``, sb3_stein/common/riccati_ipm.py).
LAYER_VARIANTS: dict[str, dict[str, object]] = {
    "interpreted": {"compiled": False, "batch_mode": "loop"},
    "compiled_loop": {"compiled": True, "batch_mode": "loop"},
    "compiled_map": {"compiled": True, "batch_mode": "map", "n_threads": 1},
    "compiled_map_2threads": {"compiled": True, "batch_mode": "map", "n_threads": 2},
    "riccati": {"compiled": True, "solver": "riccati", "batch_mode": "map", "n_threads": 1},
    "riccati_2threads": {"compiled": True, "solver": "riccati", "batch_mode": "map", "n_threads": 2},
}


def compile_seconds(horizon: int) -> dict[str, float]:
    """The compiled layer's build time with an empty cache (compiling) and again (loading the cache),
    in a temporary cache folder (the user's cache is left alone)."""
    with tempfile.TemporaryDirectory() as folder:
        previous = os.environ.get(jit_cache.CACHE_ENV)
        os.environ[jit_cache.CACHE_ENV] = folder
        try:
            first = MPCLayer(CartPoleSwingUpOCP(horizon=horizon), compiled=True).build_seconds
            second = MPCLayer(CartPoleSwingUpOCP(horizon=horizon), compiled=True).build_seconds
        finally:
            if previous is None:
                os.environ.pop(jit_cache.CACHE_ENV, None)
            else:
                os.environ[jit_cache.CACHE_ENV] = previous
    interpreted = MPCLayer(CartPoleSwingUpOCP(horizon=horizon), compiled=False).build_seconds
    return {"compile_s": first, "cached_build_s": second, "interpreted_build_s": interpreted}


def layer_timings(
    batch: int, horizon: int, rounds: int, variants: dict[str, dict[str, object]] | None = None
) -> dict[str, float]:
    """Per variant (default: the interpreted layer only): forward cold, forward warm-started from the
    solution of nearby states, backward; in ms for the whole batch, interleaved across variants."""
    variants = {"interpreted": LAYER_VARIANTS["interpreted"]} if variants is None else variants
    rng = np.random.default_rng(0)
    states = _states(rng, batch)
    params = rng.uniform(-np.pi, np.pi, size=(batch, 1))
    nearby = states + rng.normal(scale=0.02, size=states.shape)
    weights = rng.normal(size=(batch, 1))
    candidates, results = {}, {}
    for name, kwargs in variants.items():
        layer = MPCLayer(CartPoleSwingUpOCP(horizon=horizon), **kwargs)  # type: ignore[arg-type]
        first = layer.solve(states, params)
        solution = layer.solve(nearby, params)
        candidates[f"{name}_forward_cold"] = lambda layer=layer: layer.solve(nearby, params)
        candidates[f"{name}_forward_warm"] = lambda layer=layer, z=first.z: layer.solve(nearby, params, z)
        candidates[f"{name}_backward"] = lambda layer=layer, solution=solution: layer.vjp(solution, weights)
        warm = layer.solve(nearby, params, initial_guess=first.z)
        results[f"{name}_failures_cold"] = int((~solution.success).sum())
        results[f"{name}_retried_warm"] = int(warm.retried.sum())
        results[f"{name}_fallback_cold"] = int(solution.fallback.sum())
        results[f"{name}_fallback_warm"] = int(warm.fallback.sum())
        if (solution.iterations >= 0).all() and (warm.iterations >= 0).all():
            results[f"{name}_iterations_cold"] = float(solution.iterations.mean())
            results[f"{name}_iterations_warm"] = float(warm.iterations.mean())
    times = interleaved_ms(candidates, rounds=rounds)
    return {**{f"{k}_ms": v for k, v in times.items()}, **results}


def _settings() -> dict[str, object]:
    shipped = yaml.safe_load(hyperparams_file("sac_zop").read_text())[ENV_ID]
    return {k: v for k, v in shipped.items() if k not in ("n_timesteps", "policy", "policy_kwargs")}


def _shipped_fop_solver() -> str:
    """The MPC solver of the shipped SAC-FOP entry (hyperparams/sac_fop.yml), fatrop when it names none."""
    entry = yaml.safe_load(hyperparams_file("sac_fop").read_text())[ENV_ID]
    return str(dict(entry.get("mpc_kwargs") or {}).get("solver", "fatrop"))


def _models(seed: int = 0) -> dict[str, object]:
    settings = _settings()
    arch = dict(net_arch=[256, 256, 256])
    sac_settings = {k: v for k, v in settings.items() if k != "param_interface"}
    riccati = {**arch, "mpc_kwargs": {"solver": "riccati"}}
    models = {
        "sac": SAC("MlpPolicy", ENV_ID, policy_kwargs=arch, seed=seed, **sac_settings),
        "sac_zop": SACZOP("MlpPolicy", ENV_ID, policy_kwargs=arch, seed=seed, **settings),
        "sac_fop": SACFOP("MlpPolicy", ENV_ID, policy_kwargs=arch, seed=seed, **settings),
        "sac_fop_riccati": SACFOP("MlpPolicy", ENV_ID, policy_kwargs=riccati, seed=seed, **settings),
    }
    for model in models.values():
        model.set_logger(configure(None, [""]))
    return models


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed_sac_mpc"))
    parser.add_argument("--batch", type=int, default=256, help="MPC layer batch")
    parser.add_argument("--horizon", type=int, default=20, help="MPC layer stages (cart-pole)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each MPC-layer measurement")
    parser.add_argument(
        "--step-rounds", type=int, default=10, help="rounds of each gradient-step measurement"
    )
    parser.add_argument("--learn-steps", type=int, default=2000)
    parser.add_argument(
        "--step-threads", type=int, default=1, help="torch threads for the gradient steps and learn"
    )
    parser.add_argument(
        "--no-layer", action="store_true", help="skip the MPC layer variants (steps and learn only)"
    )
    args = parser.parse_args(argv)
    if args.step_threads < 1:
        parser.error(f"--step-threads must be >= 1, got {args.step_threads}")
    th.set_num_threads(1)
    results: dict[str, object] = {
        **run_metadata(),
        "settings": _settings(),
        "step_threads": args.step_threads,
    }

    variants = LAYER_VARIANTS if jit_cache.find_compiler() else {"interpreted": LAYER_VARIANTS["interpreted"]}
    if args.no_layer:
        variants = {}
    elif jit_cache.find_compiler():
        results["compile"] = compile_seconds(args.horizon)
        print("compile (s):", json.dumps(results["compile"]), flush=True)
    layer = layer_timings(args.batch, args.horizon, args.rounds, variants) if variants else {}
    results["layer"] = layer
    per_sample = {k: v / args.batch for k, v in layer.items() if k.endswith("_ms")}
    print(f"MPC layer (cart-pole T={args.horizon}, batch {args.batch}):", json.dumps(layer), flush=True)

    th.set_num_threads(args.step_threads)
    models = _models()
    for model in models.values():
        model.learn(1200)  # fills the buffer, past learning_starts
    batch = int(models["sac_zop"].batch_size)  # type: ignore[attr-defined]
    # Each timed call makes STEPS_PER_CALL gradient steps (one train() call each): SAC-FOP's
    # train/mpc_du0_dphi_norm runs on every SACFOP.du0_dphi_interval-th update, so its cost is in the mean.
    steps = {
        name: ms / STEPS_PER_CALL
        for name, ms in interleaved_ms(
            {
                name: (lambda m=m: [m.train(1, batch) for _ in range(STEPS_PER_CALL)])
                for name, m in models.items()
            },
            args.step_rounds,
        ).items()
    }
    # What one FOP step asks of the MPC layer, configured as the models' layers (compiled, batch mode):
    # forward for the actor and the target batch, one backward.
    fatrop_mpc = models["sac_fop"].policy.mpc  # type: ignore[attr-defined]
    shipped = {"compiled": fatrop_mpc.compiled, "batch_mode": fatrop_mpc.batch_mode}
    fop_variants = {"fatrop": shipped, "riccati": {**shipped, "solver": "riccati"}}
    fop_layer = layer_timings(batch, CartPoleSwingUpOCP().horizon, args.step_rounds, fop_variants)
    fop_layer_ms = 2 * fop_layer["fatrop_forward_cold_ms"] + fop_layer["fatrop_backward_ms"]
    fop_riccati_ms = 2 * fop_layer["riccati_forward_cold_ms"] + fop_layer["riccati_backward_ms"]
    results["gradient_step_ms"] = steps
    results["fop_layer_ms"] = fop_layer_ms
    results["fop_layer_riccati_ms"] = fop_riccati_ms
    results["fop_layer"] = fop_layer
    results["shipped_mpc"] = shipped
    print("gradient steps (ms):", json.dumps(steps), "FOP's MPC work:", fop_layer_ms, flush=True)

    learn: dict[str, float] = {}
    for name in ("sac", "sac_zop"):
        model = models[name]
        start = time.perf_counter()
        model.learn(args.learn_steps, reset_num_timesteps=False)  # type: ignore[attr-defined]
        learn[name] = 1e3 * (time.perf_counter() - start) / (args.learn_steps / 1000)
    results["learn_ms_per_1k"] = learn

    ratios: dict[str, float] = {}
    fop_solver = _shipped_fop_solver()
    for name in variants:
        backward = per_sample[f"{name}_backward_ms"]
        ratios[f"{name}: layer forward+backward per sample, ms, cold (target <= 1.5)"] = (
            per_sample[f"{name}_forward_cold_ms"] + backward
        )
        ratios[f"{name}: layer forward+backward per sample, ms, warm (target <= 0.5)"] = (
            per_sample[f"{name}_forward_warm_ms"] + backward
        )
    if "compiled_map_2threads" in variants:
        ratios["compiled map: 1 thread / 2 threads, cold forward"] = (
            layer["compiled_map_forward_cold_ms"] / layer["compiled_map_2threads_forward_cold_ms"]
        )
    if "riccati_2threads" in variants:
        ratios["riccati: 1 thread / 2 threads, cold forward"] = (
            layer["riccati_forward_cold_ms"] / layer["riccati_2threads_forward_cold_ms"]
        )
    ratios.update(
        {
            "FOP (fatrop) gradient step / its MPC-layer work (target <= 1.3)": steps["sac_fop"]
            / fop_layer_ms,
            "FOP with solver='fatrop' / ZOP gradient step (target <= 3)": steps["sac_fop"] / steps["sac_zop"],
            "FOP with solver='riccati' / ZOP gradient step (target <= 3)": steps["sac_fop_riccati"]
            / steps["sac_zop"],
            f"FOP as shipped (sac_fop.yml: solver={fop_solver!r}) / ZOP gradient step (target <= 3)": steps[
                "sac_fop_riccati" if fop_solver == "riccati" else "sac_fop"
            ]
            / steps["sac_zop"],
            "ZOP / SAC gradient step": steps["sac_zop"] / steps["sac"],
            "ZOP / SAC learn per 1k steps (target <= 1.5)": learn["sac_zop"] / learn["sac"],
        }
    )
    results["ratios"] = ratios
    rows: list[tuple[str, float, int]] = [
        *(
            (f"MPC layer {k[:-3]} (batch {args.batch}, T={args.horizon})", v, 1)
            for k, v in layer.items()
            if k.endswith("_ms")
        ),
        *((f"gradient step {k} (batch {batch})", v, 1) for k, v in steps.items()),
        (f"MPC work of one FOP step (batch {batch}, T=5: 2 forward, 1 backward)", fop_layer_ms, 1),
        (f"the same with solver='riccati' (batch {batch}, T=5)", fop_riccati_ms, 1),
        *((f"learn per 1k steps {k}", v, 0) for k, v in learn.items()),
    ]
    extra = [
        f"{name}: iterations cold {layer[f'{name}_iterations_cold']:.1f}, warm "
        f"{layer[f'{name}_iterations_warm']:.1f}"
        for name in variants
        if f"{name}_iterations_cold" in layer
    ]
    extra += [
        f"{name}: failed cold solves {layer[f'{name}_failures_cold']} of {args.batch}, warm starts retried "
        f"{layer[f'{name}_retried_warm']}, solved by the fallback cold {layer[f'{name}_fallback_cold']} / "
        f"warm {layer[f'{name}_fallback_warm']}"
        for name in variants
    ]
    if "compile" in results:
        c = results["compile"]
        extra.append(
            f"Compiled layer build (T={args.horizon}): {c['compile_s']:.1f} s with an empty cache, "  # type: ignore[index]
            f"{c['cached_build_s']:.1f} s from the cache; interpreted {c['interpreted_build_s']:.2f} s"  # type: ignore[index]
        )
    extra.append(f"Shipped models' MPC layer: {shipped}")
    iterations = extra
    if args.step_threads > 1 and not args.no_layer:
        iterations.append(
            f"Layer variants at 1 torch thread; gradient steps and learn at {args.step_threads} torch threads"
        )
    threads = args.step_threads if args.no_layer else 1
    write_report(
        args.out, "SAC-ZOP/FOP", results, rows, ratios, extra=iterations, env_id=ENV_ID, threads=threads
    )
    print((args.out / "speed.md").read_text())


if __name__ == "__main__":
    main()
