"""The differentiable MPC layer: exact solutions, exact sensitivities, batching, warm starts, bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch as th

from sb3_stein.common.backends import CASADI, rk4_step
from sb3_stein.common.mpc import BARRIER_RELAXATION, MPCLayer, relaxed_log_barrier
from sb3_stein.common.ocp import OptimalControlProblem


def _pendulum_on_cart(x, u, be):
    """A small nonlinear ODE (cart with a pendulum, unit masses and length, g = 9.81)."""
    _, theta, v, omega = be.split(x)
    force = be.split(u)[0]
    s, c = be.sin(theta), be.cos(theta)
    denom = 2.0 - c * c
    acc = (force + s * (omega * omega - 9.81 * c)) / denom
    alpha = (-force * c - omega * omega * c * s + 2.0 * 9.81 * s) / denom
    return be.stack([v, omega, acc, alpha])


class TinyCartPoleOCP(OptimalControlProblem):
    """T = 20 stages, |u| <= 10, |x| <= 2, learnable (theta_ref, position_ref)."""

    state_dim, control_dim, horizon, dt = 4, 1, 20, 0.05
    u_low, u_high = np.array([-10.0]), np.array([10.0])
    x_low = np.array([-2.0, -np.inf, -np.inf, -np.inf])
    x_high = np.array([2.0, np.inf, np.inf, np.inf])
    param_names = ("theta_ref", "position_ref")
    param_low, param_high = np.array([-2 * np.pi, -1.0]), np.array([2 * np.pi, 1.0])
    param_default = np.array([0.0, 0.0])

    def dynamics(self, x, u):
        return rk4_step(_pendulum_on_cart, x, u, self.dt, CASADI)

    def _residual_cost(self, x, p):
        import casadi as ca

        r = x - ca.vertcat(p[1], p[0], 0, 0)
        return 10 * r[0] ** 2 + 10 * r[1] ** 2 + 0.1 * r[2] ** 2 + 0.1 * r[3] ** 2

    def stage_cost(self, x, u, p):
        return self._residual_cost(x, p) + 0.05 * u[0] ** 2

    def terminal_cost(self, x, p):
        return self._residual_cost(x, p)


def _batch(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    states = rng.uniform([-1.0, -np.pi, -1.0, -1.0], [1.0, np.pi, 1.0, 1.0], size=(n, 4))
    params = rng.uniform([-1.0, -0.5], [1.0, 0.5], size=(n, 2))
    return states, params


@pytest.fixture(scope="module")
def layer() -> MPCLayer:
    return MPCLayer(TinyCartPoleOCP())


def _central_differences(layer: MPCLayer, states, params, weights, h: float = 1e-5):
    """d (weights . u0) / d (states, params), row by row, from tightly converged solves."""
    grad_s, grad_p = np.zeros_like(states), np.zeros_like(params)
    for b in range(len(states)):
        for target, grad in ((states, grad_s), (params, grad_p)):
            for i in range(target.shape[1]):
                plus, minus = target[b : b + 1].copy(), target[b : b + 1].copy()
                plus[0, i] += h
                minus[0, i] -= h
                args = {"states": states[b : b + 1], "params": params[b : b + 1]}
                key = "states" if target is states else "params"
                u_plus = layer.solve(**{**args, key: plus}).u0[0]
                u_minus = layer.solve(**{**args, key: minus}).u0[0]
                grad[b, i] = weights[b] @ (u_plus - u_minus) / (2 * h)
    return grad_s, grad_p


def test_u0_matches_a_tightly_converged_ipopt_solve(layer):
    states, params = _batch(12)
    fast = layer.solve(states, params)
    reference = MPCLayer(TinyCartPoleOCP(), solver="ipopt", tol=1e-12, max_iter=500).solve(states, params)
    assert fast.success.all() and reference.success.all()
    np.testing.assert_allclose(fast.u0, reference.u0, atol=1e-6)


def test_sensitivities_match_central_differences_including_saturated_controls(layer):
    states, params = _batch(10, seed=1)
    solution = layer.solve(states, params)
    saturated = np.isclose(np.abs(solution.u0[:, 0]), 10.0)
    assert solution.success.all()
    assert saturated.any() and (~saturated).any(), "the batch must mix saturated and free first controls"
    weights = np.random.default_rng(2).normal(size=(len(states), 1))
    grad_s, grad_p = layer.vjp(solution, weights)
    fd_s, fd_p = _central_differences(layer, states, params, weights)
    np.testing.assert_allclose(grad_s, fd_s, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad_p, fd_p, rtol=1e-4, atol=1e-5)
    # The free samples have real sensitivities (the silent-zero trap would make these zero).
    assert np.abs(grad_p[~saturated]).max() > 1e-2
    np.testing.assert_allclose(grad_p[saturated], 0.0, atol=1e-8)


def test_without_zeroing_small_multipliers_the_gradient_silently_vanishes(monkeypatch):
    """The trap the layer avoids (casadi issue 2660): this test documents it."""
    states, params = _batch(6, seed=1)
    trapped = MPCLayer(TinyCartPoleOCP())
    monkeypatch.setattr(MPCLayer, "_active_multipliers", lambda self, z, lam_x: lam_x)
    # Row by row: with every bound taken as active, casadi's mapped reverse may even fail to evaluate.
    for b in range(6):
        solution = trapped.solve(states[b : b + 1], params[b : b + 1])
        _, grad_p = trapped.vjp(solution, np.ones((1, 1)))
        assert np.abs(grad_p).max() < 1e-8


def test_inactive_bounds_are_also_recognised_by_their_slack(layer):
    """With the multiplier threshold off, the distance to the bound alone finds the inactive bounds."""
    states, params = _batch(6, seed=1)
    by_slack = MPCLayer(TinyCartPoleOCP(), active_tol=1e-300)
    solution = by_slack.solve(states, params)
    np.testing.assert_allclose(
        by_slack.vjp(solution, np.ones((6, 1)))[1],
        layer.vjp(layer.solve(states, params), np.ones((6, 1)))[1],
        atol=1e-8,
    )


def test_torch_backward_equals_vjp_and_flows_to_states_and_params(layer):
    states, params = _batch(5, seed=3)
    s = th.tensor(states, dtype=th.float32, requires_grad=True)
    p = th.tensor(params, dtype=th.float32, requires_grad=True)
    u0, success, solution = layer(s, p)
    assert u0.shape == (5, 1) and u0.dtype == th.float32 and success.dtype == th.bool
    weights = th.randn(5, 1)
    (u0 * weights).sum().backward()
    grad_s, grad_p = layer.vjp(solution, weights.double().numpy())
    np.testing.assert_allclose(s.grad.numpy(), grad_s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p.grad.numpy(), grad_p, rtol=1e-5, atol=1e-6)


def test_batched_and_one_by_one_solves_agree(layer):
    states, params = _batch(6, seed=4)
    batched = layer.solve(states, params)
    single = np.concatenate([layer.solve(states[b : b + 1], params[b : b + 1]).u0 for b in range(6)])
    np.testing.assert_allclose(batched.u0, single, atol=1e-9)
    weights = np.ones((6, 1))
    grad_batched = layer.vjp(batched, weights)[1]
    grad_single = np.concatenate(
        [
            layer.vjp(layer.solve(states[b : b + 1], params[b : b + 1]), weights[b : b + 1])[1]
            for b in range(6)
        ]
    )
    np.testing.assert_allclose(grad_batched, grad_single, atol=1e-8)


def test_warm_start_reduces_iterations(layer):
    states, params = _batch(8, seed=5)
    first = layer.solve(states, params)
    moved = states + 0.01
    cold = layer.solve(moved, params)
    warm = layer.solve(moved, params, initial_guess=first.z)
    assert warm.success.all()
    np.testing.assert_allclose(warm.u0, cold.u0, atol=1e-6)
    assert warm.iterations.sum() < 0.8 * cold.iterations.sum()
    assert layer.shift(first.z).shape == first.z.shape


def test_stage_interface_with_equal_stages_equals_global(layer):
    stage = MPCLayer(TinyCartPoleOCP(), param_interface="stage")
    assert stage.n_phi == 21 * 2 and stage.parameter_space.shape == (42,)
    states, params = _batch(3, seed=6)
    tiled = np.tile(params, (1, 21))
    solution = stage.solve(states, tiled)
    np.testing.assert_allclose(solution.u0, layer.solve(states, params).u0, atol=1e-7)
    # Per-stage sensitivities sum to the global one (chain rule through the tiling).
    weights = np.ones((3, 1))
    per_stage = stage.vjp(solution, weights)[1].reshape(3, 21, 2).sum(axis=1)
    np.testing.assert_allclose(per_stage, layer.vjp(layer.solve(states, params), weights)[1], atol=1e-6)


def test_failed_solves_are_flagged_and_have_zero_gradient():
    layer = MPCLayer(TinyCartPoleOCP(), max_iter=2)
    states, params = _batch(4, seed=7)
    solution = layer.solve(states, params)
    assert not solution.success.any()
    assert (solution.iterations <= 3).all()  # fatrop counts the initial iterate too
    assert np.all(np.abs(solution.u0) <= 10.0)
    grad_s, grad_p = layer.vjp(solution, np.ones((4, 1)))
    assert not grad_s.any() and not grad_p.any()
    fallback = layer.fallback_controls(None, 4)
    np.testing.assert_array_equal(fallback, np.zeros((4, 1)))


def test_layer_pickles_without_casadi_objects(layer):
    clone = pickle.loads(pickle.dumps(layer))
    states, params = _batch(2, seed=8)
    np.testing.assert_allclose(clone.solve(states, params).u0, layer.solve(states, params).u0, atol=1e-10)


class _Broken(TinyCartPoleOCP):
    pass


@pytest.mark.parametrize(
    ("attribute", "value", "match"),
    [
        ("u_low", np.array([10.0]), "u_low < u_high"),
        ("x_low", np.array([3.0, 0, 0, 0]), "x_low < x_high"),
        ("param_low", np.array([0.0]), r"param_low must have shape \(2,\)"),
        ("param_default", np.array([9.0, 0.0]), "outside"),
        ("horizon", 0, "horizon must be an integer >= 1"),
    ],
)
def test_bad_ocps_are_refused_naming_the_attribute(attribute, value, match):
    ocp = _Broken()
    setattr(ocp, attribute, value)
    with pytest.raises(ValueError, match=match):
        MPCLayer(ocp)


def test_bad_calls_are_refused(layer):
    states, params = _batch(2)
    with pytest.raises(ValueError, match="params must have shape"):
        layer.solve(states, params[:, :1])
    with pytest.raises(ValueError, match="states must have shape"):
        layer.solve(states[:, :3], params)
    with pytest.raises(ValueError, match="finite"):
        layer.solve(np.full_like(states, np.nan), params)
    with pytest.raises(ValueError, match="param_interface"):
        MPCLayer(TinyCartPoleOCP(), param_interface="per-stage")
    with pytest.raises(ValueError, match="solver"):
        MPCLayer(TinyCartPoleOCP(), solver="acados")


def test_rows_without_sensitivities_get_zero_gradient_and_are_counted(monkeypatch):
    layer = MPCLayer(TinyCartPoleOCP())
    states, params = _batch(4, seed=9)
    solution = layer.solve(states, params)
    expected = layer.vjp(solution, np.ones((4, 1)))[1]
    original = MPCLayer._reverse_rows

    def degenerate_row_2(self, solution, rows, lam_x, out, seed):
        if 2 in rows:  # the mapped call over all rows fails, and so does row 2 alone
            raise RuntimeError("Evaluation failed")
        return original(self, solution, rows, lam_x, out, seed)

    monkeypatch.setattr(MPCLayer, "_reverse_rows", degenerate_row_2)
    grad = layer.vjp(solution, np.ones((4, 1)))[1]
    np.testing.assert_allclose(grad[[0, 1, 3]], expected[[0, 1, 3]], atol=1e-9)
    assert not grad[2].any()
    assert layer.sensitivity_failures == 1


# ----------------------------------------------------------------------------- warm starts and diagnostics


def test_warm_start_shifts_plans_cold_starts_rows_without_one_and_fixes_x0(layer):
    states, params = _batch(3, seed=10)
    plans = layer.solve(states, params).z
    plans[1] = 0.0  # what the replay buffer stores for "no plan"
    moved = states + 0.1
    guess = layer.warm_start(moved, plans, shift=True)
    np.testing.assert_allclose(guess[[0, 2], layer.nx :], layer.shift(plans)[[0, 2], layer.nx :])
    np.testing.assert_allclose(guess[1], layer.cold_start(moved[1:2])[0])
    np.testing.assert_allclose(guess[:, : layer.nx], moved)
    # An explicit has_plan wins over the all-zero rule (acting forgets a plan without erasing it).
    unshifted = layer.warm_start(moved, plans, has_plan=np.array([False, True, True]), shift=False)
    np.testing.assert_allclose(unshifted[0], layer.cold_start(moved[:1])[0])
    np.testing.assert_allclose(unshifted[1:, layer.nx :], plans[1:, layer.nx :])
    np.testing.assert_allclose(layer.warm_start(moved, None), layer.cold_start(moved))


def test_controls_at_bound_on_a_constructed_batch(layer):
    # |u| <= 10, tol 1e-8: "at" means within sqrt(1e-8) * (1 + 10) = 1.1e-3 of a bound.
    u0 = np.array([[10.0], [-10.0], [10.0 - 1e-3], [-10.0 + 1e-3], [9.99], [-9.99], [0.0], [3.0]])
    expected = [True, True, True, True, False, False, False, False]
    np.testing.assert_array_equal(layer.controls_at_bound(u0)[:, 0], expected)
    assert layer.controls_at_bound(u0).mean() == 0.5


def test_params_jacobian_matches_finite_differences_and_is_zero_at_a_bound(layer):
    states, params = _batch(6, seed=1)
    solution = layer.solve(states, params)
    failures = layer.sensitivity_failures
    jacobian = layer.params_jacobian(solution)
    assert jacobian.shape == (6, 1, 2)
    assert layer.sensitivity_failures == failures  # a diagnostic: not a training gradient's failure
    _, fd_p = _central_differences(layer, states, params, np.ones((6, 1)))
    np.testing.assert_allclose(jacobian[:, 0], fd_p, rtol=1e-4, atol=1e-5)
    saturated = layer.controls_at_bound(solution.u0)[:, 0]
    assert saturated.any() and (~saturated).any()
    np.testing.assert_allclose(jacobian[saturated], 0.0, atol=1e-8)
    assert np.abs(jacobian[~saturated]).max() > 1e-2


@pytest.mark.parametrize("threads", [1, 2])
def test_one_mapped_call_agrees_with_the_loop_including_success_flags(threads):
    """``batch_mode="map"`` (one casadi call, success by the KKT check) against ``"loop"`` (the solver's
    own flags): with max_iter = 8 only some of the 32 solves converge, and the same ones do."""
    states, params = _batch(32, seed=1)
    for max_iter in (100, 8):
        loop = MPCLayer(TinyCartPoleOCP(), batch_mode="loop", max_iter=max_iter)
        mapped = MPCLayer(TinyCartPoleOCP(), batch_mode="map", max_iter=max_iter, n_threads=threads)
        a, b = loop.solve(states, params), mapped.solve(states, params)
        np.testing.assert_array_equal(b.success, a.success)
        np.testing.assert_allclose(b.u0, a.u0, rtol=1e-12, atol=1e-12)
        assert (b.iterations == -1).all() and all(s.startswith("kkt_") for s in b.status)
        weights = np.ones((32, 1))
        for ga, gb in zip(loop.vjp(a, weights), mapped.vjp(b, weights)):
            np.testing.assert_allclose(gb, ga, rtol=1e-10, atol=1e-12)
        if max_iter == 8:
            assert 0 < a.success.sum() < 32
    residuals = mapped.kkt_residuals(b)
    assert residuals.shape == (32, 3)
    assert (residuals[b.success] <= mapped.kkt_tol).all() and (
        residuals[~b.success].max(axis=1) > mapped.kkt_tol
    ).all()


@pytest.mark.parametrize("batch_mode", ["loop", "map"])
def test_a_failed_warm_start_is_retried_cold_and_counted(batch_mode):
    """A warm start far off (noise of 10 on every variable) fails within 20 iterations; the cold start
    converges: with retry_cold the batch comes back solved, as the cold solve, and flagged retried."""
    states, params = _batch(8, seed=2)
    plain = MPCLayer(TinyCartPoleOCP(), batch_mode=batch_mode, max_iter=20, retry_cold=False)
    bad = plain.cold_start(states) + 10.0 * np.random.default_rng(0).normal(size=(8, plain.nz))
    failed = plain.solve(states, params, initial_guess=bad)
    assert not failed.success.any() and not failed.retried.any()
    layer = MPCLayer(TinyCartPoleOCP(), batch_mode=batch_mode, max_iter=20)
    retried, cold = layer.solve(states, params, initial_guess=bad), layer.solve(states, params)
    assert retried.success.all() and retried.retried.all() and not cold.retried.any()
    np.testing.assert_array_equal(retried.u0, cold.u0)
    np.testing.assert_array_equal(retried.z, cold.z)
    if batch_mode == "loop":
        assert (retried.iterations == cold.iterations + failed.iterations).all()
    assert all("cold retry" in status for status in retried.status)
    good = layer.solve(states, params, initial_guess=cold.z)  # a good warm start: nothing retried
    assert good.success.all() and not good.retried.any()


def test_bad_batching_options_are_refused():
    with pytest.raises(ValueError, match="batch_mode"):
        MPCLayer(TinyCartPoleOCP(), batch_mode="vectorised")
    with pytest.raises(ValueError, match="n_threads"):
        MPCLayer(TinyCartPoleOCP(), n_threads=0)


@pytest.mark.parametrize("batch_mode", ["loop", "map"])
def test_stage_functions_give_the_inline_solution_and_gradients(batch_mode):
    """The NLP built from per-stage casadi Functions (an MX graph) solves to the inline SX NLP's
    controls, iteration counts and sensitivities."""
    states, params = _batch(8, seed=6)
    inline = MPCLayer(TinyCartPoleOCP(), batch_mode=batch_mode)
    staged = MPCLayer(TinyCartPoleOCP(), batch_mode=batch_mode, stage_functions=True)
    assert staged.stage_functions and not inline.stage_functions
    a, b = inline.solve(states, params), staged.solve(states, params)
    assert a.success.all() and b.success.all()
    np.testing.assert_allclose(b.u0, a.u0, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(b.iterations, a.iterations)
    weights = np.ones((8, 1))
    for ga, gb in zip(inline.vjp(a, weights), staged.vjp(b, weights)):
        np.testing.assert_allclose(gb, ga, rtol=1e-8, atol=1e-9)


def test_the_chain_builds_from_stage_functions_by_default():
    from sb3_stein.envs.chain import ChainOCP

    assert MPCLayer(ChainOCP()).stage_functions
    assert not MPCLayer(ChainOCP(), stage_functions=False).stage_functions


def test_control_barrier_keeps_saturated_controls_inside_with_exact_nonzero_gradients(layer):
    """``control_barrier > 0``: the first controls that the hard bound holds at +-10 move strictly
    inside, their ``d u0 / d phi`` becomes nonzero and still matches central differences; the free
    controls barely move (the barrier's curvature at the centre is ``2 mu / h^2``)."""
    states, params = _batch(10, seed=1)
    hard = layer.solve(states, params)
    saturated = layer.controls_at_bound(hard.u0)[:, 0]
    assert saturated.any() and (~saturated).any()
    barrier = MPCLayer(TinyCartPoleOCP(), control_barrier=1e-2)
    solution = barrier.solve(states, params)
    assert solution.success.all()
    assert np.all(np.abs(solution.u0) < 10.0)
    np.testing.assert_allclose(solution.u0[~saturated], hard.u0[~saturated], atol=0.1)
    jacobian = barrier.params_jacobian(solution)
    _, fd_p = _central_differences(barrier, states, params, np.ones((10, 1)))
    np.testing.assert_allclose(jacobian[:, 0], fd_p, rtol=1e-4, atol=1e-6)
    assert np.abs(jacobian[saturated]).max(axis=(1, 2)).min() > 1e-6  # alive where the hard bound had 0


def test_relaxed_log_barrier_is_the_log_inside_and_a_finite_c2_extension_outside():
    """Inside the hard box (``z >= ~2e-6``) the exact ``-log z``; below ``delta`` (solver iterates outside
    the box) a finite quadratic whose value, slope and curvature meet the log's at ``delta``, so no NaN
    reaches the solver (it used to print casadi's NaN warnings by the thousand in SAC-FOP runs)."""
    import casadi as ca

    z = ca.SX.sym("z")
    f = ca.Function(
        "f",
        [z],
        [
            relaxed_log_barrier(z),
            ca.gradient(relaxed_log_barrier(z), z),
            ca.hessian(relaxed_log_barrier(z), z)[0],
        ],
    )
    delta = BARRIER_RELAXATION
    for inside in (2e-6, 0.3, 1.0):
        assert float(f(inside)[0]) == pytest.approx(-np.log(inside), rel=1e-12)
    below, above = [np.array([float(v) for v in f(delta * (1 + side * 1e-9))]) for side in (-1, 1)]
    np.testing.assert_allclose(below, above, rtol=1e-6)  # C^2 at the seam
    outside = np.array([float(v) for v in f(-3.0)])  # w^2 = 4: twice the half-width out
    assert np.all(np.isfinite(outside)) and outside[0] > -np.log(delta) and outside[1] < 0


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), True, "1"])
def test_bad_control_barrier_is_refused(value):
    with pytest.raises(ValueError, match="control_barrier"):
        MPCLayer(TinyCartPoleOCP(), control_barrier=value)


def test_cold_guess_rollout_follows_the_dynamics_and_saves_iterations():
    """``cold_guess="rollout"`` (default): the guess is the OCP's trajectory under the middle control,
    clipped into the state bounds; ``"constant"`` repeats the state. On the tiny cart-pole the rollout
    needs fewer iterations (12.1 -> 10.5 on this batch)."""
    import casadi as ca

    ocp = TinyCartPoleOCP()
    rollout, constant = MPCLayer(ocp, compiled=False), MPCLayer(ocp, compiled=False, cold_guess="constant")
    assert rollout.cold_guess == "rollout"
    states, params = _batch(32, seed=4)
    guess = rollout.cold_start(states)
    x, u = ca.SX.sym("x", 4), ca.SX.sym("u", 1)
    step = ca.Function("f", [x, u], [ocp.dynamics(x, u)])
    expected = states[0]
    for k in range(ocp.horizon):
        start = k * rollout._stage
        assert guess[0, start + 4] == 0.0  # the middle of |u| <= 10
        expected = np.asarray(step(expected, 0.0)).ravel()
        np.testing.assert_allclose(
            guess[0, start + 5 : start + 9], np.clip(expected, ocp.x_low, ocp.x_high), rtol=1e-12, atol=1e-12
        )
    flat = constant.cold_start(states)
    np.testing.assert_allclose(flat[:, 5:9], np.clip(states, ocp.x_low, ocp.x_high))
    a, b = rollout.solve(states, params), constant.solve(states, params)
    assert a.success.all() and b.success.all()
    assert a.iterations.mean() < b.iterations.mean()
    with pytest.raises(ValueError, match="cold_guess"):
        MPCLayer(ocp, cold_guess="zeros")


def test_solver_options_reach_the_solver_and_reserved_names_are_refused():
    ocp = TinyCartPoleOCP()
    states, params = _batch(4, seed=4)
    default = MPCLayer(ocp, compiled=False).solve(states, params)
    pushed = MPCLayer(ocp, compiled=False, solver_options={"mu_init": 1.0}).solve(states, params)
    assert pushed.success.all() and not np.array_equal(pushed.iterations, default.iterations)
    with pytest.raises(ValueError, match="tol"):
        MPCLayer(ocp, solver_options={"tol": 1e-3})
    for solver in ("fatrop", "ipopt"):
        with pytest.raises(ValueError, match="no_such_option"):
            MPCLayer(ocp, solver=solver, compiled=False, solver_options={"no_such_option": 1})
    with pytest.raises(TypeError, match="solver_options"):
        MPCLayer(ocp, solver_options=[("mu_init", 1.0)])


def test_a_discounted_ocp_weights_stage_k_by_discount_to_the_k():
    """``OptimalControlProblem.discount``: the layer's objective at its solution is
    ``sum_k discount^k l(x_k, u_k) + discount^N V(x_N)`` (DMPC's Eq. 10)."""

    class Discounted(TinyCartPoleOCP):
        discount = 0.9

    layer = MPCLayer(Discounted(), compiled=False)
    states, params = _batch(3, seed=5)
    solution = layer.solve(states, params)
    assert solution.success.all()
    ocp, z = layer.ocp, solution.z
    for b in range(3):
        total = 0.0
        for k in range(ocp.horizon):
            x = z[b, k * layer._stage : k * layer._stage + 4]
            u = z[b, k * layer._stage + 4 : (k + 1) * layer._stage]
            total += 0.9**k * float(ocp.stage_cost(x, u, params[b]))
        total += 0.9**ocp.horizon * float(ocp.terminal_cost(z[b, -4:], params[b]))
        assert solution.nlp_outputs["f"][b].item() == pytest.approx(total, rel=1e-10)
    undiscounted = MPCLayer(TinyCartPoleOCP(), compiled=False).solve(states, params).u0
    assert not np.allclose(undiscounted, solution.u0)

    class Bad(TinyCartPoleOCP):
        discount = 1.5

    with pytest.raises(ValueError, match="discount"):
        MPCLayer(Bad())
