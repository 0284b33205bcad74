"""A batched primal-dual interior point method for box-constrained OCPs, Newton steps by Riccati recursion.

Why (issue 15, benchmarks/results/mpc_profile): fatrop solves the MPC layer's small problems one at a
time and spends about 86 % of a solve in its own bookkeeping and casadi's glue, about 0.17 M instructions
per iteration on the cart-pole's 29 variables. Here every iteration is a handful of numpy operations on the
whole batch ``(batch, stages, ...)`` plus one compiled, mapped casadi call that evaluates every stage's
derivatives of every sample, so its cost per sample shrinks with the batch.

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
* inertia correction (Section 3.1): the reduced Hessian is positive definite iff every stage's
  ``R + B' P B`` is (Cholesky pivots); where not, ``delta I`` is added to the Lagrangian's Hessian
  (``1e-4`` first, then ``x 8``, a third of the last one to start the next iteration). One call
  evaluates the Hessian once and factorises it for two values of ``delta``: no correction and the next
  trial (the swing-up needs a correction in most iterations far from a solution; a call per trial cost
  2.1 Hessian evaluations per iteration on the cart-pole at T = 20);
* fraction-to-the-boundary rule (Eq. 15, ``tau = max(0.99, 1 - mu)``), a backtracking line search
  with IPOPT's filter acceptance tests against the current iterate (Eq. 18-20; no filter memory and no
  restoration phase: a sample that stalls runs into ``max_iter``), and the ``kappa_Sigma`` safeguard of
  the bound multipliers (Eq. 16);
* monotone barrier update (Eq. 7): ``mu <- max(tol / 10, min(0.2 mu, mu^1.5))`` once the barrier
  problem's error is below ``10 mu``; a sample is converged when its unbarriered error is below ``tol``.

What the paper gives and this module drops: the filter's memory, second-order corrections, the
restoration phase and the scaling of the problem. The MPC layer (``MPCLayer(solver="riccati")``)
therefore never trusts this solver's own verdict: it certifies every solution with its KKT check and
hands the samples that fail it to fatrop.

Shapes: ``X (batch, N + 1, nx)``, ``U (batch, N, nu)``, ``Pi (batch, N + 1, nx)`` (``Pi[:, k + 1]`` is
the multiplier of ``f(x_k, u_k) - x_{k+1} = 0``, ``Pi[:, 0]`` of ``s - x_0 = 0``), stage parameters
``(batch, N + 1, n_p)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RiccatiIPM", "RiccatiResult"]

#: IPOPT's constants (Waechter and Biegler 2006, Table 1 and Section 3).
KAPPA_EPS, KAPPA_MU, THETA_MU = 10.0, 0.2, 1.5
BOUND_PUSH, BOUND_FRAC = 1e-2, 1e-2
KAPPA_SIGMA = 1e10
GAMMA_THETA, GAMMA_PHI, ETA_PHI = 1e-5, 1e-8, 1e-8
S_THETA, S_PHI, SWITCH_DELTA = 1.1, 2.3, 1.0
DELTA_FIRST, DELTA_GROW, DELTA_SHRINK, DELTA_MAX = 1e-4, 8.0, 1.0 / 3.0, 1e20
MAX_BACKTRACKS = 30


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


#: A stage's ``R + B' P B`` counts as positive definite when its smallest Cholesky pivot is above this
#: fraction of its largest diagonal entry.
PIVOT_TOL = 1e-12
#: Regularisations the step function factorises the Hessian for in one call (none and IPOPT's next two
#: trials: on the cart-pole at T = 20, cold, 1.0 calls per iteration instead of 1.3 with two).
N_DELTAS = 3
#: A whole-horizon function whose expanded form (scalar operations, casadi SX) has at most this many
#: instructions is expanded before it is compiled: on the cart-pole at T = 5 the step ran 2.4x faster
#: expanded than as calls of the stage functions (MX), at T = 20 1.2x; the chain's stays MX.
EXPAND_MAX_INSTRUCTIONS = 150_000


class RiccatiIPM:
    """Batched interior point solver of one OCP structure (see the module docstring).

    The per-sample work of an iteration (derivatives, the Riccati recursion, the residuals, the values of the
    line search) is three casadi Functions of one sample, built from per-stage pieces called ``N`` times
    (so the generated code holds each stage's derivatives once) and mapped over the batch; numpy does the
    rest (barrier updates, step lengths, multipliers) on ``(batch, ...)`` arrays.

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
    :param function_options: casadi options of the three Functions (e.g. JIT compilation,
        :func:`sb3_stein.common.jit_cache.jit_options`).
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
        self._maps: dict[tuple[str, int], Any] = {}

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
        first = ca.Function("first", [x, u, p, pi_next, w], [cost, f, grad_lx, grad_lu])
        value = ca.Function("value", [x, u, p, w], [cost, f])
        terminal = w * terminal_cost(x, p)
        terminal_first = ca.Function("terminal_first", [x, p, w], [terminal, ca.gradient(terminal, x)])

        # One Riccati stage: derivatives at (x_k, u_k) (once per step), then the cost-to-go of x_k from that
        # of x_{k+1} (once per regularisation tried).
        hess = ca.hessian(lagrangian, ca.vertcat(x, u))[0]
        c = f - x_next
        derivatives = ca.Function(
            "derivatives", [x, u, p, pi_next, w, x_next], [hess, A, B, c, ca.vertcat(grad_cu, grad_cx)]
        )
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
        P_k = Qxx + ca.mtimes(Qux.T, K)
        P_k = 0.5 * (P_k + P_k.T)
        p_k = qx + ca.mtimes(Qux.T, kff)
        riccati_stage = ca.Function(
            "riccati_stage",
            [H, As_, Bs_, cs_, g_, sig_u, sig_x, gb_u, gb_x, P_next, p_next, delta],
            [P_k, p_k, K, kff, min_pivot],
        )
        t_hess, t_grad = ca.hessian(terminal, x)
        terminal_derivatives = ca.Function("terminal_derivatives", [x, p, w], [t_hess, t_grad])

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
        self._residual_fn = _function(
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
        self._costate_fn = _function(
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
        self._value_fn = _function(
            "riccati_value",
            [X, U, Pm],
            [total, theta],
            ["X", "U", "P"],
            ["J", "theta"],
            _named(options, "val"),
        )

        zero_x = ca.MX.zeros(nx, 1)
        deltas = ca.MX.sym("deltas", N_DELTAS)
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
        outputs: list[Any] = []
        for j in range(N_DELTAS):
            dl = deltas[j]
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
            outputs.append((dX_all, dU_all, ca.horzcat(*pis), ca.mmin(ca.vertcat(*pivots)), slope))
        self._step_fn = _function(
            "riccati_step",
            [X, U, Pm, Pi, sig, gb, deltas],
            [
                ca.horzcat(*[o[0] for o in outputs]),
                ca.horzcat(*[o[1] for o in outputs]),
                ca.horzcat(*[o[2] for o in outputs]),
                ca.vertcat(*[o[3] for o in outputs]),
                ca.vertcat(*[o[4] for o in outputs]),
            ],
            ["X", "U", "P", "Pi", "sig", "gb", "deltas"],
            ["dX", "dU", "Pi_new", "min_pivot", "slope"],
            _named(options, "step"),
        )
        p_sym = ca.SX.sym("p", n_p)
        self._param_fn = ca.Function(
            "riccati_param", [x, u, p_sym, w], [ca.gradient(w * stage_cost(x, u, p_sym), p_sym)]
        )
        self._terminal_param_fn = ca.Function(
            "riccati_tparam", [x, p_sym, w], [ca.gradient(w * terminal_cost(x, p_sym), p_sym)]
        )

    # ------------------------------------------------------------------ mapped calls

    def _call(self, function: Any, *args: np.ndarray) -> list[np.ndarray]:
        """Evaluate a one-sample Function on ``args`` given as ``(b, columns, rows)`` (or ``(b,)``) arrays;
        return its outputs as ``(b, columns, rows)`` arrays (a scalar output: ``(b,)``)."""
        n = len(args[0])
        # Batches are padded (repeating the last row) to one of 8 sizes per power of two: building a mapped
        # Function and its buffer costs about half a millisecond, too much for every size the active rows
        # pass through, and padding to a power of two wasted about a quarter of the evaluations.
        b = _bucket(n)
        key = (function.name(), b)
        if key not in self._maps:
            # casadi's FunctionBuffer reads and writes numpy memory in place: a C-ordered (b, columns, rows)
            # array is, byte for byte, the column-major (rows, b * columns) matrix of the mapped call.
            # (Converting numpy arrays to casadi matrices and back cost more than the solver's arithmetic.)
            mapped = function.map(b) if b > 1 else function
            self._maps[key] = (mapped, *mapped.buffer())
        _, buffer, evaluate = self._maps[key]
        inputs = []
        for a in args:
            a = np.asarray(a, dtype=np.float64)
            if b > n:
                a = np.concatenate([a, np.repeat(a[-1:], b - n, axis=0)])
            inputs.append(np.ascontiguousarray(a).reshape(-1))
        for i, a in enumerate(inputs):
            buffer.set_arg(i, memoryview(a))  # type: ignore[arg-type]
        result = []
        for i in range(function.n_out()):
            rows, cols = function.size_out(i)
            out = np.empty(b * rows * cols)
            buffer.set_res(i, memoryview(out))  # type: ignore[arg-type]
            result.append(out if rows == cols == 1 else out.reshape(b, cols, rows))
        evaluate()
        return [r[:n] for r in result]

    def param_gradient(self, X: np.ndarray, U: np.ndarray, P: np.ndarray) -> np.ndarray:
        """``(batch, N + 1, n_p)``: the objective's gradient with respect to each stage's parameters."""
        nx, nu, N, n_p = self.nx, self.nu, self.horizon, self.n_p
        b = len(X)
        stage = np.asarray(
            self._param_fn(
                X[:, :N].reshape(-1, nx).T,
                U.reshape(-1, nu).T,
                P[:, :N].reshape(-1, n_p).T,
                np.tile(self.weights[:N], b)[None],
            ),
            dtype=np.float64,
        ).T.reshape(b, N, n_p)
        terminal = np.asarray(
            self._terminal_param_fn(X[:, N].T, P[:, N].T, np.full((1, b), self.weights[N])), dtype=np.float64
        ).T
        return np.concatenate([stage, terminal[:, None]], axis=1)

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

    def solve(self, states: np.ndarray, P: np.ndarray, X: np.ndarray, U: np.ndarray) -> RiccatiResult:
        """Solve every row from the primal guess ``(X, U)``.

        :param states: ``(batch, nx)`` initial states ``s``.
        :param P: ``(batch, N + 1, n_p)`` stage parameters.
        :param X: ``(batch, N + 1, nx)`` guess of the states (``X[:, 0]`` is replaced by ``s``).
        :param U: ``(batch, N, nu)`` guess of the controls.
        """
        nx, N = self.nx, self.horizon
        b = len(states)
        X = np.array(X, dtype=np.float64)
        X[:, 0] = states
        X, U = self.initial_point(X, np.asarray(U, dtype=np.float64))
        P = np.asarray(P, dtype=np.float64)
        has_low, has_high = self.has_low, self.has_high
        mu = np.full(b, self.mu_init)
        sl, su = self._slacks(X, U)
        zl = np.where(has_low, mu[:, None, None] / sl, 0.0)
        zu = np.where(has_high, mu[:, None, None] / su, 0.0)
        (Pi,) = self._call(self._costate_fn, X, U, P, (zu - zl)[:, :, self.nu :])
        delta_last = np.zeros(b)
        converged = np.zeros(b, dtype=bool)
        iterations = np.full(b, self.max_iter, dtype=np.int64)
        n_mult = N * nx + 2 * zl[0].size
        rows = np.arange(b)  # the rows still iterating
        for iteration in range(self.max_iter + 1):
            cost, defects, grad, pi0 = self._call(self._residual_fn, X[rows], U[rows], P[rows], Pi[rows])
            Pi[rows, 0] = pi0[:, 0]
            zl_r, zu_r, sl_r, su_r, mu_r = zl[rows], zu[rows], sl[rows], su[rows], mu[rows]
            z_sum = np.abs(zl_r).sum(axis=(1, 2)) + np.abs(zu_r).sum(axis=(1, 2))
            s_d = np.maximum(100.0, (np.abs(Pi[rows, 1:]).sum(axis=(1, 2)) + z_sum) / n_mult) / 100.0
            s_c = np.maximum(100.0, z_sum / (2 * zl[0].size)) / 100.0
            stationarity = np.abs(grad - zl_r + zu_r).max(axis=(1, 2)) / s_d
            violation = np.abs(defects).max(axis=(1, 2))
            products = np.maximum(np.abs(zl_r * sl_r) * has_low, np.abs(zu_r * su_r) * has_high).max(
                axis=(1, 2)
            )
            e0 = np.maximum(np.maximum(stationarity, violation), products / s_c)
            done = e0 <= self.tol
            iterations[rows[done]] = iteration
            converged[rows[done]] = True
            keep = ~done & np.isfinite(e0)
            if iteration == self.max_iter or not keep.any():
                break
            # Monotone barrier update (Eq. 7), repeated while the barrier problem is solved well enough.
            for _ in range(20):
                mu3 = mu_r[:, None, None]
                comp = np.maximum(np.abs(zl_r * sl_r - mu3) * has_low, np.abs(zu_r * su_r - mu3) * has_high)
                e_mu = np.maximum(np.maximum(stationarity, violation), comp.max(axis=(1, 2)) / s_c)
                lower = keep & (e_mu <= KAPPA_EPS * mu_r) & (mu_r > self.mu_min)
                if not lower.any():
                    break
                mu_r[lower] = np.maximum(
                    self.mu_min, np.minimum(KAPPA_MU * mu_r[lower], mu_r[lower] ** THETA_MU)
                )
            mu[rows] = mu_r
            rows = rows[keep]
            self._step(rows, X, U, P, Pi, zl, zu, sl, su, mu, cost[keep], defects[keep], delta_last)
            sl[rows], su[rows] = self._slacks(X[rows], U[rows])
        cost, defects, _, pi0 = self._call(self._residual_fn, X, U, P, Pi)
        Pi[:, 0] = pi0[:, 0]
        return RiccatiResult(X, U, Pi, zu, zl, cost, defects, converged, iterations)

    def _step(
        self,
        rows: np.ndarray,
        X: np.ndarray,
        U: np.ndarray,
        P: np.ndarray,
        Pi: np.ndarray,
        zl: np.ndarray,
        zu: np.ndarray,
        sl_all: np.ndarray,
        su_all: np.ndarray,
        mu_all: np.ndarray,
        cost: np.ndarray,
        defects: np.ndarray,
        delta_last: np.ndarray,
    ) -> None:
        """One Newton iteration of the rows ``rows``, written into ``X, U, Pi, zl, zu`` and ``delta_last``
        (``cost`` and ``defects`` are those rows' objective and dynamics defects)."""
        has_low, has_high = self.has_low, self.has_high
        sl, su, mu = sl_all[rows], su_all[rows], mu_all[rows]
        zl_r, zu_r = zl[rows], zu[rows]
        X_r, U_r, P_r, Pi_r = X[rows], U[rows], P[rows], Pi[rows]
        mu3 = mu[:, None, None]
        sigma = np.where(has_low, zl_r / sl, 0.0) + np.where(has_high, zu_r / su, 0.0)
        barrier_grad = np.where(has_low, -mu3 / sl, 0.0) + np.where(has_high, mu3 / su, 0.0)
        # Inertia correction (Section 3.1): regularise rows whose reduced Hessian is not positive definite.
        # Each call tries two regularisations per row: none and IPOPT's next trial, then two further trials.
        b = len(rows)
        nx, N = self.nx, self.horizon
        delta = np.zeros(b)
        dX = np.zeros_like(X_r)
        dU = np.zeros_like(U_r)
        Pi_new = Pi_r.copy()
        slope = np.zeros(b)
        last = delta_last[rows]
        trials = np.zeros((b, N_DELTAS))
        first = np.where(last > 0, np.maximum(1e-20, DELTA_SHRINK * last), DELTA_FIRST)
        trials[:, 1:] = first[:, None] * DELTA_GROW ** np.arange(N_DELTAS - 1)
        todo = np.arange(b)
        while len(todo):
            dX_t, dU_t, Pi_t, pivot, slope_t = self._call(
                self._step_fn,
                X_r[todo],
                U_r[todo],
                P_r[todo],
                Pi_r[todo],
                sigma[todo],
                barrier_grad[todo],
                trials[todo, None, :],
            )
            n = len(todo)
            dX_t = dX_t.reshape(n, N_DELTAS, N + 1, nx)
            dU_t = dU_t.reshape(n, N_DELTAS, N, -1)
            Pi_t = Pi_t.reshape(n, N_DELTAS, N + 1, nx)
            pivot, slope_t = pivot.reshape(n, N_DELTAS), slope_t.reshape(n, N_DELTAS)
            good = (
                (pivot > PIVOT_TOL) & np.isfinite(dU_t).all(axis=(2, 3)) & np.isfinite(Pi_t).all(axis=(2, 3))
            )
            ok = good.any(axis=1)
            pick = np.argmax(good, axis=1)  # the smallest regularisation that worked
            i = np.flatnonzero(ok)
            done, j = todo[i], pick[i]
            dX[done], dU[done], Pi_new[done] = dX_t[i, j], dU_t[i, j], Pi_t[i, j]
            slope[done], delta[done] = slope_t[i, j], trials[done, j]
            todo = todo[~ok]
            if not len(todo):
                break
            largest = trials[todo, -1]
            trials[todo] = largest[:, None] * DELTA_GROW ** np.arange(1, N_DELTAS + 1)
            stuck = trials[todo, 0] > DELTA_MAX  # no descent direction at all: these rows stand still
            delta[todo[stuck]] = 0.0
            todo = todo[~stuck]
        delta_last[rows] = delta
        dW = np.concatenate([dU, dX[:, 1:]], axis=2)
        dzl = np.where(has_low, mu3 / sl - zl_r - zl_r / sl * dW, 0.0)
        dzu = np.where(has_high, mu3 / su - zu_r + zu_r / su * dW, 0.0)
        tau = np.maximum(0.99, 1.0 - mu)[:, None, None]
        alpha = np.minimum(_max_step(has_low, sl, dW, tau), _max_step(has_high, su, -dW, tau))
        alpha_z = np.minimum(_max_step(has_low, zl_r, dzl, tau), _max_step(has_high, zu_r, dzu, tau))
        # Filter acceptance tests against the current point (Eq. 18-20).
        log_barrier = (np.where(has_low, np.log(sl), 0.0) + np.where(has_high, np.log(su), 0.0)).sum(
            axis=(1, 2)
        )
        phi = cost - mu * log_barrier
        theta = np.abs(defects).sum(axis=(1, 2))
        theta_max = 1e4 * np.maximum(1.0, theta)
        theta_min = 1e-4 * np.maximum(1.0, theta)
        roundoff = 10.0 * np.finfo(np.float64).eps * np.abs(phi)
        switching_lhs = np.where(slope < 0, np.abs(slope) ** S_PHI, 0.0)
        pending = np.ones(b, dtype=bool)
        for _ in range(MAX_BACKTRACKS):
            idx = np.flatnonzero(pending)
            if not len(idx):
                break
            a = alpha[idx]
            U_t = U_r[idx] + a[:, None, None] * dU[idx]
            X_t = X_r[idx] + a[:, None, None] * dX[idx]
            cost_t, theta_t = self._call(self._value_fn, X_t, U_t, P_r[idx])
            sl_t, su_t = self._slacks(X_t, U_t)
            with np.errstate(invalid="ignore", divide="ignore"):
                log_t = (np.where(has_low, np.log(sl_t), 0.0) + np.where(has_high, np.log(su_t), 0.0)).sum(
                    axis=(1, 2)
                )
            phi_t = cost_t - mu[idx] * log_t
            th, ph = theta[idx], phi[idx]
            switching = (
                (slope[idx] < 0)
                & (a * switching_lhs[idx] > SWITCH_DELTA * th**S_THETA)
                & (th <= theta_min[idx])
            )
            armijo = phi_t <= ph + ETA_PHI * a * slope[idx] + roundoff[idx]
            filter_ok = (theta_t <= (1 - GAMMA_THETA) * th) | (phi_t <= ph - GAMMA_PHI * th + roundoff[idx])
            ok = (
                np.where(switching, armijo, filter_ok)
                & (theta_t <= theta_max[idx])
                & np.isfinite(phi_t)
                & np.isfinite(theta_t)
            )
            pending[idx[ok]] = False
            alpha[idx[~ok]] *= 0.5
        # Rows without an acceptable step take the smallest one tried (no restoration phase here).
        a3 = alpha[:, None, None]
        X[rows] = X_r + a3 * dX
        U[rows] = U_r + a3 * dU
        Pi[rows] = Pi_r + a3 * (Pi_new - Pi_r)
        az = alpha_z[:, None, None]
        zl_new, zu_new = zl_r + az * dzl, zu_r + az * dzu
        # kappa_Sigma safeguard (Eq. 16) at the new slacks.
        sl_new, su_new = self._slacks(X[rows], U[rows])
        zl[rows] = np.where(
            has_low, np.clip(zl_new, mu3 / (KAPPA_SIGMA * sl_new), KAPPA_SIGMA * mu3 / sl_new), 0.0
        )
        zu[rows] = np.where(
            has_high, np.clip(zu_new, mu3 / (KAPPA_SIGMA * su_new), KAPPA_SIGMA * mu3 / su_new), 0.0
        )


def _bucket(n: int) -> int:
    """The smallest of 1..8, then 8 sizes per power of two (9, 10, ..., 16, 18, ..., 32, 36, ...), ``>= n``."""
    if n <= 8:
        return max(n, 1)
    step = 1 << ((n - 1).bit_length() - 3)
    return -(-n // step) * step


def _max_step(has: np.ndarray, value: np.ndarray, step: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """``(b,)``: the largest ``alpha <= 1`` with ``value + alpha step >= (1 - tau) value`` where ``has``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        limit = np.where(has & (step < 0), -tau * value / step, np.inf)
    return np.minimum(1.0, limit.min(axis=(1, 2)))


def _function(
    name: str,
    inputs: list[Any],
    outputs: list[Any],
    names_in: list[str],
    names_out: list[str],
    options: dict[str, Any],
    expand: bool = True,
) -> Any:
    """A casadi Function of MX ``inputs``/``outputs``, expanded to scalar operations first when that stays
    below :data:`EXPAND_MAX_INSTRUCTIONS` (see there)."""
    import casadi as ca

    plain = ca.Function(name, inputs, outputs, names_in, names_out)
    if expand:
        expanded = plain.expand()
        if expanded.n_instructions() <= EXPAND_MAX_INSTRUCTIONS:
            symbols = [ca.SX.sym(expanded.name_in(i), expanded.sparsity_in(i)) for i in range(expanded.n_in())]
            return ca.Function(name, symbols, expanded.call(symbols), names_in, names_out, options)
    return ca.Function(name, inputs, outputs, names_in, names_out, options)


def _named(options: dict[str, Any], kind: str) -> dict[str, Any]:
    """Function options with a per-function JIT name (casadi's JIT needs distinct names)."""
    if not options.get("jit"):
        return options
    out = dict(options)
    jit_name = out.get("jit_name")
    if jit_name:
        out["jit_name"] = f"{jit_name}_{kind}"
    return out
