"""Print the best trial of an ``rl_zoo3.train -optimize`` study as an rl_zoo3 yml entry.

Usage::

    python benchmarks/optuna_to_yml.py --algo sac --env Nav2DHard-v0 \\
        --study benchmarks/results/nav2d_tuning/logs/sac/report_Nav2DHard-v0_*.pkl
    python benchmarks/optuna_to_yml.py --algo qstac --env Pendulum-v1 \\
        --storage postgresql://USER:PASSWORD@HOST:5432/optuna --study-name qstac-pendulum

The study is the ``.pkl`` rl_zoo3 writes next to its report, or a study in a shared storage (a
database URL or an Optuna journal ``*.log``, README "Tuning on many workers"); a study created by
another ``--algo`` or ``--env`` is refused (:func:`sb3_stein.tuning.check_study_storage`).

The raw Optuna parameters go through the same converter rl_zoo3 applied during the search
(``rl_zoo3.hyperparams_opt.HYPERPARAMS_CONVERTER``, which ``sb3_stein.zoo`` extends with S²AC and
Q-STAC), so the entry trains exactly what the best trial trained. Keys of the yml section the
search started from (``--base``, e.g. ``learning_starts``) are kept unless the trial set them.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import yaml
from rl_zoo3 import hyperparams_opt

import sb3_stein.zoo  # adds the plugin's samplers and converters; hyperparams_file below
from sb3_stein.tuning import check_study_storage, open_storage


def _python_literal(value: Any) -> str:
    """``policy_kwargs`` as rl_zoo3 ymls write it: a Python expression string."""
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={_python_literal(v)}" for k, v in value.items()) + ")"
    if isinstance(value, type):  # activation functions: torch.nn classes
        return f"nn.{value.__name__}"
    return repr(value)


def load_study(study_path: Path | None, storage: str | None, study_name: str | None) -> Any:
    """The study from rl_zoo3's ``.pkl`` or from a shared storage."""
    if study_path is not None:
        with study_path.open("rb") as f:
            return pickle.load(f)
    import optuna

    assert storage is not None and study_name is not None
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError as exc:
        raise ValueError(f"--study-name {study_name!r}: no such study in --storage {storage!r}") from exc


def best_entry(study: Any, algo: str, base: dict[str, Any]) -> tuple[dict[str, Any], float, int]:
    """The best trial's hyperparameters merged over ``base``, its value and its number."""
    trial = study.best_trial
    converted = hyperparams_opt.HYPERPARAMS_CONVERTER[algo](dict(trial.params))
    entry = dict(base)
    for key, value in converted.items():
        if key == "policy_kwargs":
            value = _python_literal(value)
        elif isinstance(value, float):
            value = float(f"{value:.4g}")
        entry[key] = value
    return entry, float(trial.value), int(trial.number)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--algo", required=True)
    parser.add_argument("--env", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--study", type=Path, help="the .pkl rl_zoo3 saved next to its report")
    source.add_argument("--storage", help="rl_zoo3's --storage of a shared study (database URL or *.log)")
    parser.add_argument("--study-name", help="rl_zoo3's --study-name (with --storage)")
    parser.add_argument("--base", type=Path, help="the yml file the search read (default: the plugin's)")
    args = parser.parse_args(argv)
    if args.storage and not args.study_name:
        parser.error("--storage needs --study-name")
    if args.algo not in hyperparams_opt.HYPERPARAMS_CONVERTER:
        parser.error(f"--algo {args.algo!r} has no rl_zoo3 converter")
    try:
        if args.storage:
            check_study_storage(args.storage, args.study_name, args.algo, args.env)
        study = load_study(args.study, args.storage, args.study_name)
    except ValueError as exc:
        parser.error(str(exc))
    base_file = args.base or sb3_stein.zoo.hyperparams_file(args.algo)
    base = (yaml.safe_load(base_file.read_text()) or {}).get(args.env, {})
    entry, value, number = best_entry(study, args.algo, base)
    label = args.study.name if args.study else f"study {args.study_name!r}"
    print(f"# best of {label}: trial {number}, last evaluation {value:.1f}")
    print(yaml.safe_dump({args.env: entry}, sort_keys=False, default_flow_style=None), end="")


if __name__ == "__main__":
    main()
