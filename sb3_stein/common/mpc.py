"""A batched, differentiable MPC layer: ``u0*(s, phi)`` and its exact sensitivities.

The layer solves the parameterized OCP of :mod:`sb3_stein.common.ocp` for a batch of initial states
``s`` and parameters ``phi`` and returns the first control ``u0*(s, phi)`` of each solution and a
per-sample success flag. Its backward pass is the vector-Jacobian product of the control solution
map by implicit differentiation of the KKT conditions at the solution (the lecture's "Control
Solution Map", shared/papers/001_fba01a676f0f8ac9.txt), so SAC-FOP's actor gradient flows
through the MPC into the parameter network.

How (measured in shared/notes/differentiable-mpc.md):

* casadi builds one NLP with multiple shooting, variables ordered stage by stage
  ``z = (x_0, u_0, x_1, u_1, ..., u_{N-1}, x_N)``, the NLP parameter ``P = (s, phi)`` and the
  initial state as the equality ``x_0 = s`` (so ``d u0 / d s`` is part of ``d u0 / d P``). The
  default solver is fatrop (a structure-exploiting interior point method, found with
  ``structure_detection='auto'``); IPOPT is the fallback option.
* Samples are solved one by one (a Python loop over casadi calls measured as fast as
  ``Function.map``, and only a per-call solve gives each sample's return status and iteration count).
* The backward pass calls ``solver.reverse(1)`` (mapped over the batch) fed with the forward
  primal-dual solution, without re-solving (``solver="riccati"``: one Riccati recursion of the same
  linear system per sample, casadi's reverse mode for the rows it does not cover). Interior point
  methods leave multipliers of about ``1e-12`` on inactive bounds, which casadi's sensitivity code
  treats as active bounds and which silently zero the gradient (casadi issue 2660): multipliers with
  ``|lam_x| < active_tol`` are zeroed first. The test suite checks the gradients against central finite
  differences.
* A failed solve is never returned as valid: its ``success`` flag is ``False``, its ``u0`` is the
  (clipped) last iterate, and its gradient is zero. Callers decide what to do (SAC-FOP masks such
  samples out of its losses; acting falls back to a safe action, see
  :meth:`MPCLayer.fallback_controls`).
* Warm starts: :meth:`MPCLayer.solve` takes an initial guess; :meth:`MPCLayer.warm_start` builds
  it from earlier plans (shifted by one stage when they are one time step old, cold where there is
  none), the one recipe that acting and SAC-FOP's updates share.
* Diagnostics: :meth:`MPCLayer.controls_at_bound` (first controls held at a control bound, where
  the sensitivities vanish) and :meth:`MPCLayer.params_jacobian` (``d u0* / d phi``).

Shapes: ``states (batch, nx)``, ``params (batch, n_phi)``, ``u0 (batch, nu)``, ``z (batch, nz)``.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces

from sb3_stein.common.batched_call import call_batched
from sb3_stein.common.jit_cache import DEFAULT_FLAGS, find_compiler, jit_nlpsol, jit_options
from sb3_stein.common.ocp import OptimalControlProblem
from sb3_stein.common.riccati_ipm import PIVOT_TOL as RICCATI_PIVOT_TOL
from sb3_stein.common.validation import check_choice, check_int, check_positive

__all__ = ["PARAM_INTERFACES", "SOLVERS", "MPCLayer", "MPCSolution", "parameter_box"]

#: The lecture's parameter interfaces ("Controller Comparison").
PARAM_INTERFACES = ("global", "stage")
SOLVERS = ("fatrop", "ipopt", "riccati")
COLD_GUESSES = ("rollout", "constant")
BATCH_MODES = ("auto", "map", "loop")


@dataclass
class MPCSolution:
    """The result of :meth:`MPCLayer.solve` for a batch (numpy, float64).

    :ivar u0: ``(batch, nu)`` first controls, clipped into the control bounds.
    :ivar z: ``(batch, nz)`` primal solutions (a warm start for the next call).
    :ivar success: ``(batch,)`` whether the solver reported convergence (and the result is finite);
        mapped solves: whether the KKT check passed (:meth:`MPCLayer.kkt_residuals`).
    :ivar iterations: ``(batch,)`` solver iterations (``-1``: unknown, a mapped solve).
    :ivar status: per-sample solver return status strings.
    :ivar nlp_outputs: per-sample casadi outputs (``x, f, g, lam_x, lam_g, lam_p``), for the backward pass.
    :ivar nlp_p: ``(batch, nx + n_phi)`` NLP parameters the problems were solved for.
    :ivar retried: ``(batch,)`` whether the sample's warm-started solve failed and was solved again
        from a cold start (``MPCLayer(retry_cold=True)``); its result is the cold solve's if that one
        succeeded.
    :ivar fallback: ``(batch,)`` ``MPCLayer(solver="riccati")``: whether the batched solver's solution
        failed the KKT check and the sample was solved by fatrop instead.
    """

    u0: np.ndarray
    z: np.ndarray
    success: np.ndarray
    iterations: np.ndarray
    status: list[str]
    nlp_outputs: dict[str, np.ndarray]
    nlp_p: np.ndarray
    retried: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    fallback: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __post_init__(self) -> None:
        if len(self.retried) != len(self.u0):  # not given: nothing retried
            self.retried = np.zeros(len(self.u0), dtype=bool)
        if len(self.fallback) != len(self.u0):
            self.fallback = np.zeros(len(self.u0), dtype=bool)


def parameter_box(ocp: OptimalControlProblem, param_interface: str) -> spaces.Box:
    """The policy's parameter Box for ``ocp`` under ``param_interface`` (``"global"``: ``n_p``
    numbers; ``"stage"``: ``(N + 1) * n_p``, stage-major), float32."""
    check_choice("param_interface", param_interface, PARAM_INTERFACES)
    repeat = 1 if param_interface == "global" else int(ocp.horizon) + 1
    low = np.tile(np.asarray(ocp.param_low, dtype=np.float32), repeat)
    high = np.tile(np.asarray(ocp.param_high, dtype=np.float32), repeat)
    return spaces.Box(low, high, dtype=np.float32)


#: Set to ``0`` or ``1``: what ``compiled=None`` means (otherwise: whether a C compiler is found).
COMPILED_ENV = "SB3_STEIN_MPC_COMPILED"
#: ``compiled=None`` leaves NLPs larger than this interpreted (summed casadi instructions of the
#: objective, constraints, their derivatives and the Hessian): gcc's time grows with the generated
#: code, about 30 s at -O1 for the tests' cart-pole at T = 20 (about 44k instructions; about 1.8x that
#: at the default flags, :data:`sb3_stein.common.jit_cache.DEFAULT_FLAGS`), and the chain's exact
#: Hessian alone has about 627k.
AUTO_COMPILE_MAX_INSTRUCTIONS = 200_000
#: ``MPCLayer(control_barrier=...)``'s barrier sits on the control box widened by this (relative).
BARRIER_WIDENING = 1e-6
#: The barrier's ``-log z`` (``z = 1 - w^2``) continues below ``z = delta`` as its C^2 quadratic
#: extension (Feller and Ebenbauer's relaxed barrier). Inside the hard box ``z >= ~2e-6 > delta``, so
#: every feasible point has the exact log barrier; the extension only gives the solver's iterates
#: outside the box (fatrop's slack formulation allows them) a finite cost instead of NaN.
BARRIER_RELAXATION = 1e-6
_warned_interpreted = False


def relaxed_log_barrier(z: Any, delta: float = BARRIER_RELAXATION) -> Any:
    """``-log z`` for ``z > delta``, below it the quadratic that matches its value, slope and curvature
    at ``delta`` (Feller and Ebenbauer 2017): finite for every ``z`` (casadi, elementwise)."""
    import casadi as ca

    exact = -ca.log(ca.fmax(z, delta))  # fmax: the branch not taken must not be NaN either
    extension = 0.5 * (((z - 2 * delta) / delta) ** 2 - 1) - np.log(delta)
    return ca.if_else(z > delta, exact, extension)


def _instructions(solver: Any) -> int:
    """The summed casadi instruction counts of an NLP solver's functions."""
    names = ("nlp_f", "nlp_g", "nlp_grad_f", "nlp_jac_g", "nlp_hess_l")
    return sum(int(solver.get_function(name).n_instructions()) for name in names)


def _resolve_compiled(compiled: bool | None) -> bool:
    """``compiled`` as :class:`MPCLayer` documents it, resolved to a bool."""
    global _warned_interpreted
    if compiled is None:
        setting = os.environ.get(COMPILED_ENV, "").strip()
        if setting not in ("", "0", "1"):
            raise ValueError(f"${COMPILED_ENV} must be 0 or 1 when set, got {setting!r}")
        if setting:
            compiled = setting == "1"
        elif find_compiler() is not None:
            compiled = True
        else:
            if not _warned_interpreted:
                warnings.warn(
                    "MPCLayer: no C compiler found (CC, gcc, cc, clang), so the MPC runs in casadi's "
                    "interpreter, several times slower; install gcc or pass compiled=False to silence this",
                    stacklevel=3,
                )
                _warned_interpreted = True
            compiled = False
    if compiled and find_compiler() is None:
        raise ValueError("compiled=True needs a C compiler (set CC, or install gcc, cc or clang)")
    return bool(compiled)


class MPCLayer:
    """Solve an :class:`~sb3_stein.common.ocp.OptimalControlProblem` for batches, with exact gradients.

    :param ocp: the problem (validated here).
    :param param_interface: ``"global"``: the policy's parameter vector ``phi`` (``n_p`` numbers) is
        used at every stage; ``"stage"``: ``phi`` holds one ``p_k`` per stage ``k = 0..N``
        (``(N + 1) * n_p`` numbers, stage-major). The lecture's "Controller Comparison". In the
        stage interface some entries have no effect (e.g. the state-cost entries of ``p_0``, since
        ``x_0 = s`` is fixed, and the control entries of ``p_N``); they still count in ``n_phi``
        and hence in SAC's entropy target. (The lecture's 420 per-stage Chain parameters are
        ``21 x 20``; the lecture does not say which entries it kept.) Parameters enter the costs
        only: the OCP base class has no parameterized dynamics or constraints.
    :param solver: ``"fatrop"`` (default; fastest in shared/notes/differentiable-mpc.md), ``"ipopt"``, or
        ``"riccati"``: the batched interior point method of :mod:`sb3_stein.common.riccati_ipm` (IPOPT's
        algorithm, Newton steps by a Riccati recursion, one compiled call for several iterations of a batch),
        whose every solution must pass the layer's KKT check (:meth:`kkt_residuals` at most :attr:`kkt_tol`);
        the samples that fail it are solved again by fatrop, from riccati's last iterate and, where that
        fails too, from the same initial guess (:attr:`MPCSolution.fallback`), so a result is never worse
        certified than fatrop's. The backward
        pass solves the same linear system as casadi's sensitivities of the fatrop NLP (the implicit
        function theorem at the solution, the active set from ``lam_x``) by one Riccati recursion per
        sample (:meth:`RiccatiIPM.vjp`), except for samples with an active state bound or an indefinite
        reduced Hessian, which get casadi's. ``solver_options`` then go to the fallback fatrop. Measured on
        the cart-pole: benchmarks/results/speed_sac_mpc_riccati_v4 and its NOTE.md. Compiling its code
        takes longer than fatrop's (once per OCP, then cached). Not the default: cold solves of a
        non-convex OCP may end in another local solution than fatrop's (4 % of cold cart-pole swing-up
        solves at T = 20, 2 % of warm ones: benchmarks/results/riccati_vs_fatrop).
    :param tol: the solver's convergence tolerance. Tight by default: the sensitivities are exact
        only at an exact solution.
    :param max_iter: iteration limit of one solve; hitting it counts as a failure.
    :param active_tol: bound multipliers below this magnitude are treated as inactive in the
        backward pass (the silent-zero-gradient fix, see the module docstring).
    :param compiled: ``True``: the forward solver's functions (objective, constraints, their
        derivatives and the Lagrangian's Hessian) and the backward pass are compiled to C
        (:mod:`sb3_stein.common.jit_cache`: casadi's JIT, cached on disk, so a second process or an
        unpickled layer reuses the objects); same ``u0`` and ``vjp`` as interpreted, bit for bit on
        the tested problems. ``False``: casadi's interpreter. ``None`` (default): compiled when a C
        compiler is found (``$SB3_STEIN_MPC_COMPILED=0`` or ``1`` overrides), else interpreted with
        one warning, and interpreted for NLPs above :data:`AUTO_COMPILE_MAX_INSTRUCTIONS` (with a
        warning: the chain's exact Hessian would take many minutes to compile). The build time is
        :attr:`build_seconds` (compiling or loading from the cache).
    :param compile_flags: the C compiler's flags for the compiled functions (default
        :data:`sb3_stein.common.jit_cache.DEFAULT_FLAGS`, ``-O2 -fno-semantic-interposition``).
    :param batch_mode: ``"map"``: one casadi call per batch (``Function.map`` with ``n_threads``
        threads); a mapped call returns no per-sample solver statistics, so each sample's ``success``
        is a KKT check of its solution (:meth:`kkt_residuals` at most :attr:`kkt_tol`) and its
        ``iterations`` are ``-1``. ``"loop"``: one call per sample, with the solver's own success flag,
        iteration count and status. ``"auto"`` (default): ``"map"`` when compiled, else ``"loop"``.
    :param n_threads: threads of a mapped call; ``None``: torch's thread setting
        (``torch.get_num_threads()``) at the time of the call.
    :param stage_functions: build the NLP from one casadi Function per piece of the OCP (dynamics,
        stage cost, terminal cost) called at every stage, instead of one expanded expression graph:
        the generated code and its compile time then hold each piece's derivatives once, not ``N``
        times (the chain's exact Hessian: about 627k instructions inline). ``None`` (default): the
        OCP's ``stage_functions`` attribute (``False`` unless the OCP sets it).
    :param retry_cold: solve the samples whose warm-started solve failed again from
        :meth:`cold_start` (leap-c's ``solve_with_retry``); counted in
        :attr:`MPCSolution.retried` (SAC-MPC logs their share as ``mpc/retry_rate``).
    :param solver_options: further options of the solver (``fatrop`` or ``ipopt``, by their own names,
        e.g. ``{"mu_init": 1e-2}``), merged over the layer's; ``tol``, ``max_iter`` and
        ``print_level`` are the layer's own. Unknown names fail when the solver is built.
    :param cold_guess: the initial guess of a solve without history (:meth:`cold_start`):
        ``"rollout"`` (default): the OCP's dynamics simulated from the state under the middle of the
        control bounds, a dynamically feasible trajectory (clipped into the state bounds);
        ``"constant"``: every ``x_k`` equal to the state. Measured on the cart-pole at T = 20
        (64 random states and ``theta_ref``): 28.5 fatrop iterations instead of 33.6, the same first
        control in 62 of 64 (the swing-up OCP is not convex: another local solution in the others).
    :param control_barrier: weight ``mu >= 0`` of a logarithmic barrier on the control bounds added to every
        stage cost (in the OCP's cost units): ``mu * sum_i -log(1 - w_i^2)`` with ``w = (u - c) / (h (1 +
        1e-6))`` for the box's centre ``c`` and half-width ``h`` (zero at the centre, growing without bound
        towards the bounds; the box is widened by ``1e-6`` relative so that a solver iterate on a bound, which
        IPOPT's bound relaxation allows, still has a finite cost; an iterate beyond it, which fatrop's slacks
        allow, gets the barrier's C^2 quadratic extension, :data:`BARRIER_RELAXATION`, instead of a NaN).
        ``0`` (default): the plain hard bounds, as the lecture and leap-c. With ``mu > 0`` the first control
        stays strictly inside the bounds, so ``d u0* / d phi`` is nonzero everywhere instead of exactly zero
        where a hard bound is active (the lecture's full-row-rank condition; on the cart-pole about three
        quarters of SAC-FOP's first controls sit at +-80 N, benchmarks/results/sac_mpc_diagnostics): a
        relaxed-barrier MPC in the sense of Feller and Ebenbauer (2017, "Relaxed logarithmic barrier function
        based model predictive control of linear systems", IEEE TAC 62(3)), here with a fixed weight. It
        changes the controller: a saturated control moves inwards by about ``mu / |dJ/du|``. The hard bounds
        stay in the NLP.
    """

    def __init__(
        self,
        ocp: OptimalControlProblem,
        param_interface: str = "global",
        solver: str = "fatrop",
        tol: float = 1e-8,
        max_iter: int = 100,
        active_tol: float = 1e-6,
        compiled: bool | None = None,
        compile_flags: tuple[str, ...] = DEFAULT_FLAGS,
        batch_mode: str = "auto",
        n_threads: int | None = None,
        retry_cold: bool = True,
        stage_functions: bool | None = None,
        control_barrier: float = 0.0,
        solver_options: dict[str, Any] | None = None,
        cold_guess: str = "rollout",
    ) -> None:
        if not isinstance(ocp, OptimalControlProblem):
            raise TypeError(f"ocp must be an OptimalControlProblem, got {type(ocp).__name__}")
        ocp.validate()
        self.ocp = ocp
        self.param_interface = check_choice("param_interface", param_interface, PARAM_INTERFACES)
        self.solver_name = check_choice("solver", solver, SOLVERS)
        self.tol = float(check_positive("tol", tol) or 0.0)
        self.max_iter = check_int("max_iter", max_iter, 1)
        self.active_tol = float(check_positive("active_tol", active_tol) or 0.0)
        if compiled not in (None, True, False):
            raise ValueError(f"compiled must be True, False or None (auto), got {compiled!r}")
        self._compiled_request = compiled
        #: Whether the casadi functions are compiled (``compiled`` resolved; see the parameter).
        self.compiled = _resolve_compiled(compiled)
        self.compile_flags = tuple(str(flag) for flag in compile_flags)
        #: Seconds the last build of the casadi functions took (compiling, or loading from the cache).
        self.build_seconds = 0.0
        self.batch_mode = check_choice("batch_mode", batch_mode, BATCH_MODES)
        self.n_threads = None if n_threads is None else check_int("n_threads", n_threads, 1)
        self.retry_cold = bool(retry_cold)
        if isinstance(control_barrier, bool) or not (
            isinstance(control_barrier, (int, float, np.floating, np.integer))
            and np.isfinite(control_barrier)
            and control_barrier >= 0
        ):
            raise ValueError(f"control_barrier must be a finite number >= 0, got {control_barrier!r}")
        self.control_barrier = float(control_barrier)
        if solver_options is not None and not isinstance(solver_options, dict):
            raise TypeError(f"solver_options must be a dict or None, got {type(solver_options).__name__}")
        self.solver_options = dict(solver_options or {})
        self.cold_guess = check_choice("cold_guess", cold_guess, COLD_GUESSES)
        for reserved in ("tol", "max_iter", "print_level"):
            if reserved in self.solver_options:
                raise ValueError(
                    f"solver_options: set {reserved!r} with the layer's own parameter, not in solver_options"
                )
        self.stage_functions = bool(
            getattr(ocp, "stage_functions", False) if stage_functions is None else stage_functions
        )
        #: A mapped solve counts as converged when its KKT residual is at most this (see
        #: :meth:`kkt_residuals`). Measured at ``tol = 1e-8`` (benchmarks/results/mpc_kkt_check, and two
        #: cart-poles with ``max_iter`` from 2 to 100): the solver's converged solves had residuals up to
        #: 1.04e-8, the unconverged ones at least 1.2e-6, except solves the iteration limit stopped at a
        #: point that already met the tolerance (residuals 9e-9 to 1.7e-8), which the check accepts.
        self.kkt_tol = 10.0 * self.tol
        self.nx, self.nu, self.horizon = int(ocp.state_dim), int(ocp.control_dim), int(ocp.horizon)
        self.n_p = ocp.n_params
        self.n_phi = self.n_p if self.param_interface == "global" else (self.horizon + 1) * self.n_p
        self.nz = (self.horizon + 1) * self.nx + self.horizon * self.nu
        #: Rows whose sensitivities casadi could not evaluate (degenerate solutions; zero gradient).
        self.sensitivity_failures = 0
        # Stage k's state starts at k * (nx + nu), its control right after it.
        self._stage = self.nx + self.nu
        self._build()

    # ------------------------------------------------------------------ construction

    def _build(self) -> None:
        start = time.perf_counter()
        try:
            self._build_solver()
        except ValueError:
            raise
        except Exception as error:  # casadi raises RuntimeError with its own text
            text = str(error).strip()
            last_line = text.splitlines()[-1] if text else ""
            raise ValueError(
                f"could not build the MPC for {type(self.ocp).__name__} ({self.solver_name}): "
                f"{type(error).__name__}: {last_line}"
            ) from error
        self.build_seconds = time.perf_counter() - start
        if self.solver_options and self.nlp_plugin == "fatrop":
            self._check_fatrop_options()

    def _check_fatrop_options(self) -> None:
        """fatrop reads its options at the first solve, not when built: one solve from the cold start
        at the zero state and the default parameters reports an unknown option now, by name."""
        states = np.zeros((1, self.nx))
        nlp_p = np.concatenate([states, self.default_params()[None]], axis=1)
        try:
            self._solver(
                x0=self.cold_start(states)[0],
                p=nlp_p[0],
                lbx=self._lbz,
                ubx=self._ubz,
                lbg=self._g_zero,
                ubg=self._g_zero,
            )
        except RuntimeError as error:
            lines = [line for line in str(error).splitlines() if "option" in line.lower()]
            if lines:
                raise ValueError(f"solver_options: {lines[-1].split(': ', 1)[-1]}") from error

    def _build_solver(self) -> None:
        import casadi as ca

        ocp, nx, nu, N = self.ocp, self.nx, self.nu, self.horizon
        # Inline, every stage's dynamics and costs are expanded into one SX graph, whose Hessian casadi
        # differentiates as a whole (the chain's: about 627k instructions for 20 stages). With stage
        # functions the NLP is an MX graph calling one casadi Function per piece N times, so the
        # generated code (and the compile time) holds each piece's derivatives once.
        if self.stage_functions:
            xs, us, ps = ca.SX.sym("x", nx), ca.SX.sym("u", nu), ca.SX.sym("p", self.n_p)
            dynamics_fn = ca.Function("dynamics", [xs, us], [ocp.dynamics(xs, us)])
            stage_cost_fn = ca.Function("stage_cost", [xs, us, ps], [ocp.stage_cost(xs, us, ps)])
            terminal_cost_fn = ca.Function("terminal_cost", [xs, ps], [ocp.terminal_cost(xs, ps)])
            sym: Any = ca.MX.sym
            dynamics: Any = dynamics_fn
            stage_cost: Any = stage_cost_fn
            terminal_cost: Any = terminal_cost_fn
        else:
            sym, dynamics, stage_cost, terminal_cost = (
                ca.SX.sym,
                ocp.dynamics,
                ocp.stage_cost,
                ocp.terminal_cost,
            )
        s = sym("s", nx)
        phi = sym("phi", self.n_phi)

        def stage_params(k: int) -> Any:
            if self.param_interface == "global":
                return phi
            return phi[k * self.n_p : (k + 1) * self.n_p]

        inf = np.inf
        x_low = np.full(nx, -inf) if ocp.x_low is None else np.asarray(ocp.x_low, dtype=np.float64)
        x_high = np.full(nx, inf) if ocp.x_high is None else np.asarray(ocp.x_high, dtype=np.float64)
        u_low = np.asarray(ocp.u_low, dtype=np.float64)
        u_high = np.asarray(ocp.u_high, dtype=np.float64)
        half_width = 0.5 * (u_high - u_low) * (1.0 + BARRIER_WIDENING)
        discount = float(getattr(ocp, "discount", 1.0))
        barrier = self._barrier

        variables, constraints, equality = [], [], []
        lbz: list[np.ndarray] = []
        ubz: list[np.ndarray] = []
        cost: Any = 0
        x = sym("x_0", nx)
        variables.append(x)
        lbz.append(np.full(nx, -inf))  # x_0 is fixed by the equality below, not by bounds
        ubz.append(np.full(nx, inf))
        constraints.append(x - s)
        equality += [True] * nx
        for k in range(N):
            u = sym(f"u_{k}", nu)
            variables.append(u)
            lbz.append(u_low)
            ubz.append(u_high)
            cost = cost + discount**k * (stage_cost(x, u, stage_params(k)) + barrier(u))
            x_next = sym(f"x_{k + 1}", nx)
            variables.append(x_next)
            lbz.append(x_low)
            ubz.append(x_high)
            constraints.append(x_next - dynamics(x, u))
            equality += [True] * nx
            x = x_next
        cost = cost + discount**N * terminal_cost(x, stage_params(N))
        z = ca.vertcat(*variables)
        g = ca.vertcat(*constraints)
        if z.shape[0] != self.nz or cost.shape != (1, 1):
            raise ValueError(
                f"{type(ocp).__name__}: the dynamics must return (nx, 1) = ({nx}, 1) and the costs scalars; "
                f"got {z.shape[0]} decision variables (expected {self.nz}) and cost shape {cost.shape}"
            )
        nlp: dict[str, Any] = {"x": z, "p": ca.vertcat(s, phi), "f": cost, "g": g}
        options: dict[str, Any] = {"print_time": False}
        if self.nlp_plugin == "fatrop":
            options.update(
                structure_detection="auto",
                equality=equality,
                fatrop={"print_level": 0, "tol": self.tol, "max_iter": self.max_iter, **self.solver_options},
            )
        else:
            # acceptable_iter=0: only a solve converged to ``tol`` counts as a success (IPOPT's
            # "solved to acceptable level" would pass looser solutions, with inexact sensitivities).
            ipopt = {
                "print_level": 0,
                "tol": self.tol,
                "max_iter": self.max_iter,
                "sb": "yes",
                "acceptable_iter": 0,
                **self.solver_options,
            }
            options.update(ipopt=ipopt)
        # The interpreted solver provides the sensitivities: casadi cannot differentiate a JIT-compiled
        # solver ("Derivatives cannot be calculated for nlp_grad"). Compiled, a twin solver of the same
        # NLP does the forward solves and the interpreted solver's reverse mode is wrapped in a
        # Function of its own and compiled.
        interpreted = ca.nlpsol("mpc", self.nlp_plugin, nlp, options)
        reverse = interpreted.reverse(1)
        if self.compiled and self._compiled_request is None:
            size = _instructions(interpreted)
            if size > AUTO_COMPILE_MAX_INSTRUCTIONS:
                warnings.warn(
                    f"MPCLayer: {type(ocp).__name__}'s NLP functions have {size} casadi instructions "
                    f"(more than {AUTO_COMPILE_MAX_INSTRUCTIONS}); compiling them would take many minutes, "
                    "so compiled=None runs this layer interpreted; pass compiled=True to compile anyway",
                    stacklevel=4,
                )
                self.compiled = False
        if self.compiled:
            self._solver = jit_nlpsol("mpc", self.nlp_plugin, nlp, options, "mpc", self.compile_flags)
            inputs = [ca.MX.sym(reverse.name_in(i), reverse.sparsity_in(i)) for i in range(reverse.n_in())]
            self._reverse = ca.Function(
                "mpc_reverse",
                inputs,
                reverse.call(inputs),
                reverse.name_in(),
                reverse.name_out(),
                jit_options("reverse", self.compile_flags),
            )
        else:
            self._solver, self._reverse = interpreted, reverse
        self._lbz = np.concatenate(lbz)
        self._ubz = np.concatenate(ubz)
        # Closer to a bound than this and with a multiplier on it, the bound is active in the backward
        # pass (_active_multipliers). With a control barrier the solution keeps the controls inside by
        # construction, about mu / |dJ/du| from the barrier's edge; an interior-point solver's multiplier
        # of order mu_ip / slack there is no active bound, so the control margin is the barrier box's
        # widening: only a control pressed through the barrier onto the hard box counts as active.
        self._lower_margin = np.sqrt(self.tol) * (1.0 + np.abs(self._lbz))
        self._upper_margin = np.sqrt(self.tol) * (1.0 + np.abs(self._ubz))
        if self.control_barrier > 0:
            for k in range(N):
                controls = slice(k * self._stage + nx, k * self._stage + nx + nu)
                self._lower_margin[controls] = self._upper_margin[controls] = BARRIER_WIDENING * half_width
        self._g_zero = np.zeros(g.shape[0])
        self._riccati = self._build_riccati() if self.solver_name == "riccati" else None
        self._reverse_maps: dict[int, Any] = {}
        self._solver_maps: dict[tuple[int, int], Any] = {}
        self._kkt_maps: dict[tuple[str, int, int], Any] = {}
        # Built on first use (mapped solves, kkt_residuals): a looped layer never needs it.
        self._kkt_nlp: tuple[Any, Any, Any, Any] | None = (z, ca.vertcat(s, phi), cost, g)
        self._kkt: Any = None

    @property
    def nlp_plugin(self) -> str:
        """The casadi NLP solver behind the layer: ``solver``, or fatrop for ``"riccati"`` (its fallback
        and the source of its sensitivities)."""
        return "fatrop" if self.solver_name == "riccati" else self.solver_name

    def _stage_functions(self) -> tuple[Any, Any, Any]:
        """The OCP's dynamics ``(x, u) -> x_next`` (:meth:`_dynamics`), full stage cost ``(x, u, p) -> l``
        (the control barrier included, undiscounted) and terminal cost ``(x, p) -> V`` as casadi SX
        Functions."""
        import casadi as ca

        ocp = self.ocp
        x, u, p = ca.SX.sym("x", self.nx), ca.SX.sym("u", self.nu), ca.SX.sym("p", self.n_p)
        dynamics = self._dynamics()
        stage_cost = ca.Function("stage_cost", [x, u, p], [ocp.stage_cost(x, u, p) + self._barrier(u)])
        terminal_cost = ca.Function("terminal_cost", [x, p], [ocp.terminal_cost(x, p)])
        return dynamics, stage_cost, terminal_cost

    def _barrier(self, u: Any) -> Any:
        """``control_barrier``'s term of a stage cost (0 without one)."""
        import casadi as ca

        if self.control_barrier == 0.0:
            return 0
        u_low = np.asarray(self.ocp.u_low, dtype=np.float64)
        u_high = np.asarray(self.ocp.u_high, dtype=np.float64)
        centre, half_width = 0.5 * (u_low + u_high), 0.5 * (u_high - u_low) * (1.0 + BARRIER_WIDENING)
        w = (u - centre) / half_width
        return self.control_barrier * ca.sum1(relaxed_log_barrier(1 - w**2))

    def _build_riccati(self) -> Any:
        from sb3_stein.common.riccati_ipm import RiccatiIPM

        discount = float(getattr(self.ocp, "discount", 1.0))
        dynamics, stage_cost, terminal_cost = self._stage_functions()
        return RiccatiIPM(
            self.nx,
            self.nu,
            self.horizon,
            dynamics,
            stage_cost,
            terminal_cost,
            self.n_p,
            discount ** np.arange(self.horizon + 1),
            self.ocp.u_low,
            self.ocp.u_high,
            self.ocp.x_low,
            self.ocp.x_high,
            tol=self.tol,
            max_iter=self.max_iter,
            function_options=jit_options("riccati", self.compile_flags) if self.compiled else None,
        )

    def _kkt_function(self) -> Any:
        if self._kkt is None:
            assert self._kkt_nlp is not None
            self._kkt = self._build_kkt(*self._kkt_nlp)
            self._kkt_nlp = None
        return self._kkt

    def _build_kkt(self, z: Any, p: Any, cost: Any, g: Any) -> Any:
        """The KKT residual of a primal-dual point, ``(z, P, lam_x, lam_g) -> (3,)``: scaled stationarity,
        constraint and bound violation, complementarity (:meth:`kkt_residuals`)."""
        import casadi as ca

        sym: Any = ca.MX.sym if isinstance(z, ca.MX) else ca.SX.sym
        lam_x, lam_g = sym("lam_x", self.nz), sym("lam_g", g.shape[0])
        # casadi's convention: L = f + lam_g' g + lam_x' z, so grad_z L = 0 at a solution.
        stationarity = ca.gradient(cost, z) + ca.jtimes(g, z, lam_g, True) + lam_x
        # IPOPT's dual scaling s_d (fatrop's is alike): large multipliers loosen stationarity.
        n_multipliers = self.nz + g.shape[0]
        scale = ca.fmax(100.0, (ca.norm_1(lam_x) + ca.norm_1(lam_g)) / n_multipliers) / 100.0
        finite_lb, finite_ub = np.isfinite(self._lbz), np.isfinite(self._ubz)
        has_lb, has_ub = ca.DM(finite_lb.astype(float)), ca.DM(finite_ub.astype(float))
        lb = ca.DM(np.where(finite_lb, self._lbz, 0.0))
        ub = ca.DM(np.where(finite_ub, self._ubz, 0.0))
        # Bounds relative to their size: interior-point solvers relax a bound b by about 1e-8 (1 + |b|)
        # (IPOPT's bound_relax_factor), so a control held at 80 N may sit 8e-7 beyond it.
        below = has_lb * (lb - z) / (1.0 + ca.fabs(lb))
        above = has_ub * (z - ub) / (1.0 + ca.fabs(ub))
        violation = ca.fmax(ca.norm_inf(g), ca.fmax(ca.mmax(below), ca.mmax(above)))
        # |lam| times the slack of the bound its sign points to (upper for lam > 0); a multiplier on an
        # infinite bound counts as its magnitude times 1e10 (it must be zero).
        big = 1e10
        upper_slack = has_ub * (ub - z) + (1 - has_ub) * big
        lower_slack = has_lb * (z - lb) + (1 - has_lb) * big
        complementarity = ca.fmax(
            0.0, ca.mmax(ca.if_else(lam_x > 0, lam_x * upper_slack, -lam_x * lower_slack))
        )
        residuals = ca.vertcat(ca.norm_inf(stationarity) / scale, violation, complementarity)
        options = jit_options("kkt", self.compile_flags) if self.compiled else {}
        return ca.Function(
            "mpc_kkt", [z, p, lam_x, lam_g], [residuals], ["x", "p", "lam_x", "lam_g"], ["r"], options
        )

    def __getstate__(self) -> dict[str, Any]:
        # casadi functions are rebuilt from the (picklable) OCP on unpickling.
        state = self.__dict__.copy()
        for key in (
            "_solver",
            "_reverse",
            "_reverse_maps",
            "_solver_maps",
            "_kkt",
            "_kkt_maps",
            "_kkt_nlp",
            "_dynamics_fn",
            "_riccati",
        ):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Layers pickled before the compiled option existed were interpreted.
        old = {
            "compiled": False,
            "_compiled_request": False,
            "compile_flags": ("-O1",),
            "build_seconds": 0.0,
            "batch_mode": "loop",
            "n_threads": None,
            "retry_cold": False,
            "stage_functions": False,
            "kkt_tol": 10.0 * state.get("tol", 1e-8),
            "control_barrier": 0.0,
            "solver_options": {},
            "cold_guess": "constant",
        }
        state = {**old, **state}
        self.__dict__.update(state)
        # The machine loading the layer may lack the compiler of the one that saved it.
        self.compiled = _resolve_compiled(self._compiled_request)
        self._build()

    # ------------------------------------------------------------------ spaces and guesses

    @property
    def parameter_space(self) -> spaces.Box:
        """The Box of ``phi`` for the chosen interface (float32)."""
        return parameter_box(self.ocp, self.param_interface)

    def default_params(self) -> np.ndarray:
        """``(n_phi,)``: the OCP's hand-tuned parameters in this interface."""
        repeat = 1 if self.param_interface == "global" else self.horizon + 1
        return np.tile(np.asarray(self.ocp.param_default, dtype=np.float64), repeat)

    def cold_start(self, states: np.ndarray) -> np.ndarray:
        """``(batch, nz)`` initial guess without history (``cold_guess``): every control at the middle
        of its bounds and the states either simulated under it (``"rollout"``) or all equal to ``s``
        (``"constant"``), clipped into the state bounds; ``x_0 = s``. A rollout that leaves the
        finite numbers falls back to the constant guess from that stage on."""
        states = np.asarray(states, dtype=np.float64).reshape(-1, self.nx)
        batch = len(states)
        u = np.broadcast_to(
            0.5 * (np.asarray(self.ocp.u_low) + np.asarray(self.ocp.u_high)), (batch, self.nu)
        )
        x_low = None if self.ocp.x_low is None else np.asarray(self.ocp.x_low, np.float64)
        x_high = None if self.ocp.x_high is None else np.asarray(self.ocp.x_high, np.float64)

        def clip(x: np.ndarray) -> np.ndarray:
            return x if x_low is None or x_high is None else np.clip(x, x_low, x_high)

        guess = np.empty((batch, self.nz))
        guess[:, : self.nx] = states
        x = states  # (batch, nx): the rollout's current state
        for k in range(self.horizon):
            start = k * self._stage
            guess[:, start + self.nx : start + self._stage] = u
            if self.cold_guess == "rollout" and batch:
                x_next = np.asarray(self._dynamics()(x.T, u.T), dtype=np.float64).T
                x = np.where(np.isfinite(x_next).all(axis=1, keepdims=True), x_next, x)
            guess[:, start + self._stage : start + self._stage + self.nx] = clip(x)
        return guess

    def _dynamics(self) -> Any:
        """The OCP's dynamics as a casadi Function, built on first use; called with ``(nx, batch)``
        states and ``(nu, batch)`` controls, casadi evaluates every column in one call."""
        import casadi as ca

        if getattr(self, "_dynamics_fn", None) is None:
            x, u = ca.SX.sym("x", self.nx), ca.SX.sym("u", self.nu)
            self._dynamics_fn = ca.Function("dynamics", [x, u], [self.ocp.dynamics(x, u)])
        return self._dynamics_fn

    def shift(self, z: np.ndarray) -> np.ndarray:
        """``(batch, nz)``: a solution moved one stage ahead (the last stage repeated): the warm
        start for the next time step of the same trajectory."""
        z = np.asarray(z, dtype=np.float64).reshape(-1, self.nz)
        return np.concatenate([z[:, self._stage :], z[:, -self._stage :]], axis=1)

    def warm_start(
        self,
        states: np.ndarray,
        plans: np.ndarray | None,
        has_plan: np.ndarray | None = None,
        shift: bool = True,
    ) -> np.ndarray:
        """``(batch, nz)``: the initial guess for solving at ``states`` from earlier plans.

        The one warm-start recipe of the package (acting and SAC-FOP's updates both use it): each
        row's plan, moved one stage ahead when it was made one time step before ``states``
        (:meth:`shift`); rows without a plan get :meth:`cold_start`; every row's ``x_0`` is set to
        its state, because the NLP fixes ``x_0 = s`` and a guess that violates it only costs
        iterations.

        :param states: ``(batch, nx)`` the states the next solve starts from.
        :param plans: ``(batch, nz)`` earlier primal solutions, or ``None`` (no row has one).
        :param has_plan: ``(batch,)`` which rows hold a plan; ``None``: the rows that are not all
            zeros (what :class:`~sb3_stein.sac_mpc.buffers.MPCReplayBuffer` stores for "no plan").
        :param shift: ``True``: the plans belong to the previous time step (acting, the target's
            ``s'``); ``False``: to these very states (the actor's ``s`` in an update).
        """
        states = np.asarray(states, dtype=np.float64).reshape(-1, self.nx)
        if plans is None:
            return self.cold_start(states)
        plans = np.asarray(plans, dtype=np.float64).reshape(len(states), self.nz)
        planned = plans.any(axis=1) if has_plan is None else np.asarray(has_plan, dtype=bool)
        guess = self.shift(plans) if shift else plans.copy()
        if not planned.all():
            guess[~planned] = self.cold_start(states[~planned])
        guess[:, : self.nx] = states
        return guess

    def fallback_controls(self, z: np.ndarray | None, batch: int) -> np.ndarray:
        """The safe action when a solve fails while acting: ``u_1`` of the previous *successful*
        plan of the same trajectory (its next control, which kept the previous plan feasible) when
        ``z`` is given, else the middle of the control bounds (zero force for symmetric bounds).

        :param z: ``(batch, nz)`` the previous successful plans, or ``None``.
        :return: ``(batch, nu)``.
        """
        if z is not None:
            z = np.asarray(z, dtype=np.float64).reshape(batch, self.nz)
            start = self._stage + self.nx if self.horizon > 1 else self.nx
            return z[:, start : start + self.nu].copy()
        middle = 0.5 * (np.asarray(self.ocp.u_low, np.float64) + np.asarray(self.ocp.u_high, np.float64))
        return np.tile(middle, (batch, 1))

    def controls_at_bound(self, u0: np.ndarray) -> np.ndarray:
        """``(batch, nu)`` bool: which first controls sit at a control bound.

        "At" means within ``sqrt(tol) * (1 + |bound|)`` (the margin the backward pass uses to call
        a bound inactive, :meth:`_active_multipliers`): an interior-point solution stops about
        that close to an active bound. A first control held at its bound by an active constraint
        has zero sensitivity to the parameters, so SAC-FOP's actor gradient through it is exactly
        zero.

        :param u0: ``(batch, nu)`` first controls in the OCP's units.
        """
        u0 = np.asarray(u0, dtype=np.float64).reshape(-1, self.nu)
        low = np.asarray(self.ocp.u_low, dtype=np.float64)
        high = np.asarray(self.ocp.u_high, dtype=np.float64)
        margin = np.sqrt(self.tol)
        return (u0 - low <= margin * (1.0 + np.abs(low))) | (high - u0 <= margin * (1.0 + np.abs(high)))

    # ------------------------------------------------------------------ solve

    def _check_inputs(self, states: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        states = np.asarray(states, dtype=np.float64)
        params = np.asarray(params, dtype=np.float64)
        if states.ndim != 2 or states.shape[1] != self.nx:
            raise ValueError(f"states must have shape (batch, {self.nx}), got {states.shape}")
        if params.ndim != 2 or params.shape != (len(states), self.n_phi):
            raise ValueError(
                f"params must have shape (batch, {self.n_phi}) = ({len(states)}, {self.n_phi}) for the "
                f"{self.param_interface!r} interface of {type(self.ocp).__name__}, got {params.shape}"
            )
        if not (np.isfinite(states).all() and np.isfinite(params).all()):
            raise ValueError("states and params must be finite (got NaN or inf)")
        return states, params

    def solve(
        self, states: np.ndarray, params: np.ndarray, initial_guess: np.ndarray | None = None
    ) -> MPCSolution:
        """Solve the OCP for every row.

        :param states: ``(batch, nx)`` initial states in the OCP's units.
        :param params: ``(batch, n_phi)`` parameters in the OCP's units (inside :attr:`parameter_space`).
        :param initial_guess: ``(batch, nz)`` primal warm start; ``None``: :meth:`cold_start`.
        """
        states, params = self._check_inputs(states, params)
        batch = len(states)
        guess = self.cold_start(states) if initial_guess is None else np.asarray(initial_guess, np.float64)
        if guess.shape != (batch, self.nz):
            raise ValueError(f"initial_guess must have shape ({batch}, {self.nz}), got {guess.shape}")
        nlp_p = np.concatenate([states, params], axis=1)
        solution = self._solve_rows(guess, nlp_p)
        if initial_guess is None or not self.retry_cold or solution.success.all():
            return solution
        # leap-c's solve_with_retry: a warm start that led the solver astray is retried cold.
        rows = np.flatnonzero(~solution.success)
        retry = self._solve_rows(self.cold_start(states[rows]), nlp_p[rows])
        outputs, success = solution.nlp_outputs, solution.success
        for name, values in outputs.items():
            values[rows[retry.success]] = retry.nlp_outputs[name][retry.success]
        success[rows] = retry.success
        iterations = solution.iterations
        known = (iterations[rows] >= 0) & (retry.iterations >= 0)
        iterations[rows] = np.where(known, iterations[rows] + retry.iterations, -1)
        status = list(solution.status)
        for i, row in enumerate(rows):
            status[row] = f"{status[row]}; cold retry: {retry.status[i]}"
        merged = self._solution(outputs, success, iterations, status, nlp_p)
        merged.retried[rows] = True
        merged.fallback[:] = solution.fallback
        merged.fallback[rows] |= retry.fallback
        return merged

    def _solve_rows(self, guess: np.ndarray, nlp_p: np.ndarray) -> MPCSolution:
        if self._riccati is not None:
            return self._solve_riccati(guess, nlp_p)
        return self._solve_nlp(guess, nlp_p)

    def _solve_nlp(self, guess: np.ndarray, nlp_p: np.ndarray) -> MPCSolution:
        return self._solve_mapped(guess, nlp_p) if self.mapped else self._solve_loop(guess, nlp_p)

    def _stage_params(self, params: np.ndarray) -> np.ndarray:
        """``(batch, N + 1, n_p)``: each stage's parameters from ``phi`` ``(batch, n_phi)``."""
        if self.param_interface == "global":
            return np.repeat(params[:, None, :], self.horizon + 1, axis=1)
        return params.reshape(len(params), self.horizon + 1, self.n_p)

    def _split_z(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The NLP's ``z`` rows (stage by stage ``(x_k, u_k)``, then ``x_N``) as ``X (batch, N + 1, nx)`` and
        ``U (batch, N, nu)``."""
        N, nx = self.horizon, self.nx
        body = z[:, : N * self._stage].reshape(len(z), N, self._stage)
        return np.concatenate([body[:, :, :nx], z[:, None, N * self._stage :]], axis=1), body[:, :, nx:]

    def _solve_riccati(self, guess: np.ndarray, nlp_p: np.ndarray) -> MPCSolution:
        """The batched interior point method, certified by the KKT check; fatrop for the rest."""
        assert self._riccati is not None
        nx, N = self.nx, self.horizon
        batch = len(guess)
        states, params = nlp_p[:, :nx], nlp_p[:, nx:]
        X, U = self._split_z(guess)
        stage_params = self._stage_params(params)
        self._riccati.n_threads = self._threads()
        result = self._riccati.solve(states, stage_params, X, U)
        # casadi's conventions (what the KKT check and the sensitivities read): z stage by stage,
        # g = (x_0 - s, x_{k+1} - f(x_k, u_k)), L = f + lam_g' g + lam_x' z, lam_p = -grad_P L.
        z = np.concatenate(
            [np.concatenate([result.X[:, :N], result.U], axis=2).reshape(batch, -1), result.X[:, N]], axis=1
        )
        grad_params = self._riccati.param_gradient(result.X, result.U, stage_params)
        if self.param_interface == "global":
            grad_params = grad_params.sum(axis=1)
        outputs = {
            "x": z,
            "f": result.cost[:, None],
            "g": np.concatenate([np.zeros((batch, nx)), -result.defects.reshape(batch, -1)], axis=1),
            "lam_x": np.concatenate(
                [np.zeros((batch, nx)), (result.z_upper - result.z_lower).reshape(batch, -1)], axis=1
            ),
            "lam_g": -result.Pi.reshape(batch, -1),
            "lam_p": np.concatenate([-result.Pi[:, 0], -grad_params.reshape(batch, -1)], axis=1),
        }
        residuals = self._kkt_residuals(outputs, nlp_p)
        finite = np.all([np.isfinite(v).all(axis=1) for v in outputs.values()], axis=0)
        success = finite & np.all(residuals <= self.kkt_tol, axis=1)
        iterations = result.iterations.copy()
        status = ["riccati_converged" if ok else "" for ok in success]
        fallback = np.flatnonzero(~success)
        r = residuals[fallback]
        for i, row in enumerate(fallback):
            status[row] = f"riccati_not_converged (residuals {r[i, 0]:.1e}, {r[i, 1]:.1e}, {r[i, 2]:.1e})"
        # fatrop from riccati's last iterate (an interior point; where finite), then, for the rows where
        # that fails too, from the layer's own start. On the cart-pole's cold swing-ups (T = 20, 5 of 256
        # rows) fatrop needed 8-23 iterations from riccati's iterate and 95-101 from the cold start, reached
        # the same local solutions where both succeeded, and failed on one row only from the cold start.
        starts = [
            ("from riccati's iterate", np.where(np.isfinite(z).all(axis=1, keepdims=True), z, guess)),
            ("", guess),
        ]
        for label, start in starts:
            rows = fallback[~success[fallback]]
            if not len(rows):
                break
            again = self._solve_nlp(start[rows], nlp_p[rows])
            for name, values in outputs.items():
                values[rows] = again.nlp_outputs[name]
            success[rows] = again.success
            known = (again.iterations >= 0) & (iterations[rows] >= 0)
            iterations[rows] = np.where(known, iterations[rows] + again.iterations, -1)
            for i, row in enumerate(rows):
                status[row] += f"; fatrop{' ' + label if label else ''}: {again.status[i]}"
        solution = self._solution(outputs, success, iterations, status, nlp_p)
        solution.fallback[fallback] = True
        return solution

    def _solve_loop(self, guess: np.ndarray, nlp_p: np.ndarray) -> MPCSolution:
        """One casadi call per sample, with the solver's own statistics."""
        batch = len(guess)
        names = ("x", "f", "g", "lam_x", "lam_g", "lam_p")
        outputs: dict[str, list[np.ndarray]] = {name: [] for name in names}
        success = np.zeros(batch, dtype=bool)
        iterations = np.zeros(batch, dtype=np.int64)
        status: list[str] = []
        for b in range(batch):
            try:
                result = self._solver(
                    x0=guess[b], p=nlp_p[b], lbx=self._lbz, ubx=self._ubz, lbg=self._g_zero, ubg=self._g_zero
                )
                stats = self._solver.stats()
                ok = bool(stats.get("success", False))
                iterations[b] = int(stats.get("iter_count", -1))
                status.append(str(stats.get("return_status", "")))
            except RuntimeError as error:  # a solver crash on one sample is a failed sample
                result = {name: np.full(self._size(name), np.nan) for name in names}
                ok = False
                status.append(f"error: {error}")
            for name in names:
                outputs[name].append(np.asarray(result[name], dtype=np.float64).ravel())
            success[b] = ok and bool(np.isfinite(outputs["x"][-1]).all())
        stacked = {name: np.stack(values) for name, values in outputs.items()}
        return self._solution(stacked, success, iterations, status, nlp_p)

    def _solution(
        self,
        outputs: dict[str, np.ndarray],
        success: np.ndarray,
        iterations: np.ndarray,
        status: list[str],
        nlp_p: np.ndarray,
    ) -> MPCSolution:
        z = outputs["x"]
        u0 = z[:, self.nx : self.nx + self.nu]
        u0 = np.clip(np.nan_to_num(u0), self.ocp.u_low, self.ocp.u_high)  # interior-point round-off
        return MPCSolution(u0, z, success, iterations, status, outputs, nlp_p)

    @property
    def mapped(self) -> bool:
        """Whether :meth:`solve` makes one mapped casadi call per batch (``batch_mode``)."""
        return self.batch_mode == "map" or (self.batch_mode == "auto" and self.compiled)

    def _threads(self) -> int:
        return self.n_threads if self.n_threads is not None else max(1, th.get_num_threads())

    def _mapped(self, cache: dict[tuple[int, int], Any], function: Any, batch: int) -> Any:
        threads = min(self._threads(), batch)
        key = (batch, threads)
        if key not in cache:
            cache[key] = function.map(batch, "thread", threads) if threads > 1 else function.map(batch)
        return cache[key]

    def _solve_mapped(self, guess: np.ndarray, nlp_p: np.ndarray) -> MPCSolution:
        """One casadi call for the batch; success by :meth:`kkt_residuals`."""
        batch = len(guess)
        g_zero = np.zeros((len(self._g_zero), batch))
        result = self._mapped(self._solver_maps, self._solver, batch)(
            x0=guess.T,
            p=nlp_p.T,
            lbx=np.tile(self._lbz[:, None], batch),
            ubx=np.tile(self._ubz[:, None], batch),
            lbg=g_zero,
            ubg=g_zero,
        )
        outputs = {
            name: np.asarray(result[name], dtype=np.float64).reshape(-1, batch).T
            for name in ("x", "f", "g", "lam_x", "lam_g", "lam_p")
        }
        residuals = self._kkt_residuals(outputs, nlp_p)
        finite = np.all([np.isfinite(v).all(axis=1) for v in outputs.values()], axis=0)
        success = finite & np.all(residuals <= self.kkt_tol, axis=1)
        status = [
            "kkt_converged" if ok else f"kkt_not_converged (residuals {r[0]:.1e}, {r[1]:.1e}, {r[2]:.1e})"
            for ok, r in zip(success, residuals)
        ]
        return self._solution(outputs, success, np.full(batch, -1, dtype=np.int64), status, nlp_p)

    def kkt_residuals(self, solution: MPCSolution) -> np.ndarray:
        """``(batch, 3)`` KKT residuals of ``solution``'s primal-dual points: stationarity of the
        Lagrangian (infinity norm, divided by IPOPT's dual scaling ``max(100, mean |multiplier|) /
        100``), the largest constraint or bound violation (a bound's relative to ``1 + |bound|``), and
        the largest product of a bound multiplier with the slack of its bound. A mapped solve counts as
        converged when all three are at most :attr:`kkt_tol`; NaN rows give NaN."""
        return self._kkt_residuals(solution.nlp_outputs, solution.nlp_p)

    def _kkt_residuals(self, outputs: dict[str, np.ndarray], nlp_p: np.ndarray) -> np.ndarray:
        args = [outputs["x"], nlp_p, outputs["lam_x"], outputs["lam_g"]]
        (residuals,) = call_batched(self._kkt_maps, self._kkt_function(), args, self._threads())
        return residuals[:, 0]

    def _size(self, name: str) -> int:
        return {
            "x": self.nz,
            "f": 1,
            "g": len(self._g_zero),
            "lam_x": self.nz,
            "lam_g": len(self._g_zero),
        }.get(name, self.nx + self.n_phi)

    # ------------------------------------------------------------------ sensitivities

    def vjp(self, solution: MPCSolution, grad_u0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vector-Jacobian product of the control solution map at ``solution``.

        :param grad_u0: ``(batch, nu)`` the loss's gradient with respect to ``u0``.
        :return: ``(grad_states (batch, nx), grad_params (batch, n_phi))``; zero for failed samples
            and for samples whose sensitivities do not exist (counted in :attr:`sensitivity_failures`).
        """
        grad_p = self._vjp(solution, grad_u0)
        return grad_p[:, : self.nx], grad_p[:, self.nx :]

    def _vjp(self, solution: MPCSolution, grad_u0: np.ndarray) -> np.ndarray:
        """:meth:`vjp` with respect to the NLP parameter ``P = (s, phi)``: ``(batch, nx + n_phi)``."""
        grad_u0 = np.asarray(grad_u0, dtype=np.float64)
        batch = len(solution.u0)
        if grad_u0.shape != (batch, self.nu):
            raise ValueError(f"grad_u0 must have shape ({batch}, {self.nu}), got {grad_u0.shape}")
        grad_p = np.zeros((batch, self.nx + self.n_phi))
        rows = np.flatnonzero(solution.success & np.any(grad_u0 != 0.0, axis=1))
        if len(rows) > 0:
            out = {name: value[rows] for name, value in solution.nlp_outputs.items()}
            lam_x = self._active_multipliers(out["x"], out["lam_x"])
            if self._riccati is not None:
                done = self._riccati_vjp(solution.nlp_p[rows], out, lam_x, grad_u0[rows], grad_p, rows)
                rows, lam_x = rows[~done], lam_x[~done]
                out = {name: value[~done] for name, value in out.items()}
        if len(rows) > 0:
            seed = np.zeros((len(rows), self.nz))
            seed[:, self.nx : self.nx + self.nu] = grad_u0[rows]
            try:
                grad_p[rows] = self._reverse_rows(solution, rows, lam_x, out, seed)
            except RuntimeError:
                # A degenerate solution (e.g. an active state bound on x_1, which the dynamics fix
                # too: the KKT matrix is singular) makes casadi's whole mapped call fail. Redo the
                # rows one by one; those without sensitivities get a zero gradient and are counted.
                for i, row in enumerate(rows):
                    one = {name: value[i : i + 1] for name, value in out.items()}
                    try:
                        grad_p[row] = self._reverse_rows(
                            solution, rows[i : i + 1], lam_x[i : i + 1], one, seed[i : i + 1]
                        )
                    except RuntimeError:
                        self.sensitivity_failures += 1
            bad = ~np.isfinite(grad_p).all(axis=1)
            if bad.any():
                self.sensitivity_failures += int(bad.sum())
                grad_p[bad] = 0.0
        return grad_p

    def _riccati_vjp(
        self,
        nlp_p: np.ndarray,
        out: dict[str, np.ndarray],
        lam_x: np.ndarray,
        grad_u0: np.ndarray,
        grad_p: np.ndarray,
        rows: np.ndarray,
    ) -> np.ndarray:
        """``solver="riccati"``'s sensitivities (:meth:`RiccatiIPM.vjp`, one Riccati recursion per row)
        for the rows it covers, written into ``grad_p[rows]``; returns which rows it covered. Left to
        casadi's reverse mode of the fatrop NLP: rows with an active state bound (a state constraint in the
        recursion) and rows whose reduced Hessian is not positive definite (casadi's factorisation decides
        there, and reports degenerate ones). Same active set as casadi's: the bounds with a nonzero multiplier
        in ``lam_x`` (:meth:`_active_multipliers`)."""
        assert self._riccati is not None
        nx, N = self.nx, self.horizon
        batch = len(rows)
        stages = lam_x[:, : N * self._stage].reshape(batch, N, self._stage)
        state_active = (stages[:, :, :nx] != 0).any(axis=(1, 2)) | (lam_x[:, N * self._stage :] != 0).any(
            axis=1
        )
        covered = ~state_active
        if not covered.any():
            return covered
        X, U = self._split_z(out["x"][covered])
        Pi = -out["lam_g"][covered].reshape(-1, N + 1, nx)
        free_u = (stages[covered][:, :, nx:] == 0).astype(np.float64)
        stage_params = self._stage_params(nlp_p[covered, nx:])
        self._riccati.n_threads = self._threads()
        adj_s, adj_P, pivot = self._riccati.vjp(X, U, Pi, stage_params, free_u, grad_u0[covered])
        adj_phi = adj_P.sum(axis=1) if self.param_interface == "global" else adj_P.reshape(len(X), -1)
        valid = (
            (pivot > RICCATI_PIVOT_TOL) & np.isfinite(adj_s).all(axis=1) & np.isfinite(adj_phi).all(axis=1)
        )
        where = np.flatnonzero(covered)[valid]
        grad_p[rows[where]] = np.concatenate([adj_s, adj_phi], axis=1)[valid]
        covered[np.flatnonzero(covered)[~valid]] = False
        return covered

    def params_jacobian(self, solution: MPCSolution) -> np.ndarray:
        """``(batch, nu, n_phi)``: ``d u0* / d phi`` at ``solution``, in the OCP's units.

        The vector-Jacobian product of :meth:`vjp` once per control with a unit seed (``nu`` reverse
        passes). Failed samples and samples without sensitivities get zeros, as in :meth:`vjp`;
        they are not added to :attr:`sensitivity_failures`, which counts the training gradients'
        failures only (this is a diagnostic, and the same rows fail in the training backward pass).
        """
        batch = len(solution.u0)
        jacobian = np.zeros((batch, self.nu, self.n_phi))
        failures = self.sensitivity_failures
        try:
            for i in range(self.nu):
                seed = np.zeros((batch, self.nu))
                seed[:, i] = 1.0
                jacobian[:, i] = self._vjp(solution, seed)[:, self.nx :]
        finally:
            self.sensitivity_failures = failures
        return jacobian

    def _active_multipliers(self, z: np.ndarray, lam_x: np.ndarray) -> np.ndarray:
        """``lam_x`` with the multipliers of inactive bounds set to zero (the silent-zero fix).

        A bound counts as inactive when its multiplier is below ``active_tol`` or when the solution
        keeps a clear distance from it (more than ``sqrt(tol) * (1 + |bound|)``; for the controls under a
        ``control_barrier``, more than the barrier box's widening, see ``_build_solver``): an interior-point
        solver leaves multipliers of order ``mu / slack`` on inactive bounds, which can exceed
        ``active_tol`` for a loose ``tol`` or a nearly active bound. casadi's sign convention:
        ``lam_x > 0`` at an upper bound, ``< 0`` at a lower bound.
        """
        lam_x = lam_x.copy()
        with np.errstate(invalid="ignore"):  # infinite bounds: infinite slack
            slack_upper = (self._ubz - z) > self._upper_margin
            slack_lower = (z - self._lbz) > self._lower_margin
        inactive = (
            (np.abs(lam_x) < self.active_tol) | ((lam_x > 0) & slack_upper) | ((lam_x < 0) & slack_lower)
        )
        lam_x[inactive] = 0.0
        return lam_x

    def _reverse_rows(
        self,
        solution: MPCSolution,
        rows: np.ndarray,
        lam_x: np.ndarray,
        out: dict[str, np.ndarray],
        seed: np.ndarray,
    ) -> np.ndarray:
        """``(len(rows), nx + n_phi)``: casadi's reverse mode of the solver at the given rows."""
        n = len(rows)
        g_size = len(self._g_zero)
        result = self._reverse_map(n)(
            x0=out["x"].T,
            p=solution.nlp_p[rows].T,
            lbx=np.tile(self._lbz[:, None], n),
            ubx=np.tile(self._ubz[:, None], n),
            lbg=np.zeros((g_size, n)),
            ubg=np.zeros((g_size, n)),
            lam_x0=lam_x.T,
            lam_g0=out["lam_g"].T,
            out_x=out["x"].T,
            out_f=out["f"].T,
            out_g=out["g"].T,
            out_lam_x=lam_x.T,
            out_lam_g=out["lam_g"].T,
            out_lam_p=out["lam_p"].T,
            adj_x=seed.T,
            adj_f=np.zeros((1, n)),
            adj_g=np.zeros((g_size, n)),
            adj_lam_x=np.zeros((self.nz, n)),
            adj_lam_g=np.zeros((g_size, n)),
            adj_lam_p=np.zeros((self.nx + self.n_phi, n)),
        )
        return np.asarray(result["adj_p"], dtype=np.float64).T

    def _reverse_map(self, batch: int) -> Any:
        if batch not in self._reverse_maps:
            self._reverse_maps[batch] = self._reverse if batch == 1 else self._reverse.map(batch)
        return self._reverse_maps[batch]

    # ------------------------------------------------------------------ torch

    def __call__(
        self, states: th.Tensor, params: th.Tensor, initial_guess: np.ndarray | None = None
    ) -> tuple[th.Tensor, th.Tensor, MPCSolution]:
        """Differentiable ``u0*(s, phi)`` for torch tensors.

        :param states: ``(batch, nx)``; gradients flow to it.
        :param params: ``(batch, n_phi)``; gradients flow to it.
        :param initial_guess: see :meth:`solve`.
        :return: ``u0 (batch, nu)`` in the inputs' dtype/device, ``success (batch,)`` bool tensor, and
            the numpy :class:`MPCSolution` (iterations, status, a warm start for the next call).
        """
        holder: list[MPCSolution] = []
        u0, success = _MPCFunction.apply(states, params, self, initial_guess, holder)
        return u0, success, holder[0]


class _MPCFunction(th.autograd.Function):
    """torch glue: forward = :meth:`MPCLayer.solve`, backward = :meth:`MPCLayer.vjp`."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        states: th.Tensor,
        params: th.Tensor,
        layer: MPCLayer,
        initial_guess: np.ndarray | None,
        holder: list[MPCSolution],
    ) -> tuple[th.Tensor, th.Tensor]:
        solution = layer.solve(
            states.detach().cpu().double().numpy(), params.detach().cpu().double().numpy(), initial_guess
        )
        holder.append(solution)
        ctx.layer, ctx.solution = layer, solution
        ctx.state_meta = (states.dtype, states.device)
        ctx.param_meta = (params.dtype, params.device)
        u0 = th.as_tensor(solution.u0, dtype=params.dtype, device=params.device)
        success = th.as_tensor(solution.success, device=params.device)
        ctx.mark_non_differentiable(success)
        return u0, success

    @staticmethod
    def backward(ctx: Any, grad_u0: th.Tensor, _grad_success: Any) -> tuple[Any, ...]:  # type: ignore[override]
        grad_states, grad_params = ctx.layer.vjp(ctx.solution, grad_u0.detach().cpu().double().numpy())
        (s_dtype, s_device), (p_dtype, p_device) = ctx.state_meta, ctx.param_meta
        return (
            th.as_tensor(grad_states, dtype=s_dtype, device=s_device) if ctx.needs_input_grad[0] else None,
            th.as_tensor(grad_params, dtype=p_dtype, device=p_device) if ctx.needs_input_grad[1] else None,
            None,
            None,
            None,
        )
