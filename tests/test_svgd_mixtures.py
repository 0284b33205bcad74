"""The SVGD core on Gaussian-mixture targets: component weights and entropy against ground truth (issue 12).

Settings of the paper's Fig. 4 (S²AC, Table 2): ``q0 = N(0, 6 I)``, ``eps = 0.5``, ``L = 200``,
``m = 200``, kernel variance 5; four independent particle sets. Components have standard deviation
0.5. "Weights" are the shares of particles nearest each component's mean, compared with the target's
weights by total variation (``tv``); the entropy is the closed form (Eq. 11) against the target's,
integrated on a grid.

Measured (seeds 1-3 of the sampler; the tests use seed 1), tv / closed form minus truth in nats:

* overlapping components (neighbouring means 4 std apart for two, 3 std for three), kernel variance 5:
  0.7/0.3 in 1-D 0.043-0.089 / -0.050..+0.017; 0.5/0.3/0.2 in 1-D 0.002-0.050 / -0.057..-0.037;
  0.7/0.3 in 2-D 0.044-0.079 / -0.052..-0.014; 0.5/0.3/0.2 in 2-D 0.110-0.147 / -0.080..-0.017 (the
  wide kernel over-weights the heavy component). With the median bandwidth (floored at
  ``eps / 0.25 = 2`` on every step at ``m = 200``) the 2-D three-component weights are right (tv
  0.040-0.051) and the entropy 0.24-0.27 nats low;
* separated equal components (means 8 std apart), kernel variance 5: two in 1-D tv 0.015-0.037, entropy
  -0.060..-0.035; three in 2-D tv 0.030-0.066, entropy +0.066..+0.088.

Not tested because it does not hold: for *separated* components of unequal weight SVGD keeps the
split of ``q0``'s mass between the basins of attraction (0.7/0.3 at means +-2: 0.55-0.57 / 0.43-0.45 at
these settings, tv 0.13-0.15; see benchmarks/results/multimodality/NOTE.md). Tolerances below: the
largest measured value plus about a third.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch as th

from sb3_stein.common.svgd import Bandwidth, svgd

STD = 0.5
#: name -> (means, weights)
TARGETS = {
    "overlap_two_1d": ([[-1.0], [1.0]], [0.7, 0.3]),
    "overlap_three_1d": ([[-1.5], [0.0], [1.5]], [0.5, 0.3, 0.2]),
    "overlap_two_2d": ([[-1.0, 0.0], [1.0, 0.0]], [0.7, 0.3]),
    "overlap_three_2d": ([[1.0, 0.0], [-0.5, 0.866], [-0.5, -0.866]], [0.5, 0.3, 0.2]),
    "separated_two_1d": ([[-2.0], [2.0]], [0.5, 0.5]),
    "separated_three_2d": ([[2.0, 0.0], [-1.0, 1.732], [-1.0, -1.732]], [1 / 3, 1 / 3, 1 / 3]),
}
#: (target, bandwidth, tv tolerance, entropy tolerance in nats, entropy offset: the measured bias)
CASES = [
    ("overlap_two_1d", 5.0, 0.12, 0.08, 0.0),
    ("overlap_three_1d", 5.0, 0.07, 0.08, 0.0),
    ("overlap_two_2d", 5.0, 0.11, 0.08, 0.0),
    ("overlap_three_2d", 5.0, 0.20, 0.11, 0.0),
    ("overlap_three_2d", "median", 0.07, 0.06, -0.255),
    ("separated_two_1d", 5.0, 0.05, 0.08, 0.0),
    ("separated_three_2d", 5.0, 0.09, 0.12, 0.0),
]


def mixture_log_prob(x: th.Tensor, means: th.Tensor, weights: th.Tensor) -> th.Tensor:
    d = means.shape[1]
    sq = (x.unsqueeze(-2) - means).pow(2).sum(-1)
    return th.logsumexp(weights.log() - sq / (2 * STD**2) - d / 2 * math.log(2 * math.pi * STD**2), -1)


def grid_entropy(means: th.Tensor, weights: th.Tensor) -> float:
    d = means.shape[1]
    axis = th.linspace(-6.0, 6.0, 12001 if d == 1 else 601, dtype=th.float64)
    points = th.stack(th.meshgrid(*[axis] * d, indexing="ij"), -1).reshape(-1, d)
    log_p = mixture_log_prob(points, means, weights)
    return float(-(log_p.exp() * log_p).sum() * (axis[1] - axis[0]) ** d)


@pytest.mark.parametrize(("target", "bandwidth", "tv_tol", "entropy_tol", "entropy_bias"), CASES)
def test_svgd_recovers_mixture_weights_and_entropy(
    target: str, bandwidth: Bandwidth, tv_tol: float, entropy_tol: float, entropy_bias: float
):
    mean_list, weight_list = TARGETS[target]
    means = th.tensor(mean_list, dtype=th.float64)
    weights = th.tensor(weight_list, dtype=th.float64)
    d = means.shape[1]

    def score(x: th.Tensor) -> th.Tensor:
        x = x.detach().requires_grad_(True)
        return th.autograd.grad(mixture_log_prob(x, means, weights).sum(), x)[0]

    gen = th.Generator().manual_seed(1)
    x0 = th.randn(4, 200, d, generator=gen, dtype=th.float64) * math.sqrt(6.0)
    log_q0 = -(x0**2).sum(-1) / 12.0 - d / 2 * math.log(2 * math.pi * 6.0)
    result = svgd(x0, score, steps=200, step_size=0.5, bandwidth=bandwidth, log_q0=log_q0)
    assert result.log_prob is not None
    nearest = (result.particles.unsqueeze(-2) - means).pow(2).sum(-1).argmin(-1)
    shares = np.array([(nearest == k).double().mean().item() for k in range(len(weight_list))])
    tv = 0.5 * np.abs(shares - np.array(weight_list)).sum()
    assert tv <= tv_tol, (shares, weight_list)
    error = float(-result.log_prob.mean()) - grid_entropy(means, weights)
    assert error == pytest.approx(entropy_bias, abs=entropy_tol)
