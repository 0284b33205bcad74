"""Does ``MPCLayer(control_barrier=mu)`` keep SAC-FOP's gradient through the MPC alive? (issue 15, item 5)

On the cart-pole swing-up most first controls of leap-c's OCP sit at the +-80 N bound, where the hard
bound is active and ``d u0* / d phi`` is exactly zero (benchmarks/results/sac_mpc_diagnostics: about
three quarters of SAC-FOP's actor batch). A logarithmic barrier on the control box (the layer's
``control_barrier`` option) keeps the controls strictly inside, so the sensitivity is nonzero
everywhere. This script measures, for each barrier weight, on the same states and parameters:

* the share of samples whose ``||d a / d phi||`` (SB3's ``[-1, 1]`` units, as SAC-FOP's logs) is below
  ``1e-3`` ("dead": no usable actor gradient through the MPC) and the norm's median and mean;
* how far the barrier moves the first control from the hard-bound solution (``|Delta u0|`` in N,
  overall and on the samples the hard bound saturates), and its share within 1 N of the bound;
* solver failures and mean iterations (interpreted layer, one-by-one solves: per-sample statistics).

States: ``--episodes`` episodes of ``CartPoleSwingUp-v0`` acted by the hard-bound MPC with a uniformly
random ``theta_ref`` per step (the SAC-FOP warm-up's behaviour), ``--samples`` of them drawn with fresh
random parameters. OCP: the shipped one (``CartPoleSwingUpOCP.from_env``: leap-c's N = 5)::

    python benchmarks/mpc_control_barrier.py --out benchmarks/results/mpc_control_barrier
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from sb3_stein.envs.cartpole_swingup import CartPoleSwingUpOCP

import sb3_stein  # noqa: F401  (registers the environments)
from sb3_stein.common.mpc import MPCLayer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_s2ac import run_metadata

DEAD = 1e-3


def visited_states(layer: MPCLayer, episodes: int, seed: int) -> np.ndarray:
    """States of ``episodes`` episodes acted by ``layer`` with a random ``theta_ref`` per step."""
    env = gym.make("CartPoleSwingUp-v0")
    rng = np.random.default_rng(seed)
    low, high = layer.parameter_space.low, layer.parameter_space.high
    states = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done = False
        while not done:
            state = layer.ocp.state_from_obs_numpy(np.asarray(obs, np.float64)[None])
            states.append(state[0])
            u0 = layer.solve(state, rng.uniform(low, high)[None]).u0
            obs, _, terminated, truncated, _ = env.step(u0[0].astype(np.float32))
            done = terminated or truncated
    return np.asarray(states)


def measure(mu: float, states: np.ndarray, params: np.ndarray, hard_u0: np.ndarray) -> dict[str, Any]:
    """One barrier weight on the given batch (see the module docstring)."""
    ocp = CartPoleSwingUpOCP.from_env(gym.make("CartPoleSwingUp-v0"))
    layer = MPCLayer(ocp, control_barrier=mu, compiled=False, batch_mode="loop")
    solution = layer.solve(states, params)
    ok = solution.success
    jacobian = layer.params_jacobian(solution)[:, 0, 0]  # (batch,) OCP units: N per rad
    scaled = np.abs(jacobian) * (0.5 * (ocp.param_high - ocp.param_low)[0]) / ocp.force_max
    u0 = solution.u0[:, 0]
    row: dict[str, Any] = {
        "control_barrier": mu,
        "samples": len(states),
        "failures": int((~ok).sum()),
        "mean_iterations": float(solution.iterations[ok].mean()),
        "dead_share": float((scaled[ok] < DEAD).mean()),
        "norm_median": float(np.median(scaled[ok])),
        "norm_mean": float(scaled[ok].mean()),
        "within_1N_of_bound": float((ocp.force_max - np.abs(u0[ok]) < 1.0).mean()),
    }
    saturated = ocp.force_max - np.abs(hard_u0) < 1e-3
    both = ok & saturated
    row["mean_abs_du0"] = float(np.abs(u0 - hard_u0)[ok].mean())
    row["mean_abs_du0_saturated"] = float(np.abs(u0 - hard_u0)[both].mean()) if both.any() else 0.0
    row["norm_median_saturated"] = float(np.median(scaled[both])) if both.any() else 0.0
    row["hard_saturated_share"] = float(saturated.mean())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--barriers", nargs="+", type=float, default=[0.0, 0.01, 0.1, 1.0, 10.0])
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(1)
    ocp = CartPoleSwingUpOCP.from_env(gym.make("CartPoleSwingUp-v0"))
    hard = MPCLayer(ocp, compiled=False, batch_mode="loop")
    pool = visited_states(hard, args.episodes, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    states = pool[rng.choice(len(pool), size=min(args.samples, len(pool)), replace=False)]
    params = rng.uniform(hard.parameter_space.low, hard.parameter_space.high, size=(len(states), hard.n_phi))
    hard_u0 = hard.solve(states, params).u0[:, 0]
    rows = []
    for mu in sorted(args.barriers):
        rows.append(measure(mu, states, params, hard_u0))
        print(rows[-1], flush=True)
    results = {**run_metadata(), "visited_states": len(pool), "dead_threshold": DEAD, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        "# Control barrier on the cart-pole OCP: saturation and the gradient through the MPC",
        "",
        f"Command: `{results['command']}`; {len(states)} states from {len(pool)} visited ones, random",
        '`theta_ref`; norms of `d a / d phi` in SB3\'s `[-1, 1]` units; "dead": below 1e-3;',
        "`|du0|`: first control's change from the hard-bound (mu = 0) solution, N.",
        "",
        "| mu | failures | iterations | dead share | norm median | norm mean | within 1 N of the bound |"
        " mean abs du0 | mean abs du0, saturated by the hard bound | norm median there |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['control_barrier']:g} | {r['failures']} | {r['mean_iterations']:.1f} | "
            f"{r['dead_share']:.3f} | "
            f"{r['norm_median']:.3g} | {r['norm_mean']:.3g} | {r['within_1N_of_bound']:.3f} | "
            f"{r['mean_abs_du0']:.3g} | {r['mean_abs_du0_saturated']:.3g} | "
            f"{r['norm_median_saturated']:.3g} |"
        )
    lines += [
        "",
        f"Hard bound: {rows[0]['hard_saturated_share']:.3f} of the first controls saturated.",
    ]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
