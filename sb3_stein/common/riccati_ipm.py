"""A batched primal-dual interior point method for box-constrained OCPs, Newton steps by Riccati recursion.

Why (issue 15, benchmarks/results/mpc_profile): fatrop solves the MPC layer's small problems one at a
time and spends about 86 % of a solve in its own bookkeeping and casadi's glue, about 0.17 M instructions
per iteration on the cart-pole's 29 variables. Here a whole iteration of one sample (derivatives, Riccati
recursion, barrier update, step lengths, line search, multiplier update) is straight-line code generated
by casadi from per-stage pieces, expanded to scalar operations where that stays small (elsewhere the dense
Riccati stage is a C kernel with loops, :mod:`sb3_stein.common.riccati_stage_c`), compiled, chained
``ITERATIONS_PER_CALL`` times and mapped over the batch; Python only hands the rows that have not
converged to the next call, through casadi's FunctionBuffer (no copies into casadi matrices). The
sensitivities at a solution are one more Riccati recursion (:meth:`RiccatiIPM.vjp`).
Measured (benchmarks/results/speed_sac_mpc_riccati_v4, idle machine, 1 thread, two runs): the cart-pole
at T = 20, batch 256, forward + backward 0.39-0.42x (cold) and 0.28x (warm) fatrop's time, the backward
pass alone 1/10; SAC-FOP's gradient step (T = 5, batch 64) 0.38-0.39x; the chain (not expanded: too
large) 0.36-0.39x (benchmarks/results/speed_chain_mpc_riccati_v4).

The problem (:mod:`sb3_stein.common.ocp`, per sample)::

    min   sum_k w_k l(x_k, u_k, p_k) + w_N V(x_N, p_N)
    s.t.  x_0 = s,   x_{k+1} = f(x_k, u_k),   u_low <= u_k <= u_high,   x_low <= x_k <= x_high (k >= 1)

The method is IPOPT's (Waechter and Biegler 2006, "On the implementation of an interior-point filter
line-search algorithm for large-scale nonlinear programming", Math. Prog. 106), restricted to this
structure, vectorised over the batch, every sample with its own barrier parameter, regularisation and
step length:

* barrier problem ``phi_mu = J - mu sum log(slacks)``; primal-dual Newton step (Eq. 13 of the paper,
  with the bound multipliers eliminated, Eq. 11/13), whose linear system is the KKT system of an
  equality-constrained LQ problem, solved by the Riccati recursion (the dynamic-programming
  factorisation fatrop and HPIPM use) in ``O(N (nx + nu)^3)``;
* initial point (Section 3.6): the primal guess pushed inside its bounds (``bound_push``,
  ``bound_frac``), bound multipliers 1, dynamics multipliers from the stationarity in the states unless
  one exceeds 1e3, then zero (:meth:`RiccatiIPM.initial_multipliers`);
* inertia correction (Section 3.1, Algorithm IC): the reduced Hessian is positive definite iff every
  stage's ``R + B' P B`` is (Cholesky pivots); where not, ``delta I`` is added to the Lagrangian's
  Hessian: none first, then ``1e-4`` (a third of the last one where the last iteration needed one),
  growing ``x 100`` (``x 8`` after a regularised iteration). IPOPT's whole iteration evaluates the
  Hessian once and factorises it for ``N_DELTAS = 3`` values of ``delta`` (none and the next two trials)
  and takes the smallest that works (one trial per evaluation cost 2.1 evaluations per iteration on the
  cart-pole at T = 20, cold); where none works, the next ``N_MORE_DELTAS`` in the same iteration
  (:meth:`RiccatiIPM._ipopt_iteration`), and only if those fail too the sample stays put and goes on
  with larger values in its next iteration. Where the last iteration needed no correction, a cheaper one
  is tried first (no regularisation, the full step only) and kept where it gives the whole iteration's
  result (:meth:`RiccatiIPM._iteration_function`);
* fraction-to-the-boundary rule (Eq. 15, ``tau = max(0.99, 1 - mu)``), IPOPT's filter acceptance tests
  against the current iterate (Eq. 18-20) for the full step and ``N_ALPHAS - 1`` halvings; if none is
  accepted the shortest is taken (the paper's restoration phase is not implemented); the ``kappa_Sigma``
  safeguard of the bound multipliers (Eq. 16);
* monotone barrier update (Eq. 7): ``mu <- max(tol / 10, min(0.2 mu, mu^1.5))`` while the barrier
  problem's error is below ``10 mu`` (at most ``MU_UPDATES`` times per iteration); a sample is converged
  when its unbarriered error is below ``tol``.

What the paper gives and this module drops: the filter's memory, a line search beyond ``N_ALPHAS``
trials, second-order corrections, the restoration phase and the scaling of the problem. The MPC layer
(``MPCLayer(solver="riccati")``) therefore never trusts this solver's own verdict: it certifies every
solution with its KKT check and hands the samples that fail it to fatrop (started from this solver's
last iterate).

Shapes: ``X (batch, N + 1, nx)``, ``U (batch, N, nu)``, ``Pi (batch, N + 1, nx)`` (``Pi[:, k + 1]`` is
the multiplier of ``f(x_k, u_k) - x_{k+1} = 0``, ``Pi[:, 0]`` of ``s - x_0 = 0``), stage parameters
``(batch, N + 1, n_p)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sb3_stein.common.batched_call import call_batched

__all__ = ["RiccatiIPM", "RiccatiResult"]

#: IPOPT's constants (Waechter and Biegler 2006, Table 1 and Section 3).
KAPPA_EPS, KAPPA_MU, THETA_MU = 10.0, 0.2, 1.5
BOUND_PUSH, BOUND_FRAC = 1e-2, 1e-2
KAPPA_SIGMA = 1e10
GAMMA_THETA, GAMMA_PHI, ETA_PHI = 1e-5, 1e-8, 1e-8
S_THETA, S_PHI, SWITCH_DELTA = 1.1, 2.3, 1.0
DELTA_FIRST, DELTA_GROW_FIRST, DELTA_GROW, DELTA_SHRINK, DELTA_MAX = 1e-4, 100.0, 8.0, 1.0 / 3.0, 1e20
#: IPOPT's initial bound multipliers (``bound_mult_init_val``) and the largest initial equality multipliers it
#: keeps (``constr_mult_init_max``; larger ones are set to zero), as fatrop does too.
BOUND_MULT_INIT, CONSTR_MULT_INIT_MAX = 1.0, 1e3


@dataclass
class RiccatiResult:
    """What :meth:`RiccatiIPM.solve` returns (numpy, float64).

    :ivar X: ``(batch, N + 1, nx)`` states of the last iterate.
    :ivar U: ``(batch, N, nu)`` controls.
    :ivar Pi: ``(batch, N + 1, nx)`` dynamics multipliers (see the module docstring for the sign).
    :ivar z_upper: ``(batch, N, nx + nu)`` multipliers of the upper bounds of ``(u_k, x_{k+1})``.
    :ivar z_lower: ``(batch, N, nx + nu)`` multipliers of the lower bounds.
    :ivar cost: ``(batch,)`` the objective ``J``.
    :ivar defects: ``(batch, N, nx)`` ``f(x_k, u_k) - x_{k+1}``.
    :ivar converged: ``(batch,)`` whether the unbarriered KKT error fell below ``tol``.
    :ivar iterations: ``(batch,)`` Newton iterations until then (``max_iter`` for the others).
    """

    X: np.ndarray
    U: np.ndarray
    Pi: np.ndarray
    z_upper: np.ndarray
    z_lower: np.ndarray
    cost: np.ndarray
    defects: np.ndarray
    converged: np.ndarray
    iterations: np.ndarray


def _cholesky_solve(matrix: Any, rhs: Any) -> tuple[Any, Any]:
    """Solve ``matrix @ out = rhs`` symbolically (casadi SX) by Cholesky, for a small symmetric ``matrix``.

    :return: ``out`` and the smallest pivot relative to the largest diagonal entry: the matrix is positive
        definite iff it is above ``PIVOT_TOL`` (below, ``out`` is garbage).
    """
    import casadi as ca

    n = matrix.size1()
    lower = [[ca.SX(0) for _ in range(n)] for _ in range(n)]
    scale = ca.mmax(ca.fabs(ca.diag(matrix))) + 1e-300
    pivots = []
    for j in range(n):
        pivot = matrix[j, j] - sum((lower[j][i] ** 2 for i in range(j)), ca.SX(0))
        pivots.append(pivot / scale)
        root = ca.sqrt(ca.fmax(pivot, 1e-300))
        lower[j][j] = root
        for i in range(j + 1, n):
            lower[i][j] = (matrix[i, j] - sum((lower[i][q] * lower[j][q] for q in range(j)), ca.SX(0))) / root
    y: list[Any] = []
    for i in range(n):
        y.append(
            (rhs[i, :] - sum((lower[i][q] * y[q] for q in range(i)), ca.SX.zeros(1, rhs.size2())))
            / lower[i][i]
        )
    out: list[Any] = [None] * n
    for i in reversed(range(n)):
        tail = sum((lower[q][i] * out[q] for q in range(i + 1, n)), ca.SX.zeros(1, rhs.size2()))
        out[i] = (y[i] - tail) / lower[i][i]
    return ca.vertcat(*out), ca.mmin(ca.vertcat(*pivots))


def _riccati_stage_sx(nx: int, nu: int) -> Any:
    """One stage of the Riccati recursion (the cost-to-go of ``x_k`` from that of ``x_{k+1}``) as casadi
    SX, expanded to scalar operations: ``(H, A, B, c, g, sig_u, sig_x, gb_u, gb_x, P_next, p_next, delta) ->
    (P_k, p_k, K, kff, min_pivot)`` (the formulas: :mod:`sb3_stein.common.riccati_stage_c`, which computes the
    same with loops)."""
    import casadi as ca

    m = nx + nu
    H, As_, Bs_ = ca.SX.sym("H", m, m), ca.SX.sym("A", nx, nx), ca.SX.sym("B", nx, nu)
    cs_, g_ = ca.SX.sym("c", nx), ca.SX.sym("g", m)
    P_next, p_next = ca.SX.sym("P_next", nx, nx), ca.SX.sym("p_next", nx)
    sig_u, sig_x, gb_u, gb_x = (
        ca.SX.sym("sig_u", nu),
        ca.SX.sym("sig_x", nx),
        ca.SX.sym("gb_u", nu),
        ca.SX.sym("gb_x", nx),
    )
    delta = ca.SX.sym("delta")
    Pc = ca.mtimes(P_next, cs_) + p_next
    PA, PB = ca.mtimes(P_next, As_), ca.mtimes(P_next, Bs_)
    Qxx = H[nu:, nu:] + ca.diag(sig_x) + delta * ca.DM.eye(nx) + ca.mtimes(As_.T, PA)
    Quu = H[:nu, :nu] + ca.diag(sig_u) + delta * ca.DM.eye(nu) + ca.mtimes(Bs_.T, PB)
    Qux = H[:nu, nu:] + ca.mtimes(Bs_.T, PA)
    qx = g_[nu:] + gb_x + ca.mtimes(As_.T, Pc)
    qu = g_[:nu] + gb_u + ca.mtimes(Bs_.T, Pc)
    solved, min_pivot = _cholesky_solve(Quu, ca.horzcat(Qux, qu))
    K, kff = -solved[:, :nx], -solved[:, nx]
    # P_k is symmetric: only its upper triangle is computed (the expressions of the lower one are then
    # not part of the Function: 22 % fewer instructions in the chain's stage, nx = 21).
    upper = ca.triu(Qxx + ca.mtimes(Qux.T, K))
    P_k = ca.densify(upper + ca.triu(upper, False).T)
    p_k = qx + ca.mtimes(Qux.T, kff)
    return _sx_function(
        "riccati_stage",
        [H, As_, Bs_, cs_, g_, sig_u, sig_x, gb_u, gb_x, P_next, p_next, delta],
        [P_k, p_k, K, kff, min_pivot],
    )


#: A stage's ``R + B' P B`` counts as positive definite when its smallest Cholesky pivot is above this
#: fraction of its largest diagonal entry.
PIVOT_TOL = 1e-12
#: Barrier updates (Eq. 7) at most in one iteration (IPOPT repeats them while the error allows).
MU_UPDATES = 5
#: Step lengths of the backtracking line search IPOPT's whole iteration tries (``alpha_max * 2^-t``);
#: a sample that accepts none of them takes the shortest. On the cart-pole (loaded machine, CPU time)
#: 4 instead of 2 cost 13 % (T = 5) and 38 % (T = 20) more time per solve and changed the mean
#: iterations by about 1 %.
N_ALPHAS = 2
#: The primal-dual state of a row between iterations (the inputs and outputs of the iteration Functions).
STATE_NAMES = ["X", "U", "Pi", "zl", "zu", "mu", "delta_last", "converged", "iterations"]
#: Iterations one call of the compiled iteration Function makes (rows that converge on the way stay put).
ITERATIONS_PER_CALL = 4
#: Regularisations IPOPT's whole iteration factorises the Hessian for (none and the next two trials).
#: Measured on the cart-pole at T = 20, cold: with two, 44.7 iterations and 39 of 256 samples left to
#: fatrop; with three, 38.8 and none; with four, 36.0 and 2, at a higher cost per iteration.
N_DELTAS = 3
#: Regularisations a continuation of IPOPT's whole iteration tries where none of its ``N_DELTAS`` worked
#: (:meth:`RiccatiIPM._ipopt_iteration`).
N_MORE_DELTAS = 4
#: A whole-horizon function whose expanded form (scalar operations, casadi SX) has at most this many
#: instructions is expanded before it is compiled: on the cart-pole at T = 5 the Newton step ran 2.4x
#: faster expanded than as calls of the stage functions (MX), at T = 20 1.2x; the chain's stays MX.
EXPAND_MAX_INSTRUCTIONS = 150_000


class RiccatiIPM:
    """Batched interior point solver of one OCP structure (see the module docstring).

    An iteration of one sample is one casadi Function (:meth:`_iteration_body`), built from per-stage
    pieces called ``N`` times, expanded to scalar operations when that stays below
    :data:`EXPAND_MAX_INSTRUCTIONS`; ``ITERATIONS_PER_CALL`` of them are chained
    (:meth:`_iteration_function`), compiled with ``function_options`` and mapped over the rows still
    iterating.

    :param nx: state size.
    :param nu: control size.
    :param horizon: ``N``.
    :param dynamics: casadi Function ``(x, u) -> x_next``.
    :param stage_cost: casadi Function ``(x, u, p) -> l`` (everything the NLP adds to a stage, e.g. a
        control barrier, included).
    :param terminal_cost: casadi Function ``(x, p) -> V``.
    :param n_p: size of one stage's parameter vector.
    :param weights: ``(N + 1,)`` the factors of the stage costs and (last) the terminal cost.
    :param u_low: ``(nu,)`` finite control bounds.
    :param u_high: ``(nu,)``.
    :param x_low: ``(nx,)`` bounds on ``x_1..x_N`` (``-inf`` where free) or ``None``.
    :param x_high: ``(nx,)`` or ``None``.
    :param tol: convergence tolerance of the unbarriered KKT error (IPOPT's scaled ``E_0``).
    :param max_iter: Newton iterations at most.
    :param mu_init: the barrier parameter of the first iteration.
    :param function_options: casadi options of the compiled Functions (the chained iterations, the
        residual, the initial multipliers, the parameter gradient and the sensitivities), e.g. JIT compilation
        (:func:`sb3_stein.common.jit_cache.jit_options`).
    """

    def __init__(
        self,
        nx: int,
        nu: int,
        horizon: int,
        dynamics: Any,
        stage_cost: Any,
        terminal_cost: Any,
        n_p: int,
        weights: np.ndarray,
        u_low: np.ndarray,
        u_high: np.ndarray,
        x_low: np.ndarray | None,
        x_high: np.ndarray | None,
        tol: float = 1e-8,
        max_iter: int = 100,
        mu_init: float = 0.1,
        function_options: dict[str, Any] | None = None,
    ) -> None:
        self.nx, self.nu, self.horizon, self.n_p = int(nx), int(nu), int(horizon), int(n_p)
        self.tol, self.max_iter, self.mu_init = float(tol), int(max_iter), float(mu_init)
        #: Threads of the mapped calls (casadi's ``map(..., "thread", n)``); set it before a solve.
        self.n_threads = 1
        self.mu_min = self.tol / 10.0
        self.weights = np.asarray(weights, dtype=np.float64).reshape(self.horizon + 1)
        inf = np.inf
        # Bounds of one stage's (u_k, x_{k+1}): the layout of every (batch, N, nu + nx) array here.
        x_lo = np.full(nx, -inf) if x_low is None else np.asarray(x_low, np.float64)
        x_hi = np.full(nx, inf) if x_high is None else np.asarray(x_high, np.float64)
        self.low = np.concatenate([np.asarray(u_low, np.float64), x_lo])
        self.high = np.concatenate([np.asarray(u_high, np.float64), x_hi])
        self.has_low, self.has_high = np.isfinite(self.low), np.isfinite(self.high)
        self._low0 = np.where(self.has_low, self.low, 0.0)
        self._high0 = np.where(self.has_high, self.high, 0.0)
        self._build(dynamics, stage_cost, terminal_cost, dict(function_options or {}))
        self._maps: dict[tuple[str, int, int], Any] = {}

    # ------------------------------------------------------------------ symbolic pieces

    def _build(self, dynamics: Any, stage_cost: Any, terminal_cost: Any, options: dict[str, Any]) -> None:
        import casadi as ca

        nx, nu, N, n_p = self.nx, self.nu, self.horizon, self.n_p
        m = nx + nu
        x, u, p, w = ca.SX.sym("x", nx), ca.SX.sym("u", nu), ca.SX.sym("p", n_p), ca.SX.sym("w")
        pi_next, x_next = ca.SX.sym("pi_next", nx), ca.SX.sym("x_next", nx)
        f = dynamics(x, u)
        cost = w * stage_cost(x, u, p)
        lagrangian = cost + ca.dot(pi_next, f)
        A, B = ca.jacobian(f, x), ca.jacobian(f, u)
        grad_lx = ca.gradient(lagrangian, x)  # l_x + A' pi_next
        grad_lu = ca.gradient(lagrangian, u)
        grad_cx, grad_cu = ca.gradient(cost, x), ca.gradient(cost, u)
        first = _sx_function("first", [x, u, p, pi_next, w], [cost, f, grad_lx, grad_lu])
        value = _sx_function("value", [x, u, p, w], [cost, f])
        terminal = w * terminal_cost(x, p)
        terminal_first = _sx_function("terminal_first", [x, p, w], [terminal, ca.gradient(terminal, x)])

        # One Riccati stage: derivatives at (x_k, u_k) (once per step), then the cost-to-go of x_k from that
        # of x_{k+1} (once per regularisation tried).
        hess = ca.hessian(lagrangian, ca.vertcat(x, u))[0]
        c = f - x_next
        derivatives = _sx_function(
            "derivatives", [x, u, p, pi_next, w, x_next], [hess, A, B, c, ca.vertcat(grad_cu, grad_cx)]
        )
        riccati_stage = self._riccati_stage(derivatives, options)
        t_hess, t_grad = ca.hessian(terminal, x)
        terminal_derivatives = _sx_function("terminal_derivatives", [x, p, w], [t_hess, t_grad])

        # Whole-horizon functions of one sample (MX graphs calling the stage pieces).
        X, U = ca.MX.sym("X", nx, N + 1), ca.MX.sym("U", nu, N)
        Pm, Pi = ca.MX.sym("P", n_p, N + 1), ca.MX.sym("Pi", nx, N + 1)
        sig, gb = ca.MX.sym("sig", m, N), ca.MX.sym("gb", m, N)
        wts = [float(v) for v in self.weights]

        total: Any = 0
        defects, grads = [], []
        pieces = [first(X[:, k], U[:, k], Pm[:, k], Pi[:, k + 1], wts[k]) for k in range(N)]
        t_val, t_g = terminal_first(X[:, N], Pm[:, N], wts[N])
        for k in range(N):
            l_k, f_k, _, gu_k = pieces[k]
            total = total + l_k
            defects.append(f_k - X[:, k + 1])
            grad_x_next = (pieces[k + 1][2] if k + 1 < N else t_g) - Pi[:, k + 1]
            grads.append(ca.vertcat(gu_k, grad_x_next))
        pi0 = pieces[0][2]
        self._residual_fn, residual = _function(
            "riccati_residual",
            [X, U, Pm, Pi],
            [total + t_val, ca.horzcat(*defects), ca.horzcat(*grads), pi0],
            ["X", "U", "P", "Pi"],
            ["J", "defects", "grad", "pi0"],
            _named(options, "res"),
        )
        # The costates that make the Lagrangian stationary in x_1..x_N (given the bound multipliers' net
        # force ``bound_x = zu - zl`` on x_1..x_N), backwards from the terminal cost: the initial multipliers.
        bound_x = ca.MX.sym("bound_x", nx, N)
        pi_k = t_g + bound_x[:, N - 1]
        costates = [pi_k]
        for k in reversed(range(N)):
            pi_k = first(X[:, k], U[:, k], Pm[:, k], pi_k, wts[k])[2] + (bound_x[:, k - 1] if k > 0 else 0)
            costates.insert(0, pi_k)
        self._costate_fn, _ = _function(
            "riccati_costate",
            [X, U, Pm, bound_x],
            [ca.horzcat(*costates)],
            ["X", "U", "P", "bound_x"],
            ["Pi"],
            _named(options, "costate"),
        )
        total = 0
        theta: Any = 0
        for k in range(N):
            l_k, f_k = value(X[:, k], U[:, k], Pm[:, k], wts[k])
            total = total + l_k
            theta = theta + ca.norm_1(f_k - X[:, k + 1])
        total = total + terminal_first(X[:, N], Pm[:, N], wts[N])[0]
        value_mx = ca.Function("riccati_value", [X, U, Pm], [total, theta], ["X", "U", "P"], ["J", "theta"])

        zero_x = ca.MX.zeros(nx, 1)
        # (reorder the stage Hessian as (u, x): the Riccati stage reads H[:nu, :nu] as R)
        order = list(range(nx, m)) + list(range(nx))
        stages = []
        for k in range(N):
            hess_k, A_k, B_k, c_k, g_k = derivatives(
                X[:, k], U[:, k], Pm[:, k], Pi[:, k + 1], wts[k], X[:, k + 1]
            )
            stages.append((hess_k[order, order], A_k, B_k, c_k, g_k))
        t_hess_v, t_grad_v = terminal_derivatives(X[:, N], Pm[:, N], wts[N])
        # The barrier objective's gradient along (u_k, x_{k+1}), for the slope of the step.
        grad_W = (
            ca.horzcat(
                *[
                    ca.vertcat(stages[k][4][:nu], stages[k + 1][4][nu:] if k + 1 < N else t_grad_v)
                    for k in range(N)
                ]
            )
            + gb
        )

        def step_function(n_deltas: int) -> Any:
            """The Newton step for each of ``n_deltas`` regularisations."""
            deltas = ca.MX.sym("deltas", n_deltas)
            outputs = [newton_step(deltas[j]) for j in range(n_deltas)]
            return ca.Function(
                "riccati_step",
                [X, U, Pm, Pi, sig, gb, deltas],
                [ca.horzcat(*[o[i] for o in outputs]) for i in range(3)]
                + [ca.vertcat(*[o[i] for o in outputs]) for i in (3, 4)],
                ["X", "U", "P", "Pi", "sig", "gb", "deltas"],
                ["dX", "dU", "Pi_new", "min_pivot", "slope"],
            )

        def newton_step(dl: Any) -> tuple[Any, Any, Any, Any, Any]:
            P_cur = t_hess_v + ca.diag(sig[nu:, N - 1]) + dl * ca.DM.eye(nx)
            p_cur = t_grad_v + gb[nu:, N - 1]
            Ps: list[Any] = [None] * (N + 1)
            ps: list[Any] = [None] * (N + 1)
            Ks: list[Any] = [None] * N
            kffs: list[Any] = [None] * N
            Ps[N], ps[N] = P_cur, p_cur
            pivots = []
            for k in reversed(range(N)):
                sx = sig[nu:, k - 1] if k > 0 else zero_x
                gx = gb[nu:, k - 1] if k > 0 else zero_x
                hess_k, A_k, B_k, c_k, g_k = stages[k]
                P_cur, p_cur, Ks[k], kffs[k], piv = riccati_stage(
                    hess_k, A_k, B_k, c_k, g_k, sig[:nu, k], sx, gb[:nu, k], gx, P_cur, p_cur, dl
                )
                Ps[k], ps[k] = P_cur, p_cur
                pivots.append(piv)
            dx = ca.MX.zeros(nx, 1)
            dXs, dUs, pis = [dx], [], [ps[0]]
            for k in range(N):
                du = ca.mtimes(Ks[k], dx) + kffs[k]
                dx = ca.mtimes(stages[k][1], dx) + ca.mtimes(stages[k][2], du) + stages[k][3]
                dUs.append(du)
                dXs.append(dx)
                pis.append(ca.mtimes(Ps[k + 1], dx) + ps[k + 1])
            dU_all, dX_all = ca.horzcat(*dUs), ca.horzcat(*dXs)
            slope = ca.sum1(ca.sum2(grad_W * ca.vertcat(dU_all, dX_all[:, 1:])))
            return dX_all, dU_all, ca.horzcat(*pis), ca.mmin(ca.vertcat(*pivots)), slope

        self._iteration_fn = self._iteration_function(residual, step_function, value_mx, options)
        p_sym = ca.SX.sym("p", n_p)
        stage_grad_p = ca.gradient(w * stage_cost(x, u, p_sym), p_sym)
        terminal_grad_p = ca.gradient(w * terminal_cost(x, p_sym), p_sym)
        stage_grad = _sx_function("riccati_param", [x, u, p_sym, w], [stage_grad_p])
        terminal_grad = _sx_function("riccati_tparam", [x, p_sym, w], [terminal_grad_p])
        grads_p = [stage_grad(X[:, k], U[:, k], Pm[:, k], wts[k]) for k in range(N)]
        grads_p.append(terminal_grad(X[:, N], Pm[:, N], wts[N]))
        self._param_fn, _ = _function(
            "riccati_param_gradient",
            [X, U, Pm],
            [ca.densify(ca.horzcat(*grads_p))],
            ["X", "U", "P"],
            ["grad_P"],
            _named(options, "param"),
        )

        # The sensitivities at a solution (see vjp): the KKT system's Riccati recursion with the
        # active control bounds fixed, then the cross derivatives of the objective with the parameters.
        dx_s, du_s = ca.SX.sym("dx", nx), ca.SX.sym("du", nu)
        param_cross = _sx_function(
            "riccati_param_cross",
            [x, u, p_sym, w, dx_s, du_s],
            [ca.jtimes(stage_grad_p, ca.vertcat(x, u), ca.vertcat(dx_s, du_s))],
        )
        t_cross = ca.jtimes(terminal_grad_p, x, dx_s)
        terminal_cross = _sx_function("riccati_tparam_cross", [x, p_sym, w, dx_s], [t_cross])
        free_u, seed = ca.MX.sym("free_u", nu, N), ca.MX.sym("seed", nu)
        zeros_u = ca.MX.zeros(nu, 1)
        P_cur, p_cur = t_hess_v, zero_x
        Ks: list[Any] = [None] * N
        kffs: list[Any] = [None] * N
        Bs: list[Any] = [None] * N
        pivots = []
        for k in reversed(range(N)):
            hess_k, A_k, B_k, _, _ = stages[k]
            # du_k = 0 where a bound is active: mask its rows and columns, 1 on the diagonal.
            fixed = ca.diag(free_u[:, k])
            hess_k = ca.blockcat(
                [
                    [
                        ca.mtimes([fixed, hess_k[:nu, :nu], fixed]) + ca.diag(1 - free_u[:, k]),
                        ca.mtimes(fixed, hess_k[:nu, nu:]),
                    ],
                    [ca.mtimes(hess_k[nu:, :nu], fixed), hess_k[nu:, nu:]],
                ]
            )
            Bs[k] = ca.mtimes(B_k, fixed)
            g_k = ca.vertcat(-ca.mtimes(fixed, seed) if k == 0 else zeros_u, zero_x)
            P_cur, p_cur, Ks[k], kffs[k], piv = riccati_stage(
                hess_k, A_k, Bs[k], zero_x, g_k, zeros_u, zero_x, zeros_u, zero_x, P_cur, p_cur, 0
            )
            pivots.append(piv)
        dx, adjoints = zero_x, []
        for k in range(N):
            du = ca.mtimes(Ks[k], dx) + kffs[k]
            adjoints.append(-param_cross(X[:, k], U[:, k], Pm[:, k], wts[k], dx, du))
            dx = ca.mtimes(stages[k][1], dx) + ca.mtimes(Bs[k], du)
        adjoints.append(-terminal_cross(X[:, N], Pm[:, N], wts[N], dx))
        self._vjp_fn, _ = _function(
            "riccati_vjp",
            [X, U, Pm, Pi, free_u, seed],
            [ca.densify(-p_cur), ca.densify(ca.horzcat(*adjoints)), ca.mmin(ca.vertcat(*pivots))],
            ["X", "U", "P", "Pi", "free_u", "seed"],
            ["adj_s", "adj_P", "min_pivot"],
            _named(options, "vjp"),
            expand=not self.stage_in_c,
        )

    def _riccati_stage(self, derivatives: Any, options: dict[str, Any]) -> Any:
        """The Riccati stage the Newton steps and the sensitivities call: the scalar (SX) one, or, where
        the iteration is compiled and too large to expand anyway (``N`` times the scalar stage and its
        derivatives above :data:`EXPAND_MAX_INSTRUCTIONS`), the C kernel with loops
        (:func:`sb3_stein.common.riccati_stage_c.riccati_stage_c`). Sets :attr:`stage_in_c`."""
        stage = _riccati_stage_sx(self.nx, self.nu)
        size = self.horizon * (stage.n_instructions() + derivatives.n_instructions())
        #: Whether the Riccati stage is the C kernel (then the functions that call it are not expanded).
        self.stage_in_c = bool(options.get("jit")) and size > EXPAND_MAX_INSTRUCTIONS
        if not self.stage_in_c:
            return stage
        from sb3_stein.common.riccati_stage_c import riccati_stage_c

        return riccati_stage_c(self.nx, self.nu, _named(options, "stage"))

    def _iteration_function(self, residual: Any, step: Any, value: Any, options: dict[str, Any]) -> Any:
        """``ITERATIONS_PER_CALL`` iterations of one sample as one Function (what :meth:`solve` maps over
        the rows), each that of :meth:`_iteration_body`.

        An iteration first tries the cheap case: one factorisation (no regularisation) and one trial step
        (the longest); where either fails, and where the previous iteration needed a regularisation, it
        runs the whole iteration (``N_DELTAS`` factorisations, ``N_ALPHAS`` trial steps). Both give the
        same iterate where the cheap case holds (the whole iteration takes the smallest regularisation and
        the longest step that work), so this changes the cost, not the method; the choice is a conditional
        call in the generated code. From the second chained iteration on, a row that has stopped
        (converged, or at ``max_iter``) skips the arithmetic in the same way. (One difference: a row that
        reaches ``max_iter`` inside a chain is no longer tested for convergence at its last iterate; the
        MPC layer certifies every solution with its own KKT check anyway.)

        :param residual: ``(X, U, P, Pi) -> (J, defects, grad L, Pi_0)`` (MX Function).
        :param step: ``n -> Function``: ``(X, U, P, Pi, sigma, barrier gradient, deltas) -> (dX, dU,
            Pi_new, pivots, slopes)``, one Newton step per regularisation in ``deltas`` (``n`` of them).
        :param value: ``(X, U, P) -> (J, sum |defects|)``.
        :param options: casadi options of the chained Function (e.g. its JIT compilation).
        """
        import casadi as ca

        cheap = self._iteration_body(residual, step, value, 1, 1)
        whole = self._ipopt_iteration(residual, step, value)
        state = [ca.MX.sym(name, whole.sparsity_in(i)) for i, name in enumerate(STATE_NAMES)]
        P_sym, limit = ca.MX.sym("P", whole.sparsity_in("P")), ca.MX.sym("max_iter")
        names_in, names_out = [*STATE_NAMES, "P", "max_iter"], [f"{n}_next" for n in STATE_NAMES]
        # IPOPT's iteration, trying the cheap case first where the last iteration needed no regularisation
        # (only the branch chosen is evaluated).
        try_cheap = _first_or("riccati_cheap_or_whole", cheap, whole)
        regularised = state[STATE_NAMES.index("delta_last")] > 0
        iterate: Any = ca.Function.if_else("riccati_iterate", whole, try_cheap)(
            regularised, *state, P_sym, limit
        )
        iteration = ca.Function("riccati_iteration", [*state, P_sym, limit], iterate, names_in, names_out)
        # ITERATIONS_PER_CALL iterations chained in one Function: the solve's Python loop runs once per call.
        stay = ca.Function("riccati_stay", [*state, P_sym, limit], state, names_in, names_out)
        step_or_stay = ca.Function.if_else("riccati_step_or_stay", stay, iteration)
        out: Any = iteration(*state, P_sym, limit)
        for _ in range(ITERATIONS_PER_CALL - 1):
            stopped = ca.logic_or(
                out[STATE_NAMES.index("converged")], out[STATE_NAMES.index("iterations")] >= limit
            )
            out = step_or_stay(stopped, *out, P_sym, limit)
        return ca.Function(
            "riccati_iterations", [*state, P_sym, limit], out, names_in, names_out, _named(options, "iter")
        )

    def _ipopt_iteration(self, residual: Any, step: Any, value: Any) -> Any:
        """IPOPT's whole iteration of one sample: :meth:`_iteration_body` with ``N_DELTAS`` regularisations
        and ``N_ALPHAS`` step lengths, and where none of those regularisations works, the next
        ``N_MORE_DELTAS`` (IPOPT keeps increasing it within the iteration; without the continuation such a
        row lost an iteration, 9 % of a cold swing-up's). The continuation evaluates the derivatives again,
        only for those rows (a conditional call in the generated code).

        :return: ``(state, P, max_iter) -> next state`` (names as :data:`STATE_NAMES`).
        """
        whole = self._iteration_body(residual, step, value, N_DELTAS, N_ALPHAS)
        more = self._iteration_body(residual, step, value, N_MORE_DELTAS, N_ALPHAS, continuation=True)
        # (whole's "exact": the row stopped or one of its regularisations worked)
        return _first_or("riccati_whole_or_more", whole, more)

    def _iteration_body(
        self, residual: Any, step: Any, value: Any, n_deltas: int, n_alphas: int, continuation: bool = False
    ) -> Any:
        """One iteration of one sample (expanded to scalar operations where that stays small): the KKT
        error ``E_0`` (a row below ``tol``, or at ``max_iter``, stays put from then on), the barrier update,
        the Newton step for the smallest of the ``n_deltas`` regularisations that gives a positive definite
        reduced Hessian, the fraction-to-the-boundary step lengths, the filter tests of ``n_alphas`` step
        lengths and the update of the primal-dual point; and, last output, ``exact``: whether the result is
        that of IPOPT's rules with ``N_DELTAS`` and ``N_ALPHAS`` (the row stopped, or a regularisation tried
        here worked and, with fewer than ``N_ALPHAS`` trial steps, one of them was accepted).
        ``continuation``: the ``n_deltas`` regularisations that follow the whole iteration's
        ``N_DELTAS`` (none of which worked), without the trial of none.
        Measured on the cart-pole at T = 5, batch 64 (loaded machine, CPU time): with the barrier update,
        step lengths and line search in numpy on ``(64, 5, 5)`` arrays a solve took about 1.7x as long;
        numpy's per-call overhead cost more than the arithmetic.
        """
        import casadi as ca

        nx, nu, N, n_p = self.nx, self.nu, self.horizon, self.n_p
        m = nx + nu
        X, U = ca.MX.sym("X", nx, N + 1), ca.MX.sym("U", nu, N)
        Pm, Pi = ca.MX.sym("P", n_p, N + 1), ca.MX.sym("Pi", nx, N + 1)
        zl, zu = ca.MX.sym("zl", m, N), ca.MX.sym("zu", m, N)
        mu_in, delta_last = ca.MX.sym("mu"), ca.MX.sym("delta_last")
        converged, iters = ca.MX.sym("converged"), ca.MX.sym("iterations")
        # IPOPT's regularisation trials (Algorithm IC): none, then a third of the last one (1e-4 the first
        # time), growing x 8 (x 100 where the last iteration needed none); a continuation goes on from the
        # last trial of the whole iteration.
        regularised = delta_last > 0
        first = ca.if_else(regularised, ca.fmax(1e-20, DELTA_SHRINK * delta_last), DELTA_FIRST)
        grow = ca.if_else(regularised, DELTA_GROW, DELTA_GROW_FIRST)
        if continuation:
            trials = ca.vertcat(*[first * grow ** (N_DELTAS - 1 + j) for j in range(n_deltas)])
        else:
            trials = ca.vertcat(0, *[first * grow**j for j in range(n_deltas - 1)])
        ML = ca.repmat(ca.DM(self.has_low.astype(float)), 1, N)
        MH = ca.repmat(ca.DM(self.has_high.astype(float)), 1, N)
        low, high = ca.repmat(ca.DM(self._low0), 1, N), ca.repmat(ca.DM(self._high0), 1, N)

        def slacks(X: Any, U: Any) -> tuple[Any, Any]:
            W = ca.vertcat(U, X[:, 1:])
            return ML * (W - low) + (1 - ML), MH * (high - W) + (1 - MH)

        def total(a: Any) -> Any:
            return ca.sum1(ca.sum2(a))

        sl, su = slacks(X, U)
        cost, defects, grad, pi0 = residual(X, U, Pm, Pi)
        Pi_c = ca.horzcat(pi0, Pi[:, 1:])
        z_sum = total(ML * ca.fabs(zl)) + total(MH * ca.fabs(zu))  # (the infinite bounds' are 0)
        s_d = ca.fmax(100.0, (total(ca.fabs(Pi[:, 1:])) + z_sum) / (N * nx + 2 * m * N)) / 100.0
        s_c = ca.fmax(100.0, z_sum / (2 * m * N)) / 100.0
        stationarity = ca.mmax(ca.fabs(grad - zl + zu)) / s_d
        violation = ca.mmax(ca.fabs(defects))
        # The complementarity products of the finite bounds (the others' multipliers are 0).
        lower_idx = [k * m + i for k in range(N) for i in range(m) if self.has_low[i]]
        upper_idx = [k * m + i for k in range(N) for i in range(m) if self.has_high[i]]
        bounded = ca.vertcat(ca.vec(zl * sl)[lower_idx], ca.vec(zu * su)[upper_idx])
        if bounded.numel():
            products = ca.mmax(ca.fabs(bounded))
            # max_i |a_i - mu| = max(max a - mu, mu - min a), exactly in floating point (rounding is
            # monotone): each barrier update below costs O(1) instead of O(N (nx + nu)).
            largest, smallest = ca.mmax(bounded), ca.mmin(bounded)
        else:
            products = largest = smallest = ca.MX(0)
        e0 = ca.fmax(ca.fmax(stationarity, violation), products / s_c)
        # Monotone barrier update (Eq. 7), at most MU_UPDATES times per iteration.
        mu = mu_in
        for _ in range(MU_UPDATES):
            comp = ca.fmax(largest - mu, mu - smallest)
            e_mu = ca.fmax(ca.fmax(stationarity, violation), comp / s_c)
            lower = ca.logic_and(e_mu <= KAPPA_EPS * mu, mu > self.mu_min)
            mu = ca.if_else(lower, ca.fmax(self.mu_min, ca.fmin(KAPPA_MU * mu, mu**THETA_MU)), mu)
        sigma = ML * zl / sl + MH * zu / su
        barrier_grad = -ML * mu / sl + MH * mu / su
        dX_all, dU_all, Pi_all, pivots, slopes = step(n_deltas)(X, U, Pm, Pi_c, sigma, barrier_grad, trials)
        # The smallest regularisation that worked (the candidates are in increasing order).
        j = n_deltas - 1
        dX, dU = dX_all[:, j * (N + 1) :], dU_all[:, j * N :]
        Pi_new, slope, delta = Pi_all[:, j * (N + 1) :], slopes[j], trials[j]
        found = pivots[j] > PIVOT_TOL
        for j in reversed(range(n_deltas - 1)):
            ok = pivots[j] > PIVOT_TOL
            dX = ca.if_else(ok, dX_all[:, j * (N + 1) : (j + 1) * (N + 1)], dX)
            dU = ca.if_else(ok, dU_all[:, j * N : (j + 1) * N], dU)
            Pi_new = ca.if_else(ok, Pi_all[:, j * (N + 1) : (j + 1) * (N + 1)], Pi_new)
            slope, delta = ca.if_else(ok, slopes[j], slope), ca.if_else(ok, trials[j], delta)
            found = ca.logic_or(found, ok)
        dW = ca.vertcat(dU, dX[:, 1:])
        dzl = ML * (mu / sl - zl - zl / sl * dW)
        dzu = MH * (mu / su - zu + zu / su * dW)
        tau = ca.fmax(0.99, 1.0 - mu)

        def max_step(idx: list[int], value_: Any, direction: Any) -> Any:
            """The longest step up to 1 that keeps the entries ``idx`` of ``value_`` (the finite bounds'
            slacks or multipliers) above ``(1 - tau)`` times their value."""
            if not idx:
                return ca.MX(1.0)
            value_, direction = ca.vec(value_)[idx], ca.vec(direction)[idx]
            shrinks = direction < 0
            ratio = ca.if_else(shrinks, -tau * value_ / ca.if_else(shrinks, direction, -1.0), 1.0)
            return ca.fmin(1.0, ca.mmin(ratio))

        alpha = ca.fmin(max_step(lower_idx, sl, dW), max_step(upper_idx, su, -dW))
        alpha_z = ca.fmin(max_step(lower_idx, zl, dzl), max_step(upper_idx, zu, dzu))
        # Filter acceptance tests against the current point (Eq. 18-20).
        phi = cost - mu * total(ML * ca.log(sl) + MH * ca.log(su))
        theta = total(ca.fabs(defects))
        roundoff = 10.0 * np.finfo(np.float64).eps * ca.fabs(phi)
        theta_max, theta_min = 1e4 * ca.fmax(1.0, theta), 1e-4 * ca.fmax(1.0, theta)
        # The first n_alphas trials of the backtracking line search (alpha_max, alpha_max / 2, ...), the
        # shortest first so that the longest accepted one wins.
        accept, alpha_acc = ca.MX(0), ca.MX(0)
        for t in reversed(range(n_alphas)):
            a = alpha * 0.5**t
            X_t, U_t = X + a * dX, U + a * dU
            cost_t, theta_t = value(X_t, U_t, Pm)
            sl_t, su_t = slacks(X_t, U_t)
            phi_t = cost_t - mu * total(ML * ca.log(sl_t) + MH * ca.log(su_t))
            switching = ca.logic_and(
                ca.logic_and(slope < 0, a * ca.fabs(slope) ** S_PHI > SWITCH_DELTA * theta**S_THETA),
                theta <= theta_min,
            )
            armijo = phi_t <= phi + ETA_PHI * a * slope + roundoff
            filter_ok = ca.logic_or(
                theta_t <= (1 - GAMMA_THETA) * theta, phi_t <= phi - GAMMA_PHI * theta + roundoff
            )
            ok = ca.logic_and(ca.if_else(switching, armijo, filter_ok), theta_t <= theta_max)
            alpha_acc = ca.if_else(ok, a, alpha_acc)
            accept = ca.logic_or(accept, ok)
        # No acceptable trial: take the shortest one tried (there is no restoration phase). No regularisation
        # gave a descent direction: stay, and try larger ones next time.
        alpha_min = alpha * 0.5 ** (n_alphas - 1)
        alpha_acc = ca.if_else(found, ca.if_else(accept, alpha_acc, alpha_min), 0)
        delta = ca.if_else(found, delta, ca.fmin(DELTA_MAX, trials[n_deltas - 1] * grow))
        X_t, U_t = X + alpha_acc * dX, U + alpha_acc * dU
        sl_t, su_t = slacks(X_t, U_t)
        alpha_z = ca.if_else(found, alpha_z, 0)
        zl_t, zu_t = zl + alpha_z * dzl, zu + alpha_z * dzu
        # kappa_Sigma safeguard (Eq. 16) at the new slacks.
        zl_t = ML * ca.fmin(ca.fmax(zl_t, mu / (KAPPA_SIGMA * sl_t)), KAPPA_SIGMA * mu / sl_t)
        zu_t = MH * ca.fmin(ca.fmax(zu_t, mu / (KAPPA_SIGMA * su_t)), KAPPA_SIGMA * mu / su_t)
        # Converged rows, and rows at the iteration limit, stay where they are.
        now = e0 <= self.tol
        max_iter = ca.MX.sym("max_iter")
        stop = ca.logic_or(ca.logic_or(converged, now), iters >= max_iter)
        state_in = [X, U, Pi_c, zl, zu, mu_in, delta_last]
        state_out = [X_t, U_t, Pi_c + alpha_acc * (Pi_new - Pi_c), zl_t, zu_t, mu, delta]
        outputs = [ca.if_else(stop, a, b) for a, b in zip(state_in, state_out)]
        outputs += [ca.logic_or(converged, now), ca.if_else(stop, iters, iters + 1)]
        # Whether this is the iteration of IPOPT's rules: no regularisation needed, or the first trial worked.
        outputs.append(ca.logic_or(stop, ca.logic_and(found, ca.logic_or(accept, n_alphas == N_ALPHAS))))
        iteration, _ = _function(
            f"riccati_iteration_{n_deltas}_{n_alphas}",
            [X, U, Pi, zl, zu, mu_in, delta_last, converged, iters, Pm, max_iter],
            outputs,
            [*STATE_NAMES, "P", "max_iter"],
            [*[f"{name}_next" for name in STATE_NAMES], "exact"],
            {},
            expand=not self.stage_in_c,
        )
        return iteration

    # ------------------------------------------------------------------ mapped calls

    def _call(self, function: Any, *args: np.ndarray) -> list[np.ndarray]:
        """``function`` (one sample) on every row of ``args`` (:func:`.batched_call.call_batched`)."""
        return call_batched(self._maps, function, list(args), self.n_threads)

    def param_gradient(self, X: np.ndarray, U: np.ndarray, P: np.ndarray) -> np.ndarray:
        """``(batch, N + 1, n_p)``: the objective's gradient with respect to each stage's parameters."""
        (grad,) = self._call(self._param_fn, X, U, P)
        return grad

    def vjp(
        self,
        X: np.ndarray,
        U: np.ndarray,
        Pi: np.ndarray,
        P: np.ndarray,
        free_u: np.ndarray,
        seed: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The vector-Jacobian product ``seed' d u_0* / d (s, P)`` at solutions, by the implicit function
        theorem on their KKT conditions (as casadi's sensitivities of an NLP solver: active bounds held
        fixed, the inactive ones dropped): with ``H`` the Lagrangian's Hessian, the linear system
        ``K (a, b) = (seed on u_0, 0)`` is the KKT system of the LQ problem ``min 1/2 a' H a - seed' a_{u_0}``
        subject to the linearised dynamics from ``a_{x_0} = 0`` and ``a_{u_k,i} = 0`` at the active control
        bounds, which one Riccati recursion solves; then ``d/ds = b_0``, the multiplier of ``x_0 - s = 0`` in
        casadi's sign (``-p_0`` of the recursion, this module's ``-Pi_0``), and
        ``d/dP_k = -(d^2 J / dP_k d(x_k, u_k)) a_k``. Active state bounds are not handled here (the caller
        leaves those rows to casadi).

        :param X: ``(batch, N + 1, nx)`` the solutions' states.
        :param U: ``(batch, N, nu)`` controls.
        :param Pi: ``(batch, N + 1, nx)`` dynamics multipliers (this module's sign, see the module docstring).
        :param P: ``(batch, N + 1, n_p)`` stage parameters.
        :param free_u: ``(batch, N, nu)`` 1 where a control is not at an active bound, 0 where it is.
        :param seed: ``(batch, nu)`` the cotangent of ``u_0``.
        :return: ``(batch, nx)`` gradient with respect to the initial state, ``(batch, N + 1, n_p)`` with
            respect to the stage parameters, ``(batch,)`` the smallest relative Cholesky pivot of the
            recursion: the reduced Hessian is positive definite (the result valid) iff it is above
            :data:`PIVOT_TOL`.
        """
        adj_s, adj_P, pivot = self._call(self._vjp_fn, X, U, P, Pi, free_u, seed[:, None, :])
        return adj_s[:, 0], adj_P, pivot

    # ------------------------------------------------------------------ the solve

    def _slacks(self, X: np.ndarray, U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slacks of the bounds of the stages' ``(u_k, x_{k+1})``, ``(b, N, nu + nx)``; 1 where a bound is
        infinite (divisions stay finite; those multipliers are 0)."""
        W = np.concatenate([U, X[:, 1:]], axis=2)
        lower = np.where(self.has_low, W - self._low0, 1.0)
        upper = np.where(self.has_high, self._high0 - W, 1.0)
        return lower, upper

    def initial_point(self, X: np.ndarray, U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(X, U)`` moved strictly inside the bounds (IPOPT's ``bound_push`` / ``bound_frac``)."""
        W = np.concatenate([U, X[:, 1:]], axis=2)
        width = np.where(self.has_low & self.has_high, self._high0 - self._low0, np.inf)
        push_low = np.minimum(BOUND_PUSH * np.maximum(1.0, np.abs(self._low0)), BOUND_FRAC * width)
        push_high = np.minimum(BOUND_PUSH * np.maximum(1.0, np.abs(self._high0)), BOUND_FRAC * width)
        W = np.where(self.has_low, np.maximum(W, self._low0 + push_low), W)
        W = np.where(self.has_high, np.minimum(W, self._high0 - push_high), W)
        return np.concatenate([X[:, :1], W[:, :, self.nu :]], axis=1), W[:, :, : self.nu].copy()

    def initial_multipliers(
        self, X: np.ndarray, U: np.ndarray, P: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """IPOPT's initial multipliers at the primal point ``(X, U)`` (fatrop's too): the bound multipliers
        ``bound_mult_init_val`` (1) on every finite bound; the dynamics multipliers that make the
        Lagrangian stationary in ``x_1..x_N`` given those (the costates, backwards from the terminal cost),
        set to zero where their largest entry exceeds ``constr_mult_init_max`` (1e3). Far from a solution
        the costates of a large cost gradient make the Lagrangian's Hessian indefinite: with them (and
        bound multipliers ``mu / slack``) the swing-up's cold starts at T = 20 took 38.8 iterations on
        average and needed a regularisation in most; with IPOPT's rule 26.2, fatrop 27.8.

        :return: ``zl``, ``zu`` ``(batch, N, nu + nx)`` and ``Pi`` ``(batch, N + 1, nx)``.
        """
        shape = (len(X), self.horizon, self.nu + self.nx)
        zl = np.where(self.has_low, BOUND_MULT_INIT, 0.0) * np.ones(shape)
        zu = np.where(self.has_high, BOUND_MULT_INIT, 0.0) * np.ones(shape)
        (Pi,) = self._call(self._costate_fn, X, U, P, (zu - zl)[:, :, self.nu :])
        Pi[np.abs(Pi).max(axis=(1, 2), initial=0.0) > CONSTR_MULT_INIT_MAX] = 0.0
        return zl, zu, Pi

    def solve(self, states: np.ndarray, P: np.ndarray, X: np.ndarray, U: np.ndarray) -> RiccatiResult:
        """Solve every row from the primal guess ``(X, U)``.

        :param states: ``(batch, nx)`` initial states ``s``.
        :param P: ``(batch, N + 1, n_p)`` stage parameters.
        :param X: ``(batch, N + 1, nx)`` guess of the states (``X[:, 0]`` is replaced by ``s``).
        :param U: ``(batch, N, nu)`` guess of the controls.
        """
        b = len(states)
        X = np.array(X, dtype=np.float64)
        X[:, 0] = states
        X, U = self.initial_point(X, np.asarray(U, dtype=np.float64))
        P = np.asarray(P, dtype=np.float64)
        mu = np.full(b, self.mu_init)
        zl, zu, Pi = self.initial_multipliers(X, U, P)
        state = [X, U, Pi, zl, zu, mu, np.zeros(b), np.zeros(b), np.zeros(b)]
        rows = np.arange(b)  # the rows still iterating
        while len(rows):
            limit = np.full(len(rows), float(self.max_iter))
            out = self._call(self._iteration_fn, *[a[rows] for a in state], P[rows], limit)
            for array, new in zip(state, out):
                array[rows] = new
            converged, iterations = state[7], state[8]
            rows = rows[(converged[rows] < 0.5) & (iterations[rows] < self.max_iter)]
        converged = state[7] > 0.5
        iterations = np.where(converged, state[8], self.max_iter).astype(np.int64)
        cost, defects, _, pi0 = self._call(self._residual_fn, X, U, P, Pi)
        Pi[:, 0] = pi0[:, 0]
        return RiccatiResult(X, U, Pi, zu, zl, cost, defects, converged, iterations)


def _function(
    name: str,
    inputs: list[Any],
    outputs: list[Any],
    names_in: list[str],
    names_out: list[str],
    options: dict[str, Any],
    expand: bool = True,
) -> tuple[Any, Any]:
    """A casadi Function of MX ``inputs``/``outputs`` with ``options`` (the one to evaluate: expanded to
    scalar operations first when ``expand`` and that stays below :data:`EXPAND_MAX_INSTRUCTIONS`, see
    there), and the plain MX Function without options (to build larger functions from). ``expand=False``
    for functions that call the C stage kernel (it has no scalar form)."""
    import casadi as ca

    plain = ca.Function(name, inputs, outputs, names_in, names_out)
    expanded = plain.expand() if expand else None
    if expanded is not None and expanded.n_instructions() <= EXPAND_MAX_INSTRUCTIONS:
        symbols = [ca.SX.sym(expanded.name_in(i), expanded.sparsity_in(i)) for i in range(expanded.n_in())]
        return ca.Function(name, symbols, ca.cse(expanded.call(symbols)), names_in, names_out, options), plain
    return ca.Function(name, inputs, outputs, names_in, names_out, options), plain


def _first_or(name: str, first: Any, fallback: Any) -> Any:
    """``(state, P, max_iter) -> next state`` (names as :data:`STATE_NAMES`): ``first``'s next state where
    its last output (``exact``) holds, else ``fallback``'s at the same state. A conditional call in the
    generated code: ``fallback`` is evaluated only for the rows that need it.

    :param first: an iteration Function whose outputs are the next state and ``exact``.
    :param fallback: an iteration Function of the same inputs whose first outputs are the next state.
    """
    import casadi as ca

    names_in = [*STATE_NAMES, "P", "max_iter"]
    names_out = [f"{n}_next" for n in STATE_NAMES]
    inputs = [ca.MX.sym(n, first.sparsity_in(i)) for i, n in enumerate(names_in)]
    given = [ca.MX.sym(f"first_{n}", first.sparsity_out(i)) for i, n in enumerate(STATE_NAMES)]
    names_given = [f"e{i}" for i in range(len(given))]
    keep = ca.Function(f"{name}_keep", [*inputs, *given], given, [*names_in, *names_given], names_out)
    other = ca.Function(
        f"{name}_other",
        [*inputs, *given],
        fallback(*inputs)[: len(STATE_NAMES)],
        [*names_in, *names_given],
        names_out,
    )
    out = first(*inputs)
    chosen: Any = ca.Function.if_else(name, keep, other)(out[-1], *inputs, *out[:-1])
    return ca.Function(name, inputs, chosen, names_in, names_out)


def _sx_function(name: str, inputs: list[Any], outputs: list[Any]) -> Any:
    """A casadi Function of SX expressions after common-subexpression elimination: casadi's derivatives
    recompute shared terms (the cart-pole's stage Hessian and Jacobians evaluated sin and cos 20 times each
    where the dynamics needs 4), and the C compiler does not merge calls of ``sin`` or ``cos``."""
    import casadi as ca

    return ca.Function(name, inputs, ca.cse(list(outputs)))


def _named(options: dict[str, Any], kind: str) -> dict[str, Any]:
    """Function options with a per-function JIT name (casadi's JIT needs distinct names)."""
    if not options.get("jit"):
        return options
    out = dict(options)
    jit_name = out.get("jit_name")
    if jit_name:
        out["jit_name"] = f"{jit_name}_{kind}"
    return out
