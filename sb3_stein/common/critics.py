"""Q-values and their action gradients for every particle of every state, in one pass.

A Stein actor needs ``Q(s, a)`` and ``grad_a Q(s, a)`` of all critics on ``batch x particles``
rows at every SVGD step. For SB3's ``ContinuousCritic`` with ReLU MLPs both are a few batched
matrix products (the input gradient of a ReLU MLP is ``W1^T (mask1 * W2^T (mask2 * w3))``), so
:class:`ParticleCritic` evaluates all critics at once with stacked weights (optionally cached until
the weights change), extracts each state's features once for all its particles and SVGD steps, and builds no
autograd graph of its own for the gradient.

The critic's weights enter as constants (detached): these values serve actors, whose losses
must not train the critic. The returned gradient is an ordinary differentiable expression of
the actions. Its derivative with respect to the actions is zero, as is the exact one: a ReLU MLP is
piecewise linear, so its action Hessian vanishes almost everywhere. Differentiating through it is
therefore the same as ``torch.autograd.grad(..., create_graph=True)`` without the double backward
(tested against autograd). Critics with other activations take the generic autograd path.
"""

from __future__ import annotations

import weakref

import torch as th
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

_PIECEWISE_LINEAR = (nn.ReLU,)

#: Per layer ``(W (n_critics, out, in), W^T (n_critics, in, out) contiguous, b (n_critics, 1, out))``.
StackedLayers = list[tuple[th.Tensor, th.Tensor, th.Tensor]]

# critic -> (key of its weights' storage and version counters, stacked layers or None)
_STACK_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], StackedLayers | None]] = (
    weakref.WeakKeyDictionary()
)


def _stacked_layers(q_networks: list[nn.Module]) -> StackedLayers | None:
    """``[(W, W^T, b), ...]`` stacked over critics if every critic is Linear/ReLU/.../Linear."""
    per_net: list[list[nn.Linear]] = []
    for net in q_networks:
        if not isinstance(net, nn.Sequential):
            return None
        modules = list(net)
        linears = modules[0::2]
        acts = modules[1::2]
        if not linears or len(linears) != len(acts) + 1:
            return None
        if not all(isinstance(mod, nn.Linear) for mod in linears):
            return None
        if not all(isinstance(mod, _PIECEWISE_LINEAR) for mod in acts):
            return None
        per_net.append(linears)  # type: ignore[arg-type]
    shapes = {tuple(tuple(layer.weight.shape) for layer in linears) for linears in per_net}
    if len(shapes) != 1:
        return None
    layers: StackedLayers = []
    with th.no_grad():  # detached: an actor's loss must never train the critic through these copies
        for k in range(len(per_net[0])):
            weight = th.stack([lin[k].weight for lin in per_net])
            bias = th.stack([lin[k].bias for lin in per_net]).unsqueeze(1)
            layers.append((weight, weight.transpose(1, 2).contiguous(), bias))
    return layers


def stacked_critic_layers(critic: ContinuousCritic, cache: bool = False) -> StackedLayers | None:
    """The critic ensemble's weights stacked for :class:`ParticleCritic` (``None``: no fast path).

    :param cache: reuse the previous copy while the weights are unchanged. Stacking copies every
        weight; acting calls this once per ``predict``. The copy is keyed by every parameter's
        storage address and version counter, which optimizer steps and ``load_state_dict``
        increment. Writes through ``param.data`` do *not* increment it, and SB3's ``polyak_update``
        writes target networks that way: never cache a target critic.
    """
    params = [param for net in critic.q_networks for param in net.parameters()]
    key = tuple(v for p in params for v in (p.data_ptr(), p._version)) if cache else ()
    cached = _STACK_CACHE.get(critic) if cache else None
    if cached is not None and cached[0] == key:
        return cached[1]
    layers = _stacked_layers(list(critic.q_networks))
    if cache:
        _STACK_CACHE[critic] = (key, layers)
    return layers


def supports_fast_path(critic: ContinuousCritic) -> bool:
    """Whether :class:`ParticleCritic` can use the batched ReLU path for ``critic``."""
    return _stacked_layers(list(critic.q_networks)) is not None


def relu_mlp_values_and_input_grads(
    layers: StackedLayers, rows: th.Tensor, need_grad: bool = True, first_grad_column: int = 0
) -> tuple[th.Tensor, th.Tensor | None]:
    """Values of stacked ReLU MLPs and their gradients with respect to (some) input columns.

    :param layers: :func:`stacked_critic_layers` of a critic ensemble.
    :param rows: inputs ``(N, in_dim)`` (e.g. ``[features, action]`` rows).
    :param need_grad: also return the input gradient.
    :param first_grad_column: return ``dQ/d rows[:, first_grad_column:]`` only (the action part).
    :return: ``(n_critics, N)`` values and ``(n_critics, N, in_dim - first_grad_column)`` gradients.
        The gradient uses the ReLU masks as constants: exact, since a ReLU MLP is piecewise linear
        (its Hessian vanishes almost everywhere), and differentiable in nothing but the weights.
    """
    n_critics = layers[0][0].shape[0]
    n_rows = rows.shape[0]
    _, w1_t, b1 = layers[0]
    hidden = th.baddbmm(b1, rows.unsqueeze(0).expand(n_critics, -1, -1), w1_t)  # (n, N, h1)
    activations = []
    for _, weight_t, bias in layers[1:]:
        hidden = th.relu(hidden)
        activations.append(hidden)
        hidden = th.baddbmm(bias, hidden, weight_t)
    q = hidden.view(n_critics, n_rows)
    if not need_grad:
        return q, None
    w1_input = layers[0][0][:, :, first_grad_column:]  # (n, h1, in_dim - first_grad_column)
    if not activations:  # a single linear layer (net_arch=[]): Q is linear, its gradient the weight row
        return q, w1_input.expand(n_critics, n_rows, -1)
    # Backward through the ReLU MLP by hand: grad = W1^T (m1 * W2^T (m2 * ... w_last)).
    # threshold_backward is ReLU's own fused backward: grad where the activation is > 0, else 0.
    # The masks are constants of the inputs (zero Hessian), hence the detach.
    grad = th.ops.aten.threshold_backward(
        layers[-1][0].expand(n_critics, n_rows, -1), activations[-1].detach(), 0.0
    )
    for (weight, _, _), act in zip(reversed(layers[1:-1]), reversed(activations[:-1])):
        grad = th.ops.aten.threshold_backward(th.bmm(grad, weight), act.detach(), 0.0)
    return q, th.bmm(grad, w1_input)


def min_over_critics(q: th.Tensor, grad: th.Tensor | None) -> tuple[th.Tensor, th.Tensor | None]:
    """``min_k Q_k`` of ``(n_critics, ...)`` values and the gradient ``(n_critics, ..., d)`` of the
    minimising critic."""
    q_min, idx = q.min(0)
    if grad is None:
        return q_min, None
    index = idx.unsqueeze(0).unsqueeze(-1).expand(1, *grad.shape[1:])
    return q_min, th.gather(grad, 0, index).squeeze(0)


class ParticleCritic:
    """A critic ensemble bound to a batch of states, evaluated on particles of actions.

    The one way every Stein actor of the package evaluates its critics: at the bound states
    (:meth:`values_and_grads`, S²AC's particles and every actor's selection and loss) or at states a
    model rollout visits (:meth:`closed_form_input_grads`, :meth:`min_q_at`, Q-STAC). A Stein actor
    evaluates the same critic at the same states for every SVGD step; binding does the per-state
    work once (the features extractor, stacking the weights).

    :param critic: an SB3 ``ContinuousCritic``.
    :param obs: observations ``(batch, *obs_shape)``.
    :param cache_weights: see ``cache`` in :func:`stacked_critic_layers` (online critics only).
    """

    def __init__(self, critic: ContinuousCritic, obs: PyTorchObs, cache_weights: bool = False):
        self.critic = critic
        # Actors need gradients with respect to the actions only: nothing here may train the
        # critic or a features extractor it shares with the actor.
        with th.no_grad():
            self.features = critic.extract_features(obs, critic.features_extractor)  # (batch, n_features)
        self.layers = stacked_critic_layers(critic, cache=cache_weights)

    def values_and_grads(
        self, actions: th.Tensor, need_grad: bool = True
    ) -> tuple[th.Tensor, th.Tensor | None]:
        """All critics' values and action gradients at the bound states.

        :param actions: particles in the critic's action units ``(batch, m, act_dim)``.
        :param need_grad: also return ``grad_a Q``.
        :return: ``q`` of shape ``(n_critics, batch, m)`` and ``dq_da`` of shape
            ``(n_critics, batch, m, act_dim)`` (``None`` if not requested).
        """
        layers, features = self.layers, self.features
        if layers is None:
            return _autograd_q_and_grads(self.critic, features, actions, need_grad)
        batch, m, act_dim = actions.shape
        n_features = features.shape[-1]
        # First layer as one fused product on [features, action] rows: a state's features repeat
        # over its m particles (cheap: few columns), and no separate full-size broadcast add is needed.
        rows = th.cat([features.unsqueeze(1).expand(batch, m, n_features), actions], dim=-1)
        q, grad = relu_mlp_values_and_input_grads(layers, rows.view(batch * m, -1), need_grad, n_features)
        n_critics = q.shape[0]
        if grad is None:
            return q.view(n_critics, batch, m), None
        return q.view(n_critics, batch, m), grad.view(n_critics, batch, m, act_dim)

    def min_q_and_grad(
        self, actions: th.Tensor, need_grad: bool = True
    ) -> tuple[th.Tensor, th.Tensor | None]:
        """``min_k Q_k(s, a)`` over the ensemble and its action gradient (of the minimising critic).

        :return: ``(batch, m)`` and ``(batch, m, act_dim)`` (or ``None``).
        """
        return min_over_critics(*self.values_and_grads(actions, need_grad))

    def min_q_at(self, states: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """``min_k Q_k(x, a)`` at states a rollout visited, differentiable in both inputs (weights
        constant), shape ``states.shape[:-1]``: the generic path, through autograd.

        :param states: observations ``(..., obs_dim)`` (e.g. ``(batch, m, H, obs_dim)``).
        :param actions: actions in the critic's units, same leading dimensions.
        """
        return _q_values_at(self.critic, states, actions).min(0).values

    def closed_form_input_grads(
        self, states: th.Tensor, actions: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor] | None:
        """``dQ/dx`` and ``dQ/da`` of ``min_k Q_k`` (the minimising critic's) at states a rollout visited,
        as constants, or ``None`` when there is no closed form (use :meth:`min_q_at`).

        ReLU critics on flat observations (``FlattenExtractor``) only: the gradient is exact (a ReLU
        network's Hessian vanishes), and the caller chains it through its rollout with one
        vector-Jacobian product.
        """
        if self.layers is None or not isinstance(self.critic.features_extractor, FlattenExtractor):
            return None
        lead, obs_dim = states.shape[:-1], states.shape[-1]
        with th.no_grad():
            rows = th.cat([states, actions], dim=-1).reshape(-1, obs_dim + actions.shape[-1])
            _, grad = min_over_critics(*relu_mlp_values_and_input_grads(self.layers, rows))
            assert grad is not None
            grad = grad.view(*lead, -1)
        return grad[..., :obs_dim], grad[..., obs_dim:]


def _detached(module: nn.Module) -> dict[str, th.Tensor]:
    return {name: param.detach() for name, param in module.named_parameters()}


def _autograd_q_and_grads(
    critic: ContinuousCritic, features: th.Tensor, actions: th.Tensor, need_grad: bool
) -> tuple[th.Tensor, th.Tensor | None]:
    """Generic path for critics with curved activations.

    When ``actions`` carries a graph, the gradient is built with ``create_graph=True`` so that a
    loss through the SVGD steps sees the critic's action Hessian.
    """
    batch, m, act_dim = actions.shape
    flat_features = features.unsqueeze(1).expand(batch, m, features.shape[-1]).reshape(batch * m, -1)
    flat_actions = actions.reshape(batch * m, act_dim)
    if not need_grad:
        qvalue_input = th.cat([flat_features, flat_actions], dim=1)
        values = [
            th.func.functional_call(q_net, _detached(q_net), (qvalue_input,)) for q_net in critic.q_networks
        ]
        return th.stack([v.view(batch, m) for v in values]), None
    keep_graph = actions.requires_grad
    with th.enable_grad():
        if not keep_graph:
            flat_actions = flat_actions.detach().requires_grad_(True)
        qvalue_input = th.cat([flat_features, flat_actions], dim=1)
        qs, grads = [], []
        for q_net in critic.q_networks:
            # Detached weights, as on the fast path: the actor's loss must not reach the critic.
            q_k = th.func.functional_call(q_net, _detached(q_net), (qvalue_input,)).view(batch, m)
            (grad,) = th.autograd.grad(q_k.sum(), flat_actions, create_graph=keep_graph)
            qs.append(q_k if keep_graph else q_k.detach())
            grads.append(grad.view(batch, m, act_dim))
    return th.stack(qs), th.stack(grads)


def _q_values_at(critic: ContinuousCritic, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """All critics' values on rows of (observation, action), differentiable in both, weights constant.

    The gradient reaches the observations through the features extractor, but no weight of the
    critic or its extractor.

    :param obs: flat observations ``(..., obs_dim)``.
    :param actions: actions ``(..., act_dim)`` with the same leading dimensions.
    :return: ``(n_critics, ...)``.
    """
    lead = obs.shape[:-1]
    flat_obs = preprocess_obs(
        obs.reshape(-1, obs.shape[-1]), critic.observation_space, critic.normalize_images
    )
    features = th.func.functional_call(
        critic.features_extractor, _detached(critic.features_extractor), (flat_obs,)
    )
    rows = th.cat([features, actions.reshape(-1, actions.shape[-1])], dim=-1)
    values = [th.func.functional_call(q_net, _detached(q_net), (rows,)) for q_net in critic.q_networks]
    return th.stack(values).view(len(values), *lead)
