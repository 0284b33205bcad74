"""Small distribution helpers shared by the Stein actors."""

from __future__ import annotations

import math

import torch as th

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)

#: The papers write Gaussians as ``N(mean, covariance)``: S²AC's Table 2 ``q0 = N(0, 6 I)`` (Fig. 4),
#: Table 3 ``N(0, 0.3 I)`` (multi-goal) and Table 4 ``N(0, 0.5 I)`` (MuJoCo) are covariances, so a
#: standard deviation ``init_std`` is the square root of the printed number. Default: Table 4's.
PAPER_INIT_STD = math.sqrt(0.5)


def truncated_standard_normal(shape: tuple[int, ...], bound: float | None, like: th.Tensor) -> th.Tensor:
    """Samples of ``N(0, 1)`` truncated to ``[-bound, bound]`` per coordinate (``None``: untruncated).

    Inverse-CDF sampling: exactly the distribution of "draw more particles than needed and keep
    those inside mu +- t sigma" (S²AC §3.1) without drawing and discarding.
    """
    if bound is None:
        return th.randn(shape, dtype=like.dtype, device=like.device)
    lo = 0.5 * math.erfc(bound / math.sqrt(2.0))  # Phi(-bound)
    uniform = th.rand(shape, dtype=like.dtype, device=like.device) * (1.0 - 2.0 * lo) + lo
    return th.special.ndtri(uniform).clamp(-bound, bound)


def truncated_normal_log_norm(bound: float | None) -> float:
    """``log(Phi(t) - Phi(-t))``, the log-mass a truncation at ``t`` standard deviations keeps."""
    if bound is None:
        return 0.0
    return math.log(math.erf(bound / math.sqrt(2.0)))


def diag_normal_log_prob(z: th.Tensor, log_std: th.Tensor, bound: float | None) -> th.Tensor:
    """``log N(mu + std * z; mu, std^2)`` summed over the last dim, truncation included.

    :param z: standardised samples ``(..., dim)``.
    :param log_std: ``(..., dim)`` (broadcastable).
    :param bound: truncation in standard deviations, or ``None``.
    """
    per_dim = -0.5 * z.pow(2) - _LOG_SQRT_2PI - log_std - truncated_normal_log_norm(bound)
    return per_dim.sum(-1)


def tanh_log_det(pre_tanh: th.Tensor) -> th.Tensor:
    """``sum log |d tanh(u) / du| = sum log(1 - tanh(u)^2)``, numerically stable, over the last dim."""
    return (2.0 * (math.log(2.0) - pre_tanh - th.nn.functional.softplus(-2.0 * pre_tanh))).sum(-1)
