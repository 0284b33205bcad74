"""Does a trained DMPC actor exploit its discretised OCP? (issue 16 diagnosis)

With Eq. 14's running cost, any plan's cost telescopes (in continuous time) to the value at its start plus a
nonnegative term, ``J(u) = V(x0) + int e^(-rho t) (1/2 |R^(1/2) u + R^(-1/2) g' d_x V|^2 + stabilising) dt``
(``tests/test_dmpc.py`` checks it on LQR problems). So the MPC's optimal cost ``J*`` should never be clearly
below ``V(x0)``; if it is, the optimiser is exploiting the rectangle-rule/RK4 discretisation instead of
following the value. This script rolls a saved DMPC model out from the environment's starts, solves the
actor's OCP (cold) at the visited states with the target network's weights, and reports ``J* - V(x0)``; it
also reports the value's greedy control ``-R^-1 g' d_x V`` there (how often it exceeds the control bounds, and
its cosine with the MPC's first control).

Usage::

    python benchmarks/dmpc_plan_gap.py --model PATH/Ballbot-v0.zip --env Ballbot-v0 --episodes 2 --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th


def visited_states(model: object, env: gym.Env, episodes: int, every: int) -> np.ndarray:
    """``(n, obs_dim)``: every ``every``-th observation of ``episodes`` deterministic episodes."""
    rows = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=episode)
        done, step = False, 0
        while not done:
            if step % every == 0:
                rows.append(np.asarray(obs, np.float64))
            action, _ = model.predict(obs, deterministic=True)  # type: ignore[attr-defined]
            obs, _, terminated, truncated, _ = env.step(action)
            done, step = terminated or truncated, step + 1
    return np.stack(rows)


def greedy_controls(model: object, states: np.ndarray) -> np.ndarray:
    """``(n, nu)``: the value's greedy control ``-R^-1 g' d_x V`` (target network), unclipped: the control
    that zeroes the running cost's mismatch term, i.e. what the plans are pulled towards."""
    import casadi as ca

    policy = model.policy  # type: ignore[attr-defined]
    ocp = policy.mpc.ocp
    obs = th.as_tensor(states, dtype=th.float32, device=policy.device).requires_grad_(True)
    (grad,) = th.autograd.grad(policy.value_target(obs).sum(), obs)
    rows = []
    for state, grad_v in zip(states, grad.double().cpu().numpy(), strict=True):
        _, matrix = ocp.form().parts(ca.DM(state))
        rows.append(-(np.array(ca.DM(matrix)).T @ grad_v) / ocp.control_weight)
    return np.stack(rows)


def plan_gap(model: object, states: np.ndarray) -> dict[str, np.ndarray]:
    """``J*`` and ``V(x0)`` (target network) at ``states``, the solve's success flags and the value's greedy
    controls (:func:`greedy_controls`)."""
    policy = model.policy  # type: ignore[attr-defined]
    solution = policy.mpc.solve(states, policy.actor_params(len(states)))
    with th.no_grad():
        value = policy.value_target(th.as_tensor(states, dtype=th.float32, device=policy.device))
    return {
        "plan_cost": solution.nlp_outputs["f"].reshape(-1),
        "value": value.double().cpu().numpy(),
        "success": solution.success,
        "greedy": greedy_controls(model, states),
        "u0": solution.u0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="a saved DMPC model (.zip)")
    parser.add_argument("--env", default="Ballbot-v0")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--every", type=int, default=5, help="keep every N-th state of an episode")
    parser.add_argument("--out", default=None, help="folder for plan_gap.json/.md (default: print only)")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.every < 1:
        parser.error("--episodes and --every must be >= 1")

    from sb3_stein import DMPC

    th.set_num_threads(1)
    env = gym.make(args.env)
    model = DMPC.load(args.model, env=env)
    states = visited_states(model, env, args.episodes, args.every)
    result = plan_gap(model, states)
    ok = result["success"]
    gap = (result["plan_cost"] - result["value"])[ok]
    relative = gap / np.maximum(np.abs(result["value"][ok]), 1e-9)
    bound = np.maximum(np.abs(model.policy.mpc.ocp.u_low), np.abs(model.policy.mpc.ocp.u_high))
    greedy, u0 = result["greedy"], result["u0"]
    cosine = np.sum(greedy * u0, axis=1) / np.maximum(
        np.linalg.norm(greedy, axis=1) * np.linalg.norm(u0, axis=1), 1e-12
    )
    summary = {
        "model": args.model,
        "states": len(states),
        "solved": int(ok.sum()),
        "value_median": float(np.median(result["value"][ok])),
        "gap_median": float(np.median(gap)),
        "gap_min": float(gap.min()),
        "gap_max": float(gap.max()),
        "relative_gap_median": float(np.median(relative)),
        "relative_gap_min": float(relative.min()),
        "share_below_value": float(np.mean(gap < 0)),
        # Does the value ask for more torque than the bounds allow (the diagnosis in dmpc_ballbot_no_walls)?
        "greedy_over_bound_share": float(np.mean(np.any(np.abs(result["greedy"]) > bound, axis=1))),
        "greedy_max_abs_median": float(np.median(np.abs(result["greedy"]).max(axis=1))),
        "greedy_u0_cosine_median": float(np.median(cosine)),
    }
    lines = [
        f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}"
        for key, value in summary.items()
    ]
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "plan_gap.json").write_text(json.dumps(summary, indent=2) + "\n")
        command = "python benchmarks/dmpc_plan_gap.py " + " ".join(argv or sys.argv[1:])
        (out / "plan_gap.md").write_text(
            f"# J* - V(x0) of a DMPC actor\n\n    {command}\n\n" + "\n".join(f"- {x}" for x in lines) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
