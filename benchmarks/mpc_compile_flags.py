"""Do higher compiler optimisation levels make the compiled MPC layer faster? (issue 15)

Builds the cart-pole layer (T = 20, ``--solver``) with each set of flags in ``--flags`` (sets separated
by ``;``) in an empty temporary cache (so the compile time is measured too), then times the cold mapped
forward pass and the backward pass of a batch of ``--batch`` states on one thread, interleaved (median
of ``--rounds``)::

    python benchmarks/mpc_compile_flags.py --out benchmarks/results/speed_sac_mpc_compiled --solver fatrop
    python benchmarks/mpc_compile_flags.py --out benchmarks/results/compile_flags_riccati \
        --flags="-O1;-O2;-O2 -fno-semantic-interposition"
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch as th
from sb3_stein.envs.cartpole_swingup import CartPoleSwingUpOCP
from speed_s2ac import interleaved_ms
from speed_sac_mpc import _states

from sb3_stein.common import jit_cache
from sb3_stein.common.mpc import MPCLayer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--flags", default="-O1;-O2;-O3", help="sets of compiler flags, separated by ';'")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--solver", choices=["fatrop", "riccati"], default="riccati")
    args = parser.parse_args()
    flag_sets = [f.strip() for f in args.flags.split(";") if f.strip()]
    th.set_num_threads(1)
    rng = np.random.default_rng(0)
    states = _states(rng, args.batch)
    params = rng.uniform(-np.pi, np.pi, size=(args.batch, 1))
    candidates, build = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        os.environ[jit_cache.CACHE_ENV] = folder
        for flag in flag_sets:
            layer = MPCLayer(
                CartPoleSwingUpOCP(horizon=20),
                compiled=True,
                compile_flags=tuple(flag.split()),
                n_threads=1,
                solver=args.solver,
            )
            build[flag] = layer.build_seconds
            solution = layer.solve(states, params)
            weights = np.ones((args.batch, 1))
            candidates[f"{flag} forward"] = lambda layer=layer: layer.solve(states, params)
            candidates[f"{flag} backward"] = lambda layer=layer, s=solution, w=weights: layer.vjp(s, w)
        per_sample = {k: v / args.batch for k, v in interleaved_ms(candidates, rounds=args.rounds).items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compile_flags.json").write_text(json.dumps({"build_s": build, "ms_per_sample": per_sample}))
    lines = [
        f"# Compiled MPC layer ({args.solver}) by compiler flags (cart-pole T = 20, cold, mapped, 1 thread)",
        "",
        f'Command: `python benchmarks/mpc_compile_flags.py --out {args.out} --flags="{args.flags}" '
        f"--batch {args.batch} --rounds {args.rounds} --solver {args.solver}`",
        "",
        "| flags | forward (ms per sample) | backward (ms per sample) | build with an empty cache (s) |",
        "| --- | --- | --- | --- |",
        *[
            f"| {f} | {per_sample[f'{f} forward']:.3f} | {per_sample[f'{f} backward']:.3f} | {build[f]:.1f} |"
            for f in flag_sets
        ],
    ]
    (args.out / "compile_flags.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
