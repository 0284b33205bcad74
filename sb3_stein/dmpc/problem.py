"""DMPC's value function, in torch for the critic and in casadi for the actor, and the actor's OCP.

Deep Value MPC (Farshidian, Hoeller, Hutter, CoRL 2019; shared/papers/004_e1bdd2b42101da57.txt):

* **Critic** ``V(t, s | theta)``: an MLP, "3 layers with 12 units each and tanh activations" (§6),
  conditioned on the goal and the time to reach it. Here the observation carries both (the
  environments of this package put the goal and the time to go into it), so the value takes the
  observation. It estimates the discounted **cost** to go (the paper minimises; the environment's
  cost is ``-reward``).
* **Actor** (Eq. 10): ``min_u gamma^H phi(x_H) + sum_k gamma^k dt (l(x_k) + 1/2 u_k' R u_k)`` subject to
  the model's dynamics, with the heuristic ``phi = V`` (Eq. 13) and the running cost of Eq. 14,
  ``l = -d_t V - f' d_x V + 1/2 d_x V' g R^-1 g' d_x V`` for the control-affine dynamics
  ``dx = (f + g u) dt`` (:mod:`sb3_stein.common.control_affine`). Time is a state (the time to go,
  whose drift is -1), so the time-to-go part of ``-d_t V`` is the time-to-go row of ``-f' d_x V``.
  **The discount's part of** ``-d_t V`` is added explicitly: ``rho V`` with ``rho = -ln(gamma) / dt``.
  The paper's ``V(t, x)`` is measured from the episode's start (its Appendix A.4 sets
  ``l(t, x) := gamma^(t - t0) q(t, x)``), so its ``-d_t V`` holds ``-ln(gamma) V`` per unit time; the
  critic here (and the paper's Eq. 11) estimates the value *from the current time*, which no longer
  depends on the clock, so that term must be written out. Without it the running cost is not the
  HJB's (the discounted HJB is ``rho V = min_u q + 1/2 u'Ru + d_x V'(f + g u)``), and the plan's
  total telescopes to ``V(x_0) - (1 - gamma) sum_k gamma^(k-1) V(x_k)``: the MPC is *rewarded* for
  passing through states of high cost, which made DMPC fall on Ballbot as its value improved
  (``benchmarks/results/dmpc_ballbot/NOTE.md``). ``tests/test_dmpc.py`` checks the term with the
  exact value of a discounted LQR problem.
  **A consequence for any value** (not only the optimal one): along any control,
  ``l + 1/2 u'Ru = rho V - dV/dt + 1/2 |R^(1/2) u + R^(-1/2) g' d_x V|^2``, so the plan cost of Eq. 10 with
  Eq. 13 and 14 is ``V(x_0)`` plus a nonnegative term that ``V``'s greedy control ``-R^-1 g' d_x V`` zeroes.
  Wherever that greedy control is feasible, the MPC's first control is it, whatever the horizon: the
  running-cost actor is the greedy policy of the learned value, and the horizon acts only through the
  control bounds, the stabilising cost below and the time discretisation (``tests/test_dmpc.py``).
  The value network is evaluated *symbolically* in casadi with its weights as the NLP's parameters,
  so the running cost's Jacobian and Hessian (third derivatives of the network) are exact; this is
  why the activation must be twice (here: infinitely) differentiable — ReLU is refused.
* The stabilising cost of Appendix B (the paper adds "a cost term that stabilizes the system in an
  upright position" without giving it): here ``1/2 sum_i w_i x_i^2`` with user weights ``w`` (zero
  by default), added to every stage.

The integral of Eq. 10 is discretised at the model's control step ``dt`` (rectangle rule for the
running cost, RK4 of the continuous dynamics between stages); the discount ``gamma`` is the one of
the value's Bellman targets (Eq. 11), per control step.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from torch import nn

from sb3_stein.common.backends import CASADI, rk4_step
from sb3_stein.common.control_affine import ControlAffineForm, control_affine_form
from sb3_stein.common.ocp import OptimalControlProblem

__all__ = ["ACTIVATIONS", "MLPValue", "ValueMPCProblem", "ValueNetwork"]

#: Activations whose derivatives of every order exist (the running cost's Hessian needs the
#: network's third derivatives): name -> (torch module, casadi function).
ACTIVATIONS: dict[str, tuple[type[nn.Module], str]] = {
    "tanh": (nn.Tanh, "tanh"),
    "sigmoid": (nn.Sigmoid, "sigmoid"),
    "softplus": (nn.Softplus, "softplus"),
    "silu": (nn.SiLU, "silu"),
}


def activation_name(activation_fn: Any) -> str:
    """The :data:`ACTIVATIONS` key of a torch activation class (or a name).

    :raises ValueError: naming ``activation_fn`` for an activation that is not twice differentiable.
    """
    for name, (module, _) in ACTIVATIONS.items():
        if activation_fn is module or activation_fn == name:
            return name
    label = getattr(activation_fn, "__name__", repr(activation_fn))
    raise ValueError(
        f"activation_fn: DMPC's running cost (Eq. 14) differentiates the value network twice inside the "
        f"MPC, so its activation must be smooth; {label} is not supported (allowed: "
        f"{', '.join(m.__name__ for m, _ in ACTIVATIONS.values())})"
    )


def _casadi_activation(name: str, z: Any) -> Any:
    import casadi as ca

    if name == "tanh":
        return ca.tanh(z)
    if name == "sigmoid":
        return 1 / (1 + ca.exp(-z))
    if name == "softplus":
        return ca.log1p(ca.exp(z))
    return z / (1 + ca.exp(-z))  # silu


@dataclass(frozen=True)
class MLPValue:
    """The value network's shape: what the torch critic and the casadi actor both build.

    :param input_dim: size of the value's input (the observation).
    :param net_arch: hidden layer sizes (the paper: ``(12, 12, 12)``).
    :param activation: an :data:`ACTIVATIONS` key.
    """

    input_dim: int
    net_arch: tuple[int, ...] = (12, 12, 12)
    activation: str = "tanh"

    @property
    def layer_sizes(self) -> list[tuple[int, int]]:
        """``(in, out)`` of each linear layer, the output layer last."""
        sizes = [self.input_dim, *self.net_arch, 1]
        return list(itertools.pairwise(sizes))

    @property
    def n_params(self) -> int:
        """Number of weights and biases (the NLP parameters of the actor's OCP)."""
        return sum(n_in * n_out + n_out for n_in, n_out in self.layer_sizes)

    def symbolic(self, x: Any, p: Any) -> Any:
        """``V(x)`` as a casadi expression of the state ``x (input_dim, 1)`` and the flat weights
        ``p (n_params, 1)`` in :meth:`ValueNetwork.flat_parameters`' order (each layer's weight
        ``(out, in)`` row by row, then its bias)."""
        import casadi as ca

        h, offset = x, 0
        layers = self.layer_sizes
        for i, (n_in, n_out) in enumerate(layers):
            weight = ca.reshape(p[offset : offset + n_in * n_out], n_in, n_out).T  # row-major (out, in)
            offset += n_in * n_out
            bias = p[offset : offset + n_out]
            offset += n_out
            h = weight @ h + bias
            if i < len(layers) - 1:
                h = _casadi_activation(self.activation, h)
        return h


class ValueNetwork(nn.Module):
    """``V(s | theta)`` in torch (the critic), the same function as :meth:`MLPValue.symbolic`.

    :param spec: the network's shape.
    """

    def __init__(self, spec: MLPValue) -> None:
        super().__init__()
        self.spec = spec
        activation = ACTIVATIONS[spec.activation][0]
        modules: list[nn.Module] = []
        layers = spec.layer_sizes
        for i, (n_in, n_out) in enumerate(layers):
            modules.append(nn.Linear(n_in, n_out))
            if i < len(layers) - 1:
                modules.append(activation())
        self.net = nn.Sequential(*modules)

    def forward(self, obs: th.Tensor) -> th.Tensor:
        """``(batch, input_dim) -> (batch,)``."""
        return self.net(obs).squeeze(-1)

    def flat_parameters(self) -> np.ndarray:
        """``(n_params,)`` float64: every layer's weight (row-major) then bias, first layer first."""
        parts = []
        for module in self.net:
            if isinstance(module, nn.Linear):
                parts += [module.weight.detach().reshape(-1), module.bias.detach()]
        return th.cat(parts).double().cpu().numpy()


class ValueMPCProblem(OptimalControlProblem):
    """DMPC's actor OCP (Eq. 10, 13, 14; module docstring). The NLP parameters are the value
    network's weights (the target network's, when acting).

    :param model: the dynamics model in control-affine form (``continuous_dynamics`` or ``f``/``g``)
        with the control step ``dt``.
    :param obs_dim: size of the observation (the MPC's state).
    :param u_low: lower control bounds (the environment's action Box).
    :param u_high: upper control bounds.
    :param value: the value function: :class:`MLPValue`, or any picklable object with ``n_params``
        and ``symbolic(x, p)`` (e.g. a known quadratic value in the tests).
    :param horizon: ``H``, the number of MPC stages.
    :param control_weight: ``R``: a number (``R = r I``) or ``(nu,)`` diagonal, > 0.
    :param discount: ``gamma`` per stage (Eq. 10).
    :param running_cost: use Eq. 14's running cost (``False``: the heuristic alone, the paper's
        ablation "without the running cost").
    :param stabilizing_weights: ``(obs_dim,)`` weights ``w >= 0`` of the stabilising cost
        ``1/2 sum_i w_i x_i^2`` (Appendix B), or ``None``.
    :param param_bound: the NLP parameters' Box ``[-param_bound, param_bound]`` (the layer needs a
        finite one; a network weight beyond it is refused when acting).
    """

    def __init__(
        self,
        model: Any,
        obs_dim: int,
        u_low: np.ndarray,
        u_high: np.ndarray,
        value: Any,
        horizon: int = 10,
        control_weight: float | np.ndarray = 1.0,
        discount: float = 0.99,
        running_cost: bool = True,
        stabilizing_weights: np.ndarray | None = None,
        param_bound: float = 1e6,
    ) -> None:
        self.model = model
        self.state_dim, self.control_dim = int(obs_dim), int(np.size(u_low))
        self.horizon = int(horizon)
        dt = getattr(model, "dt", None)
        if not isinstance(dt, (int, float)) or not np.isfinite(dt) or dt <= 0:
            raise ValueError(
                f"dynamics_model: {type(model).__name__} needs a control step dt > 0, got {dt!r}"
            )
        self.dt = float(dt)
        self.u_low, self.u_high = np.asarray(u_low, np.float64), np.asarray(u_high, np.float64)
        weights = np.broadcast_to(np.asarray(control_weight, np.float64), (self.control_dim,)).copy()
        if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
            raise ValueError(f"control_weight must be finite and > 0 (R is inverted), got {control_weight!r}")
        self.control_weight = weights
        self.discount = float(discount)
        self.running_cost = bool(running_cost)
        if stabilizing_weights is None:
            self.stabilizing_weights = np.zeros(self.state_dim)
        else:
            stab = np.asarray(stabilizing_weights, np.float64)
            if stab.shape != (self.state_dim,) or not np.all(np.isfinite(stab)) or np.any(stab < 0):
                raise ValueError(
                    f"stabilizing_weights must be {self.state_dim} finite numbers >= 0 (one per observation "
                    f"entry), got {stabilizing_weights!r}"
                )
            self.stabilizing_weights = stab
        self.value = value
        n = int(value.n_params)
        self.param_names = tuple(f"theta_{i}" for i in range(n))
        self.param_low, self.param_high = np.full(n, -float(param_bound)), np.full(n, float(param_bound))
        self.param_default = np.zeros(n)
        self._form: ControlAffineForm | None = None
        self.form()  # checks the model now: a clear error at construction, not at the first solve

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_form"] = None  # closures over casadi: rebuilt on use
        return state

    def form(self) -> ControlAffineForm:
        """The model's control-affine form (built and checked once)."""
        if self._form is None:
            self._form = control_affine_form(self.model, self.state_dim, self.control_dim)
        return self._form

    def dynamics(self, x: Any, u: Any) -> Any:
        """One RK4 step of the model's continuous dynamics ``f + g u`` over ``dt``."""
        ode = self.form().ode
        return rk4_step(lambda x_, u_, be: ode(x_, u_), x, u, self.dt, CASADI)

    def value_function(self, x: Any, p: Any) -> Any:
        """``V(x | p)`` (casadi)."""
        return self.value.symbolic(x, p)

    @property
    def discount_rate(self) -> float:
        """``rho = -ln(gamma) / dt``, the continuous-time discount rate of the per-stage ``gamma``."""
        return -float(np.log(self.discount)) / self.dt

    def running_cost_rate(self, x: Any, p: Any) -> Any:
        """Eq. 14 for a value measured from the current time:
        ``rho V - f' d_x V + 1/2 d_x V' g R^-1 g' d_x V`` (casadi; ``rho V`` and the time to go are
        the two parts of ``-d_t V``, see the module)."""
        import casadi as ca

        drift, matrix = self.form().parts(x)
        value = self.value_function(x, p)
        grad = ca.gradient(value, x)
        g_grad = matrix.T @ grad  # (nu, 1)
        rate = -drift.T @ grad + 0.5 * ca.sum1(g_grad**2 / self.control_weight)
        if self.discount < 1.0:
            rate = rate + self.discount_rate * value
        return rate

    def stage_cost(self, x: Any, u: Any, p: Any) -> Any:
        """``dt (l(x) + 1/2 u' R u + 1/2 sum_i w_i x_i^2)``; ``l = 0`` without the running cost."""
        import casadi as ca

        rate = 0.5 * ca.sum1(self.control_weight * u**2) + 0.5 * ca.sum1(self.stabilizing_weights * x**2)
        if self.running_cost:
            rate = rate + self.running_cost_rate(x, p)
        return self.dt * rate

    def terminal_cost(self, x: Any, p: Any) -> Any:
        """Eq. 13: ``phi(x_H) = V(x_H)``."""
        return self.value_function(x, p)
