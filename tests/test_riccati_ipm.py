"""The batched Riccati interior point method (issue 15) and ``MPCLayer(solver="riccati")``."""

from __future__ import annotations

import pickle

import casadi as ca
import numpy as np
import pytest
from sb3_stein.envs.cartpole_swingup import CartPoleSwingUpOCP
from test_mpc import TinyCartPoleOCP, _batch

from sb3_stein.common import riccati_ipm
from sb3_stein.common.batched_call import bucket, call_batched
from sb3_stein.common.jit_cache import find_compiler, jit_options
from sb3_stein.common.mpc import MPCLayer
from sb3_stein.common.ocp import OptimalControlProblem
from sb3_stein.common.riccati_ipm import (
    MU_UPDATES,
    N_ALPHAS,
    N_DELTAS,
    PIVOT_TOL,
    STATE_NAMES,
    RiccatiIPM,
    _cholesky_solve,
    _riccati_stage_sx,
)
from sb3_stein.common.riccati_stage_c import riccati_stage_c


@pytest.fixture(scope="module")
def fatrop() -> MPCLayer:
    return MPCLayer(TinyCartPoleOCP(), compiled=False)


@pytest.fixture(scope="module")
def riccati() -> MPCLayer:
    return MPCLayer(TinyCartPoleOCP(), compiled=False, solver="riccati")


def test_riccati_layer_gives_fatrops_controls_and_gradients(fatrop, riccati):
    states, params = _batch(8, seed=5)
    a, b = fatrop.solve(states, params), riccati.solve(states, params)
    assert a.success.all() and b.success.all()
    assert not b.fallback.any()  # every solution passed the KKT check on its own
    assert all(status == "riccati_converged" for status in b.status)
    assert (b.iterations > 0).all()
    np.testing.assert_allclose(b.u0, a.u0, atol=1e-5)
    np.testing.assert_allclose(b.nlp_outputs["f"], a.nlp_outputs["f"], rtol=1e-6)
    # The multipliers follow casadi's conventions, so the sensitivities agree too.
    np.testing.assert_allclose(b.nlp_outputs["lam_g"], a.nlp_outputs["lam_g"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(b.nlp_outputs["lam_p"], a.nlp_outputs["lam_p"], rtol=1e-4, atol=1e-4)
    weights = np.random.default_rng(1).normal(size=(8, 1))
    for ga, gb in zip(fatrop.vjp(a, weights), riccati.vjp(b, weights)):
        np.testing.assert_allclose(gb, ga, rtol=1e-4, atol=1e-6)
    warm = riccati.solve(states + 0.01, params, initial_guess=b.z)
    assert warm.success.all() and warm.iterations.mean() < b.iterations.mean()


@pytest.mark.parametrize("param_interface", ["global", "stage"])
def test_riccati_sensitivities_are_casadis_and_leave_active_state_bounds_to_casadi(
    param_interface, monkeypatch
):
    layer = MPCLayer(TinyCartPoleOCP(), compiled=False, solver="riccati", param_interface=param_interface)
    states, params = _batch(12, seed=3)
    # Towards the cart's bound at 2, to a reference at 1: some solutions end on the bound.
    states[:4, 0], states[:4, 2], params[:4, 1] = [1.0, 1.0, 1.0, 1.3], [1.5, 2.5, 3.5, 1.5], 1.0
    if param_interface == "stage":
        params = np.tile(params, (1, layer.horizon + 1))
    solution = layer.solve(states, params)
    assert solution.success.all()
    lam_x = layer._active_multipliers(solution.nlp_outputs["x"], solution.nlp_outputs["lam_x"])
    stages = lam_x[:, : layer.horizon * layer._stage].reshape(12, layer.horizon, layer._stage)
    state_active = (stages[:, :, : layer.nx] != 0).any(axis=(1, 2)) | (lam_x[:, -layer.nx :] != 0).any(axis=1)
    u0_active = stages[:, 0, layer.nx :] != 0
    assert state_active.any() and (~state_active).any() and u0_active.any() and (~u0_active).any()
    covered = []
    original = MPCLayer._riccati_vjp

    def spy(self, *args):
        done = original(self, *args)
        covered.append(done)
        return done

    monkeypatch.setattr(MPCLayer, "_riccati_vjp", spy)
    weights = np.random.default_rng(0).normal(size=(12, 1))
    fast = layer.vjp(solution, weights)
    np.testing.assert_array_equal(covered[0], ~state_active)  # the rest went to casadi's reverse mode
    monkeypatch.setattr(MPCLayer, "_riccati_vjp", lambda self, *args: np.zeros(len(args[-1]), dtype=bool))
    reference = layer.vjp(solution, weights)  # casadi's reverse mode for every row
    for got, expected in zip(fast, reference):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fast[1][u0_active[:, 0]], 0.0, atol=1e-9)  # a saturated u0 does not move


def test_riccati_layer_with_stage_parameters_and_a_control_barrier():
    kwargs = {"compiled": False, "param_interface": "stage", "control_barrier": 0.5}
    fatrop, riccati = (
        MPCLayer(TinyCartPoleOCP(), **kwargs),
        MPCLayer(TinyCartPoleOCP(), solver="riccati", **kwargs),
    )
    states, params = _batch(4, seed=2)
    stage = np.tile(params, (1, fatrop.horizon + 1))
    stage[:, 1::2] *= np.linspace(0.5, 1.0, fatrop.horizon + 1)  # a different position_ref per stage
    a, b = fatrop.solve(states, stage), riccati.solve(states, stage)
    assert a.success.all() and b.success.all() and not b.fallback.any()
    np.testing.assert_allclose(b.u0, a.u0, atol=1e-5)
    np.testing.assert_allclose(b.nlp_outputs["lam_p"], a.nlp_outputs["lam_p"], rtol=1e-4, atol=1e-4)
    weights = np.ones((4, 1))
    np.testing.assert_allclose(riccati.vjp(b, weights)[1], fatrop.vjp(a, weights)[1], rtol=1e-4, atol=1e-6)


def test_solutions_that_fail_the_kkt_check_are_solved_by_fatrop(riccati, fatrop):
    states, params = _batch(4, seed=7)
    layer = pickle.loads(pickle.dumps(riccati))  # also: the batched solver is rebuilt on unpickling
    assert layer._riccati is not None
    layer._riccati.max_iter = 2  # far from converged
    solution = layer.solve(states, params)
    assert solution.fallback.all() and solution.success.all()
    assert all(
        "riccati_not_converged" in status and "fatrop from riccati's iterate" in status
        for status in solution.status
    )
    np.testing.assert_allclose(solution.u0, fatrop.solve(states, params).u0, atol=1e-6)


def test_rows_fatrop_cannot_solve_from_riccatis_iterate_are_solved_from_the_layers_start(riccati, fatrop):
    """The fallback's second start: where fatrop fails from riccati's last iterate (forced here: the first
    fatrop call reports failure), the same rows are solved again from the layer's own (cold) start."""
    states, params = _batch(4, seed=7)
    layer = pickle.loads(pickle.dumps(riccati))
    layer._riccati.max_iter = 2
    starts = []
    solve_nlp = layer._solve_nlp

    def failing_first(guess, nlp_p):
        starts.append(guess.copy())
        result = solve_nlp(guess, nlp_p)
        if len(starts) == 1:
            result.success[:] = False
        return result

    layer._solve_nlp = failing_first
    solution = layer.solve(states, params)
    assert len(starts) == 2
    np.testing.assert_array_equal(starts[1], layer.cold_start(states))
    assert not np.array_equal(starts[0], starts[1])  # the first start was riccati's iterate
    assert solution.success.all() and solution.fallback.all()
    assert all(status.count("fatrop") == 2 for status in solution.status)
    np.testing.assert_allclose(solution.u0, fatrop.solve(states, params).u0, atol=1e-6)


class LinearQuadraticOCP(OptimalControlProblem):
    """A double integrator with quadratic costs and bounds far away: the solution is a linear system's."""

    state_dim, control_dim, horizon, dt = 2, 1, 6, 0.1
    u_low, u_high = np.array([-1e3]), np.array([1e3])
    param_names = ("target",)
    param_low, param_high, param_default = np.array([-1.0]), np.array([1.0]), np.array([0.0])

    def dynamics(self, x, u):
        return ca.vertcat(x[0] + self.dt * x[1], x[1] + self.dt * u[0])

    def stage_cost(self, x, u, p):
        return (x[0] - p[0]) ** 2 + 0.1 * x[1] ** 2 + 0.01 * u[0] ** 2

    def terminal_cost(self, x, p):
        return 10 * (x[0] - p[0]) ** 2 + x[1] ** 2


def test_riccati_ipm_solves_a_linear_quadratic_problem_to_its_kkt_solution():
    ocp = LinearQuadraticOCP()
    layer = MPCLayer(ocp, compiled=False, solver="riccati")
    states = np.array([[0.5, -0.2], [-1.0, 1.0]])
    params = np.array([[0.3], [-0.4]])
    solution = layer.solve(states, params)
    assert solution.success.all() and not solution.fallback.any()
    # The same problem as one dense equality-constrained QP (the far bounds are inactive): KKT by numpy.
    N, nx, nu = ocp.horizon, ocp.state_dim, ocp.control_dim
    A = np.array([[1.0, ocp.dt], [0.0, 1.0]])
    B = np.array([[0.0], [ocp.dt]])
    for row in range(2):
        n = (N + 1) * nx + N * nu
        H, g = np.zeros((n, n)), np.zeros(n)
        target = params[row, 0]
        for k in range(N + 1):
            i = k * (nx + nu)
            weight = (10.0, 1.0) if k == N else (1.0, 0.1)
            H[i, i], H[i + 1, i + 1] = 2 * weight[0], 2 * weight[1]
            g[i] = -2 * weight[0] * target
            if k < N:
                H[i + nx, i + nx] = 0.02
        rows = [np.eye(nx, n)]
        rhs = [states[row]]
        for k in range(N):
            i, j = k * (nx + nu), (k + 1) * (nx + nu)
            c = np.zeros((nx, n))
            c[:, i : i + nx], c[:, i + nx : i + nx + nu], c[:, j : j + nx] = A, B, -np.eye(nx)
            rows.append(c)
            rhs.append(np.zeros(nx))
        C = np.vstack(rows)
        kkt = np.block([[H, C.T], [C, np.zeros((len(C), len(C)))]])
        z = np.linalg.solve(kkt, np.concatenate([-g, np.concatenate(rhs)]))[:n]
        np.testing.assert_allclose(solution.z[row], z, atol=1e-6)


def test_the_stage_cholesky_reports_indefinite_matrices():
    m, r = ca.SX.sym("m", 2, 2), ca.SX.sym("r", 2, 1)
    solve = ca.Function("solve", [m, r], list(_cholesky_solve(m, r)))
    definite = np.array([[4.0, 1.0], [1.0, 3.0]])
    out, pivot = solve(definite, np.array([1.0, 2.0]))
    np.testing.assert_allclose(np.asarray(out).ravel(), np.linalg.solve(definite, [1.0, 2.0]))
    assert float(pivot) > PIVOT_TOL
    _, pivot = solve(np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([1.0, 2.0]))  # eigenvalues 3 and -1
    assert float(pivot) < PIVOT_TOL


def _with_max_iter(ipm: RiccatiIPM, max_iter: int) -> RiccatiIPM:
    """A copy of ``ipm`` (its compiled functions shared) that stops after ``max_iter`` iterations."""
    short = RiccatiIPM.__new__(RiccatiIPM)
    short.__dict__.update(ipm.__dict__)
    short.max_iter = max_iter
    return short


def test_riccati_ipm_reports_rows_it_did_not_converge():
    ocp = TinyCartPoleOCP()
    layer = MPCLayer(ocp, compiled=False, solver="riccati")
    ipm: RiccatiIPM = layer._riccati
    states, params = _batch(3, seed=1)
    guess = layer.cold_start(states)
    body = guess[:, : ocp.horizon * 5].reshape(3, ocp.horizon, 5)
    X = np.concatenate([body[:, :, :4], guess[:, None, -4:]], axis=1)
    P = np.repeat(params[:, None], ocp.horizon + 1, axis=1)
    result = _with_max_iter(ipm, 3).solve(states, P, X, body[:, :, 4:])
    assert not result.converged.any() and (result.iterations == 3).all()
    full = ipm.solve(states, P, X, body[:, :, 4:])
    assert full.converged.all() and (full.iterations < ipm.max_iter).all()
    assert np.all(np.abs(full.U) <= 10.0)  # strictly inside the control bounds, as an interior point


def test_call_batched_matches_one_call_per_row_and_refuses_sparse_outputs():
    x, m = ca.SX.sym("x", 3), ca.SX.sym("m", 2, 2)
    function = ca.Function("f", [x, m], [ca.mtimes(m, x[:2]) * x[2], ca.sum1(x)])
    rng = np.random.default_rng(0)
    cache: dict = {}
    for n in (1, 5, 17, 40):  # 17 and 40 are padded (bucket sizes 18 and 40)
        xs, ms = rng.normal(size=(n, 3)), rng.normal(size=(n, 2, 2))  # (b, columns, rows) of each m
        out, total = call_batched(cache, function, [xs, ms])
        assert out.shape == (n, 1, 2) and total.shape == (n,)
        for b in range(n):
            expected = function(xs[b], ms[b].T)
            np.testing.assert_allclose(out[b, 0], np.asarray(expected[0]).ravel())
            assert total[b] == pytest.approx(float(expected[1]))
    assert [bucket(n) for n in (1, 16, 17, 18, 33, 100)] == [1, 16, 18, 18, 36, 104]
    with pytest.raises(ValueError, match="expected 2 rows of 3"):
        call_batched(cache, function, [np.zeros((2, 4)), np.zeros((2, 2, 2))])
    empty = call_batched(cache, function, [np.zeros((0, 3)), np.zeros((0, 2, 2))])
    assert empty[0].shape == (0, 1, 2) and empty[1].shape == (0,)
    sparse = ca.Function("g", [x], [ca.SX(ca.Sparsity.diag(3))])  # structural zeros off the diagonal
    with pytest.raises(ValueError, match="dense inputs and outputs"):
        call_batched(cache, sparse, [np.zeros((2, 3))])


class PlanarPointMassOCP(OptimalControlProblem):
    """A point mass in the plane (two controls, one often at its bound): quadratic cost to a target."""

    state_dim, control_dim, horizon, dt = 4, 2, 8, 0.2
    u_low, u_high = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    param_names = ("target_x", "target_y")
    param_low, param_high, param_default = np.array([-5.0, -5.0]), np.array([5.0, 5.0]), np.array([0.0, 0.0])

    def dynamics(self, x, u):
        drag = 0.1 * ca.sqrt(
            x[2] ** 2 + x[3] ** 2 + 1e-6
        )  # a nonlinearity: the Hessian depends on the multipliers
        return ca.vertcat(
            x[0] + self.dt * x[2],
            x[1] + self.dt * x[3],
            x[2] + self.dt * (u[0] - drag * x[2]),
            x[3] + self.dt * (u[1] - drag * x[3]),
        )

    def stage_cost(self, x, u, p):
        return (x[0] - p[0]) ** 2 + (x[1] - p[1]) ** 2 + 0.1 * ca.sumsqr(x[2:]) + 0.01 * ca.sumsqr(u)

    def terminal_cost(self, x, p):
        return 10 * ((x[0] - p[0]) ** 2 + (x[1] - p[1]) ** 2) + ca.sumsqr(x[2:])


def test_riccati_sensitivities_with_two_controls_one_at_its_bound(monkeypatch):
    layer = MPCLayer(PlanarPointMassOCP(), compiled=False, solver="riccati")
    rng = np.random.default_rng(4)
    states = rng.uniform(-0.5, 0.5, size=(10, 4))
    params = np.column_stack([rng.choice([-4.0, 4.0], size=10), rng.uniform(-0.3, 0.3, size=10)])
    solution = layer.solve(states, params)
    assert solution.success.all()
    at_bound = layer.controls_at_bound(solution.u0)
    assert at_bound[:, 0].any() and (~at_bound[:, 1]).any()  # x at its bound, y free, in some rows
    weights = rng.normal(size=(10, 2))
    fast = layer.vjp(solution, weights)
    monkeypatch.setattr(MPCLayer, "_riccati_vjp", lambda self, *args: np.zeros(len(args[-1]), dtype=bool))
    reference = layer.vjp(solution, weights)
    for got, expected in zip(fast, reference):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)
    assert np.abs(reference[1]).max() > 1e-3  # not a trivial zero


def test_the_lazy_iterations_give_the_whole_iterations_iterates(monkeypatch):
    """The cheap attempt (one regularisation, one step) and the skipping of stopped rows change the cost
    only: the plain chain of IPOPT's whole iteration gives the same iterates. (The swing-up from anywhere:
    iterations that need a regularisation, and iterations whose full step the filter rejects.)"""
    lazy = MPCLayer(CartPoleSwingUpOCP(horizon=10), compiled=False, solver="riccati")

    def whole_only(self, residual, step, value, options):
        return self._ipopt_iteration(residual, step, value)

    monkeypatch.setattr(RiccatiIPM, "_iteration_function", whole_only)
    plain = MPCLayer(CartPoleSwingUpOCP(horizon=10), compiled=False, solver="riccati")
    states, P, X0, U0 = _swing_up_rows(lazy, 16, seed=0)
    ra = lazy._riccati.solve(states, P, X0, U0)
    rb = plain._riccati.solve(states, P, X0, U0)
    np.testing.assert_array_equal(ra.iterations, rb.iterations)
    assert ra.iterations.mean() > 10  # several chained calls
    np.testing.assert_array_equal(ra.X, rb.X)
    np.testing.assert_array_equal(ra.U, rb.U)


def _swing_up_rows(layer: MPCLayer, n: int, seed: int) -> tuple[np.ndarray, ...]:
    """Cold-start primal points of ``n`` swing-ups from anywhere: states, stage parameters, X, U."""
    rng = np.random.default_rng(seed)
    states = rng.uniform([-1.5, -np.pi, -2.0, -4.0], [1.5, np.pi, 2.0, 4.0], size=(n, 4))
    params = rng.uniform(-np.pi, np.pi, size=(n, 1))
    X, U = layer._split_z(layer.cold_start(states))
    X, U = layer._riccati.initial_point(np.array(X), U)
    return states, layer._stage_params(params), X, U


def test_initial_multipliers_follow_ipopts_rules():
    """Bound multipliers 1 on finite bounds; the costates where no entry exceeds 1e3, zero elsewhere."""
    layer = MPCLayer(CartPoleSwingUpOCP(horizon=10), compiled=False, solver="riccati")
    ipm: RiccatiIPM = layer._riccati
    states, P, X, U = _swing_up_rows(layer, 16, seed=0)
    # cold starts (costates of a large cost gradient) and solutions (small ones)
    solved = ipm.solve(states, P, X, U)
    X, U, P = np.concatenate([X, solved.X]), np.concatenate([U, solved.U]), np.concatenate([P, P])
    zl, zu, Pi = ipm.initial_multipliers(X, U, P)
    np.testing.assert_array_equal(zl, np.broadcast_to(ipm.has_low.astype(float), zl.shape))
    np.testing.assert_array_equal(zu, np.broadcast_to(ipm.has_high.astype(float), zu.shape))
    (costates,) = ipm._call(ipm._costate_fn, X, U, P, (zu - zl)[:, :, ipm.nu :])
    large = np.abs(costates).max(axis=(1, 2)) > 1e3
    assert large.any() and not large.all()  # both cases occur on these cold starts
    np.testing.assert_array_equal(Pi[large], 0.0)
    np.testing.assert_array_equal(Pi[~large], costates[~large])


def test_an_iteration_goes_on_regularising_until_a_step_exists(monkeypatch):
    """Where none of the whole iteration's ``N_DELTAS`` regularisations makes the reduced Hessian positive
    definite, the same iteration tries larger ones (IPOPT's Algorithm IC) instead of staying put."""
    captured = {}

    def one_iteration(self, residual, step, value, options):
        captured.update(residual=residual, step=step, value=value)
        return self._ipopt_iteration(residual, step, value)

    monkeypatch.setattr(RiccatiIPM, "_iteration_function", one_iteration)
    layer = MPCLayer(CartPoleSwingUpOCP(horizon=10), compiled=False, solver="riccati")
    ipm: RiccatiIPM = layer._riccati
    pieces = captured["residual"], captured["step"], captured["value"]
    without = ipm._iteration_body(*pieces, N_DELTAS, N_ALPHAS)
    states, P, X, U = _swing_up_rows(layer, 32, seed=1)
    n = len(states)
    X[:, 0] = states
    zl, zu, _ = ipm.initial_multipliers(X, U, P)
    # the uncapped costates: an indefinite Hessian far from a solution
    (Pi,) = ipm._call(ipm._costate_fn, X, U, P, (zu - zl)[:, :, ipm.nu :])
    state = [X, U, Pi, zl, zu, np.full(n, 0.1), np.zeros(n), np.zeros(n), np.zeros(n)]
    limit = np.full(n, 100.0)
    with_more = ipm._call(ipm._iteration_fn, *state, P, limit)
    plain = ipm._call(without, *state, P, limit)[:-1]
    stayed = np.abs(plain[0] - X).max(axis=(1, 2)) == 0
    assert stayed.any() and not stayed.all()
    moved = np.abs(with_more[0] - X).max(axis=(1, 2)) > 0
    assert moved[stayed].all()
    last_whole_trial = 1e-4 * 100.0  # DELTA_FIRST, grown x 100 (no regularisation before)
    assert (with_more[6][stayed] > last_whole_trial).all()
    for got, expected in zip(with_more, plain):
        np.testing.assert_array_equal(got[~stayed], expected[~stayed])


@pytest.mark.skipif(find_compiler() is None, reason="no C compiler")
@pytest.mark.parametrize("nx, nu", [(5, 2), (4, 1), (3, 3)])
def test_the_c_stage_kernel_computes_the_scalar_stage(nx, nu):
    """The C kernel with loops (odd and even sizes: its 2 x 2 blocks) against the scalar stage, on random
    stages; where Q_uu is indefinite both report a pivot below the tolerance."""
    scalar = _riccati_stage_sx(nx, nu)
    kernel = riccati_stage_c(nx, nu, jit_options("test_stage"))
    rng = np.random.default_rng(nx * 10 + nu)
    m = nx + nu

    def symmetric(n: int, shift: float) -> np.ndarray:
        a = rng.normal(size=(n, n))
        return a @ a.T + shift * np.eye(n)

    for shift in (1.0, -20.0):  # positive definite, then an indefinite Q_uu
        args = [symmetric(m, shift), rng.normal(size=(nx, nx)), rng.normal(size=(nx, nu))]
        args += [rng.normal(size=n) for n in (nx, m)] + [rng.uniform(0, 1, size=n) for n in (nu, nx)]
        args += [rng.normal(size=n) for n in (nu, nx)] + [symmetric(nx, 0.5), rng.normal(size=nx), 1e-3]
        expected = [np.asarray(v) for v in scalar(*args)]
        got = [np.asarray(v) for v in kernel(*args)]
        if shift > 0:
            assert expected[-1] > PIVOT_TOL
            for e, g in zip(expected, got):
                np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-9)
            np.testing.assert_array_equal(got[0], got[0].T)  # P_k exactly symmetric
        else:
            assert expected[-1] < PIVOT_TOL and got[-1] < PIVOT_TOL
            np.testing.assert_allclose(got[-1], expected[-1], rtol=1e-9)


@pytest.mark.skipif(find_compiler() is None, reason="no C compiler")
def test_a_riccati_layer_with_the_c_stage_gives_the_scalar_stages_controls_and_gradients(monkeypatch):
    """Where the iteration is too large to expand the compiled layer's stage is the C kernel: forced here on
    the small cart-pole, its solutions and sensitivities are those of the interpreted scalar stage."""
    states, params = _batch(8, seed=5)
    scalar = MPCLayer(TinyCartPoleOCP(), compiled=False, solver="riccati")
    monkeypatch.setattr(riccati_ipm, "EXPAND_MAX_INSTRUCTIONS", 0)
    kernel = MPCLayer(TinyCartPoleOCP(), compiled=True, solver="riccati", compile_flags=("-O0",))
    assert kernel._riccati.stage_in_c and not scalar._riccati.stage_in_c
    a, b = scalar.solve(states, params), kernel.solve(states, params)
    assert a.success.all() and b.success.all() and not b.fallback.any()
    np.testing.assert_array_equal(a.iterations, b.iterations)
    np.testing.assert_allclose(b.z, a.z, rtol=1e-7, atol=1e-9)
    weights = np.random.default_rng(0).normal(size=(8, 1))
    for got, expected in zip(kernel.vjp(b, weights), scalar.vjp(a, weights)):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)


def test_the_barrier_update_follows_ipopts_monotone_rule():
    """One iteration's barrier parameter against Eq. 7 computed in numpy, with the complementarity error the
    brute-force ``max |z s - mu|`` over the finite bounds, from the iterates of solves stopped early and from
    solutions, at barrier parameters from 1e-1 to 1e-7 (several updates in some rows, none in others)."""
    layer = MPCLayer(CartPoleSwingUpOCP(horizon=10), compiled=False, solver="riccati")
    ipm: RiccatiIPM = layer._riccati
    states, P, X, U = _swing_up_rows(layer, 8, seed=1)
    results = []
    for max_iter in (4, 8, 12, 100):
        results.append(_with_max_iter(ipm, max_iter).solve(states, P, X, U))
    X, U, Pi = (np.concatenate([getattr(r, name) for r in results]) for name in ("X", "U", "Pi"))
    zl, zu = (np.concatenate([getattr(r, name) for r in results]) for name in ("z_lower", "z_upper"))
    P = np.concatenate([P] * len(results))
    b, N, m = len(X), ipm.horizon, ipm.nx + ipm.nu
    mu_in = 10.0 ** -np.random.default_rng(0).integers(1, 8, size=b).astype(float)
    zeros = np.zeros(b)
    out = ipm._call(ipm._iteration_fn, X, U, Pi, zl, zu, mu_in, zeros, zeros, zeros, P, np.ones(b))
    mu_next = out[STATE_NAMES.index("mu")]
    # Eq. 7 with IPOPT's scaled errors, in numpy
    sl, su = ipm._slacks(X, U)
    _, defects, grad, _ = ipm._call(ipm._residual_fn, X, U, P, Pi)
    low, high = ipm.has_low.astype(float), ipm.has_high.astype(float)
    z_sum = np.abs(zl * low).sum(axis=(1, 2)) + np.abs(zu * high).sum(axis=(1, 2))
    s_d = np.maximum(100.0, (np.abs(Pi[:, 1:]).sum(axis=(1, 2)) + z_sum) / (N * ipm.nx + 2 * m * N)) / 100
    s_c = np.maximum(100.0, z_sum / (2 * m * N)) / 100
    errors = np.maximum(np.abs(grad - zl + zu).max(axis=(1, 2)) / s_d, np.abs(defects).max(axis=(1, 2)))
    expected = mu_in.copy()
    for _ in range(MU_UPDATES):
        comp = np.maximum(
            np.where(ipm.has_low, np.abs(zl * sl - expected[:, None, None]), 0).max(axis=(1, 2)),
            np.where(ipm.has_high, np.abs(zu * su - expected[:, None, None]), 0).max(axis=(1, 2)),
        )
        lower = (np.maximum(errors, comp / s_c) <= 10 * expected) & (expected > ipm.mu_min)
        smaller = np.maximum(ipm.mu_min, np.minimum(0.2 * expected, expected**1.5))
        expected = np.where(lower, smaller, expected)
    # a row whose unbarriered error is below tol has converged and stays put
    products = np.maximum(
        np.where(ipm.has_low, np.abs(zl * sl), 0).max(axis=(1, 2)),
        np.where(ipm.has_high, np.abs(zu * su), 0).max(axis=(1, 2)),
    )
    expected = np.where(np.maximum(errors, products / s_c) <= ipm.tol, mu_in, expected)
    assert (expected < mu_in).sum() >= 4 and (expected == mu_in).sum() >= 4
    np.testing.assert_allclose(mu_next, expected, rtol=1e-12)


class OneSidedPointMassOCP(PlanarPointMassOCP):
    """The point mass with one state bound on one side only (x position >= -0.5): the finite lower and
    upper bounds of a stage differ."""

    x_low = np.array([-0.5, -np.inf, -np.inf, -np.inf])
    x_high = np.full(4, np.inf)


def test_riccati_with_a_one_sided_state_bound_gives_fatrops_solutions(fatrop):
    """The fraction-to-the-boundary rule and the barrier terms read each side's finite bounds: with the
    bound active (a target beyond it) the solutions are fatrop's and stay inside the bound."""
    riccati = MPCLayer(OneSidedPointMassOCP(), compiled=False, solver="riccati")
    reference = MPCLayer(OneSidedPointMassOCP(), compiled=False)
    rng = np.random.default_rng(2)
    states = rng.uniform(-0.3, 0.3, size=(6, 4))
    params = np.column_stack([np.full(6, -4.0), rng.uniform(-1, 1, size=6)])
    a, b = riccati.solve(states, params), reference.solve(states, params)
    assert a.success.all() and not a.fallback.any() and b.success.all()
    X, _ = riccati._split_z(a.z)
    assert np.all(X[:, 1:, 0] >= -0.5 - 1e-8) and np.any(X[:, 1:, 0] < -0.5 + 1e-6)  # active, not crossed
    np.testing.assert_allclose(a.z, b.z, atol=1e-6)
