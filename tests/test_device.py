"""Every algorithm keeps its tensors on its ``device``: the policy's and the dynamics model's parameters
and buffers before and after learning, the replay buffer's samples, and ``predict`` answering in numpy.

On this CPU machine the ``cuda`` cases skip; ``benchmarks/gpu_check.sh`` runs this file on a GPU machine
(where they run) before its speed measurements.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from torch import nn

from sb3_stein import DMPC, MPQ, QSTAC, S2AC, SACFOA, SACFOP, SACZOP

COMMON = dict(learning_starts=30, batch_size=8, seed=0)
CASES = [
    (S2AC, "Pendulum-v1", dict(n_particles=4, svgd_steps=2, policy_kwargs=dict(net_arch=[16, 16]))),
    (
        QSTAC,
        "Pendulum-v1",
        dict(n_particles=4, svgd_steps=2, horizon=2, policy_kwargs=dict(net_arch=[16, 16])),
    ),
    (MPQ, "Pendulum-v1", dict(n_samples=8, horizon=3, policy_kwargs=dict(net_arch=[16, 16]))),
    (SACZOP, "CartPoleSwingUp-v0", dict(train_freq=4, policy_kwargs=dict(net_arch=[16, 16]))),
    (SACFOP, "CartPoleSwingUp-v0", dict(train_freq=4, policy_kwargs=dict(net_arch=[16, 16]))),
    (SACFOA, "CartPoleSwingUp-v0", dict(train_freq=4, policy_kwargs=dict(net_arch=[16, 16]))),
    (DMPC, "CartPoleSwingUp-v0", dict(horizon=4)),
]
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not th.cuda.is_available(), reason="no CUDA device")),
]


def _modules(model) -> dict[str, nn.Module]:
    """The policy and every ``nn.Module`` it or the algorithm holds (dynamics models, critics...)."""
    found = {"policy": model.policy}
    for owner_name, owner in (("model", model), ("policy", model.policy)):
        for name, value in vars(owner).items():
            if isinstance(value, nn.Module) and value is not model.policy:
                found[f"{owner_name}.{name}"] = value
    return found


def _misplaced(model) -> list[str]:
    wanted = model.device.type
    wrong = []
    for label, module in _modules(model).items():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.device.type != wanted:
                wrong.append(f"{label}.{name} on {tensor.device}")
    return wrong


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("cls", "env_id", "kwargs"), CASES, ids=lambda c: getattr(c, "__name__", None))
def test_tensors_stay_on_the_device(cls, env_id, kwargs, device):
    model = cls("MlpPolicy", env_id, device=device, **COMMON, **kwargs)
    assert model.device.type == device
    assert _misplaced(model) == []
    model.learn(60)
    assert _misplaced(model) == []
    batch = model.replay_buffer.sample(4)
    assert {t.device.type for t in (batch.observations, batch.actions, batch.rewards)} == {device}
    obs = model.env.reset()
    action, _ = model.predict(obs, deterministic=True)
    assert isinstance(action, np.ndarray) and np.isfinite(action).all()
    assert action.shape == (1, *model.action_space.shape)
