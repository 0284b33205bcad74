"""Which local solution ``MPCLayer(solver="riccati")`` finds, against fatrop's (issue 15).

Usage::

    python benchmarks/riccati_vs_fatrop.py --out benchmarks/results/riccati_vs_fatrop

The swing-up OCP at T = 20 (the speed targets' problem), ``--batch`` states and ``theta_ref`` drawn as in
speed_sac_mpc.py (seed 0), cold starts, and warm starts from each layer's own solutions at states 0.02
away. For each start: the share of first controls equal to fatrop's (``--atol``), of the other solutions
how many have a lower and how many a higher cost than fatrop's, the largest difference of the
vector-Jacobian products where the first controls agree, the mean iterations (fatrop's from a loop of
single solves, which reports them), failures and riccati's fallbacks to fatrop. Iteration counts and
solutions do not depend on the machine's load, so this runs beside other work.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sb3_stein.envs.cartpole_swingup import CartPoleSwingUpOCP
from speed_s2ac import write_measurements
from speed_sac_mpc import _states

from sb3_stein.common.mpc import MPCLayer, MPCSolution


def compare(batch: int, horizon: int, atol: float) -> dict[str, float]:
    """The agreement numbers of one run (see the module docstring)."""
    rng = np.random.default_rng(0)
    states = _states(rng, batch)
    params = rng.uniform(-np.pi, np.pi, size=(batch, 1))
    nearby = states + rng.normal(scale=0.02, size=states.shape)
    weights = np.random.default_rng(1).normal(size=(batch, 1))
    fatrop = MPCLayer(CartPoleSwingUpOCP(horizon=horizon), compiled=True, batch_mode="loop")
    riccati = MPCLayer(CartPoleSwingUpOCP(horizon=horizon), compiled=True, solver="riccati", batch_mode="map")
    out: dict[str, float] = {}
    cold_f, cold_r = fatrop.solve(nearby, params), riccati.solve(nearby, params)
    warm_f = fatrop.solve(nearby, params, initial_guess=fatrop.solve(states, params).z)
    warm_r = riccati.solve(nearby, params, initial_guess=riccati.solve(states, params).z)
    for start, (a, b) in {"cold": (cold_f, cold_r), "warm": (warm_f, warm_r)}.items():
        out.update({f"{start}_{k}": v for k, v in _agreement(fatrop, riccati, a, b, weights, atol).items()})
    return out


def _agreement(
    fatrop: MPCLayer, riccati: MPCLayer, a: MPCSolution, b: MPCSolution, weights: np.ndarray, atol: float
) -> dict[str, float]:
    both = a.success & b.success
    same = both & (np.abs(a.u0 - b.u0).max(axis=1) <= atol)
    cost_a, cost_b = a.nlp_outputs["f"][:, 0], b.nlp_outputs["f"][:, 0]
    other = both & ~same
    grad_diff = 0.0
    if same.any():
        grads_a, grads_b = fatrop.vjp(a, weights), riccati.vjp(b, weights)
        grad_diff = max(float(np.abs(ga[same] - gb[same]).max()) for ga, gb in zip(grads_a, grads_b))
    return {
        "samples": float(len(a.u0)),
        "same_u0_share": float(same.mean()),
        "other_lower_cost": float((other & (cost_b < cost_a)).sum()),
        "other_higher_cost": float((other & (cost_b >= cost_a)).sum()),
        "max_vjp_diff_where_same": grad_diff,
        "fatrop_iterations": float(a.iterations.mean()),
        "riccati_iterations": float(b.iterations.mean()),
        "fatrop_failures": float((~a.success).sum()),
        "riccati_failures": float((~b.success).sum()),
        "riccati_fallbacks": float(b.fallback.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--horizon", type=int, default=20)
    parser.add_argument("--atol", type=float, default=1e-5, help="first controls closer than this agree")
    args = parser.parse_args()
    results = compare(args.batch, args.horizon, args.atol)
    lines = write_measurements(
        args.out,
        "agreement",
        "riccati against fatrop: which local solution (cart-pole swing-up)",
        f"python benchmarks/riccati_vs_fatrop.py --out {args.out} --batch {args.batch} "
        f"--horizon {args.horizon} --atol {args.atol}",
        results,
        ".4g",
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
