"""Known dynamics models: the protocol, the registry, and the checks every model-based algorithm runs.

Protocol (shared/DESIGN.md): a dynamics model is a ``torch.nn.Module`` whose ``forward(obs, action)``
maps batched observations ``(..., obs_dim)`` and actions ``(..., act_dim)`` in *environment units*
(not SB3's ``[-1, 1]``) to the next observation ``(..., obs_dim)``: differentiable, no Python loop
over the batch, same dtype and device as its inputs. Optional parts:

* ``reward(obs, action, next_obs) -> (...)``: the environment's reward of a transition, for
  algorithms that need a reward model;
* ``is_terminal(obs) -> bool tensor (...)``: whether ``obs`` (a state the model reached, shape
  ``(..., obs_dim)``, environment units) ends an episode, by the environment's own termination rule
  (``terminated``, not the time limit's ``truncated``). Batched, no gradient (a step function), any
  dtype. Planners that sum values along a model rollout (Q-STAC) use it to drop the steps after a
  terminal state; a model without it is taken never to terminate. The shipped models have it where
  their environment terminates (``MultiGoal-v0``, the ``Nav2D*-v0`` ids: reaching the goal;
  ``CartPoleSwingUp-v0``: the cart off the track; ``PointMassWindMaze-v0``: the goal or leaving the
  maze's state box), each tested against ``env.step``'s ``terminated``; ``Pendulum-v1`` and
  ``Chain-v0`` never terminate and have none.

Algorithms take ``dynamics_model="auto" | nn.Module | "package.module:attribute"``:

* ``"auto"`` looks the environment's id up in the registry (:func:`register_dynamics_model`);
* an ``nn.Module`` is used as given;
* a string ``"pkg.mod:attr"`` (or ``"pkg.mod.attr"``) is imported (:func:`import_object`) and built
  (:func:`build_from_object`): a module instance as given, a module class through its ``from_env(env)``
  classmethod if it has one, else without arguments, any other callable as a factory called with the
  environment (or ``None``) or with no argument. Anything else, a class or factory that needs other
  arguments, or a factory that returns something else, is a ``ValueError`` naming the parameter, the
  path and what is allowed. OCPs (:mod:`sb3_stein.common.ocp`) resolve the same way.

**Reward models** (MPQ plans on rewards): ``reward_model="auto" | callable | nn.Module | "pkg.mod:attr"``,
batched ``(obs, action, next_obs)`` in environment units -> reward ``(...)``. ``"auto"`` is the resolved
dynamics model's own ``reward`` method, so an environment's reward model is registered together with its
dynamics model (:func:`resolve_reward_model`); every shipped model of an environment whose reward is a
function of the transition has one, tested against ``env.step``. ``PointMassWindMaze-v0`` has none: its
goal reward depends on the elapsed time, which the observation does not hold. :func:`check_reward_model`
probes it once (shape, dtype, NaN).

**Simulator models** (planners that need no gradients, e.g. MPPI on a MuJoCo task): a dynamics model
may add ``rollout_sequence(obs (B, N, obs_dim), actions (B, N, T, act_dim)) -> (next_obs (B, N, T,
obs_dim), rewards (B, N, T))``, a batched rollout of a second simulator instance (possibly with biased
parameters) with the environment's rewards computed from the rolled states, never a Python loop over
samples. :class:`~sb3_stein.common.mppi.MPPI` then calls it once per iteration instead of stepping
``forward``. Such a model still provides ``forward`` (one step) and ``reward`` for the probes below; it
need not be differentiable. The shipped one is ``BallInCupSparse-v0``'s
(:class:`sb3_stein.envs.ball_in_cup.BallInCupSimulator`: a second MuJoCo model rolled out by
``mujoco.rollout``, the physical state rebuilt from the observation; registered with the true
parameters, ``biased_ball_in_cup_model`` draws Table 1's). A simulator model given for another
environment fails the probe below (its ``forward`` cannot read that environment's observations).

:func:`check_dynamics_model` probes the model once at construction, so a wrong shape, dtype,
device, a non-finite output or a malformed ``is_terminal`` fails with a clear message instead of
broadcasting silently later.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, unwrap_vec_wrapper
from torch import nn

#: A factory gets the (unwrapped) environment when one is at hand, else ``None``, and returns the model.
DynamicsFactory = Callable[[gym.Env | None], nn.Module]

# env id -> factory, or "module:attribute" of a factory (imported on first use, so registering
# the package's own models costs nothing at import time).
_REGISTRY: dict[str, DynamicsFactory | str] = {
    "Pendulum-v1": "sb3_stein.envs.pendulum:PendulumDynamics.from_env",
    "MultiGoal-v0": "sb3_stein.envs.multigoal:MultiGoalDynamics.from_env",
    "Nav2DEasy-v0": "sb3_stein.envs.nav2d:Nav2DDynamics.from_env",
    "Nav2DMedium-v0": "sb3_stein.envs.nav2d:Nav2DDynamics.from_env",
    "Nav2DHard-v0": "sb3_stein.envs.nav2d:Nav2DDynamics.from_env",
    "CartPoleSwingUp-v0": "sb3_stein.envs.cartpole_swingup:CartPoleSwingUpDynamics.from_env",
    "PointMassWindMaze-v0": "sb3_stein.envs.windmaze:WindMazeDynamics.from_env",
    "Chain-v0": "sb3_stein.envs.chain:ChainDynamics.from_env",
    # A simulator model (MuJoCo rollouts) with the true parameters; MPQ's yml entry plans with the
    # biased one (sb3_stein.envs.ball_in_cup:biased_ball_in_cup_model).
    "BallInCupSparse-v0": "sb3_stein.envs.ball_in_cup:BallInCupSimulator.from_env",
    # The kinematic partial model (joint integration, forward kinematics; no contacts).
    "KinovaReachObstacles-v0": "sb3_stein.envs.kinova:KinovaKinematicModel.from_env",
    "KinovaPickPlace-v0": "sb3_stein.envs.kinova:KinovaPickPlaceModel.from_env",
    "Ballbot-v0": "sb3_stein.envs.ballbot:BallbotDynamics.from_env",
}


def register_dynamics_model(env_id: str, factory: DynamicsFactory | str, overwrite: bool = False) -> None:
    """Make ``dynamics_model="auto"`` find a model for ``env_id``.

    :param env_id: the gymnasium id (``env.spec.id``), e.g. ``"MyRobot-v0"``.
    :param factory: called with the unwrapped environment (or ``None`` when the algorithm has none
        at hand, e.g. behind a ``SubprocVecEnv``) and returning the model; or its import path
        ``"package.module:attribute"``.
    :param overwrite: replace an existing registration (otherwise that is an error).
    """
    register_factory(_REGISTRY, env_id, factory, overwrite, "a dynamics model")


def register_factory(registry: dict[str, Any], env_id: str, factory: Any, overwrite: bool, what: str) -> None:
    """Add ``env_id -> factory`` to ``registry`` after checking both (shared by the dynamics-model and
    OCP registries); ``what`` names the registered thing in the error."""
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"env_id must be a non-empty string, got {env_id!r}")
    if not (callable(factory) or isinstance(factory, str)):
        raise TypeError(f"factory must be callable or an import path string, got {factory!r}")
    if env_id in registry and not overwrite:
        raise ValueError(f"{what} is already registered for {env_id!r}; pass overwrite=True to replace it")
    registry[env_id] = factory


def registered_dynamics_models() -> list[str]:
    """The environment ids with a registered dynamics model."""
    return sorted(_REGISTRY)


def import_object(path: str, what: str) -> Any:
    """The object at ``path``, ``"package.module:attribute"`` or ``"package.module.attribute"``.

    :param what: how messages name the value, e.g. ``"dynamics_model='pkg.mod:Model'"``.
    :raises ValueError: naming ``what`` when the path is malformed, the module cannot be imported or
        has no such attribute.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"{what} is not an import path of the form 'package.module:attribute'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{what}: cannot import module {module_name!r}: {error}") from error
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as error:
            raise ValueError(f"{what}: {module_name!r} has no attribute {attribute!r}") from error
    return obj


def _call_with_env(
    factory: Callable[..., Any], env: gym.Env | None, name: str, what: str, allowed: str
) -> Any:
    """``factory(env)`` if its signature takes one positional argument, else ``factory()``.

    Binding the signature first tells "this factory needs other arguments" (a ``ValueError`` that says
    what is allowed) apart from a ``TypeError`` raised inside a factory, which propagates unchanged.
    """
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # no signature (some builtins): the documented call
        return factory(env)
    for args in ((env,), ()):
        try:
            signature.bind(*args)
        except TypeError:
            continue
        return factory(*args)
    raise ValueError(
        f"{what}: {name}{signature} needs arguments it cannot be given: a factory is called with the "
        f"environment (or None) as its only argument, or with none. {allowed}"
    )


def build_from_object(
    obj: Any, env: gym.Env | None, what: str, kind: type, kind_name: str, allowed: str
) -> Any:
    """An instance of ``kind`` from what an import path or a registry entry gave (shared by the
    dynamics-model and OCP resolution).

    * an instance of ``kind`` is used as given;
    * a subclass of ``kind`` is built by its ``from_env(env)`` classmethod if it has one, else with no
      arguments (its other constructor arguments are the user's to give: pass an instance);
    * any other callable is a factory, called with the environment (or ``None``) if it takes an
      argument, else with none, and must return an instance of ``kind``.

    :param what: how messages name the value (``"QSTAC: dynamics_model='pkg:Model'"``).
    :param kind_name: how messages name ``kind``, article included (``"a torch.nn.Module"``).
    :param allowed: the sentence that tells the user what they may pass instead.
    :raises ValueError: for anything else, a class that needs constructor arguments, a factory that
        needs other arguments or one that returns something else, naming ``what`` and ``allowed``.
    """
    if isinstance(obj, kind):
        return obj
    if isinstance(obj, type):
        if not issubclass(obj, kind):
            raise ValueError(
                f"{what} is the class {obj.__qualname__}, not a subclass of {kind_name}. {allowed}"
            )
        from_env = getattr(obj, "from_env", None)
        if callable(from_env):
            name = f"{obj.__qualname__}.from_env"
            made = _call_with_env(from_env, env, name, what, allowed)
        else:
            name = obj.__qualname__
            _refuse_required_arguments(obj, what, allowed)
            made = obj()
    elif callable(obj):
        name = getattr(obj, "__qualname__", type(obj).__name__)
        made = _call_with_env(obj, env, name, what, allowed)
    else:
        raise ValueError(
            f"{what} is {type(obj).__name__} {_short_repr(obj)}, neither {kind_name}, a subclass of it, "
            f"nor a factory of one. {allowed}"
        )
    if not isinstance(made, kind):
        raise ValueError(f"{what}: {name}(...) returned {type(made).__name__}, not {kind_name}. {allowed}")
    return made


def _refuse_required_arguments(cls: type, what: str, allowed: str) -> None:
    """A class without ``from_env`` is built with no arguments: say so if it needs some."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # no signature to check: the call will tell
        return
    try:
        signature.bind()
    except TypeError:
        raise ValueError(
            f"{what}: the class {cls.__qualname__}{signature} needs constructor arguments; a class is "
            f"built by its from_env(env) classmethod if it has one, else with no arguments. {allowed}"
        ) from None


def _short_repr(obj: Any, limit: int = 60) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: What ``dynamics_model`` may be, for error messages.
ALLOWED_MODELS = (
    "Allowed: 'auto', a torch.nn.Module instance, or an import path 'package.module:attribute' to an "
    "nn.Module instance, an nn.Module subclass (built by its from_env(env) classmethod, else with no "
    "arguments) or a factory f(env) -> nn.Module."
)


def _build(obj: Any, env: gym.Env | None, what: str) -> nn.Module:
    model: nn.Module = build_from_object(obj, env, what, nn.Module, "a torch.nn.Module", ALLOWED_MODELS)
    return model


def env_id_of(env: Any) -> str | None:
    """The gymnasium id behind an id string, a ``gym.Env`` or an SB3 ``VecEnv`` (``None`` if unknown)."""
    if isinstance(env, str):
        return env
    if isinstance(env, VecEnv):
        try:
            spec = env.get_attr("spec", indices=0)[0]
        except Exception:
            return None
        return getattr(spec, "id", None)
    spec = getattr(env, "spec", None)
    return getattr(spec, "id", None)


def unwrapped_env(env: Any) -> gym.Env | None:
    """The first underlying ``gym.Env`` of a ``gym.Env`` or an in-process ``VecEnv`` (else ``None``)."""
    if isinstance(env, VecEnv):
        envs = getattr(env.unwrapped, "envs", None)  # DummyVecEnv; SubprocVecEnv keeps them remote
        return envs[0].unwrapped if envs else None
    if isinstance(env, gym.Env):
        return env.unwrapped
    return None


def make_dynamics_model(env_or_id: Any) -> nn.Module:
    """The registered dynamics model for an environment (instance, ``VecEnv`` or id).

    :raises ValueError: when no model is registered for its id, listing those that are.
    """
    env_id = env_id_of(env_or_id)
    if env_id is None or env_id not in _REGISTRY:
        raise ValueError(
            f"no dynamics model is registered for environment {env_id!r}. Registered ids: "
            f"{registered_dynamics_models()}. Pass dynamics_model=<torch.nn.Module mapping (obs, action) in "
            "environment units to the next obs>, or an import path 'package.module:Factory', or call "
            "sb3_stein.register_dynamics_model(env_id, factory) first."
        )
    entry = _REGISTRY[env_id]
    what = f"the dynamics model registered for {env_id!r} ({entry!r})"
    obj = import_object(entry, what) if isinstance(entry, str) else entry
    return _build(obj, unwrapped_env(env_or_id), what)


def resolve_dynamics_model(spec: Any, env: Any, owner: str) -> nn.Module:
    """``dynamics_model`` as an algorithm receives it -> the model (not yet checked).

    :param spec: ``"auto"``, an ``nn.Module``, or an import path string.
    :param env: the algorithm's environment (id, ``gym.Env`` or ``VecEnv``).
    :param owner: the algorithm's name, for messages.
    """
    if isinstance(spec, nn.Module):
        return spec
    if spec == "auto":
        if env is None:
            raise ValueError(
                f"{owner}: dynamics_model='auto' needs an environment to look its model up; "
                "pass env or a model"
            )
        return make_dynamics_model(env)
    if isinstance(spec, str):
        what = f"{owner}: dynamics_model={spec!r}"
        return _build(import_object(spec, what), unwrapped_env(env), what)
    raise TypeError(
        f"{owner}: dynamics_model must be 'auto', a torch.nn.Module or an import path string, got {spec!r}"
    )


def refuse_normalized_observations(env: Any, owner: str) -> None:
    """Models see raw observations: refuse a ``VecNormalize`` that normalises them.

    :raises ValueError: if ``env`` is wrapped in ``VecNormalize(norm_obs=True)``.
    """
    if isinstance(env, VecEnv):
        normalize = unwrap_vec_wrapper(env, VecNormalize)
        if isinstance(normalize, VecNormalize) and normalize.norm_obs:
            raise ValueError(
                f"{owner} rolls observations through a known dynamics model in raw environment units, "
                "but the environment is wrapped in VecNormalize(norm_obs=True). Use norm_obs=False "
                "(rl_zoo3: normalize: \"{'norm_obs': False, 'norm_reward': True}\") or no VecNormalize."
            )


class RefusesNormalizedObservations:
    """Mixin for algorithms that run a model or an MPC on raw observations (put it before the SB3
    base class): ``set_env`` refuses ``VecNormalize(norm_obs=True)`` as their constructors do (and
    ``load(path, env=...)`` runs the constructor with the env)."""

    def set_env(self, env: Any, force_reset: bool = True) -> None:
        refuse_normalized_observations(env, type(self).__name__)
        super().set_env(env, force_reset)  # type: ignore[misc]


def check_dynamics_model(
    model: nn.Module,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    owner: str,
    device: th.device | str = "cpu",
) -> None:
    """Probe ``model`` once on a batch of samples from the spaces.

    :raises ValueError: naming the mismatch (output shape, dtype, device, non-finite values) or the
        exception the model raised.
    """
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(
            f"{owner} needs a flat Box observation space for its dynamics model, got {observation_space!r}"
        )
    assert isinstance(action_space, spaces.Box)
    obs_dim, act_dim = observation_space.shape[0], action_space.shape[0]
    rng = np.random.default_rng(0)
    low = np.nan_to_num(observation_space.low, neginf=-1.0).clip(-1.0, None)
    high = np.nan_to_num(observation_space.high, posinf=1.0).clip(None, 1.0)
    obs = th.as_tensor(rng.uniform(low, high, size=(3, 2, obs_dim)), dtype=th.float32, device=device)
    act = th.as_tensor(
        rng.uniform(action_space.low, action_space.high, size=(3, 2, act_dim)),
        dtype=th.float32,
        device=device,
    )
    name = type(model).__name__
    try:
        with th.no_grad():
            out = model(obs, act)
    except Exception as error:
        raise ValueError(
            f"{owner}: dynamics model {name} failed on a probe batch obs {tuple(obs.shape)}, action "
            f"{tuple(act.shape)} (environment units, float32, {device}): {type(error).__name__}: {error}"
        ) from error
    if not isinstance(out, th.Tensor):
        raise ValueError(f"{owner}: dynamics model {name} returned {type(out).__name__}, not a torch.Tensor")
    if tuple(out.shape) != tuple(obs.shape):
        raise ValueError(
            f"{owner}: dynamics model {name} maps obs {tuple(obs.shape)} and action {tuple(act.shape)} to "
            f"{tuple(out.shape)}; expected the observation's shape {tuple(obs.shape)} (obs_dim={obs_dim} "
            "of the environment's observation space, any leading batch dimensions)"
        )
    if out.dtype != obs.dtype or out.device != obs.device:
        raise ValueError(
            f"{owner}: dynamics model {name} returned {out.dtype} on {out.device} for float32 inputs on "
            f"{obs.device}; it must keep its inputs' dtype and device"
        )
    if not bool(th.isfinite(out).all()):
        raise ValueError(f"{owner}: dynamics model {name} returned NaN/inf on a probe batch of valid inputs")
    is_terminal = getattr(model, "is_terminal", None)
    if is_terminal is None:
        return
    try:
        with th.no_grad():
            terminal = is_terminal(out)
    except Exception as error:
        raise ValueError(
            f"{owner}: dynamics model {name}.is_terminal failed on a probe batch of next observations "
            f"{tuple(out.shape)}: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(terminal, th.Tensor) or terminal.dtype != th.bool or terminal.shape != out.shape[:-1]:
        got = (
            f"{terminal.dtype} {tuple(terminal.shape)}"
            if isinstance(terminal, th.Tensor)
            else type(terminal).__name__
        )
        raise ValueError(
            f"{owner}: dynamics model {name}.is_terminal maps next observations {tuple(out.shape)} to {got}; "
            f"expected a torch.bool tensor of shape {tuple(out.shape[:-1])} (one flag per state)"
        )


# ----------------------------------------------------------------------------- reward models

#: What ``reward_model`` may be, for error messages.
ALLOWED_REWARD_MODELS = (
    "Allowed: 'auto' (the dynamics model's own reward(obs, action, next_obs) method, which every shipped "
    "model of an environment with rewards has), a callable or torch.nn.Module r(obs, action, next_obs) -> "
    "reward of shape (...) in environment units, or an import path 'package.module:attribute' to one "
    "(a class is built as dynamics models are, and its reward method used if it has one)."
)


def resolve_reward_model(
    spec: Any, dynamics: nn.Module | None, env: Any, owner: str
) -> Callable[..., th.Tensor]:
    """``reward_model`` as an algorithm receives it -> the reward function ``r(obs, action, next_obs)``.

    Resolution goes through the dynamics-model registry: ``"auto"`` is the ``reward`` method of the
    (registered or given) dynamics model, so an environment id's reward model is registered with its
    dynamics model (:func:`register_dynamics_model`). A module or class with a ``reward`` method gives
    that method; any other callable is used as the reward function.

    :param spec: ``"auto"``, a callable / ``nn.Module``, or an import path string.
    :param dynamics: the resolved dynamics model (``None`` if the algorithm has none).
    :param env: the algorithm's environment (for import paths to classes and factories).
    :param owner: the algorithm's name, for messages.
    :raises ValueError: naming ``reward_model`` when there is none or it is not usable.
    """
    if isinstance(spec, str) and spec == "auto":
        reward = getattr(dynamics, "reward", None)
        if not callable(reward):
            name = type(dynamics).__name__ if dynamics is not None else "no dynamics model"
            raise ValueError(
                f"{owner}: reward_model='auto' takes the dynamics model's reward(obs, action, next_obs) "
                f"method, but {name} has none. Pass reward_model=... . {ALLOWED_REWARD_MODELS}"
            )
        return reward  # type: ignore[no-any-return]
    if isinstance(spec, str):
        what = f"{owner}: reward_model={spec!r}"
        obj = import_object(spec, what)
        if isinstance(obj, type):
            obj = build_from_object(
                obj, unwrapped_env(env), what, nn.Module, "a torch.nn.Module", ALLOWED_REWARD_MODELS
            )
        spec = obj
    reward = getattr(spec, "reward", None)
    if callable(reward):
        return reward  # type: ignore[no-any-return]
    if callable(spec):
        return spec  # type: ignore[no-any-return]
    raise ValueError(
        f"{owner}: reward_model is {type(spec).__name__} {_short_repr(spec)}. {ALLOWED_REWARD_MODELS}"
    )


def check_reward_model(
    reward: Callable[..., Any],
    dynamics: nn.Module | None,
    observation_space: spaces.Space,
    action_space: spaces.Box,
    owner: str,
    device: th.device | str = "cpu",
) -> None:
    """Probe the reward model once on a batch ``(3, 2)`` of transitions (the dynamics model's next
    states, or the states themselves without one).

    :raises ValueError: naming ``reward_model`` for an exception, a non-tensor, a wrong shape or dtype,
        or NaN on valid inputs.
    """
    assert isinstance(observation_space, spaces.Box)
    rng = np.random.default_rng(0)
    low = np.nan_to_num(observation_space.low, neginf=-1.0).clip(-1.0, None)
    high = np.nan_to_num(observation_space.high, posinf=1.0).clip(None, 1.0)
    obs = th.as_tensor(rng.uniform(low, high, size=(3, 2, low.shape[0])), dtype=th.float32, device=device)
    act = th.as_tensor(
        rng.uniform(action_space.low, action_space.high, size=(3, 2, action_space.shape[0])),
        dtype=th.float32,
        device=device,
    )
    name = getattr(reward, "__qualname__", type(reward).__name__)
    try:
        with th.no_grad():
            next_obs = dynamics(obs, act) if dynamics is not None else obs
            out = reward(obs, act, next_obs)
    except Exception as error:
        raise ValueError(
            f"{owner}: reward_model {name} failed on a probe batch (obs {tuple(obs.shape)}, action "
            f"{tuple(act.shape)}, next_obs): {type(error).__name__}: {error}"
        ) from error
    if not isinstance(out, th.Tensor) or tuple(out.shape) != (3, 2) or out.dtype != obs.dtype:
        got = f"{out.dtype} {tuple(out.shape)}" if isinstance(out, th.Tensor) else type(out).__name__
        raise ValueError(
            f"{owner}: reward_model {name} maps transitions of shape (3, 2, dim) to {got}; expected a "
            "float32 tensor of shape (3, 2): one reward per transition, in its inputs' dtype"
        )
    if bool(th.isnan(out).any()):
        raise ValueError(f"{owner}: reward_model {name} returned NaN on a probe batch of valid transitions")
