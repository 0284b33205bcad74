"""Do Q-STAC's Stein-MPC plans keep two ways around an obstacle? (issue 12, the sampler check).

Usage::

    python benchmarks/qstac_routes.py --out benchmarks/results/multimodality/qstac_routes

A controlled test of the sampler, not of learning: the Q-STAC policy of a Nav2D level, untrained (its
prior is the network's initial ``N(mu(s), sigma^2)`` with ``mu`` near the zero force, i.e. the plan
"coast straight on"), plans at a state where an obstacle bump lies straight ahead, with its learned
critic replaced by the *exact* one-step reward ``Q(x, u) = r(x, u, f(x, u))`` of the environment's
model (:class:`RewardCritic`). Eq. 11's sum of ``Q`` along the rollout is then the true ``H``-step
return, which passing the bump on either side makes equally good: the target over control sequences
has two modes, left and right of the bump. The prior's samples straddle the bump's centre line; the
question is whether ``L`` constrained SVGD steps split them into the two routes (``"median"``
bandwidth) or move them as one block (``"paper"``'s kernel spans every particle).

For every state, bandwidth, horizon ``H`` and step count ``L`` (``L = 0``: the prior's samples), over
``--sets`` independent sets of ``m`` particles and ``--seeds`` initialisations of the prior network:

* ``left``: share of the plans passing left of the bump (sign of the cross product of the heading with
  the plan's end point relative to the bump's centre);
* ``both``: share of sets with at least two plans on each side (two routes kept);
* ``clear both``: share of sets with at least two plans on each side that stay clear of the bump
  (two distinct routes *around* it);
* ``hit``: share of plans coming within one bump scale ``s`` of the centre (cost above 0.61 A);
* ``ret``: mean ``H``-step return of the plans (the objective the particles climb).

The states (position, velocity towards the bump at 2.5): the Easy level's bump at (0, 0) approached
along the diagonal; the Hard level's two bumps before the wall's opening, (-5, -1) approached from
below and (-1, -5) from the left. The Hard level's wall itself is open only in the top-left corner
(the lower-right end lies outside the box), so "two ways around the wall" does not exist there at the
level of a plan: its two routes per plan are the two sides of the bumps before the opening.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th

from sb3_stein import QSTAC

STATES: dict[str, dict[str, Any]] = {
    "easy_bump": dict(env="Nav2DEasy-v0", bump=(0.0, 0.0), scale=1.5, heading=(1.0, 1.0)),
    "hard_bump_left": dict(env="Nav2DHard-v0", bump=(-5.0, -1.0), scale=1.2, heading=(0.0, 1.0)),
    "hard_bump_low": dict(env="Nav2DHard-v0", bump=(-1.0, -5.0), scale=1.2, heading=(1.0, 0.0)),
}
SPEED, DISTANCE_IN_SCALES = 2.5, 1.5


class RewardCritic:
    """The environment's exact one-step reward as Q-STAC's critic: the duck-typed part of
    :class:`~sb3_stein.common.critics.ParticleCritic` that :meth:`QSTACPolicy.q_score` uses.

    :param model: the level's ``Nav2DDynamics`` (next state and reward).
    :param to_env_units: the policy's ``[-1, 1]`` -> force conversion.
    """

    def __init__(self, model: Any, to_env_units: Any):
        self.model, self.to_env_units = model, to_env_units

    def closed_form_input_grads(self, states: th.Tensor, actions: th.Tensor) -> None:
        return None  # autograd through the reward model

    def min_q_at(self, states: th.Tensor, actions: th.Tensor) -> th.Tensor:
        force = self.to_env_units(actions)
        return self.model.reward(states, force, self.model(states, force))


def plan_paths(policy: Any, obs: th.Tensor, steps: int) -> tuple[th.Tensor, th.Tensor]:
    """Positions ``(B, m, H + 1, 2)`` of every particle's plan and its ``H``-step return ``(B, m)``."""
    model = policy.dynamics
    critic = RewardCritic(model, policy.to_env_units)
    sample = policy.sample(obs, with_log_prob=False, critic=critic, steps=steps)  # type: ignore[arg-type]
    batch, m = sample.actions.shape[:2]
    with th.no_grad():
        controls = th.tanh(sample.pre_tanh).view(batch, m, policy.horizon, -1)
        state = obs.unsqueeze(1).expand(-1, m, -1)
        positions, total = [state[..., :2]], th.zeros(batch, m)
        for h in range(policy.horizon):
            force = policy.to_env_units(controls[:, :, h])
            nxt = model(state, force)
            total += model.reward(state, force, nxt)
            state = nxt
            positions.append(state[..., :2])
    return th.stack(positions, dim=2), total


def route_stats(
    paths: th.Tensor, returns: th.Tensor, bump: th.Tensor, scale: float, heading: th.Tensor
) -> dict[str, float]:
    offset = paths[:, :, -1] - bump  # (B, m, 2)
    cross = heading[0] * offset[..., 1] - heading[1] * offset[..., 0]
    left = (cross > 0).float()
    closest = (paths - bump).norm(dim=-1).min(dim=-1).values  # (B, m)
    clear = (closest >= scale).float()
    n_left, n_right = left.sum(-1), (1.0 - left).sum(-1)
    n_left_clear, n_right_clear = (left * clear).sum(-1), ((1.0 - left) * clear).sum(-1)
    return dict(
        left=float(left.mean()),
        both=float(((n_left >= 2) & (n_right >= 2)).float().mean()),
        both_clear=float(((n_left_clear >= 2) & (n_right_clear >= 2)).float().mean()),
        hit=float(1.0 - clear.mean()),
        ret=float(returns.mean()),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/multimodality/qstac_routes"))
    parser.add_argument("--states", nargs="+", default=list(STATES), choices=list(STATES))
    parser.add_argument("--bandwidths", nargs="+", default=["paper", "median"])
    parser.add_argument("--horizons", nargs="+", type=int, default=[5, 10])
    parser.add_argument("--steps", nargs="+", type=int, default=[0, 3, 10])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--sets", type=int, default=500)
    parser.add_argument("--particles", type=int, default=8, help="m (the Nav2D entries: 8)")
    parser.add_argument("--step-size", type=float, default=0.1, help="eps (the Nav2D entries: 0.1)")
    parser.add_argument("--init-std", type=float, default=0.5, help="prior std (the Nav2D entries: 0.5)")
    parser.add_argument(
        "--alpha", type=float, default=1.0, help="fixed entropy coefficient (auto starts at 1)"
    )
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    rows = []
    for name in args.states:
        spec = STATES[name]
        heading = th.tensor(spec["heading"]) / th.tensor(spec["heading"]).norm()
        bump = th.tensor(spec["bump"])
        position = bump - DISTANCE_IN_SCALES * spec["scale"] * heading
        obs = th.cat([position, SPEED * heading]).float().expand(args.sets, -1)
        env = gym.make(spec["env"])
        for horizon in args.horizons:
            for bandwidth in args.bandwidths:
                for steps in args.steps:
                    if steps == 0 and bandwidth != args.bandwidths[0]:
                        continue  # L = 0 is the prior: no bandwidth
                    per_seed = []
                    for seed in args.seeds:
                        model = QSTAC(
                            "MlpPolicy", env, horizon=horizon, n_particles=args.particles,
                            svgd_steps=max(steps, 1), svgd_step_size=args.step_size,
                            kernel_bandwidth=bandwidth, init_std=args.init_std,
                            ent_coef=args.alpha, seed=seed, device="cpu",
                        )  # fmt: skip
                        th.manual_seed(seed)
                        paths, returns = plan_paths(model.policy, obs, steps)
                        per_seed.append(route_stats(paths, returns, bump, spec["scale"], heading))
                    row = dict(state=name, horizon=horizon, bandwidth=bandwidth, steps=steps)
                    for key in per_seed[0]:
                        values = [s[key] for s in per_seed]
                        row[key] = float(np.mean(values))
                        row[f"{key}_seeds"] = values
                    rows.append(row)
                    print(
                        f"{name:15s} H={horizon:2d} {bandwidth:6s} L={steps:2d}: left {row['left']:.2f} "
                        f"both {row['both']:.2f} clear-both {row['both_clear']:.2f} hit {row['hit']:.2f} "
                        f"ret {row['ret']:7.2f}",
                        flush=True,
                    )
        env.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps(dict(args={k: str(v) for k, v in vars(args).items()}, rows=rows), indent=1)
    )
    lines = [
        "| state | H | bandwidth | L | left | both sides | clear both sides | hit | H-step return |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        bw = "prior" if r["steps"] == 0 else r["bandwidth"]
        lines.append(
            f"| {r['state']} | {r['horizon']} | {bw} | {r['steps']} | {r['left']:.2f} | {r['both']:.2f} | "
            f"{r['both_clear']:.2f} | {r['hit']:.2f} | {r['ret']:.2f} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
