"""The batched MPPI planner of MPQ (``sb3_stein.common.mppi``): its mathematics against closed forms.

Ground truths are computed here independently of the planner: the linear-quadratic case has a
Gaussian optimal distribution ``pi*(V) ∝ exp(-C(V) / lambda) N(V; 0, Sigma)`` whose mean (the LQR
solution with the control cost ``R + (lambda / 2) Sigma^-1``) and free energy are closed forms; the
nonlinear cases use quadrature on a grid.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch as th

from sb3_stein.common.mppi import MPPI, noise_cholesky

# A scalar linear system x' = a x + b u with reward -(q x'^2 + r u^2) and terminal Q(x, u) = -(p x^2 +
# r u^2): the sequence cost C(V) is quadratic in the H controls V.
A_LIN, B_LIN, Q_X, R_U, P_T = 0.9, 0.5, 1.0, 0.2, 3.0


def linear_dynamics(obs: th.Tensor, action: th.Tensor) -> th.Tensor:
    return A_LIN * obs + B_LIN * action


def quadratic_reward(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    return -(Q_X * next_obs[..., 0] ** 2 + R_U * action[..., 0] ** 2)


def quadratic_q(obs: th.Tensor, action: th.Tensor) -> th.Tensor:
    return -(P_T * obs[..., 0] ** 2 + R_U * action[..., 0] ** 2)


def planner_kwargs(**overrides) -> dict:
    """The linear-quadratic planner's arguments, with ``overrides``."""
    kwargs: dict = dict(
        dynamics=linear_dynamics,
        reward_model=quadratic_reward,
        horizon=3,
        n_samples=16,
        noise_sigma=1.0,
        temperature=0.5,
        step_size=1.0,
        gamma=0.9,
        action_low=th.tensor([-100.0]),
        action_high=th.tensor([100.0]),
        terminal_value=quadratic_q,
    )
    kwargs.update(overrides)
    return kwargs


def make_planner(**overrides) -> MPPI:
    return MPPI(**planner_kwargs(**overrides))


def sequence_cost(x0: float, controls: th.Tensor, gamma: float) -> th.Tensor:
    """C(V) written out by hand (Eq. 16 with c = -r, App. A's discounting), ``controls (..., H)``."""
    x = th.full(controls.shape[:-1], x0, dtype=controls.dtype)
    horizon = controls.shape[-1]
    cost = th.zeros_like(x)
    for t in range(horizon - 1):
        u = controls[..., t]
        x = A_LIN * x + B_LIN * u
        cost = cost + gamma**t * (Q_X * x**2 + R_U * u**2)
    u = controls[..., horizon - 1]
    return cost + gamma ** (horizon - 1) * (P_T * x**2 + R_U * u**2)


def gaussian_optimum(x0: float, horizon: int, gamma: float, lam: float, sigma2: float):
    """Mean and soft value of pi* for the quadratic C: C(V) = 1/2 V'MV + g'V + c."""
    zero = th.zeros(horizon, dtype=th.float64)
    hess = th.autograd.functional.hessian(lambda v: sequence_cost(x0, v, gamma), zero)
    grad = th.autograd.functional.jacobian(lambda v: sequence_cost(x0, v, gamma), zero)
    c = float(sequence_cost(x0, zero, gamma))
    precision = th.eye(horizon, dtype=th.float64) / sigma2 + hess / lam  # P = Sigma^-1 + M / lambda
    mean = -th.linalg.solve(precision, grad / lam)
    h = -grad / lam
    value = -c - 0.5 * lam * math.log(float(th.linalg.det(sigma2 * precision))) + 0.5 * lam * float(h @ mean)
    return mean, value


def test_lqr_limit_mean_and_free_energy_match_the_gaussian_optimum():
    """Large N, alpha = 1: one iteration from the prior gives E_{pi*}[V] (the LQR solution with R + (lambda
    / 2) Sigma^-1 in C's units), and the free energy's closed form; later iterations keep both."""
    lam, sigma2, gamma, x0 = 0.5, 1.0, 0.9, 1.5
    expected_mean, expected_value = gaussian_optimum(x0, 3, gamma, lam, sigma2)
    planner = make_planner(n_samples=400_000, temperature=lam, noise_sigma=sigma2, gamma=gamma)
    gen = th.Generator().manual_seed(0)
    obs = th.tensor([[x0]])
    for iterations in (1, 3):
        result = planner.plan(obs, iterations=iterations, generator=gen)
        assert result.mean[0, :, 0].double() == pytest.approx(expected_mean.tolist(), abs=0.01)
        assert float(result.value[0]) == pytest.approx(expected_value, abs=0.01)
    # The optimum is pulled towards zero by the control cost: a deterministic LQR (lambda -> 0) acts harder.
    greedy, _ = gaussian_optimum(x0, 3, gamma, 1e-6, sigma2)
    assert abs(float(expected_mean[0])) < abs(float(greedy[0]))


def test_lqr_limit_with_a_full_covariance():
    """Two actuators with a correlated Sigma: the same Gaussian identity with V in R^{2H}."""
    sigma = th.tensor([[1.0, 0.6], [0.6, 2.0]])
    lam, gamma = 0.7, 1.0
    b = th.tensor([[0.5, -0.3]])  # x' = 0.8 x + b u, one state

    def dyn(obs, action):
        return 0.8 * obs + action @ b.T

    def rew(obs, action, next_obs):
        return -(next_obs[..., 0] ** 2 + 0.1 * (action**2).sum(-1))

    def q(obs, action):
        return -(2.0 * obs[..., 0] ** 2 + 0.1 * (action**2).sum(-1))

    def cost(v):  # v (2H,) = (u_0, u_1) stacked per step
        x = th.tensor(1.0, dtype=v.dtype)
        u0, u1 = v[:2], v[2:]
        x = 0.8 * x + (b.double() @ u0)[0]
        return x**2 + 0.1 * (u0**2).sum() + 2.0 * x**2 + 0.1 * (u1**2).sum()

    zero = th.zeros(4, dtype=th.float64)
    hess = th.autograd.functional.hessian(cost, zero)
    grad = th.autograd.functional.jacobian(cost, zero)
    prior_precision = th.block_diag(th.linalg.inv(sigma.double()), th.linalg.inv(sigma.double()))
    expected = -th.linalg.solve(prior_precision + hess / lam, grad / lam)
    planner = MPPI(
        dyn, rew, 2, 400_000, sigma, lam, 1.0, gamma, th.tensor([-50.0, -50.0]), th.tensor([50.0, 50.0]), q
    )
    result = planner.plan(th.tensor([[1.0]]), generator=th.Generator().manual_seed(1))
    assert result.mean[0].reshape(-1).double() == pytest.approx(expected.tolist(), abs=0.01)


def test_free_energy_matches_quadrature_for_a_nonlinear_model_with_h2():
    """H = 2, nonlinear dynamics and rewards, bounds active: -lambda log E_{N(0, s I)}[exp(R(clip V) /
    lambda)] on an 801 x 801 grid."""
    lam, sigma2, gamma = 0.8, 2.0, 0.95
    low, high = -1.5, 1.5

    def dyn(obs, action):
        return th.sin(obs) + action

    def rew(obs, action, next_obs):
        return th.cos(next_obs[..., 0]) - 0.3 * action[..., 0] ** 2

    def q(obs, action):
        return -((obs[..., 0] - 0.5) ** 2) + 0.2 * action[..., 0]

    planner = MPPI(dyn, rew, 2, 300_000, sigma2, lam, 0.5, gamma, th.tensor([low]), th.tensor([high]), q)
    x0 = 0.3
    result = planner.plan(th.tensor([[x0]]), iterations=2, generator=th.Generator().manual_seed(2))

    grid = np.linspace(-12, 12, 801)
    u0, u1 = np.meshgrid(grid, grid, indexing="ij")
    a0, a1 = np.clip(u0, low, high), np.clip(u1, low, high)
    x1 = np.sin(x0) + a0
    ret = np.cos(x1) - 0.3 * a0**2 + gamma * (-((x1 - 0.5) ** 2) + 0.2 * a1)
    density = np.exp(-(u0**2 + u1**2) / (2 * sigma2)) / (2 * np.pi * sigma2)
    integral = np.trapezoid(np.trapezoid(density * np.exp(ret / lam), grid, axis=1), grid)
    assert float(result.value[0]) == pytest.approx(lam * math.log(integral), abs=0.01)


def test_one_step_plan_is_the_closed_form_soft_value_and_posterior_mean():
    """H = 1, Q(a) = -k (a - c)^2, no bounds: V = lambda log E[exp(Q / lambda)] and the updated mean is
    the posterior mean c * 2 k s / (lambda + 2 k s) (Gaussian prior times Gaussian likelihood)."""
    lam, s, k, c = 0.4, 1.5, 0.8, 0.9
    planner = make_planner(
        horizon=1,
        n_samples=400_000,
        temperature=lam,
        noise_sigma=s,
        terminal_value=lambda o, a: -k * (a[..., 0] - c) ** 2,
    )
    result = planner.plan(th.zeros(1, 1), generator=th.Generator().manual_seed(3))
    precision = 1 / s + 2 * k / lam
    posterior_mean = (2 * k * c / lam) / precision
    value = -k * c**2 + lam * 0.5 * math.log(1 / (s * precision)) + 0.5 * lam * precision * posterior_mean**2
    assert float(result.mean[0, 0, 0]) == pytest.approx(posterior_mean, abs=0.01)
    assert float(result.value[0]) == pytest.approx(value, abs=0.005)


class FixedNoiseMPPI(MPPI):
    """Draws its noise from a stored tensor: rows chosen by ``rows`` (to replay a batch one by one)."""

    def __init__(self, noise: th.Tensor, **kwargs):
        super().__init__(**kwargs)
        self.noise, self.rows = noise, slice(None)

    def sample_noise(self, shape, like, generator):
        return self.noise[self.rows]


def test_batched_plan_equals_one_state_at_a_time_with_the_same_noise():
    batch, n, horizon = 5, 32, 4
    noise = th.randn(batch, n, horizon, 1, generator=th.Generator().manual_seed(4))
    planner = FixedNoiseMPPI(
        noise, **planner_kwargs(horizon=horizon, n_samples=n, action_low=th.tensor([-1.0]))
    )
    obs = th.linspace(-2, 2, batch).unsqueeze(1)
    mean0 = 0.1 * th.randn(batch, horizon, 1, generator=th.Generator().manual_seed(5))
    together = planner.plan(obs, mean0)
    for b in range(batch):
        planner.rows = slice(b, b + 1)
        alone = planner.plan(obs[b : b + 1], mean0[b : b + 1])
        th.testing.assert_close(alone.mean, together.mean[b : b + 1], rtol=1e-5, atol=1e-6)
        th.testing.assert_close(alone.value, together.value[b : b + 1], rtol=1e-5, atol=1e-6)
        th.testing.assert_close(alone.ess, together.ess[b : b + 1], rtol=1e-5, atol=1e-5)


def test_discounting_follows_appendix_a():
    """gamma^t on the H - 1 model rewards, gamma^{H-1} on Q; without Q, H model rewards."""
    gamma, horizon = 0.8, 4
    ones = dict(dynamics=lambda o, a: o + 1, reward_model=lambda o, a, n: th.ones(o.shape[:-1]), gamma=gamma)
    actions = th.zeros(2, 3, horizon, 1)
    obs = th.zeros(2, 1)
    with_q = make_planner(horizon=horizon, terminal_value=lambda s, a: 5.0 + s[..., 0], **ones)
    # Q is evaluated at s_{H-1} = 3 (three model steps from 0).
    expected = sum(gamma**t for t in range(horizon - 1)) + gamma ** (horizon - 1) * (5.0 + 3.0)
    th.testing.assert_close(with_q.returns(obs, actions), th.full((2, 3), expected))
    plain = make_planner(horizon=horizon, terminal_value=None, **ones)
    th.testing.assert_close(
        plain.returns(obs, actions), th.full((2, 3), sum(gamma**t for t in range(horizon)))
    )


class TerminatingModel:
    """x' = x + u; terminal once x >= 1 (an episode end inside the horizon)."""

    def __call__(self, obs, action):
        return obs + action

    def is_terminal(self, obs):
        return obs[..., 0] >= 1.0


def test_rewards_and_terminal_q_after_a_terminal_state_are_dropped():
    planner = make_planner(
        dynamics=TerminatingModel(),
        reward_model=lambda o, a, n: th.ones(o.shape[:-1]),
        horizon=4,
        gamma=1.0,
        terminal_value=lambda s, a: th.full(s.shape[:-1], 10.0),
    )
    obs = th.zeros(1, 1)
    # Sample 0 terminates at the second step (x = 1.2): rewards of steps 0 and 1 count, nothing after.
    # Sample 1 never terminates: 3 rewards + Q.
    actions = th.tensor([[[0.6], [0.6], [0.0], [0.0]], [[0.1], [0.1], [0.1], [0.1]]]).unsqueeze(0)
    assert planner.returns(obs, actions).tolist() == [[2.0, 13.0]]


def test_samples_are_clipped_to_the_box_and_the_mean_stays_inside():
    seen = []

    def dyn(obs, action):
        seen.append(action.clone())
        return obs + action

    planner = make_planner(
        dynamics=dyn,
        noise_sigma=100.0,
        step_size=1.0,
        action_low=th.tensor([-0.5]),
        action_high=th.tensor([2.0]),
        reward_model=lambda o, a, n: -((n[..., 0] - 10.0) ** 2),
        terminal_value=None,
    )
    mean, gen = None, th.Generator().manual_seed(10)
    for _ in range(5):
        result = planner.plan(th.zeros(3, 1), mean, iterations=2, generator=gen)
        mean = result.mean
        assert bool((mean >= -0.5).all()) and bool((mean <= 2.0).all())
    actions = th.cat([a.reshape(-1) for a in seen])
    assert float(actions.min()) >= -0.5 and float(actions.max()) <= 2.0
    assert float((actions == 2.0).float().mean()) > 0.3  # the large noise saturates often
    # The target lies beyond the upper bound: the plan goes towards the bound.
    assert float(mean[:, 0, 0].mean()) > 1.5


def test_shift_drops_the_executed_control_and_appends_the_prior_mean():
    mean = th.arange(12.0).reshape(2, 3, 2)
    shifted = MPPI.shift(mean)
    assert shifted[:, :2].tolist() == mean[:, 1:].tolist()
    assert shifted[:, 2].abs().sum() == 0


def test_ess_is_n_for_equal_costs_and_one_for_a_dominant_sample():
    flat = make_planner(
        dynamics=lambda o, a: o,
        reward_model=lambda o, a, n: th.zeros(o.shape[:-1]),
        terminal_value=None,
        n_samples=10,
    )
    # Equal model costs, but the control cost of Eq. 16 still varies with U != 0: start from U = 0.
    result = flat.plan(th.zeros(2, 1))
    assert result.ess.tolist() == pytest.approx([10.0, 10.0])
    assert not bool(result.collapsed.any()) and not bool(result.underflow.any())
    sharp = make_planner(temperature=1e-4, n_samples=64)
    result = sharp.plan(th.full((2, 1), 3.0), generator=th.Generator().manual_seed(6))
    assert bool(result.collapsed.all()) and result.ess.tolist() == pytest.approx([1.0, 1.0])
    assert bool(result.underflow.all())  # costs of order 10 against lambda = 1e-4
    assert bool(th.isfinite(result.mean).all()) and bool(th.isfinite(result.value).all())


def test_infinite_costs_get_zero_weight_and_an_all_infinite_state_keeps_its_mean():
    def rew(
        obs, action, next_obs
    ):  # -inf reward (infinitely bad) for negative actions, or everywhere at x = 5
        r = -(action[..., 0] ** 2)
        r = th.where(action[..., 0] < 0, th.full_like(r, -math.inf), r)
        return th.where(obs[..., 0] == 5.0, th.full_like(r, -math.inf), r)

    planner = make_planner(reward_model=rew, terminal_value=None, horizon=2, n_samples=64)
    mean0 = th.full((2, 2, 1), 0.3)
    result = planner.plan(th.tensor([[0.0], [5.0]]), mean0, generator=th.Generator().manual_seed(7))
    assert result.infeasible.tolist() == [False, True]
    assert float(result.value[1]) == -math.inf and math.isfinite(float(result.value[0]))
    assert result.mean[1].tolist() == mean0[1].tolist()
    assert float(result.ess[1]) == 0.0
    assert bool(th.isfinite(result.mean).all())


def test_nan_costs_and_wrongly_shaped_models_raise():
    nan_planner = make_planner(reward_model=lambda o, a, n: th.full(o.shape[:-1], math.nan))
    with pytest.raises(ValueError, match="NaN"):
        nan_planner.plan(th.zeros(1, 1))
    flat_reward = make_planner(reward_model=lambda o, a, n: th.zeros(o.shape[0]))
    with pytest.raises(ValueError, match="reward_model returned shape"):
        flat_reward.plan(th.zeros(2, 1))

    class BadSimulator:
        def __call__(self, obs, action):
            return obs

        def rollout_sequence(self, obs, actions):
            return th.zeros(*actions.shape[:3], 1), th.zeros(actions.shape[0])

    with pytest.raises(ValueError, match="rollout_sequence returned"):
        make_planner(dynamics=BadSimulator()).plan(th.zeros(2, 1))


def test_a_simulator_model_gives_the_same_returns_as_step_by_step_rollouts():
    class Simulator:
        def __call__(self, obs, action):
            raise AssertionError("a simulator model is rolled out through rollout_sequence")

        def rollout_sequence(self, obs, actions):  # (B, N, obs), (B, N, T, A)
            states, rewards, x = [], [], obs
            for t in range(actions.shape[2]):
                nxt = linear_dynamics(x, actions[:, :, t])
                rewards.append(quadratic_reward(x, actions[:, :, t], nxt))
                states.append(nxt)
                x = nxt
            return th.stack(states, 2), th.stack(rewards, 2)

    actions = th.randn(3, 7, 3, 1, generator=th.Generator().manual_seed(8))
    obs = th.randn(3, 1, generator=th.Generator().manual_seed(9))
    th.testing.assert_close(
        make_planner(dynamics=Simulator()).returns(obs, actions), make_planner().returns(obs, actions)
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(horizon=0), "horizon"),
        (dict(horizon=2.5), "horizon"),
        (dict(n_samples=1), "n_samples"),
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=math.nan), "temperature"),
        (dict(temperature=math.inf), "temperature"),
        (dict(step_size=0.0), "step_size"),
        (dict(step_size=1.5), "step_size"),
        (dict(gamma=0.0), "gamma"),
        (dict(gamma=1.1), "gamma"),
        (dict(horizon=1, terminal_value=None), "terminal_value"),
        (dict(noise_sigma=-1.0), "noise_sigma"),
        (dict(noise_sigma=th.tensor([1.0, 2.0])), "noise_sigma"),
        (dict(noise_sigma=th.tensor([[1.0, 2.0], [0.0, 1.0]])), "noise_sigma"),
    ],
)
def test_bad_parameters_are_refused_by_name(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_planner(**overrides)


def test_bad_plan_calls_are_refused():
    with pytest.raises(ValueError, match="iterations"):
        make_planner().plan(th.zeros(1, 1), iterations=0)


def test_noise_cholesky_accepts_the_three_forms():
    th.testing.assert_close(noise_cholesky(4.0, 2), th.diag(th.tensor([2.0, 2.0], dtype=th.float64)))
    th.testing.assert_close(
        noise_cholesky(th.tensor([1.0, 9.0]), 2), th.diag(th.tensor([1.0, 3.0], dtype=th.float64))
    )
    full = th.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=th.float64)
    chol = noise_cholesky(full, 2)
    th.testing.assert_close(chol @ chol.T, full)
    noise = make_planner(noise_sigma=4.0).sample_noise((200_000,), th.zeros(1), th.Generator().manual_seed(0))
    assert float(noise.std()) == pytest.approx(2.0, rel=0.01)
