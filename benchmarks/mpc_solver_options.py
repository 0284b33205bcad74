"""fatrop's options and the cold guess against the cart-pole's iteration counts (issue 15).

Usage::

    python benchmarks/mpc_solver_options.py --out benchmarks/results/mpc_solver_options

    # instruction counts of the solves alone (load-independent), one layer setting per run; valgrind
    # must run the interpreter itself, not a wrapper script such as pyenv's shim:
    PY=$(python -c 'import sys; print(sys.executable)')
    valgrind --tool=callgrind --toggle-collect='*FatropInterface::solve*' \\
        $PY benchmarks/mpc_solver_options.py --solve-only --batch 16 --cold-guess rollout

    # SAC-FOP's update solves (shipped T = 5), warm-started: make the warm starts, then profile
    python benchmarks/mpc_solver_options.py --solve-only --horizon 5 --warm-start-file /tmp/warm5.npy
    valgrind --tool=callgrind --toggle-collect='*FatropInterface::solve*' \\
        $PY benchmarks/mpc_solver_options.py --solve-only --horizon 5 --warm-start-file /tmp/warm5.npy

    # casadi's own SQP (sqpmethod with the qrqp active-set QP solver) on the same NLP, against fatrop:
    # iterations, success and first controls, cold and warm (the "another solver?" question)
    python benchmarks/mpc_solver_options.py --sqpmethod --horizon 5

The swing-up OCP at T = 20 (``CartPoleSwingUpOCP(horizon=20)``, the speed targets' problem),
``--batch`` random states and ``theta_ref`` (speed_sac_mpc.py's distribution, seed 0), interpreted
layer solved one by one (per-sample iteration counts; the compiled layer takes the same iterations).
For each setting (``SETTINGS``: fatrop options through ``MPCLayer(solver_options=...)`` and the
``cold_guess``): mean iterations from the cold start, share of first controls equal (1e-5) to the
default's, the largest gradient difference on those, and the iterations warm-started from the
default's solutions shifted by one stage. Iteration counts do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from sb3_stein.envs.cartpole_swingup import CartPoleSwingUpOCP

from sb3_stein.common.mpc import MPCLayer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_s2ac import run_metadata

#: (name, MPCLayer keyword arguments); the first is the reference.
SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("constant cold guess (before)", {"cold_guess": "constant"}),
    ("rollout cold guess (default)", {}),
    ("rollout, mu_init 1e-2", {"solver_options": {"mu_init": 1e-2}}),
    ("rollout, mu_init 1", {"solver_options": {"mu_init": 1.0}}),
    ("rollout, bound_push = bound_frac = 1e-4", {"solver_options": {"bound_push": 1e-4, "bound_frac": 1e-4}}),
    ("rollout, mu_linear_decrease_factor 0.1", {"solver_options": {"mu_linear_decrease_factor": 0.1}}),
    (
        "rollout, mu_superlinear_decrease_power 1.8",
        {"solver_options": {"mu_superlinear_decrease_power": 1.8}},
    ),
    ("rollout, linsol_it_ref off", {"solver_options": {"linsol_it_ref": False}}),
]


def batch(size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    states = rng.uniform([-1.5, -np.pi, -2.0, -4.0], [1.5, np.pi, 2.0, 4.0], size=(size, 4))
    return states, rng.uniform(-2 * np.pi, 2 * np.pi, size=(size, 1))


def compare_sqpmethod(ocp: CartPoleSwingUpOCP, states: np.ndarray, params: np.ndarray) -> None:
    """casadi's ``sqpmethod`` with ``qrqp`` (a generated-code candidate: its whole solver can be compiled)
    against the layer's fatrop, one solve per state, cold (the layer's rollout guess) and warm (the
    solutions of states 0.02 away, as in ``--warm-start-file``). Exact Hessian, eigenvalue clipping for
    the non-convex swing-up (qrqp needs convex QPs), 100 iterations at most, tolerances 1e-8 like the
    layer's."""
    import casadi as ca

    layer = MPCLayer(ocp, compiled=False, batch_mode="loop")
    nearby = states + np.random.default_rng(2).normal(scale=0.02, size=states.shape)
    warm_guess = layer.solve(nearby, params).z
    assert layer._kkt_nlp is not None  # the layer's own NLP symbols: built, unused by looped solves
    z, p, cost, g = layer._kkt_nlp
    qp_quiet = {"print_iter": False, "print_header": False, "error_on_fail": False}
    sqp = ca.nlpsol(
        "sqp",
        "sqpmethod",
        {"x": z, "p": p, "f": cost, "g": g},
        {
            "print_time": False,
            "print_header": False,
            "print_iteration": False,
            "print_status": False,
            "qpsol": "qrqp",
            "qpsol_options": qp_quiet,
            "convexify_strategy": "eigen-clip",
            "max_iter": 100,
            "tol_pr": layer.tol,
            "tol_du": layer.tol,
        },
    )
    u0 = slice(layer.nx, layer.nx + layer.nu)
    for start, guess in (("cold", None), ("warm", warm_guess)):
        fatrop = layer.solve(states, params, initial_guess=guess)
        iterations, success, same = [], [], []
        for i in range(len(states)):
            x0 = layer.cold_start(states[i : i + 1])[0] if guess is None else guess[i]
            nlp_p = np.concatenate([states[i], params[i]])
            out = sqp(x0=x0, p=nlp_p, lbx=layer._lbz, ubx=layer._ubz, lbg=0, ubg=0)
            stats = sqp.stats()
            iterations.append(stats["iter_count"])
            success.append(bool(stats["success"]))
            same.append(bool(np.abs(np.asarray(out["x"]).ravel()[u0] - fatrop.u0[i]).max() < 1e-4))
        print(
            f"{start}: fatrop {fatrop.iterations.mean():.2f} iterations, solved {fatrop.success.mean():.3f}; "
            f"sqpmethod+qrqp {np.mean(iterations):.2f} iterations, solved {np.mean(success):.3f}, "
            f"same u0 as fatrop {np.mean(same):.3f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--solve-only", action="store_true", help="one compiled solve of the batch (profiling)"
    )
    parser.add_argument("--cold-guess", default="rollout", help="with --solve-only")
    parser.add_argument(
        "--horizon", type=int, default=20, help="with --solve-only or --sqpmethod (SAC-FOP's shipped OCP: 5)"
    )
    parser.add_argument(
        "--warm-start-file",
        type=Path,
        help="with --solve-only: if the file does not exist, solve states 0.02 away and save their solutions "
        "there (run this without valgrind); if it does, warm-start from them, as an update warm-starts from "
        "the acting plans",
    )
    parser.add_argument(
        "--fatrop",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="with --solve-only: a fatrop option, e.g. linsol_it_ref=false (repeatable)",
    )
    parser.add_argument(
        "--sqpmethod",
        action="store_true",
        help="casadi's sqpmethod + qrqp against the layer's fatrop on the --horizon OCP (iterations)",
    )
    args = parser.parse_args()
    th.set_num_threads(1)
    ocp = CartPoleSwingUpOCP(horizon=args.horizon if args.solve_only or args.sqpmethod else 20)
    states, params = batch(args.batch)
    if args.sqpmethod:
        compare_sqpmethod(ocp, states, params)
        return
    if args.solve_only:
        options = {key: json.loads(value) for key, value in (o.split("=", 1) for o in args.fatrop)}
        layer = MPCLayer(
            ocp, compiled=True, batch_mode="loop", cold_guess=args.cold_guess, solver_options=options
        )
        guess = None
        if args.warm_start_file is not None and not args.warm_start_file.exists():
            nearby = states + np.random.default_rng(2).normal(scale=0.02, size=states.shape)
            np.save(args.warm_start_file, layer.solve(nearby, params).z)
            print("saved the warm starts to", args.warm_start_file)
            return
        if args.warm_start_file is not None:
            guess = np.load(args.warm_start_file)
        print("mean iterations", layer.solve(states, params, initial_guess=guess).iterations.mean())
        return
    weights = np.random.default_rng(1).normal(size=(args.batch, 1))
    rows, reference, reference_grad = [], None, None
    for name, kwargs in SETTINGS:
        layer = MPCLayer(ocp, compiled=False, batch_mode="loop", **kwargs)
        cold = layer.solve(states, params)
        grad = layer.vjp(cold, weights)[1]
        if reference is None:
            reference, reference_grad = cold, grad
        same = np.abs(cold.u0 - reference.u0)[:, 0] < 1e-5
        warm = layer.solve(states, params, initial_guess=layer.shift(reference.z))
        rows.append(
            {
                "setting": name,
                "kwargs": kwargs,
                "success": float(cold.success.mean()),
                "cold_iterations": float(cold.iterations.mean()),
                "same_u0_as_reference": float(same.mean()),
                "max_grad_difference_same": float(np.abs(grad - reference_grad)[same].max())
                if same.any()
                else None,
                "shifted_warm_iterations": float(warm.iterations.mean()),
            }
        )
        print(rows[-1], flush=True)
    if args.out is None:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps({**run_metadata(), "rows": rows}, indent=1) + "\n")
    lines = [
        f"# fatrop options and cold guesses, cart-pole T = 20, {args.batch} random states",
        "",
        f"Command: `{run_metadata()['command']}`",
        "",
        "| setting | solved | cold iterations | same u0 as the first row | max grad diff there |"
        " shifted warm iterations |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        grad = "–" if r["max_grad_difference_same"] is None else f"{r['max_grad_difference_same']:.1e}"
        lines.append(
            f"| {r['setting']} | {r['success']:.3f} | {r['cold_iterations']:.2f} | "
            f"{r['same_u0_as_reference']:.3f} | "
            f"{grad} | {r['shifted_warm_iterations']:.2f} |"
        )
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
