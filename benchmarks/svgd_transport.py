"""How far the Stein sampler moves particles towards a multimodal target, and why (issue 12, item 1).

Usage::

    python benchmarks/svgd_transport.py --out benchmarks/results/multimodality/core

No training, no environment: the SVGD core of :mod:`sb3_stein.common.svgd` in S²AC's scaling
(``score = grad Q``, repulsion weight ``alpha``: the flow ``h = alpha * phi`` of the target
``exp(Q / alpha)``), on Gaussian-mixture energies ``Q = log sum_k w_k N(a; mu_k, s_k^2)`` whose tempered
targets ``exp(Q / alpha)`` are known on a grid (1-D and 2-D). Two experiments:

``fixed``
    From a fixed initial Gaussian (the paper's ``N(0, 0.5 I)`` and the target's moment-matched
    Gaussian), ``L`` SVGD steps of size ``eps`` for each bandwidth rule, floor and particle count:
    how much of the particles' mass ends near a mode, how the mass splits between the modes against
    the target's weights (total variation), how many particle sets reach every mode, and the
    closed-form entropy against a k-NN estimate of the pooled particles and against the target's.
``learned``
    The initial Gaussian ``q0 = N(mu, diag sigma^2)`` learned as S²AC learns it, by the actor loss
    ``E[-Q(a^L) / alpha + log q^L(a^L)]`` (Eq. 9 divided by alpha: the reverse KL to the target up to a
    constant) back-propagated through the unrolled steps, with Adam; then the same measurements.
    This asks whether the actor loss keeps ``q0`` wide enough for the steps to split it, or pulls it
    onto one mode. ``L = 0`` is SAC's Gaussian (without tanh).

Everything here is in the sampler's own (pre-tanh) coordinates; the tanh map is looked at in the
one-step tasks (``benchmarks/multimodal_bandit.py``). One torch thread; a few minutes on one core.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch as th

from sb3_stein.common.distributions import diag_normal_log_prob
from sb3_stein.common.svgd import svgd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bandwidth_entropy import knn_entropy


# ----------------------------------------------------------------------------------- targets
@dataclass
class Mixture:
    """``Q(a) = log sum_k w_k N(a; mu_k, s_k^2 I)``; the sampler's target is ``exp(Q / alpha)``."""

    name: str
    means: np.ndarray  # (K, d)
    stds: np.ndarray  # (K,)
    weights: np.ndarray  # (K,)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def q_value(self, a: th.Tensor) -> th.Tensor:
        """``Q(a)`` for ``a`` of shape ``(..., d)``."""
        means = th.as_tensor(self.means, dtype=a.dtype)
        stds = th.as_tensor(self.stds, dtype=a.dtype)
        log_w = th.as_tensor(np.log(self.weights), dtype=a.dtype)
        sq = (a.unsqueeze(-2) - means).pow(2).sum(-1)  # (..., K)
        log_comp = -sq / (2 * stds**2) - self.dim * (th.log(stds) + 0.5 * math.log(2 * math.pi))
        return th.logsumexp(log_w + log_comp, -1)

    def q_grad(self, a: th.Tensor) -> th.Tensor:
        with th.enable_grad():
            leaf = a if a.requires_grad else a.detach().requires_grad_(True)
            (grad,) = th.autograd.grad(self.q_value(leaf).sum(), leaf, create_graph=a.requires_grad)
        return grad

    def grid(self, alpha: float, n: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Grid points ``(N, d)``, the target's probabilities on them and the cell volume."""
        lo = self.means.min(0) - 4 * self.stds.max() - 1.0
        hi = self.means.max(0) + 4 * self.stds.max() + 1.0
        axes = [np.linspace(lo[i], hi[i], n) for i in range(self.dim)]
        points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, self.dim)
        cell = float(np.prod([ax[1] - ax[0] for ax in axes]))
        with th.no_grad():
            log_p = self.q_value(th.as_tensor(points, dtype=th.float64)).numpy() / alpha
        p = np.exp(log_p - log_p.max())
        return points, p / p.sum(), cell

    def truth(self, alpha: float) -> dict:
        """Entropy, weights of the modes' Voronoi cells and mass near a mode, of ``exp(Q / alpha)``."""
        points, p, cell = self.grid(alpha, 4001 if self.dim == 1 else 401)
        density = p / cell
        entropy = float(-(p * np.log(np.maximum(density, 1e-300))).sum())
        nearest, near = self.assign(points, alpha)
        weights = np.array([p[nearest == k].sum() for k in range(len(self.weights))])
        return dict(entropy=entropy, weights=weights, near=float(p[near].sum()))

    def near_radius(self, alpha: float) -> np.ndarray:
        """Two tempered component stds (``s_k sqrt(alpha)``) around each mode: 'near the mode'."""
        return 2.0 * self.stds * math.sqrt(alpha)

    def assign(self, x: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """Nearest mode of each point ``(N,)`` and whether it lies within :meth:`near_radius`."""
        dist = np.linalg.norm(x[:, None, :] - self.means[None], axis=-1)  # (N, K)
        nearest = dist.argmin(1)
        near = dist[np.arange(len(x)), nearest] < self.near_radius(alpha)[nearest]
        return nearest, near


TARGETS = {
    # The case: two equal, well separated optima (pre-tanh +-1 is tanh +-0.76).
    "two_equal_1d": Mixture(
        "two_equal_1d", np.array([[-1.0], [1.0]]), np.array([0.3, 0.3]), np.array([0.5, 0.5])
    ),
    "two_unequal_1d": Mixture(
        "two_unequal_1d", np.array([[-1.0], [1.0]]), np.array([0.3, 0.3]), np.array([0.7, 0.3])
    ),
    "three_1d": Mixture(
        "three_1d", np.array([[-1.5], [0.0], [1.5]]), np.array([0.3, 0.3, 0.3]), np.array([0.5, 0.3, 0.2])
    ),
    "two_equal_2d": Mixture(
        "two_equal_2d", np.array([[-1.0, 0.0], [1.0, 0.0]]), np.array([0.3, 0.3]), np.array([0.5, 0.5])
    ),
    "three_2d": Mixture(
        "three_2d",
        np.array([[1.2, 0.0], [-0.6, 1.04], [-0.6, -1.04]]),
        np.array([0.3, 0.3, 0.3]),
        np.array([1 / 3, 1 / 3, 1 / 3]),
    ),
}


# ------------------------------------------------------------------------------ measurement
def measure(target: Mixture, alpha: float, x: th.Tensor, log_q: th.Tensor | None, truth: dict) -> dict:
    """Mode coverage and entropy of final particles ``x`` ``(sets, m, d)``."""
    pooled = x.detach().reshape(-1, target.dim).numpy()
    nearest, near = target.assign(pooled, alpha)
    k = len(target.weights)
    weights = np.bincount(nearest, minlength=k) / len(nearest)
    per_set = near.reshape(x.shape[0], x.shape[1])
    per_set_mode = nearest.reshape(x.shape[0], x.shape[1])
    covers = np.mean(
        [all(((per_set_mode[s] == j) & per_set[s]).any() for j in range(k)) for s in range(x.shape[0])]
    )
    row = dict(
        near=float(near.mean()),
        near_target=truth["near"],
        weights=weights.round(3).tolist(),
        weights_target=truth["weights"].round(3).tolist(),
        weight_tv=float(0.5 * np.abs(weights - truth["weights"]).sum()),
        sets_covering_all=float(covers),
        knn_entropy=knn_entropy(pooled),
        target_entropy=truth["entropy"],
    )
    if log_q is not None:
        row["closed_form_entropy"] = float(-log_q.detach().mean())
    return row


def run_flow(
    target: Mixture,
    alpha: float,
    mean: th.Tensor,
    log_std: th.Tensor,
    sets: int,
    m: int,
    eps: float,
    steps: int,
    bandwidth,
    max_expansion: float | None,
    gen: th.Generator,
):
    z = th.randn(sets, m, target.dim, generator=gen, dtype=th.float64)
    x0 = mean + log_std.exp() * z
    return svgd(
        x0,
        target.q_grad,
        steps=steps,
        step_size=eps,
        bandwidth=bandwidth,
        repulsion_weight=alpha,
        log_q0=diag_normal_log_prob(z, log_std, None),
        max_expansion=max_expansion,
    )


def fixed_experiment(args) -> list[dict]:
    rows = []
    grid = itertools.product(
        args.fixed_targets,
        args.alphas,
        ("paper", "median"),
        (0.25, None),
        args.particles,
        args.schedules,
        ("paper", "matched"),
    )
    for name, alpha, bandwidth, expansion, m, (eps, steps), init in grid:
        target = TARGETS[name]
        truth = target.truth(alpha)
        if init == "paper":
            mean, std = np.zeros(target.dim), np.full(target.dim, math.sqrt(0.5))
        else:  # moment-matched Gaussian of the tempered target (from its grid)
            points, p, _ = target.grid(alpha, 4001 if target.dim == 1 else 401)
            mean = (p[:, None] * points).sum(0)
            std = np.sqrt((p[:, None] * (points - mean) ** 2).sum(0))
        gen = th.Generator().manual_seed(args.seed)
        start = time.perf_counter()
        result = run_flow(
            target,
            alpha,
            th.as_tensor(mean),
            th.as_tensor(np.log(std)),
            args.sets,
            m,
            eps,
            steps,
            bandwidth,
            expansion,
            gen,
        )
        row = dict(
            experiment="fixed",
            target=name,
            alpha=alpha,
            bandwidth=bandwidth,
            max_expansion=expansion,
            m=m,
            eps=eps,
            steps=steps,
            init=init,
            init_std=std.round(3).tolist(),
            floored=result.floored,
            sigma2=float(result.bandwidth.median()),
            seconds=time.perf_counter() - start,
        )
        row.update(measure(target, alpha, result.particles, result.log_prob, truth))
        rows.append(row)
        print(summary_line(row), flush=True)
    return rows


def learned_experiment(args) -> list[dict]:
    rows = []
    grid = itertools.product(
        args.learned_targets, args.alphas, ("paper", "median"), [*args.schedules, (0.1, 0)]
    )
    for name, alpha, bandwidth, (eps, steps) in grid:
        if steps == 0 and bandwidth == "median":
            continue  # L = 0 has no kernel
        target = TARGETS[name]
        truth = target.truth(alpha)
        gen = th.Generator().manual_seed(args.seed)
        # Off-centre start so that a symmetric target does not hold q0 at the saddle by symmetry.
        mean = th.full((target.dim,), 0.2, dtype=th.float64, requires_grad=True)
        log_std = th.full((target.dim,), math.log(math.sqrt(0.5)), dtype=th.float64, requires_grad=True)
        optim = th.optim.Adam([mean, log_std], lr=args.lr)
        start = time.perf_counter()
        for _ in range(args.iterations):
            result = run_flow(target, alpha, mean, log_std, args.batch, 10, eps, steps, bandwidth, 0.25, gen)
            x = result.particles
            loss = (-target.q_value(x) / alpha + result.log_prob).mean()
            optim.zero_grad()
            loss.backward()
            optim.step()
        with th.no_grad():
            result = run_flow(target, alpha, mean, log_std, args.sets, 10, eps, steps, bandwidth, 0.25, gen)
        kl = float((result.log_prob - target.q_value(result.particles) / alpha).mean())
        row = dict(
            experiment="learned",
            target=name,
            alpha=alpha,
            bandwidth=bandwidth,
            m=10,
            eps=eps,
            steps=steps,
            init_mean=mean.detach().numpy().round(3).tolist(),
            init_std=log_std.exp().detach().numpy().round(3).tolist(),
            floored=result.floored,
            sigma2=float(result.bandwidth.median()),
            final_loss=kl,
            seconds=time.perf_counter() - start,
        )
        row.update(measure(target, alpha, result.particles, result.log_prob, truth))
        rows.append(row)
        print(summary_line(row), flush=True)
    return rows


def summary_line(r: dict) -> str:
    cf = r.get("closed_form_entropy", float("nan"))
    return (
        f"{r['experiment']:7s} {r['target']:14s} a={r['alpha']:<5g} {r['bandwidth']:6s} "
        f"floor={r.get('max_expansion', 0.25)!s:5s} m={r['m']:<3d} eps={r['eps']:<5g} L={r['steps']:<3d} "
        f"{r.get('init', 'learn'):7s} q0std={r['init_std']} near={r['near']:.2f}/{r['near_target']:.2f} "
        f"w={r['weights']} tv={r['weight_tv']:.2f} cover={r['sets_covering_all']:.2f} "
        f"H cf/knn/target={cf:.2f}/{r['knn_entropy']:.2f}/{r['target_entropy']:.2f} "
        f"floored={r['floored']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--experiments", nargs="+", default=["fixed", "learned"])
    parser.add_argument("--fixed-targets", nargs="+", default=["two_equal_1d", "two_equal_2d"])
    parser.add_argument("--learned-targets", nargs="+", default=["two_equal_1d", "two_unequal_1d"])
    parser.add_argument("--alphas", nargs="+", type=float, default=[1.0, 0.2])
    parser.add_argument("--particles", nargs="+", type=int, default=[10])
    parser.add_argument(
        "--schedules",
        nargs="+",
        default=["0.01:10", "0.1:3", "0.1:10", "0.1:20", "0.03:30"],
        help="eps:L pairs; the paper's are 0.01:10 (Table 3), 0.1:3 and 0.1:20 (Table 4)",
    )
    parser.add_argument("--sets", type=int, default=500, help="independent particle sets per measurement")
    parser.add_argument("--batch", type=int, default=64, help="particle sets per actor-loss step")
    parser.add_argument("--iterations", type=int, default=300, help="actor-loss steps of the learned q0")
    parser.add_argument("--lr", type=float, default=0.02, help="Adam learning rate of the learned q0")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.schedules = [(float(s.split(":")[0]), int(s.split(":")[1])) for s in args.schedules]
    th.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    if "fixed" in args.experiments:
        rows += fixed_experiment(args)
    if "learned" in args.experiments:
        rows += learned_experiment(args)
    meta = dict(argv=sys.argv, python=platform.python_version(), torch=th.__version__)
    (args.out / "results.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    (args.out / "results.txt").write_text("\n".join(summary_line(r) for r in rows) + "\n")


if __name__ == "__main__":
    main()
