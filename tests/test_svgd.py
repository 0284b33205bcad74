"""Unit tests of the shared SVGD core against ground truth (S²AC paper §4.1, Fig. 4, App. I)."""

import itertools
import math

import pytest
import torch as th

from sb3_stein.common.svgd import (
    SVGDDivergenceError,
    check_bandwidth,
    kernel_bandwidth,
    pairwise_sq_dists,
    rbf_kernel,
    stein_direction,
    stein_trace,
    svgd,
)


def gaussian_entropy(cov: th.Tensor) -> float:
    d = cov.shape[0]
    return 0.5 * math.log((2 * math.pi * math.e) ** d * float(th.linalg.det(cov)))


def run_gaussian(cov: th.Tensor, mean: th.Tensor, seed: int, m: int = 200, steps: int = 200):
    """Paper Table 2 settings: q0 = N(0, 6 I), eps = 0.5, L = 200, m = 200, kernel variance 5."""
    gen = th.Generator().manual_seed(seed)
    precision = th.linalg.inv(cov)
    x0 = th.randn(1, m, 2, generator=gen, dtype=th.float64) * math.sqrt(6.0)
    log_q0 = th.distributions.MultivariateNormal(
        th.zeros(2, dtype=th.float64), 6.0 * th.eye(2, dtype=th.float64)
    ).log_prob(x0)
    result = svgd(x0, lambda x: -(x - mean) @ precision, steps, 0.5, bandwidth=5.0, log_q0=log_q0)
    return result


def test_svgd_recovers_gaussian_and_its_entropy():
    """Fig. 4a: target N([-0.69, 0.8], [[1.13, 0.82], [0.82, 3.39]]), true entropy 3.41."""
    mean = th.tensor([-0.69, 0.8], dtype=th.float64)
    cov = th.tensor([[1.13, 0.82], [0.82, 3.39]], dtype=th.float64)
    truth = gaussian_entropy(cov)
    assert truth == pytest.approx(3.41, abs=0.01)
    estimates = []
    for seed in range(3):
        result = run_gaussian(cov, mean, seed)
        x = result.particles[0]
        assert th.allclose(x.mean(0), mean, atol=0.15)
        assert th.allclose(
            th.cov(x.T), cov, rtol=0.2, atol=0.1
        )  # finite-particle SVGD over-disperses slightly
        estimates.append(float(-result.log_prob.mean()))
    # Stated tolerance: within 0.15 nats (4 %) of the analytic entropy for every seed.
    for estimate in estimates:
        assert estimate == pytest.approx(truth, abs=0.15)


def test_entropy_estimate_grows_with_target_variance():
    """Fig. 10b: Gaussians of increasing variance get increasing entropy estimates."""
    mean = th.zeros(2, dtype=th.float64)
    estimates = []
    for var in (0.5, 1.0, 2.0, 4.0):
        result = run_gaussian(var * th.eye(2, dtype=th.float64), mean, seed=0, m=50, steps=100)
        estimates.append(float(-result.log_prob.mean()))
    assert all(b > a for a, b in itertools.pairwise(estimates)), estimates


def test_entropy_estimate_grows_with_mixture_components():
    """Fig. 4c: a mixture of M equal, well separated components has a larger entropy estimate for larger M.

    (The paper's table prints every component at [0, 0]; the text extraction lost the means. We place
    them on a circle of radius 3, std 0.5.)
    """
    estimates = []
    for n_comp in (1, 2, 4):
        angles = th.arange(n_comp, dtype=th.float64) * 2 * math.pi / n_comp
        centres = (
            3.0 * th.stack([angles.cos(), angles.sin()], -1)
            if n_comp > 1
            else th.zeros(1, 2, dtype=th.float64)
        )

        def score(x: th.Tensor, centres: th.Tensor = centres, var: float = 0.25) -> th.Tensor:
            diff = x.unsqueeze(-2) - centres  # (1, m, M, 2)
            logits = -(diff.pow(2).sum(-1)) / (2 * var)
            weights = th.softmax(logits, -1).unsqueeze(-1)
            return -(weights * diff).sum(-2) / var

        gen = th.Generator().manual_seed(0)
        x0 = th.randn(1, 100, 2, generator=gen, dtype=th.float64) * math.sqrt(6.0)
        log_q0 = -0.5 * x0.pow(2).sum(-1) / 6.0 - math.log(2 * math.pi * 6.0)
        result = svgd(x0, score, 200, 0.2, bandwidth=1.0, log_q0=log_q0)
        estimates.append(float(-result.log_prob.mean()))
    assert estimates[0] < estimates[1] < estimates[2], estimates


@pytest.mark.parametrize("dim", [1, 3])
def test_trace_term_matches_exact_log_det_to_second_order(dim: int):
    """Thm 3.1/3.3: -eps Tr(grad h) equals -log|det(I + eps grad h)| (autograd Jacobian) up to O(eps^2)."""
    gen = th.Generator().manual_seed(1)
    m = 6
    x = th.randn(2, m, dim, generator=gen, dtype=th.float64)
    weights = th.randn(dim, generator=gen, dtype=th.float64)
    tau = 0.7

    def score(x: th.Tensor) -> th.Tensor:  # linear log-density: zero Hessian, like a ReLU critic
        return weights.expand_as(x)

    sq = pairwise_sq_dists(x)
    sigma2 = kernel_bandwidth(sq, "median")
    closed_form = stein_trace(x, score(x), rbf_kernel(sq, sigma2), sigma2, sq, tau)  # (2, m)

    def h_of_particle(b: int, i: int, xi: th.Tensor) -> th.Tensor:
        xs = x.clone()
        xs[b, i] = xi
        sq_ = pairwise_sq_dists(xs)
        return stein_direction(xs, score(xs), rbf_kernel(sq_, sigma2), sigma2, tau)[b, i]

    errors = {}
    for eps in (1e-2, 1e-3):
        worst = 0.0
        for b in range(2):
            for i in range(m):
                jac = th.autograd.functional.jacobian(lambda xi, b=b, i=i: h_of_particle(b, i, xi), x[b, i])
                exact = th.linalg.slogdet(th.eye(dim, dtype=th.float64) + eps * jac).logabsdet
                assert float(th.trace(jac)) == pytest.approx(float(closed_form[b, i]), rel=1e-9, abs=1e-9)
                worst = max(worst, abs(float(exact) - eps * float(closed_form[b, i])))
        errors[eps] = worst
    # Second order: 10x smaller eps gives ~100x smaller error.
    assert errors[1e-3] < errors[1e-2] / 50 + 1e-15


def test_self_hessian_term_completes_the_trace():
    """With curvature, the j = i Hessian term the paper drops is exactly what the Jacobian adds."""
    gen = th.Generator().manual_seed(2)
    x = th.randn(1, 5, 2, generator=gen, dtype=th.float64)
    precision = th.tensor([[2.0, 0.3], [0.3, 1.0]], dtype=th.float64)

    def score(x: th.Tensor) -> th.Tensor:
        return -x @ precision

    sq = pairwise_sq_dists(x)
    sigma2 = kernel_bandwidth(sq, 1.0)
    kernel = rbf_kernel(sq, sigma2)
    hess_trace = th.full((1, 5), -float(th.trace(precision)), dtype=th.float64)
    full = stein_trace(x, score(x), kernel, sigma2, sq, 1.0, self_hessian_trace=hess_trace)
    for i in range(5):

        def h_i(xi: th.Tensor, i: int = i) -> th.Tensor:
            xs = x.clone()
            xs[0, i] = xi
            sq_ = pairwise_sq_dists(xs)
            return stein_direction(xs, score(xs), rbf_kernel(sq_, sigma2), sigma2, 1.0)[0, i]

        jac = th.autograd.functional.jacobian(h_i, x[0, i])
        assert float(th.trace(jac)) == pytest.approx(float(full[0, i]), rel=1e-9)


def test_bandwidths():
    x = th.tensor([[[0.0], [1.0], [3.0]]])
    sq = pairwise_sq_dists(x)
    assert th.equal(sq[0].diagonal(), th.zeros(3))
    paper = kernel_bandwidth(sq, "paper")
    assert float(paper) == pytest.approx(2 * (1 + 9 + 4) / (4 * (2 * math.log(3) + 1)))
    median = kernel_bandwidth(sq, "median")
    assert float(median) == pytest.approx(4.0 / (2 * math.log(3)))
    assert float(kernel_bandwidth(sq, 0.3)) == pytest.approx(0.3)
    assert not kernel_bandwidth(sq.requires_grad_(True), "paper").requires_grad


@pytest.mark.parametrize("bad", ["mean", -1.0, 0.0, True, None])
def test_bad_bandwidth_raises(bad):
    with pytest.raises(ValueError, match="kernel_bandwidth"):
        check_bandwidth(bad)


def test_zero_steps_is_the_initial_distribution():
    x0 = th.randn(3, 4, 2)
    log_q0 = th.randn(3, 4)
    result = svgd(x0, lambda x: -x, 0, 0.1, log_q0=log_q0)
    assert th.equal(result.particles, x0)
    assert th.equal(result.log_prob, log_q0)


def test_divergence_raises_clear_error():
    x0 = th.randn(1, 4, 2)
    log_q0 = th.zeros(1, 4)
    # Training (log-likelihood tracked): the step and the quantity are named.
    with pytest.raises(SVGDDivergenceError, match=r"step 2 of 3.*svgd_step_size=1e\+30"):
        svgd(x0, lambda x: x**3, 3, 1e30, owner="S2AC", log_q0=log_q0)
    with pytest.raises(SVGDDivergenceError, match="score"):
        svgd(x0, lambda x: x * float("nan"), 2, 0.1, log_q0=log_q0)
    # Acting: one check of the final particles.
    with pytest.raises(SVGDDivergenceError, match=r"particles became NaN/inf within 3 steps.*svgd_step_size"):
        svgd(x0, lambda x: x**3, 3, 1e30, owner="S2AC")


def test_bandwidth_floor_keeps_the_closed_form_valid_for_collapsed_particles():
    """Theorem 3.1 needs eps * ||grad h|| << 1: coincident particles must not yield unbounded entropy."""
    x0 = th.zeros(4, 10, 3)
    log_q0 = th.zeros(4, 10)
    floored = svgd(x0, lambda x: th.zeros_like(x), 3, 0.1, bandwidth="paper", repulsion_weight=0.2, log_q0=log_q0)
    per_step = (log_q0 - floored.log_prob) / 3
    # The floor bounds the operator norm (max_expansion per coordinate), so the trace by dim times it.
    assert float(per_step.max()) <= 3 * 0.25 + 1e-6
    assert floored.floored == 1.0
    unbounded = svgd(
        x0,
        lambda x: th.zeros_like(x),
        3,
        0.1,
        bandwidth="paper",
        repulsion_weight=0.2,
        log_q0=log_q0,
        max_expansion=None,
    )
    assert float((log_q0 - unbounded.log_prob).max()) > 1e5


@pytest.mark.parametrize("dim", [1, 6])
def test_bandwidth_floor_bounds_the_operator_norm_of_the_repulsive_jacobian(dim):
    """eps * ||grad_{x_i} h(x_i)||_2 <= max_expansion for nearly collapsed particles, in any dimension,
    and the floor is no stricter than that: the largest eigenvalue reaches a good part of the bound."""
    gen = th.Generator().manual_seed(0)
    x = 1e-4 * th.randn(1, 10, dim, generator=gen, dtype=th.float64)
    eps, w, max_expansion = 0.1, 0.7, 0.25
    sigma2 = th.full((1, 1, 1), eps * w / max_expansion, dtype=th.float64)  # the floor binds here
    assert float(kernel_bandwidth(pairwise_sq_dists(x), "median")) < float(sigma2)
    for i in range(3):

        def h_i(xi, i=i):
            xs = x.clone()
            xs[0, i] = xi
            sq_ = pairwise_sq_dists(xs)
            return stein_direction(xs, th.zeros_like(xs), rbf_kernel(sq_, sigma2), sigma2, w)[0, i]

        jac = th.autograd.functional.jacobian(h_i, x[0, i])
        norm = float(th.linalg.matrix_norm(eps * jac, ord=2))
        assert norm <= max_expansion + 1e-9
        assert norm >= 0.8 * max_expansion * 9 / 10  # (m - 1) / m of the bound, kernel entries ~ 1
