"""Bound constraints on SVGD particles by an augmented Lagrangian (Q-STAC paper, Eq. 12-15).

Each particle ``x`` must satisfy ``g(x) = clamp(x, lower, upper) - x = 0``. The SVGD target's
log-density ``log p`` is replaced by the augmented Lagrangian (Eq. 14)::

    L(x, lambda) = log p(x) - lambda^T g(x) - c / 2 ||g(x)||^2

whose gradient adds, on the coordinates outside the bounds (``dg/dx = -1`` there, 0 inside),
``lambda + c g(x)`` to the score: a force back towards the violated bound that grows with the
violation. Between SVGD steps the multipliers follow the method of multipliers,
``lambda <- lambda + eta g(x)``: for a particle above ``upper`` (``g < 0``) ``lambda`` becomes
negative and keeps pushing down even when the violation shrinks, which the quadratic penalty alone
does not. (The paper writes the update as ``lambda + eta grad_lambda L``, i.e. ``lambda - eta g``;
with Eq. 14's signs that would push violating particles further out, so we use the sign of the
method of multipliers, which the tests check pushes particles back inside.)

Multipliers are dual variables: constants for the actor's gradient (updated without a graph).
They start at zero for every new SVGD run (a new state gives a new problem).

One signed multiplier per coordinate stands for the two one-sided ones (upper and lower bound,
each ``>= 0`` in the method of multipliers): a negative value is the upper bound's, a positive one
the lower bound's. A coordinate that jumps from above ``upper`` to below ``lower`` (or back) between
two steps would otherwise be pushed *outwards* by the multiplier built up on the other side; its
multiplier restarts from zero instead, which is what the projection of the one-sided multipliers
onto ``>= 0`` gives (only the violated side's multiplier acts, and it has not been built up yet).
"""

from __future__ import annotations

import torch as th


class BoxAugmentedLagrangian:
    """Augmented-Lagrangian force keeping particles ``(batch, m, dim)`` within ``[lower, upper]``.

    :param lower: lower bounds, broadcastable to the particles (e.g. ``mu - 3 sigma``, ``(batch, 1, dim)``).
    :param upper: upper bounds, same shape.
    :param penalty: ``c > 0``, the quadratic penalty weight, in the units of the score it is added to.
    :param multiplier_step: ``eta > 0``, the multiplier step (the method of multipliers uses ``c``).
    """

    def __init__(self, lower: th.Tensor, upper: th.Tensor, penalty: float, multiplier_step: float):
        self.lower, self.upper = lower, upper
        self.penalty, self.multiplier_step = float(penalty), float(multiplier_step)
        self.multiplier: th.Tensor | None = None  # (batch, m, dim) once the first particles are seen

    def violation(self, x: th.Tensor) -> th.Tensor:
        """``g(x) = clamp(x, lower, upper) - x`` (zero inside the bounds)."""
        return th.maximum(th.minimum(x, self.upper), self.lower) - x

    def force(self, x: th.Tensor) -> th.Tensor:
        """``grad_x [-lambda^T g(x) - c/2 ||g(x)||^2]``, shape of ``x``; then the multiplier update.

        Called once per SVGD step with that step's particles: the force uses the multipliers of the
        previous steps, after which they absorb this step's violation.
        """
        g = self.violation(x)
        outside = (g != 0).to(x.dtype)
        multiplier = th.zeros_like(g).detach() if self.multiplier is None else self.multiplier
        multiplier = th.where(multiplier * g < 0, 0.0, multiplier)  # the other side's: restart
        force = multiplier * outside + self.penalty * g
        self.multiplier = (multiplier + self.multiplier_step * g).detach()
        return force

    def outside_share(self, x: th.Tensor) -> float:
        """Share of particle coordinates outside the bounds (a diagnostic)."""
        with th.no_grad():
            return float((self.violation(x) != 0).float().mean())
