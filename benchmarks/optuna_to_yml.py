"""Print the best trial of an ``rl_zoo3.train -optimize`` study as an rl_zoo3 yml entry.

Usage::

    python benchmarks/optuna_to_yml.py --algo sac --env Nav2DHard-v0 \\
        --study benchmarks/results/nav2d_tuning/logs/sac/report_Nav2DHard-v0_*.pkl

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


def _python_literal(value: Any) -> str:
    """``policy_kwargs`` as rl_zoo3 ymls write it: a Python expression string."""
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={_python_literal(v)}" for k, v in value.items()) + ")"
    if isinstance(value, type):  # activation functions: torch.nn classes
        return f"nn.{value.__name__}"
    return repr(value)


def best_entry(study_path: Path, algo: str, base: dict[str, Any]) -> tuple[dict[str, Any], float, int]:
    """The best trial's hyperparameters merged over ``base``, its value and its number."""
    with study_path.open("rb") as f:
        study = pickle.load(f)
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
    parser.add_argument("--study", type=Path, required=True, help="the .pkl rl_zoo3 saved next to its report")
    parser.add_argument("--base", type=Path, help="the yml file the search read (default: the plugin's)")
    args = parser.parse_args(argv)
    base_file = args.base or sb3_stein.zoo.hyperparams_file(args.algo)
    base = (yaml.safe_load(base_file.read_text()) or {}).get(args.env, {})
    entry, value, number = best_entry(args.study, args.algo, base)
    print(f"# best of {args.study.name}: trial {number}, last evaluation {value:.1f}")
    print(yaml.safe_dump({args.env: entry}, sort_keys=False, default_flow_style=None), end="")


if __name__ == "__main__":
    main()
