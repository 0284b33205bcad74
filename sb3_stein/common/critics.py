"""Q-values and their action gradients for every particle of every state, in one pass.

A Stein actor needs ``Q(s, a)`` and ``grad_a Q(s, a)`` of all critics on ``batch x particles``
rows at every SVGD step. For SB3's ``ContinuousCritic`` with ReLU MLPs both are a few batched
matrix products (the input gradient of a ReLU MLP is ``W1^T (mask1 * W2^T (mask2 * w3))``), so
:func:`q_values_and_action_grads` evaluates all critics at once with stacked weights, computes
the first layer's state part once per state instead of once per particle, and builds no
autograd graph of its own for the gradient.

The critic's weights enter as constants (detached): these values serve actors, whose losses
must not train the critic. The returned gradient is an ordinary differentiable expression of
the actions. Its derivative with respect to the actions is zero, as is the exact one: a ReLU MLP is
piecewise linear, so its action Hessian vanishes almost everywhere. Differentiating through it is
therefore the same as ``torch.autograd.grad(..., create_graph=True)`` without the double backward
(tested against autograd). Critics with other activations take the generic autograd path.
"""

from __future__ import annotations

import torch as th
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

_PIECEWISE_LINEAR = (nn.ReLU,)

#: Per layer ``(W (n_critics, out, in), b (n_critics, 1, out))``.
StackedLayers = list[tuple[th.Tensor, th.Tensor]]


def _stacked_layers(q_networks: list[nn.Module]) -> StackedLayers | None:
    """``[(W (n, out, in), b (n, 1, out)), ...]`` if every critic is Linear/ReLU/.../Linear."""
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
    # Detached: an actor's loss must never train the critic through these copies.
    return [
        (
            th.stack([lin[k].weight.detach() for lin in per_net]),
            th.stack([lin[k].bias.detach() for lin in per_net]).unsqueeze(1),
        )
        for k in range(len(per_net[0]))
    ]


def stacked_critic_layers(critic: ContinuousCritic) -> StackedLayers | None:
    """The critic ensemble's weights stacked for :func:`q_values_and_action_grads` (``None``: no fast path).

    Stacking copies every weight; a caller that evaluates the same critic several times in a row
    (the L steps of one SVGD run) stacks once and passes the result as ``layers``. The copy
    must not outlive a change of the weights, so nothing caches it across calls.
    """
    return _stacked_layers(list(critic.q_networks))


def supports_fast_path(critic: ContinuousCritic) -> bool:
    """Whether :func:`q_values_and_action_grads` can use the batched ReLU path for ``critic``."""
    return _stacked_layers(list(critic.q_networks)) is not None


def q_values_and_action_grads(
    critic: ContinuousCritic,
    obs: PyTorchObs,
    actions: th.Tensor,
    need_grad: bool = True,
    layers: StackedLayers | None = None,
) -> tuple[th.Tensor, th.Tensor | None]:
    """All critics' values and action gradients on particles.

    :param critic: an SB3 ``ContinuousCritic``.
    :param obs: observations ``(batch, *obs_shape)``.
    :param actions: particles in the critic's action units ``(batch, m, act_dim)``.
    :param need_grad: also return ``grad_a Q``.
    :param layers: ``stacked_critic_layers(critic)`` computed by the caller for several calls.
    :return: ``q`` of shape ``(n_critics, batch, m)`` and ``dq_da`` of shape
        ``(n_critics, batch, m, act_dim)`` (``None`` if not requested).
    """
    batch, m, act_dim = actions.shape
    # Actors need gradients with respect to the actions only: nothing here may train the critic
    # or a features extractor it shares with the actor.
    with th.no_grad():
        features = critic.extract_features(obs, critic.features_extractor)  # (batch, n_features)
    if layers is None:
        layers = stacked_critic_layers(critic)
    if layers is None:
        return _autograd_q_and_grads(critic, features, actions, need_grad)
    n_features = features.shape[-1]
    w1, b1 = layers[0]
    n_critics = w1.shape[0]
    w1_action = w1[:, :, n_features:]  # (n, h1, act_dim)
    # First layer as one fused product on [features, action] rows: a state's features repeat over
    # its m particles (cheap: few columns), and no separate full-size broadcast add is needed.
    rows = th.cat([features.unsqueeze(1).expand(batch, m, n_features), actions], dim=-1).reshape(
        1, batch * m, n_features + act_dim
    )
    pre = th.baddbmm(b1, rows.expand(n_critics, -1, -1), w1.transpose(1, 2))  # (n, batch * m, h1)
    hidden = pre
    hidden = th.relu(hidden) if len(layers) > 1 else hidden
    activations = [hidden]
    for k, (weight, bias) in enumerate(layers[1:]):
        out = th.baddbmm(bias, hidden, weight.transpose(1, 2))
        hidden = th.relu(out) if k < len(layers) - 2 else out
        activations.append(hidden)
    q = hidden.view(n_critics, batch, m)
    if not need_grad:
        return q, None
    # Backward through the ReLU MLP by hand: grad = W1a^T (m1 * W2^T (m2 * ... w_last)).
    # threshold_backward is ReLU's own fused backward: grad where the activation is > 0, else 0.
    grad = None
    for (weight, _), act in zip(reversed(layers[1:]), reversed(activations[:-1])):
        grad = weight.expand(n_critics, batch * m, -1) if grad is None else th.bmm(grad, weight)
        # The mask is a constant of the actions (zero Hessian), hence the detach.
        grad = th.ops.aten.threshold_backward(grad, act.detach(), 0.0)
    if grad is None:  # a single linear layer: Q is linear in the action
        return q, w1_action.view(n_critics, 1, 1, act_dim).expand(n_critics, batch, m, act_dim)
    return q, th.bmm(grad, w1_action).view(n_critics, batch, m, act_dim)


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


def min_q_and_grad(
    critic: ContinuousCritic,
    obs: PyTorchObs,
    actions: th.Tensor,
    need_grad: bool = True,
    layers: StackedLayers | None = None,
) -> tuple[th.Tensor, th.Tensor | None]:
    """``min_k Q_k(s, a)`` over the critic ensemble and its action gradient (of the minimising critic).

    :return: ``(batch, m)`` and ``(batch, m, act_dim)`` (or ``None``).
    """
    q, dq_da = q_values_and_action_grads(critic, obs, actions, need_grad, layers)
    q_min, idx = q.min(0)
    if dq_da is None:
        return q_min, None
    grad = th.gather(dq_da, 0, idx.unsqueeze(0).unsqueeze(-1).expand(1, *dq_da.shape[1:])).squeeze(0)
    return q_min, grad
