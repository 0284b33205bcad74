"""Stein variational gradient descent with a closed-form running log-likelihood.

One implementation shared by every Stein actor of the package: S²AC runs it over actions
(``dim = act_dim``), Q-STAC over flattened H-step control sequences (``dim = H * act_dim``).

Notation (S²AC paper, Messaoud et al., ICLR 2024, shared/papers/002_7b60a202b120fb81.txt):

* particles ``x`` of shape ``(batch, m, dim)``: ``m`` particles for each of ``batch`` independent
  target densities (one per state);
* RBF kernel ``k(x_i, x_j) = exp(-||x_i - x_j||^2 / (2 sigma^2))`` (§2.1); ``sigma^2`` is the
  *bandwidth* below, one per target density, and treated as a constant of each step (it is
  computed from detached particles, as in the reference code);
* Stein direction (Eq. 1, in the scaling of Appendix H / Eq. 24)::

      h(x_i) = 1/m sum_j [ k(x_j, x_i) score(x_j) + w * grad_{x_j} k(x_j, x_i) ]

  where ``score = grad log p`` up to the factor ``w``, the *repulsion weight*: S²AC passes
  ``score = grad_a Q`` and ``w = alpha``, i.e. ``h = alpha * phi`` with ``phi`` the SVGD direction
  of the target ``exp(Q / alpha)``; plain SVGD of a density ``p`` is ``score = grad log p, w = 1``.
  (The paper calls it ``alpha``; we avoid ``tau``, which is SB3's Polyak coefficient.)
* update ``x <- x + eps * h(x)`` (§3.1);
* log-likelihood (Theorem 3.1 + Theorem 3.3)::

      log q^{l+1}(x_i^{l+1}) = log q^l(x_i^l) - eps * Tr(grad_{x_i} h(x_i))
      Tr(grad h(x_i)) = 1/(m sigma^2) sum_{j != i} k_ij [ -(x_i - x_j)^T score_j
                                                          + w * d - w * ||x_i - x_j||^2 / sigma^2 ]

  The ``j = i`` summand of the score term contributes ``1/m Tr(grad^2 log p(x_i))`` (a Hessian),
  which the paper drops (Appendix H: "in order to avoid computing Hessians"). We drop it too,
  for every part of the score (the S²AC policy's pre-tanh score has a curvature term from the
  tanh log-determinant even with a ReLU critic): the per-particle map is not the map of the
  particle ensemble, and on the paper's Fig. 4a Gaussian the paper's formula recovers the
  entropy (3.35 vs 3.41 nats, tests/test_svgd.py) while adding the self term does not (2.63).
  ``stein_trace`` accepts an optional ``self_hessian_trace`` to check that algebra in tests.

The paper's bandwidth (Appendix J/K tables) is printed as
``sigma = sum_{i,j} ||a_i - a_j||^2 / (4 (2 log m + 1))`` and called "kernel variance"; we read it
as ``sigma^2`` (a variance) and keep the printed double sum. The median heuristic of Liu & Wang
(2016), ``k = exp(-d^2 / h), h = med(d^2) / log m``, is ``sigma^2 = med(d^2) / (2 log m)`` here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch as th

BANDWIDTH_METHODS = ("paper", "median")
Bandwidth = str | float


def check_bandwidth(bandwidth: Bandwidth, name: str = "kernel_bandwidth") -> Bandwidth:
    """Validate a bandwidth setting and return it.

    :param bandwidth: ``"paper"``, ``"median"`` or a finite positive float (a fixed ``sigma^2``).
    :param name: parameter name used in the error message.
    :raises ValueError: for anything else.
    """
    if isinstance(bandwidth, str):
        if bandwidth not in BANDWIDTH_METHODS:
            raise ValueError(
                f"{name} must be one of {BANDWIDTH_METHODS} or a positive float, got {bandwidth!r}"
            )
        return bandwidth
    if (
        isinstance(bandwidth, bool)
        or not isinstance(bandwidth, (int, float))
        or not math.isfinite(bandwidth)
        or not bandwidth > 0
    ):
        raise ValueError(f"{name} must be one of {BANDWIDTH_METHODS} or a positive float, got {bandwidth!r}")
    return float(bandwidth)


def pairwise_sq_dists(x: th.Tensor) -> th.Tensor:
    """Squared Euclidean distances ``||x_i - x_j||^2``.

    :param x: particles ``(batch, m, dim)``.
    :return: ``(batch, m, m)``, exactly zero on the diagonal.
    """
    diff = x.unsqueeze(-2) - x.unsqueeze(-3)  # (batch, m, m, dim)
    return diff.pow(2).sum(-1)


def kernel_bandwidth(sq_dists: th.Tensor, method: Bandwidth) -> th.Tensor:
    """Kernel variance ``sigma^2`` per target density, detached.

    :param sq_dists: ``(batch, m, m)`` squared distances.
    :param method: ``"paper"``, ``"median"`` or a fixed positive float.
    :return: ``(batch, 1, 1)``.
    """
    batch, m, _ = sq_dists.shape
    method = check_bandwidth(method)  # an unknown string or a bad number raises, naming what is allowed
    with th.no_grad():
        if isinstance(method, float):
            return sq_dists.new_full((batch, 1, 1), method)
        if method == "paper":
            sigma2 = sq_dists.sum((-1, -2)) / (4.0 * (2.0 * math.log(m) + 1.0))
        elif method == "median":  # over the m (m - 1) off-diagonal entries
            off_diag = ~th.eye(m, dtype=th.bool, device=sq_dists.device)
            sigma2 = sq_dists[:, off_diag].median(-1).values / (2.0 * math.log(m))
        else:
            raise AssertionError(method)  # check_bandwidth admits nothing else
        # Coincident particles give sigma^2 = 0; a tiny floor keeps the kernel defined.
        return sigma2.clamp_min(1e-8).view(batch, 1, 1)


def rbf_kernel(sq_dists: th.Tensor, sigma2: th.Tensor) -> th.Tensor:
    """``k_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))``, shape ``(batch, m, m)``."""
    return th.exp(-sq_dists / (2.0 * sigma2))


def stein_direction(
    x: th.Tensor,
    score: th.Tensor,
    kernel: th.Tensor,
    sigma2: th.Tensor,
    repulsion_weight: float | th.Tensor = 1.0,
) -> th.Tensor:
    """SVGD direction ``h(x_i)`` of Eq. 1 (scaled as in Appendix H), shape ``(batch, m, dim)``.

    ``grad_{x_j} k(x_j, x_i) = k_ij (x_i - x_j) / sigma^2``; the sums over ``j`` are matrix
    products so no ``(batch, m, m, dim)`` tensor is formed.
    """
    m = x.shape[-2]
    attraction = kernel @ score  # (batch, m, dim)
    repulsion = (kernel.sum(-1, keepdim=True) * x - kernel @ x) / sigma2
    return (attraction + repulsion_weight * repulsion) / m


def stein_trace(
    x: th.Tensor,
    score: th.Tensor,
    kernel: th.Tensor,
    sigma2: th.Tensor,
    sq_dists: th.Tensor,
    repulsion_weight: float | th.Tensor = 1.0,
    self_hessian_trace: th.Tensor | None = None,
    per_coordinate: bool = False,
) -> th.Tensor:
    """``Tr(grad_{x_i} h(x_i))`` of Theorem 3.3, shape ``(batch, m)``.

    :param self_hessian_trace: optional ``(batch, m)`` ``Tr(grad^2 log p(x_i))`` (in the units of
        ``score``), the ``j = i`` term the paper drops; ``None`` follows the paper.
    :param per_coordinate: return the diagonal entries ``d h_d(x_i) / d x_{i,d}`` instead,
        ``(batch, m, dim)``, whose sum over ``dim`` is the trace (Q-STAC sums them per horizon step).
    """
    m, dim = x.shape[-2], x.shape[-1]
    if per_coordinate:
        if self_hessian_trace is not None:
            raise ValueError("self_hessian_trace is a whole trace; it cannot be split per coordinate")
        row_sum = kernel.sum(-1, keepdim=True)  # (batch, m, 1)
        kx = kernel @ x
        cross_d = x * (kernel @ score) - kernel @ (x * score)
        spread_d = x.pow(2) * row_sum - 2.0 * x * kx + kernel @ x.pow(2)  # sum_j k_ij (x_id - x_jd)^2
        w = repulsion_weight
        return (-cross_d + w * (row_sum - 1.0) - w * spread_d / sigma2) / (m * sigma2)
    k_score = kernel @ score  # sum_j k_ij s_j
    # sum_j k_ij (x_i - x_j)^T s_j = x_i^T (K s)_i - sum_j k_ij (x_j^T s_j)
    cross = (x * k_score).sum(-1) - (kernel @ (x * score).sum(-1, keepdim=True)).squeeze(-1)
    spread = (kernel * sq_dists).sum(-1)  # sum_j k_ij ||x_i - x_j||^2
    sigma2_ = sigma2.squeeze(-1)  # (batch, 1)
    # The j = i kernel entry is 1 and carries no repulsion: subtract it from the w * d term.
    others = kernel.sum(-1) - 1.0
    w = repulsion_weight
    trace = (-cross + w * dim * others - w * spread / sigma2_) / (m * sigma2_)
    if self_hessian_trace is not None:
        trace = trace + self_hessian_trace / m
    return trace


ScoreFn = Callable[[th.Tensor], th.Tensor]


@dataclass
class SVGDResult:
    """Output of :func:`svgd`.

    :param particles: final particles ``(batch, m, dim)``.
    :param log_prob: ``log q^L`` of each final particle ``(batch, m)``, or ``None`` if not requested.
    :param bandwidth: ``sigma^2`` of the last step ``(batch,)`` (of ``x^0`` if ``steps == 0``).
    :param floored: share of the ``steps x batch`` kernel variances that sat at the validity floor
        (see ``max_expansion`` in :func:`svgd`), when the log-likelihood is tracked; a diagnostic to log.
    """

    particles: th.Tensor
    log_prob: th.Tensor | None
    bandwidth: th.Tensor
    floored: float = 0.0


class SVGDDivergenceError(FloatingPointError):
    """Raised when particles or their log-likelihood become NaN or infinite."""


def svgd(
    x0: th.Tensor,
    score_fn: ScoreFn,
    steps: int,
    step_size: float,
    bandwidth: Bandwidth = "paper",
    repulsion_weight: float | th.Tensor = 1.0,
    log_q0: th.Tensor | None = None,
    owner: str = "SVGD",
    step_size_name: str = "svgd_step_size",
    max_expansion: float | None = 0.25,
) -> SVGDResult:
    """Run ``steps`` SVGD updates from ``x0`` and track the closed-form log-likelihood.

    :param x0: initial particles ``(batch, m, dim)`` (differentiable: gradients flow through the
        unrolled updates, as the S²AC actor loss requires).
    :param score_fn: maps particles ``(batch, m, dim)`` to ``score`` of the same shape (see module
        docstring for its scaling with ``repulsion_weight``).
    :param steps: number of updates ``L >= 0``.
    :param step_size: ``eps > 0``.
    :param bandwidth: ``"paper"``, ``"median"`` or fixed ``sigma^2``.
    :param repulsion_weight: ``w``, weight of the repulsive term (``alpha`` for S²AC, 1 for plain SVGD).
    :param log_q0: ``log q^0(x0)`` ``(batch, m)``; when given, ``log q^L`` is returned. A
        ``(batch, m, blocks)`` tensor tracks the log-likelihood per block of ``dim / blocks``
        consecutive coordinates (the prior's per-block terms plus each block's share of the trace;
        the blocks sum to the joint ``log q^L``). Q-STAC uses one block per horizon step.
    :param owner: name used in error messages (the algorithm).
    :param step_size_name: the user-facing parameter name of ``step_size`` for error messages.
    :param max_expansion: keeps the closed-form log-likelihood inside its domain of validity.
        Theorem 3.1 needs ``eps * ||grad h|| << 1`` (Proposition 3.2: ``eps << sigma``) for the map
        ``x + eps h(x)`` to be invertible and its log-determinant to be its first-order trace. The
        repulsive part of the Jacobian, ``w / (m sigma^2) sum_{j != i} k_ij [I - (x_i - x_j)(x_i -
        x_j)^T / sigma^2]``, has operator norm at most ``w (m - 1) / (m sigma^2) < w / sigma^2``
        (each summand's eigenvalues lie in ``[1 - r^2 / sigma^2, 1]`` times ``k_ij <= 1``), whatever
        the dimension; it grows without bound as particles (and with them any spread-based
        bandwidth) shrink. The kernel variance is therefore floored at ``eps * w / max_expansion``,
        which holds ``eps * ||grad h_repulsive|| <= max_expansion``: exactly the bound the theorem
        needs, not the trace's ``dim`` times larger one. (The attractive part's Jacobian,
        ``sum_j k_ij (x_j - x_i) s_j^T / (m sigma^2)``, also falls with ``sigma``, so the floor bounds
        it for bounded scores; its size in the score is the step size's business.) Without the
        floor an actor can collapse its initial Gaussian and harvest an unbounded "entropy" from
        the first-order trace (seen on Pendulum-v1: entropy estimate 8e5, critic loss 3e8).
        ``None`` disables it.
    :raises SVGDDivergenceError: if particles, scores or log-likelihoods become non-finite.
    """
    x = x0
    log_q = log_q0
    floor = None if max_expansion is None else step_size * repulsion_weight / max_expansion
    if isinstance(floor, th.Tensor):  # a learned temperature: the floor is a constant of each call
        floor = floor.detach()

    def bandwidth_of(sq_dists: th.Tensor) -> th.Tensor:
        sigma2 = kernel_bandwidth(sq_dists, bandwidth)
        return sigma2 if floor is None else th.clamp_min(sigma2, floor)

    sigma2 = bandwidth_of(pairwise_sq_dists(x0))
    # Per-step flags stay on the device; one sync at the end. Acting (no log-likelihood) checks only
    # the final particles: a NaN or inf anywhere in the flow propagates into them.
    track_steps = log_q is not None
    flags: list[th.Tensor] = []
    floored_steps: list[th.Tensor] = []
    for _ in range(steps):
        score = score_fn(x)
        sq_dists = pairwise_sq_dists(x)
        sigma2 = bandwidth_of(sq_dists)
        kernel = rbf_kernel(sq_dists, sigma2)
        direction = stein_direction(x, score, kernel, sigma2, repulsion_weight)
        if log_q is not None and log_q.dim() == 3:
            per_coordinate = stein_trace(
                x, score, kernel, sigma2, sq_dists, repulsion_weight, per_coordinate=True
            )
            log_q = log_q - step_size * per_coordinate.view(*log_q.shape, -1).sum(-1)
        elif log_q is not None:
            log_q = log_q - step_size * stein_trace(x, score, kernel, sigma2, sq_dists, repulsion_weight)
        x = x + step_size * direction
        if track_steps:
            flags.append(th.stack([th.isfinite(score).all(), th.isfinite(x).all()]))
            if floor is not None:
                floored_steps.append((sigma2.view(-1) <= floor * (1 + 1e-6)).to(x.dtype).mean())
    if not track_steps and steps > 0 and not bool(th.isfinite(x).all()):
        raise SVGDDivergenceError(
            f"{owner}: the SVGD particles became NaN/inf within {steps} steps. The step size "
            f"{step_size_name}={step_size} is too large for the current critic's gradients: reduce "
            f"{step_size_name} (or the number of SVGD steps), or lower the critic learning rate."
        )
    if flags:
        finite = th.stack(flags)  # (steps, 2)
        if not bool(finite.all()):
            bad_step, bad_what = (~finite).nonzero()[0].tolist()
            what = "score (gradient of the target log-density)" if bad_what == 0 else "particles"
            raise SVGDDivergenceError(
                f"{owner}: the SVGD {what} became NaN/inf at step {bad_step + 1} of {steps}. "
                f"The step size {step_size_name}={step_size} is too large for the current critic's "
                f"gradients: reduce {step_size_name} (or the number of SVGD steps), or lower the "
                f"critic learning rate."
            )
    if log_q is not None and not bool(th.isfinite(log_q).all()):
        raise SVGDDivergenceError(
            f"{owner}: the SVGD log-likelihood became NaN/inf. Reduce {step_size_name}={step_size}: the "
            "closed-form entropy needs eps * ||grad h|| << 1 (S²AC Theorem 3.1)."
        )
    # A training-time diagnostic (acting skips the sync): the share of (step, density) pairs whose
    # kernel variance sat at the floor.
    floored = float(th.stack(floored_steps).mean()) if floored_steps else 0.0
    return SVGDResult(particles=x, log_prob=log_q, bandwidth=sigma2.view(-1), floored=floored)
