"""Registration of sb3-stein with RL Baselines3 Zoo (rl_zoo3).

rl_zoo3 has no plugin mechanism; it keeps its algorithms, Optuna samplers and converters in
plain dicts and reads ``<rl_zoo3>/hyperparams/<algo>.yml`` unless ``--conf-file`` is given.
This module fills those dicts and redirects the hyperparameter file:

* ``ALGORITHMS`` maps each zoo name to its class (``"module:Class"``), ``OPTUNA`` maps it to
  its sampler and converter. A new algorithm adds one entry to each table, and its
  ``hyperparams/<name>.yml``.
* ``ExperimentManager.__init__`` is wrapped: with no ``--conf-file`` (``config=None``) the
  file becomes ``sb3_stein/hyperparams/<algo>.yml`` when ``algo`` is one of ours, or when
  ``algo`` is a zoo builtin (sac, td3, ...), the environment is one of sb3-stein's and our
  ``<algo>.yml`` has an entry for that id. A user's ``--conf-file`` always wins.

It runs automatically: the start-up hook ``_sb3_stein_zoo`` (installed as a ``.pth``) calls
:func:`on_import` after ``rl_zoo3``, ``rl_zoo3.hyperparams_opt`` and ``rl_zoo3.exp_manager``
have executed. Importing this module also registers, idempotently: into the ``rl_zoo3``
modules already imported, and (through the same hook) into those imported later.
:func:`register_all` imports rl_zoo3 and registers everything at once (used by
``python -m sb3_stein.train`` / ``python -m sb3_stein.enjoy``).

rl_zoo3's ``enjoy``/``record_video`` keep a *local* list of off-policy names used to load
with ``buffer_size=1``; it cannot be extended without editing rl_zoo3, so loading one of our
models there allocates the replay buffer from the saved ``buffer_size`` (memory only).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
import warnings
from pathlib import Path
from typing import Any

__all__ = [
    "ALGORITHMS",
    "OPTUNA",
    "convert_dmpc_params",
    "convert_mppi_params",
    "convert_mpq_params",
    "convert_qstac_params",
    "convert_s2ac_params",
    "convert_sac_foa_params",
    "convert_sac_fop_params",
    "convert_sac_zop_params",
    "hyperparams_dir",
    "hyperparams_file",
    "is_plugin_env",
    "on_import",
    "patch_experiment_manager",
    "register_algorithms",
    "register_all",
    "register_optuna",
    "resolve_config",
    "sample_dmpc_params",
    "sample_mppi_params",
    "sample_mpq_params",
    "sample_qstac_params",
    "sample_s2ac_params",
    "sample_sac_foa_params",
    "sample_sac_fop_params",
    "sample_sac_zop_params",
]

#: zoo name -> "module:Class"
ALGORITHMS: dict[str, str] = {
    "s2ac": "sb3_stein.s2ac:S2AC",
    "qstac": "sb3_stein.qstac:QSTAC",
    "sac_zop": "sb3_stein.sac_mpc:SACZOP",
    "sac_fop": "sb3_stein.sac_mpc:SACFOP",
    "sac_foa": "sb3_stein.sac_mpc:SACFOA",
    "mpq": "sb3_stein.mpq:MPQ",
    "mppi": "sb3_stein.mpq:MPPIController",
    "dmpc": "sb3_stein.dmpc:DMPC",
}

#: zoo name -> ("module:sampler", "module:converter") for rl_zoo3's Optuna search
#: (``HYPERPARAMS_SAMPLER`` / ``HYPERPARAMS_CONVERTER``).
OPTUNA: dict[str, tuple[str, str]] = {
    "s2ac": ("sb3_stein.zoo:sample_s2ac_params", "sb3_stein.zoo:convert_s2ac_params"),
    "qstac": ("sb3_stein.zoo:sample_qstac_params", "sb3_stein.zoo:convert_qstac_params"),
    "sac_zop": ("sb3_stein.zoo:sample_sac_zop_params", "sb3_stein.zoo:convert_sac_zop_params"),
    "sac_fop": ("sb3_stein.zoo:sample_sac_fop_params", "sb3_stein.zoo:convert_sac_fop_params"),
    "sac_foa": ("sb3_stein.zoo:sample_sac_foa_params", "sb3_stein.zoo:convert_sac_foa_params"),
    "mpq": ("sb3_stein.zoo:sample_mpq_params", "sb3_stein.zoo:convert_mpq_params"),
    "mppi": ("sb3_stein.zoo:sample_mppi_params", "sb3_stein.zoo:convert_mppi_params"),
    "dmpc": ("sb3_stein.zoo:sample_dmpc_params", "sb3_stein.zoo:convert_dmpc_params"),
}

# Attribute that marks our ExperimentManager.__init__ wrapper (idempotence).
_WRAPPED = "__sb3_stein_wrapped__"


def _load(path: str) -> Any:
    """Import ``"module:attribute"``."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _warn(message: str) -> None:
    warnings.warn(f"sb3-stein: {message}", RuntimeWarning, stacklevel=3)


# ----------------------------------------------------------------------------- hyperparameters


def hyperparams_dir() -> Path:
    """Folder of the shipped yml files: the ``sb3_stein.hyperparams`` package (installed), or
    the checkout's ``hyperparams/`` next to ``sb3_stein/`` (source tree on ``sys.path``)."""
    try:
        spec = importlib.util.find_spec("sb3_stein.hyperparams")
    except ImportError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            return Path(location)
    return Path(__file__).resolve().parent.parent / "hyperparams"


def hyperparams_file(algo: str) -> Path:
    """Path of sb3-stein's ``<algo>.yml`` (it may not exist)."""
    return hyperparams_dir() / f"{algo}.yml"


@functools.cache
def _yml_sections(path: str, mtime_ns: int) -> frozenset[str]:
    import yaml

    with open(path) as f:
        content = yaml.safe_load(f) or {}
    return frozenset(content)


def _has_section(path: Path, env_id: str) -> bool:
    return env_id in _yml_sections(str(path), path.stat().st_mtime_ns)


def is_plugin_env(env_id: str) -> bool:
    """True when gymnasium's registry has ``env_id`` with an entry point inside ``sb3_stein``."""
    import gymnasium as gym

    spec = gym.envs.registry.get(str(env_id))
    if spec is None:
        return False
    entry_point = spec.entry_point
    if isinstance(entry_point, str):
        module = entry_point.partition(":")[0]
    else:
        module = getattr(entry_point, "__module__", "") or ""
    return module == "sb3_stein" or module.startswith("sb3_stein.")


def resolve_config(algo: str | None, env_id: str | None, config: str | None) -> str | None:
    """The hyperparameter file rl_zoo3 should read (``None``: rl_zoo3's own default).

    ``config`` (the user's ``--conf-file``) always wins. Otherwise our ``<algo>.yml`` is used
    for our algorithms, and for a builtin algorithm on one of our environments when our
    ``<algo>.yml`` has a section for that environment id.
    """
    if config or not algo:
        return config
    path = hyperparams_file(algo)
    if not path.is_file():
        return None
    if algo in ALGORITHMS:
        return str(path)
    # EnvironmentName (rl_zoo3's env id type) is a str; .gym_id drops a namespace prefix.
    gym_id = str(getattr(env_id, "gym_id", env_id) or "")
    if gym_id and _has_section(path, gym_id) and is_plugin_env(gym_id):
        return str(path)
    return None


# ----------------------------------------------------------------------------- registration


def _import_envs() -> None:
    """Register sb3-stein's environments with gymnasium (rl_zoo3 checks ``--env`` early)."""
    try:
        importlib.import_module("sb3_stein.envs")
    except ModuleNotFoundError as exc:
        if exc.name not in ("sb3_stein.envs", "sb3_stein"):
            raise


def register_algorithms() -> None:
    """Add ``ALGORITHMS`` to ``rl_zoo3.ALGOS`` (and register the environments)."""
    from rl_zoo3 import ALGOS  # the same dict as rl_zoo3.utils.ALGOS

    try:
        _import_envs()
    except Exception as exc:
        _warn(f"could not register the sb3-stein environments: {exc!r}")
    for name, path in ALGORITHMS.items():
        try:
            ALGOS[name] = _load(path)
        except Exception as exc:  # one broken algorithm must not hide the others
            _warn(f"could not load rl_zoo3 algorithm {name!r} from {path!r}: {exc!r}")


def register_optuna() -> None:
    """Add ``OPTUNA`` to rl_zoo3's ``HYPERPARAMS_SAMPLER`` / ``HYPERPARAMS_CONVERTER``."""
    from rl_zoo3 import hyperparams_opt

    for name, (sampler, converter) in OPTUNA.items():
        hyperparams_opt.HYPERPARAMS_SAMPLER[name] = _load(sampler)
        hyperparams_opt.HYPERPARAMS_CONVERTER[name] = _load(converter)


def patch_experiment_manager() -> None:
    """Wrap ``ExperimentManager.__init__`` so that ``config`` goes through :func:`resolve_config`, and a
    shared Optuna storage is checked (:func:`sb3_stein.tuning.check_study_storage`) before rl_zoo3
    builds anything."""
    from rl_zoo3.exp_manager import ExperimentManager

    original = ExperimentManager.__init__
    if getattr(original, _WRAPPED, False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:  # let rl_zoo3 report the bad call
            return original(self, *args, **kwargs)
        given = bound.arguments.get("config")
        try:
            config = resolve_config(bound.arguments.get("algo"), bound.arguments.get("env_id"), given)
        except Exception as exc:
            _warn(f"could not choose the hyperparameter file: {exc!r}")
            config = given
        if config != given:
            bound.arguments["config"] = config
        storage = bound.arguments.get("storage")
        if storage and (
            bound.arguments.get("optimize_hyperparameters") or bound.arguments.get("trial_id") is not None
        ):
            from sb3_stein.tuning import check_study_storage

            # Not turned into a warning: a worker must not run on a storage it cannot use.
            check_study_storage(
                storage, bound.arguments.get("study_name"), bound.arguments["algo"], bound.arguments["env_id"]
            )
        return original(*bound.args, **bound.kwargs)

    setattr(__init__, _WRAPPED, True)
    ExperimentManager.__init__ = __init__  # type: ignore[method-assign]


_STEPS = {
    "rl_zoo3": register_algorithms,
    "rl_zoo3.hyperparams_opt": register_optuna,
    "rl_zoo3.exp_manager": patch_experiment_manager,
}


def on_import(name: str) -> None:
    """Run the registration step for the rl_zoo3 module ``name`` (it has just executed)."""
    _STEPS[name]()


def register_all() -> None:
    """Import rl_zoo3 and register everything (idempotent)."""
    for name, step in _STEPS.items():
        importlib.import_module(name)
        step()


# ----------------------------------------------------------------------------- Optuna

#: S2AC's own search space, on top of rl_zoo3's SAC one.
S2AC_SEARCH_KEYS = ("n_particles", "svgd_steps", "svgd_step_size", "kernel_bandwidth")


def _accepted(algo: str, hyperparams: dict[str, Any]) -> dict[str, Any]:
    """Drop the keys that ``algo``'s constructor does not take (e.g. SAC's ``use_sde``)."""
    parameters = inspect.signature(_load(ALGORITHMS[algo]).__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return hyperparams
    return {key: value for key, value in hyperparams.items() if key in parameters}


def _sample_svgd_params(trial: Any) -> dict[str, Any]:
    return {
        "n_particles": trial.suggest_categorical("n_particles", [5, 10, 20]),
        "svgd_steps": trial.suggest_categorical("svgd_steps", [1, 3, 5]),
        **_sample_svgd_step_params(trial),
    }


def _sample_svgd_step_params(trial: Any) -> dict[str, Any]:
    """The SVGD step size and the kernel's bandwidth rule, searched alike for S2AC and Q-STAC."""
    return {
        "svgd_step_size": trial.suggest_float("svgd_step_size", 0.01, 0.5, log=True),
        "kernel_bandwidth": trial.suggest_categorical("kernel_bandwidth", ["paper", "median"]),
    }


#: rl_zoo3's smallest batch in its off-policy search spaces, 2**5 = 32 states.
_MIN_BATCH_POW = 5


def _sample_offpolicy_params(trial: Any, max_batch_pow: int, net_arch: bool = True) -> dict[str, Any]:
    """rl_zoo3's SAC search space (same names, read by ``convert_offpolicy_params``), batches capped;
    ``net_arch=False`` leaves the network size out of the search (no ``policy_kwargs`` returned)."""
    sampled = {
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 0.0001, 0.03, log=True),
        "batch_size_pow": trial.suggest_int("batch_size_pow", _MIN_BATCH_POW, max_batch_pow),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 0.002, log=True),
        "train_freq": trial.suggest_int("train_freq", 1, 10),
        "tau": trial.suggest_float("tau", 0.001, 0.08, log=True),
    }
    if net_arch:
        sampled["net_arch"] = trial.suggest_categorical("net_arch", ["small", "medium", "big"])
    trial.set_user_attr("gamma", 1 - sampled["one_minus_gamma"])
    trial.set_user_attr("batch_size", 2 ** sampled["batch_size_pow"])
    return _convert_offpolicy(sampled)


def _convert_offpolicy(sampled: dict[str, Any]) -> dict[str, Any]:
    """rl_zoo3's ``convert_offpolicy_params``, which needs a ``net_arch``: without one (a search that
    leaves the network alone) a placeholder is converted and its ``policy_kwargs`` dropped."""
    from rl_zoo3.hyperparams_opt import convert_offpolicy_params

    hyperparams = convert_offpolicy_params({"net_arch": "small", **sampled})
    if "net_arch" not in sampled:
        hyperparams.pop("policy_kwargs", None)
    return hyperparams


def _convert(algo: str, own_keys: tuple[str, ...], params: dict[str, Any]) -> dict[str, Any]:
    own = {key: params[key] for key in own_keys if key in params}
    hyperparams = _convert_offpolicy({key: v for key, v in params.items() if key not in own})
    hyperparams.update(own)
    return _accepted(algo, hyperparams)


def sample_s2ac_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna sampler for S2AC: rl_zoo3's SAC search space, narrowed where S2AC's cost explodes, plus SVGD.

    The parameter names and meanings are those of rl_zoo3's ``sample_sac_params`` (so rl_zoo3's
    ``convert_offpolicy_params`` reads them), except ``batch_size_pow`` in [5, 8] (32-256 states,
    the paper uses 100) instead of [2, 11]: one S2AC update evaluates both critics on
    ``batch x n_particles`` rows at each of ``2 * svgd_steps`` SVGD steps, so SAC's 2048-state
    batches would make a trial hours long on a CPU.
    """
    hyperparams = _sample_offpolicy_params(trial, max_batch_pow=8)
    hyperparams.update(_sample_svgd_params(trial))
    return _accepted("s2ac", hyperparams)


def convert_s2ac_params(params: dict[str, Any]) -> dict[str, Any]:
    """Turn a trial's raw ``params`` (as sampled above) into S2AC keyword arguments."""
    return _convert("s2ac", S2AC_SEARCH_KEYS, params)


QSTAC_SEARCH_KEYS = (*S2AC_SEARCH_KEYS, "horizon")

#: The most critic rows one Q-STAC update may push through its SVGD loop in a search,
#: ``batch x n_particles x horizon x svgd_steps`` (the shipped Nav2D / arm entry: 64 x 8 x 5 x 3 = 7680).
QSTAC_SEARCH_ROW_BUDGET = 8192


def sample_qstac_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna sampler for Q-STAC: S2AC's space (SVGD: m, L, eps, bandwidth) plus the horizon ``H``
    (the paper's §V-B: the two share the SVGD parameters, Q-STAC adds the horizon), within a budget.

    An update rolls ``batch x n_particles x horizon`` rows through the critics at each of the
    ``svgd_steps`` SVGD steps, with a double backward for the actor loss, so the cost of a trial
    grows with the product of the four. Unbounded (batches to 128, 20 particles, H = 8, L = 5), a
    trial on the arm with 25,600 rows ran about 1.5 s per step here, some 3.5 h for 10k steps
    (``benchmarks/results/kinova_tuning/NOTE.md``). The paper is silent on its search space; ours
    keeps every value of S2AC's and rl_zoo3's, but samples ``horizon`` and ``n_particles`` first,
    then ``svgd_steps`` (1, 3 or 5) and ``batch_size_pow`` (5 to 7) only up to what keeps
    ``batch x n_particles x horizon x svgd_steps`` within :data:`QSTAC_SEARCH_ROW_BUDGET` (Optuna's
    define-by-run ranges; ``svgd_steps`` is an integer with step 2 so that its range can shrink).
    Even the largest ``n_particles x horizon`` (160) fits one SVGD step on 32 states, so every
    combination of the first two stays reachable.
    """
    horizon = trial.suggest_categorical("horizon", [1, 3, 5, 8])
    n_particles = trial.suggest_categorical("n_particles", [5, 10, 20])
    rows_per_state = n_particles * horizon
    rows_per_step = 2**_MIN_BATCH_POW * rows_per_state  # one SVGD step on the smallest batch
    max_steps = max(steps for steps in (1, 3, 5) if rows_per_step * steps <= QSTAC_SEARCH_ROW_BUDGET)
    try:
        svgd_steps = trial.suggest_int("svgd_steps", 1, max_steps, step=2)
    except ValueError as error:  # Optuna's "Cannot set different distribution kind ..."
        raise ValueError(
            "This Optuna study sampled Q-STAC's 'svgd_steps' as a categorical (a study begun before the "
            "search got its row budget, QSTAC_SEARCH_ROW_BUDGET); its trials belong to another search space: "
            "start a new study (another --study-name or --storage)."
        ) from error
    max_batch_pow = min(7, (QSTAC_SEARCH_ROW_BUDGET // (rows_per_state * svgd_steps)).bit_length() - 1)
    hyperparams = _sample_offpolicy_params(trial, max_batch_pow=max_batch_pow)
    hyperparams.update(horizon=horizon, n_particles=n_particles, svgd_steps=svgd_steps)
    hyperparams.update(_sample_svgd_step_params(trial))
    return _accepted("qstac", hyperparams)


def convert_qstac_params(params: dict[str, Any]) -> dict[str, Any]:
    """Turn a trial's raw ``params`` (as sampled above) into QSTAC keyword arguments."""
    return _convert("qstac", QSTAC_SEARCH_KEYS, params)


#: The MPC-prior SAC variants' own search keys, on top of rl_zoo3's SAC space.
SAC_MPC_SEARCH_KEYS = ("param_interface",)


def _sample_sac_mpc_params(algo: str, trial: Any, max_batch_pow: int) -> dict[str, Any]:
    hyperparams = _sample_offpolicy_params(trial, max_batch_pow=max_batch_pow)
    hyperparams["param_interface"] = trial.suggest_categorical("param_interface", ["global", "stage"])
    return _accepted(algo, hyperparams)


def sample_sac_zop_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna sampler for SAC-ZOP: rl_zoo3's SAC space (batches up to 256 states) plus the lecture's
    parameter interface (``"global"`` or ``"stage"``). ZOP never calls the MPC in an update, so its
    update costs what SAC's does."""
    return _sample_sac_mpc_params("sac_zop", trial, max_batch_pow=8)


def sample_sac_fop_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna sampler for SAC-FOP: as SAC-ZOP's, batches capped at 128 states (every sample costs two
    MPC solves and one sensitivity per update)."""
    return _sample_sac_mpc_params("sac_fop", trial, max_batch_pow=7)


def sample_sac_foa_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna sampler for SAC-FOA: SAC-FOP's space."""
    return _sample_sac_mpc_params("sac_foa", trial, max_batch_pow=7)


def convert_sac_zop_params(params: dict[str, Any]) -> dict[str, Any]:
    """Turn a trial's raw ``params`` into SACZOP keyword arguments."""
    return _convert("sac_zop", SAC_MPC_SEARCH_KEYS, params)


def convert_sac_fop_params(params: dict[str, Any]) -> dict[str, Any]:
    """Turn a trial's raw ``params`` into SACFOP keyword arguments."""
    return _convert("sac_fop", SAC_MPC_SEARCH_KEYS, params)


def convert_sac_foa_params(params: dict[str, Any]) -> dict[str, Any]:
    """Turn a trial's raw ``params`` into SACFOA keyword arguments."""
    return _convert("sac_foa", SAC_MPC_SEARCH_KEYS, params)


#: MPPI's own search keys (both MPQ and the MPPI baseline), on top of rl_zoo3's off-policy space.
MPPI_SEARCH_KEYS = ("horizon", "n_samples", "noise_sigma", "temperature", "mppi_step_size")


def _sample_mppi(trial: Any) -> dict[str, Any]:
    return {
        "horizon": trial.suggest_categorical("horizon", [2, 4, 8, 16]),
        "n_samples": trial.suggest_categorical("n_samples", [16, 24, 36, 64]),
        "noise_sigma": trial.suggest_float("noise_sigma", 0.1, 10.0, log=True),
        "temperature": trial.suggest_float("temperature", 0.01, 1.0, log=True),
        "mppi_step_size": trial.suggest_float("mppi_step_size", 0.2, 1.0),
    }


def sample_mpq_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna sampler for MPQ: rl_zoo3's SAC space (gamma, batch up to 256, learning rate, train
    frequency, network size; ``tau`` matters only with ``use_target_network``) plus the planner's
    horizon, samples, ``Sigma`` (environment units: the range suits torques of order 1-10), ``lambda``
    and ``alpha``."""
    hyperparams = _sample_offpolicy_params(trial, max_batch_pow=8)
    hyperparams.update(_sample_mppi(trial))
    return _accepted("mpq", hyperparams)


def convert_mpq_params(params: dict[str, Any]) -> dict[str, Any]:
    """Turn a trial's raw ``params`` (as sampled above) into MPQ keyword arguments."""
    return _convert("mpq", MPPI_SEARCH_KEYS, params)


def sample_mppi_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna sampler for the MPPI baseline: the planner's parameters and the discount only (it learns
    nothing, so the learning parameters would be noise to the search)."""
    hyperparams = _sample_mppi(trial)
    hyperparams["gamma"] = 1 - trial.suggest_float("one_minus_gamma", 0.0001, 0.2, log=True)
    return _accepted("mpq", hyperparams)  # MPPIController takes MPQ's keywords


def convert_mppi_params(params: dict[str, Any]) -> dict[str, Any]:
    """Turn a trial's raw ``params`` into MPPIController keyword arguments."""
    own = {key: params[key] for key in MPPI_SEARCH_KEYS if key in params}
    if "one_minus_gamma" in params:
        own["gamma"] = 1 - params["one_minus_gamma"]
    return _accepted("mpq", own)


#: DMPC's own search keys, on top of rl_zoo3's off-policy space (the value network keeps the paper's
#: 3 x 12 tanh: rl_zoo3's ``net_arch`` sizes are dropped).
DMPC_SEARCH_KEYS = ("horizon", "control_weight", "weight_decay")


def sample_dmpc_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna sampler for DMPC: rl_zoo3's SAC space without the network size (gamma, batch up to 256,
    learning rate, train frequency, ``tau``) plus the MPC's horizon, ``R`` (log-uniform) and the value's
    weight decay. ``running_cost`` is not searched: on and off are the paper's two variants."""
    hyperparams = _sample_offpolicy_params(trial, max_batch_pow=8, net_arch=False)
    hyperparams.update(
        {
            "horizon": trial.suggest_categorical("horizon", [5, 10, 20]),
            "control_weight": trial.suggest_float("control_weight", 1e-3, 10.0, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        }
    )
    return _accepted("dmpc", hyperparams)


def convert_dmpc_params(params: dict[str, Any]) -> dict[str, Any]:
    """Turn a trial's raw ``params`` (as sampled above) into DMPC keyword arguments."""
    hyperparams = _convert("dmpc", DMPC_SEARCH_KEYS, params)
    hyperparams.pop("policy_kwargs", None)
    return hyperparams


# ----------------------------------------------------------------------------- on import

for _name, _step in _STEPS.items():
    if _name in sys.modules:
        try:
            _step()
        except Exception as _exc:
            _warn(f"could not register with {_name}: {_exc!r}")
try:
    import _sb3_stein_zoo
except ImportError:  # pragma: no cover - only when the hook module is not installed
    pass
else:
    _sb3_stein_zoo.install()
