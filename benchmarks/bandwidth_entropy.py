"""What the kernel bandwidth rule and its validity floor do to the SVGD core's closed-form entropy.

Usage::

    python benchmarks/bandwidth_entropy.py --out benchmarks/results/bandwidth/core

Issue 11, item 2, the part that needs no training: on targets whose entropy is known, plain SVGD
(``score = grad log p``, repulsion weight 1) from ``q0 = N(0, 0.5 I)`` (Table 4 of the S²AC paper, read
as a covariance) with ``m = 10`` particles, for both bandwidth rules (``"paper"``: the printed double
sum ``/ (4 (2 log m + 1))``; ``"median"``: ``med(d^2) / (2 log m)``) and the floor ``max_expansion`` in
{0.1, 0.25, 0.5, 1.0, None} (``sigma^2 >= eps / max_expansion``), it measures

(a) the closed-form entropy ``-mean log q^L`` (Theorem 3.3) against an independent Kozachenko-Leonenko
    k-NN entropy of the pooled final particles of ``--sets`` independent particle sets, i.e. of what
    the sampler really outputs. The headline error is that of the entropy *change* from the initial
    particles, ``(H_cf^L - H_cf^0) - (H_knn^L - H_knn^0)`` on the same draws: the k-NN estimator's bias
    (-0.05 nats in 6-D for 2e4 points, printed in the header) and the Monte Carlo noise of
    ``-mean log q0`` (0.01 nats in 6-D) cancel in it; the raw difference is listed too;
(b) the share of (step, set) pairs whose kernel variance sat at the floor;
(c) the typical kernel variance of each rule: along the runs, and for ``m`` i.i.d. draws of a unit
    Gaussian as a function of ``m`` and the dimension (``"paper"`` grows like ``m^2 / log m``);
(d) for the two-bump mixture, the share of particles within one component std of a mode, and the
    share of particle sets that have a particle near both modes.

Targets: ``N(0.5, 1)`` in 1-D, ``N(0, I_6)`` in 6-D (the issue's example), and the two-bump mixture
``0.5 N(-1, 0.4^2) + 0.5 N(1, 0.4^2)`` in 1-D. Step sizes: ``eps = 0.1`` (Table 4, MuJoCo) and 0.01
(Table 3, multi-goal), ``L`` in {1, 3, 10}, and ``(0.1, 20)``: the paper's own pairs are ``(0.1, 20)``
(Table 4, S²AC(phi)), ``(0.1, 3)`` (Table 4, S²AC(phi, theta)) and ``(0.01, 10)`` (Table 3).
S²AC's flow ``h = alpha * phi`` with repulsion weight ``alpha`` is this flow with step ``eps * alpha``
on the target ``exp(Q / alpha)``, so a smaller temperature reads as a smaller ``eps`` here (and its
floor ``eps * alpha / max_expansion`` is the same function of it).

One torch thread (``torch.set_num_threads(1)``); one to two minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch as th
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln

from sb3_stein.common.svgd import kernel_bandwidth, pairwise_sq_dists, svgd

M = 10
INIT_STD = math.sqrt(0.5)
BANDWIDTHS = ("paper", "median")
MAX_EXPANSIONS: tuple[float | None, ...] = (0.1, 0.25, 0.5, 1.0, None)
GRID_STEPS = ((0.1, 1), (0.1, 3), (0.1, 10), (0.01, 1), (0.01, 3), (0.01, 10), (0.1, 20))
PAPER_STEPS = ((0.1, 20), (0.1, 3), (0.01, 10))  # Table 4 S²AC(phi), S²AC(phi, theta); Table 3
MODES, MODE_STD = (-1.0, 1.0), 0.4


# ----------------------------------------------------------------------------------- targets
def gaussian_target(mean: float, dim: int) -> dict:
    return dict(
        dim=dim,
        score=lambda x: -(x - mean),
        entropy=0.5 * dim * math.log(2 * math.pi * math.e),
        label=f"N({mean:g}, I_{dim})" if dim > 1 else f"N({mean:g}, 1)",
    )


def mixture_score(x: th.Tensor) -> th.Tensor:
    modes = th.tensor(MODES, dtype=x.dtype)
    diff = x - modes  # (..., 1) - (2,) -> (..., 2): 1-D particles against each mode
    weights = th.softmax(-diff.pow(2) / (2 * MODE_STD**2), -1)
    return -(weights * diff).sum(-1, keepdim=True) / MODE_STD**2


def mixture_entropy() -> float:
    """``-int p log p`` by a midpoint rule on [-6, 6] with 0.0005 spacing (mass error < 1e-9)."""
    x = np.linspace(-6.0, 6.0, 24_001)
    log_comp = np.stack([-((x - mu) ** 2) / (2 * MODE_STD**2) for mu in MODES])
    log_p = np.logaddexp(log_comp[0], log_comp[1]) - math.log(2) - 0.5 * math.log(2 * math.pi * MODE_STD**2)
    p = np.exp(log_p)
    return float(-(p * log_p).sum() * (x[1] - x[0]))


TARGETS = {
    "gauss1d": gaussian_target(0.5, 1),
    "gauss6d": gaussian_target(0.0, 6),
    "bimodal1d": dict(
        dim=1, score=mixture_score, entropy=mixture_entropy(), label="0.5 N(-1, 0.4²) + 0.5 N(1, 0.4²)"
    ),
}


# -------------------------------------------------------------------------------- estimators
def knn_entropy(x: np.ndarray, k: int = 4) -> float:
    """Kozachenko-Leonenko entropy of samples ``(N, d)``: ``psi(N) - psi(k) + log V_d + d mean log r_k``."""
    n, d = x.shape
    r = cKDTree(x).query(x, k=k + 1)[0][:, k]
    return float(
        digamma(n) - digamma(k) + d / 2 * math.log(math.pi) - gammaln(d / 2 + 1) + d * np.log(r).mean()
    )


def initial_particles(sets: int, dim: int, seed: int) -> tuple[th.Tensor, th.Tensor]:
    gen = th.Generator().manual_seed(seed)
    x0 = th.randn(sets, M, dim, generator=gen, dtype=th.float64) * INIT_STD
    log_q0 = (-0.5 * (x0 / INIT_STD).pow(2) - math.log(INIT_STD) - 0.5 * math.log(2 * math.pi)).sum(-1)
    return x0, log_q0


def mode_shares(x: th.Tensor) -> tuple[float, float]:
    """(share of particles within one component std of a mode, share of sets with both modes hit)."""
    near = th.stack([(x[..., 0] - mu).abs() < MODE_STD for mu in MODES])  # (2, sets, m)
    return float(near.any(0).double().mean()), float(near.any(-1).all(0).double().mean())


def run_cell(
    target: dict,
    x0: th.Tensor,
    log_q0: th.Tensor,
    reference: float,
    eps: float,
    steps: int,
    bandwidth,
    expansion,
) -> dict:
    """One (target, eps, L, rule, floor) cell; ``reference`` is ``H_cf^0 - H_knn^0`` of the same draws."""
    start = time.perf_counter()
    result = svgd(
        x0, target["score"], steps, eps, bandwidth=bandwidth, log_q0=log_q0, max_expansion=expansion
    )
    seconds = time.perf_counter() - start
    x = result.particles
    closed_form = float(-result.log_prob.mean())
    pooled = x.reshape(-1, x.shape[-1])
    knn = knn_entropy(pooled.numpy())
    # The entropy of the Gaussian with the pooled particles' covariance: an upper bound of their
    # entropy, a second check of the k-NN estimate where that is least sure (6-D).
    cov = th.atleast_2d(th.cov(pooled.T))
    gaussian_bound = 0.5 * float(th.logdet(2 * math.pi * math.e * cov))
    row = dict(
        closed_form=closed_form,
        knn=knn,
        raw_error=closed_form - knn,
        error=closed_form - knn - reference,
        floored=result.floored,
        sigma2_final=float(result.bandwidth.median()),
        gaussian_bound=gaussian_bound,
        svgd_seconds=seconds,
    )
    if target is TARGETS["bimodal1d"]:
        row["near_mode"], row["both_modes"] = mode_shares(x)
    return row


def sigma2_growth(seed: int) -> list[dict]:
    """Median kernel variance of each rule for ``m`` i.i.d. N(0, I_d) particles (no floor)."""
    gen = th.Generator().manual_seed(seed)
    rows = []
    for dim in (1, 2, 6):
        for m in (5, 10, 20, 50):
            x = th.randn(2000, m, dim, generator=gen, dtype=th.float64)
            sq = pairwise_sq_dists(x)
            row = dict(dim=dim, m=m)
            for rule in BANDWIDTHS:
                row[rule] = float(kernel_bandwidth(sq, rule).median())
            rows.append(row)
    return rows


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "None"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


SUMMARY_HEADER = (
    "| bandwidth | max_expansion | mean abs error | max abs error | mean abs error, eps 0.1 | "
    "mean abs error, eps 0.01 | floored share | floored share, eps 0.1 | mixture, eps 0.1 L 20: near a "
    "mode | sets with both modes |"
)


def summarise(rows: list[dict], bandwidth: str, expansion: float | None) -> dict:
    """Errors and floored shares of one rule and floor over ``rows``; the mixture's mode shares."""
    cells = [r for r in rows if r["bandwidth"] == bandwidth and r["max_expansion"] == expansion]
    mixture = [r for r in cells if r["target"] == "bimodal1d" and (r["eps"], r["steps"]) == (0.1, 20)]

    def mean_abs(eps: float | None = None) -> float:
        return float(np.mean([abs(r["error"]) for r in cells if eps is None or r["eps"] == eps]))

    return dict(
        bandwidth=bandwidth,
        max_expansion=expansion,
        mean_abs_error=mean_abs(),
        max_abs_error=float(max(abs(r["error"]) for r in cells)),
        mean_abs_error_eps01=mean_abs(0.1),
        mean_abs_error_eps001=mean_abs(0.01),
        floored=float(np.mean([r["floored"] for r in cells])),
        floored_eps01=float(np.mean([r["floored"] for r in cells if r["eps"] == 0.1])),
        near_mode_L20=mixture[0]["near_mode"] if mixture else None,
        both_modes_L20=mixture[0]["both_modes"] if mixture else None,
    )


def summary_line(s: dict) -> str:
    return (
        f"| {s['bandwidth']} | {fmt(s['max_expansion'], 2)} | {s['mean_abs_error']:.3f} | "
        f"{s['max_abs_error']:.3f} | {s['mean_abs_error_eps01']:.3f} | {s['mean_abs_error_eps001']:.3f} | "
        f"{s['floored']:.2f} | {s['floored_eps01']:.2f} | "
        + (
            f"{s['near_mode_L20']:.2f} | {s['both_modes_L20']:.2f} |"
            if s["near_mode_L20"] is not None
            else "– | – |"
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for results.md and results.json")
    parser.add_argument("--sets", type=int, default=2000, help="independent particle sets per cell")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(1)
    command = "python benchmarks/bandwidth_entropy.py " + " ".join(sys.argv[1:])
    started = time.perf_counter()

    rows, calibration = [], {}
    for name, target in TARGETS.items():
        x0, log_q0 = initial_particles(args.sets, target["dim"], args.seed)
        exact0 = target["dim"] * (math.log(INIT_STD) + 0.5 * math.log(2 * math.pi * math.e))
        knn0 = knn_entropy(x0.reshape(-1, target["dim"]).numpy())
        calibration[name] = knn0 - exact0
        reference = float(-log_q0.mean()) - knn0
        for eps, steps in GRID_STEPS:
            for bandwidth in BANDWIDTHS:
                for expansion in MAX_EXPANSIONS:
                    row = dict(
                        target=name,
                        dim=target["dim"],
                        eps=eps,
                        steps=steps,
                        paper_setting=(eps, steps) in PAPER_STEPS,
                        bandwidth=bandwidth,
                        max_expansion=expansion,
                        floor=None if expansion is None else eps / expansion,
                        sigma2_initial=float(kernel_bandwidth(pairwise_sq_dists(x0), bandwidth).median()),
                        target_entropy=target["entropy"],
                        initial_entropy=exact0,
                    )
                    row.update(run_cell(target, x0, log_q0, reference, eps, steps, bandwidth, expansion))
                    rows.append(row)
                    print(
                        f"{name} eps={eps} L={steps} {bandwidth} max_expansion={expansion}: closed form "
                        f"{row['closed_form']:.3f} kNN {row['knn']:.3f} (error {row['error']:+.3f}), floored "
                        f"{row['floored']:.2f}, sigma2 {row['sigma2_final']:.3g}",
                        flush=True,
                    )
    growth = sigma2_growth(args.seed)
    elapsed = time.perf_counter() - started

    summary = [
        summarise(rows, bandwidth, expansion) for bandwidth in BANDWIDTHS for expansion in MAX_EXPANSIONS
    ]
    per_target = [
        dict(target=name, **summarise([r for r in rows if r["target"] == name], bandwidth, expansion))
        for name in TARGETS
        for bandwidth in BANDWIDTHS
        for expansion in MAX_EXPANSIONS
    ]

    args.out.mkdir(parents=True, exist_ok=True)
    meta = dict(
        command=command,
        m=M,
        init_std=INIT_STD,
        sets=args.sets,
        seed=args.seed,
        knn_k=4,
        knn_bias_on_initial_particles=calibration,
        targets={k: dict(label=v["label"], dim=v["dim"], entropy=v["entropy"]) for k, v in TARGETS.items()},
        mixture_target_near_mode_share=math.erf(1 / math.sqrt(2)),
        seconds=elapsed,
        torch=th.__version__,
        python=platform.python_version(),
        machine=platform.machine(),
        threads=th.get_num_threads(),
    )
    results = dict(meta=meta, summary=summary, per_target=per_target, rows=rows, sigma2_growth=growth)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))

    lines = [
        "# Bandwidth rule and floor on the SVGD core: closed-form entropy against ground truth",
        "",
        f"Command: `{command}` ({elapsed:.0f} s, torch {th.__version__}, 1 thread). Script:",
        "`benchmarks/bandwidth_entropy.py` (its docstring says what is measured and why).",
        "",
        f"m = {M}, q0 = N(0, 0.5 I) (std {INIT_STD:.3f}), {args.sets} independent particle sets per cell "
        f"({args.sets * M} pooled particles), plain SVGD (repulsion weight 1), floor sigma² >= eps / "
        "max_expansion. *error* (nats): the closed-form (Theorem 3.3) entropy change from the initial "
        "particles minus the change of a k-NN entropy (k = 4) of the pooled particles, on the same draws; "
        "*raw error*: closed form minus k-NN at step L. The k-NN estimator's bias on the initial "
        "particles (exact entropy): "
        + ", ".join(f"{k} {v:+.3f}" for k, v in calibration.items())
        + ". Target entropies: "
        + ", ".join(f"{k} = {v['label']} {v['entropy']:.3f}" for k, v in TARGETS.items())
        + f". A draw from the mixture target lies within one component std of a mode with probability "
        f"{math.erf(1 / math.sqrt(2)):.2f}; q0's draws do with probability "
        f"{float(mode_shares(initial_particles(args.sets, 1, args.seed)[0])[0]):.2f}.",
        "",
        "## Summary per rule and floor (all targets and step settings)",
        "",
        SUMMARY_HEADER,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [summary_line(s) for s in summary]
    lines += ["", "## The same per target", "", "| target " + SUMMARY_HEADER, "| --- " + "| --- " * 10 + "|"]
    lines += [f"| {s['target']} " + summary_line(s) for s in per_target]
    lines += [
        "",
        "## Typical kernel variance of each rule",
        "",
        "m i.i.d. N(0, I_d) particles, median over 2000 draws, no floor.",
        "",
        "| d | m | paper | median | paper / median |",
        "| --- | --- | --- | --- | --- |",
    ]
    for g in growth:
        lines.append(
            f"| {g['dim']} | {g['m']} | {g['paper']:.3g} | {g['median']:.3g} | "
            f"{g['paper'] / g['median']:.1f} |"
        )
    lines += [
        "",
        "## Every cell",
        "",
        "sigma² columns: median over the sets, of the initial particles (before the floor) and of the last "
        "step (after it). *paper* marks the paper's own (eps, L) pairs. *Gaussian bound*: entropy of the "
        "Gaussian with the pooled particles' covariance, an upper bound of their entropy.",
        "",
        "| target | eps | L | bandwidth | max_expansion | floor | sigma² initial | sigma² last | floored | "
        "closed form | k-NN | Gaussian bound | raw error | error | near mode | both modes |",
        "| --- " * 16 + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['eps']:g} | {r['steps']}{' (paper)' if r['paper_setting'] else ''} | "
            f"{r['bandwidth']} | {fmt(r['max_expansion'], 2)} | {fmt(r['floor'], 3)} | "
            f"{r['sigma2_initial']:.3g} | {r['sigma2_final']:.3g} | {r['floored']:.2f} | "
            f"{r['closed_form']:.3f} | {r['knn']:.3f} | {r['gaussian_bound']:.3f} | {r['raw_error']:+.3f} | "
            f"{r['error']:+.3f} | "
            f"{fmt(r.get('near_mode'), 2) if 'near_mode' in r else ''} | "
            f"{fmt(r.get('both_modes'), 2) if 'both_modes' in r else ''} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'results.md'} and results.json in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
