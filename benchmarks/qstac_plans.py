"""Picture of a trained Q-STAC agent on a navigation task with its planned particle trajectories.

Usage (a model trained by rl_zoo3 or benchmarks/compare.py)::

    python benchmarks/qstac_plans.py --model logs/qstac/Nav2DHard-v0_1/Nav2DHard-v0.zip \\
        --env Nav2DHard-v0 --out benchmarks/results/qstac_plans

At every step of one episode the policy's Stein MPC runs as when acting (``m`` control sequences
from the prior, ``L`` constrained SVGD steps); each particle's sequence is rolled out through the
dynamics model and drawn over the obstacle field (thin lines, the executed particle in red), with
the path so far in blue. Writes ``<env>_plans.gif`` (one frame per step) and ``<env>_plans.png``
(the whole path with the plans of every ``--png-every``-th step).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th
from PIL import Image

from sb3_stein import QSTAC


def planned_paths(model: QSTAC, obs: np.ndarray, deterministic: bool) -> tuple[np.ndarray, np.ndarray]:
    """Particle rollouts ``(m, H + 1, 2)`` (positions) for one observation, and the executed action."""
    policy = model.policy
    obs_t = th.as_tensor(obs, dtype=th.float32, device=policy.device).unsqueeze(0)
    critic = policy.critic_at(obs_t, cache_weights=True)
    sample = policy.sample(obs_t, with_log_prob=False, fixed_noise=deterministic, critic=critic)
    act_dim = sample.actions.shape[-1]
    with th.no_grad():
        controls = th.tanh(sample.pre_tanh).view(1, -1, policy.horizon, act_dim)
        states = policy.rollout(obs_t, controls)  # x_0 .. x_{H-1}
        last = policy.dynamics(states[:, :, -1], policy.to_env_units(controls[:, :, -1]))
        paths = th.cat([states, last.unsqueeze(2)], dim=2)[0, :, :, :2].cpu().numpy()
        chosen = policy.select(critic, sample.actions, deterministic)
    action = policy.unscale_action(chosen.cpu().numpy())[0]
    index = int(th.argmin((sample.actions[0] - chosen).abs().sum(-1)))
    return np.roll(paths, -index, axis=0), action  # the executed particle first


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="a saved QSTAC .zip")
    parser.add_argument("--env", default="Nav2DHard-v0")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/qstac_plans"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stochastic", action="store_true", help="random particle instead of highest Q")
    parser.add_argument("--png-every", type=int, default=10)
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    env = gym.make(args.env, render_mode="rgb_array")
    model = QSTAC.load(args.model, env=env, device="cpu")
    inner = env.unwrapped
    obs, _ = env.reset(seed=args.seed)
    path, frames, kept = [obs[:2].copy()], [], []
    done, step, total = False, 0, 0.0
    while not done:
        plans, action = planned_paths(model, obs, deterministic=not args.stochastic)
        colors = [(220, 30, 30)] + [(240, 150, 60)] * (len(plans) - 1)
        widths = [0.08] + [0.04] * (len(plans) - 1)
        traj = np.array(path)
        frames.append(
            inner.render_trajectories(
                [*plans[::-1], traj], [*colors[::-1], (30, 80, 220)], traj[-1], [*widths[::-1], 0.07]
            )
        )
        if step % args.png_every == 0:
            kept.append(plans)
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        path.append(obs[:2].copy())
        done, step = terminated or truncated, step + 1
    traj = np.array(path)
    drawn = [p for plans in kept for p in plans[::-1]]
    colors = [c for plans in kept for c in [(240, 150, 60)] * (len(plans) - 1) + [(220, 30, 30)]]
    picture = inner.render_trajectories([*drawn, traj], [*colors, (30, 80, 220)], traj[-1])
    args.out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(args.out / f"{args.env}_plans.png")
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(
        args.out / f"{args.env}_plans.gif", save_all=True, append_images=images[1:], duration=80, loop=0
    )
    success = bool(info.get("is_success"))
    print(f"{args.env}: {step} steps, return {total:.1f}, success {success}; wrote {args.out}")


if __name__ == "__main__":
    main()
