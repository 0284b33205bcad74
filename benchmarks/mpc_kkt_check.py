"""Does the mapped MPC's KKT check give the solver's own success flags? (issue 15)

A mapped casadi call (``MPCLayer(batch_mode="map")``: one call per batch, possibly threaded) returns
no per-sample solver statistics, so each sample's success is decided by a KKT check of its
primal-dual solution (:meth:`sb3_stein.common.mpc.MPCLayer.kkt_residuals`, threshold
``kkt_tol = 10 * tol``). This script solves the same batches with ``batch_mode="loop"`` (the solver's
own ``success``) and ``"map"`` for every shipped SAC-MPC task's OCP, from states visited by random
actions and parameters uniform in the policy's Box, at several ``max_iter`` (so that some solves stop
before converging), and reports how often the two flags agree and the residuals on each side::

    python benchmarks/mpc_kkt_check.py --out benchmarks/results/mpc_kkt_check
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th

import sb3_stein  # noqa: F401  (registers the environments)
from sb3_stein import SACZOP
from sb3_stein.common.mpc import MPCLayer


def visited_states(env_id: str, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray, SACZOP]:
    """``batch`` MPC states from random-action rollouts, parameters uniform in SB3's ``[-1, 1]`` units,
    and the SAC-ZOP model whose policy maps observations to MPC states and scaled to OCP parameters."""
    model = SACZOP("MlpPolicy", env_id, seed=seed, learning_starts=10**9, mpc_kwargs={"compiled": False})
    env = gym.make(env_id)
    env.action_space.seed(seed)
    observations = []
    obs, _ = env.reset(seed=seed)
    while len(observations) < batch:
        observations.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    with th.no_grad():
        states = model.policy.mpc_states(th.as_tensor(np.array(observations), dtype=th.float32))
    box = model.policy.parameter_space
    scaled = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(batch, box.shape[0]))
    return states.double().numpy(), scaled, model


def check(env_id: str, batch: int, max_iters: list[int], seed: int) -> list[dict]:
    states, scaled, model = visited_states(env_id, batch, seed)
    params = model.policy.params_from_scaled(th.as_tensor(scaled, dtype=th.float32)).double().numpy()
    ocp = model.policy.mpc.ocp
    rows = []
    for max_iter in max_iters:
        loop = MPCLayer(ocp, max_iter=max_iter, compiled=False, batch_mode="loop", retry_cold=False)
        mapped = MPCLayer(ocp, max_iter=max_iter, compiled=False, batch_mode="map", retry_cold=False)
        a, b = loop.solve(states, params), mapped.solve(states, params)
        residuals = mapped.kkt_residuals(b).max(axis=1)
        converged = residuals[a.success]
        unconverged = residuals[~a.success]
        rows.append(
            {
                "env": env_id,
                "max_iter": max_iter,
                "batch": batch,
                "solver_success": int(a.success.sum()),
                "kkt_success": int(b.success.sum()),
                "agree": int((a.success == b.success).sum()),
                "max_residual_converged": float(converged.max()) if len(converged) else None,
                "min_residual_unconverged": float(np.nanmin(unconverged)) if len(unconverged) else None,
                "kkt_tol": mapped.kkt_tol,
                "max_abs_u0_difference": float(np.abs(a.u0 - b.u0).max()),
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--envs", nargs="+", default=["CartPoleSwingUp-v0", "PointMassWindMaze-v0"])
    parser.add_argument("--max-iters", nargs="+", type=int, default=[5, 10, 20, 100])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(1)
    rows = [row for env_id in args.envs for row in check(env_id, args.batch, args.max_iters, args.seed)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kkt_check.json").write_text(json.dumps(rows, indent=1))
    lines = [
        "# Mapped MPC: the KKT check against the solver's success flags",
        "",
        f"Command: `python benchmarks/mpc_kkt_check.py --out {args.out} --envs {' '.join(args.envs)} "
        f"--max-iters {' '.join(map(str, args.max_iters))} --batch {args.batch} --seed {args.seed}`",
        "",
        "Residual = the largest of the three KKT residuals of `MPCLayer.kkt_residuals`.",
        "",
        "| env | max_iter | solver success | KKT success | agree | max residual, converged | "
        "min residual, not converged | kkt_tol |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2e}"

    for r in rows:
        lines.append(
            f"| {r['env']} | {r['max_iter']} | {r['solver_success']}/{r['batch']} | "
            f"{r['kkt_success']}/{r['batch']} | {r['agree']}/{r['batch']} | "
            f"{fmt(r['max_residual_converged'])} | {fmt(r['min_residual_unconverged'])} | "
            f"{r['kkt_tol']:.0e} |"
        )
    (args.out / "kkt_check.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
