"""Speed of the chain's MPC layer (Chain-v0's OCP): interpreted inline NLP vs compiled per-stage functions
(fatrop, and the batched Riccati interior point method ``solver="riccati"``).

Issue 15's target: the chain >= 10x faster than the interpreted layer. Solves a batch of states near a
reset state (``--batch``, default parameters), forward and backward, per sample, interleaved (median of
``--rounds``), one torch thread::

    python benchmarks/speed_chain_mpc.py --out benchmarks/results/speed_chain_mpc

    # where a compiled solve's instructions go (load-independent; valgrind must run the interpreter
    # itself, not a wrapper script such as pyenv's shim):
    PY=$(python -c 'import sys; print(sys.executable)')
    valgrind --tool=callgrind --toggle-collect='*FatropInterface::solve*' \\
        $PY benchmarks/speed_chain_mpc.py --solve-only --batch 4

    # casadi instruction counts of one stage's Hessian: as the layer's NLP gets it (forward-over-adjoint
    # through the dynamics function, nx + nu directions) against an explicit SX Hessian
    python benchmarks/speed_chain_mpc.py --hessian-sizes
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch as th
from sb3_stein.envs.chain import ChainOCP
from speed_s2ac import interleaved_ms, write_measurements

from sb3_stein import SACZOP
from sb3_stein.common.mpc import MPCLayer

VARIANTS: dict[str, dict[str, object]] = {
    "interpreted_inline_loop": {"compiled": False, "stage_functions": False, "batch_mode": "loop"},
    "compiled_stages_map": {"compiled": True, "stage_functions": True, "batch_mode": "map", "n_threads": 1},
    # the batched Riccati interior point method (sb3_stein/common/riccati_ipm.py)
    "riccati_stages_map": {
        "compiled": True,
        "stage_functions": True,
        "batch_mode": "map",
        "n_threads": 1,
        "solver": "riccati",
    },
}


def hessian_sizes() -> dict[str, int]:
    """casadi instructions of one stage's dynamics, its adjoint, the adjoint's forward mode in ``nx + nu``
    directions (what the per-stage NLP's Hessian evaluates per stage) and an explicit SX Hessian of
    ``lam' f(x, u)`` (lower triangle)."""
    import casadi as ca

    ocp = ChainOCP()
    x, u = ca.SX.sym("x", ocp.state_dim), ca.SX.sym("u", ocp.control_dim)
    lam = ca.SX.sym("lam", ocp.state_dim)
    dynamics = ca.Function("dynamics", [x, u], [ocp.dynamics(x, u)])
    adjoint = dynamics.reverse(1)
    hessian = ca.hessian(ca.dot(lam, ocp.dynamics(x, u)), ca.vertcat(x, u))[0]
    return {
        "dynamics": dynamics.n_instructions(),
        "adjoint": adjoint.n_instructions(),
        f"forward_over_adjoint_{ocp.state_dim + ocp.control_dim}_directions": adjoint.forward(
            ocp.state_dim + ocp.control_dim
        ).n_instructions(),
        "explicit_sx_hessian_lower": ca.Function("hessian", [x, u, lam], [ca.tril(hessian)]).n_instructions(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--solve-only",
        action="store_true",
        help="solve the batch once with the compiled per-stage layer, one sample at a time (profiling)",
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--hessian-sizes", action="store_true", help="print casadi instruction counts of a stage's Hessian"
    )
    args = parser.parse_args()
    if args.hessian_sizes:
        print(json.dumps(hessian_sizes(), indent=1))
        return
    th.set_num_threads(1)
    model = SACZOP("MlpPolicy", "Chain-v0", seed=0, learning_starts=10**9, mpc_kwargs={"compiled": False})
    obs = model.env.reset()
    start = model.policy.mpc_states(th.as_tensor(obs, dtype=th.float32)).double().numpy()
    states = np.repeat(start, args.batch, 0)
    states = states + np.random.default_rng(0).normal(scale=0.01, size=states.shape)
    if args.solve_only:
        layer = MPCLayer(ChainOCP(), **{**VARIANTS["compiled_stages_map"], "batch_mode": "loop"})  # type: ignore[arg-type]
        solution = layer.solve(states, np.tile(layer.default_params(), (args.batch, 1)))
        print("iterations", solution.iterations, "success", solution.success)
        return
    if args.out is None:
        parser.error("--out is required (unless --solve-only)")
    candidates, results = {}, {}
    for name, kwargs in VARIANTS.items():
        begin = time.perf_counter()
        layer = MPCLayer(ChainOCP(), **kwargs)  # type: ignore[arg-type]
        results[f"{name}_build_s"] = time.perf_counter() - begin
        params = np.tile(layer.default_params(), (args.batch, 1))
        solution = layer.solve(states, params)
        results[f"{name}_success"] = int(solution.success.sum())
        results[f"{name}_fallback"] = int(solution.fallback.sum())
        weights = np.ones((args.batch, layer.nu))
        candidates[f"{name}_forward"] = lambda layer=layer, params=params: layer.solve(states, params)
        candidates[f"{name}_backward"] = lambda layer=layer, s=solution, w=weights: layer.vjp(s, w)
    per_sample = {k: v / args.batch for k, v in interleaved_ms(candidates, rounds=args.rounds).items()}
    total = {n: per_sample[f"{n}_forward"] + per_sample[f"{n}_backward"] for n in VARIANTS}
    results.update({f"{k}_ms_per_sample": v for k, v in per_sample.items()})
    results["speedup_forward_backward"] = total["interpreted_inline_loop"] / total["compiled_stages_map"]
    results["speedup_forward_backward_riccati"] = (
        total["interpreted_inline_loop"] / total["riccati_stages_map"]
    )
    lines = write_measurements(
        args.out,
        "speed",
        "Chain-v0 MPC layer: interpreted inline vs compiled per-stage functions (fatrop, riccati)",
        f"python benchmarks/speed_chain_mpc.py --out {args.out} --batch {args.batch} --rounds {args.rounds}",
        results,
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
