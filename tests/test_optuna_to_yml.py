"""benchmarks/optuna_to_yml.py: an rl_zoo3 study's best trial as a yml entry."""

from __future__ import annotations

import pickle
from pathlib import Path

import optuna
import yaml
from benchmark_script import load_benchmark


def _study(path: Path, trials: list[tuple[dict, float]]) -> Path:
    study = optuna.create_study(direction="maximize")
    for params, value in trials:
        distributions = {k: optuna.distributions.CategoricalDistribution([v]) for k, v in params.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value))
    with path.open("wb") as f:
        pickle.dump(study, f)
    return path


def test_best_sac_trial_becomes_the_entry_rl_zoo3_trained(tmp_path, capsys):
    script = load_benchmark("optuna_to_yml")
    worse = dict(
        one_minus_gamma=0.01, batch_size_pow=5, learning_rate=1e-3, train_freq=1, tau=0.01, net_arch="small"
    )
    best = dict(
        one_minus_gamma=0.02, batch_size_pow=7, learning_rate=3e-4, train_freq=4, tau=0.005, net_arch="big"
    )
    path = _study(tmp_path / "report.pkl", [(worse, 10.0), (best, 20.0)])
    base = {"n_timesteps": 30000, "policy": "MlpPolicy", "learning_starts": 1000, "learning_rate": 1.0}
    entry, value, number = script.best_entry(script.load_study(path, None, None), "sac", base)
    assert (value, number) == (20.0, 1)
    assert entry["gamma"] == 0.98 and entry["batch_size"] == 128 and entry["gradient_steps"] == 4
    assert entry["learning_rate"] == 3e-4 and entry["learning_starts"] == 1000  # trial wins, base kept
    assert entry["policy_kwargs"] == "dict(net_arch=[400, 300])"
    base_file = tmp_path / "sac.yml"
    base_file.write_text(yaml.safe_dump({"Nav2DHard-v0": base}))
    script.main(["--algo", "sac", "--env", "Nav2DHard-v0", "--study", str(path), "--base", str(base_file)])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["Nav2DHard-v0"]["batch_size"] == 128


def test_ppo_activation_is_written_as_rl_zoo3_writes_it(tmp_path):
    script = load_benchmark("optuna_to_yml")
    params = dict(
        n_steps_pow=8,
        batch_size_pow=5,
        one_minus_gamma=0.01,
        one_minus_gae_lambda=0.05,
        learning_rate=3e-4,
        ent_coef=0.0,
        clip_range=0.2,
        n_epochs=10,
        max_grad_norm=0.5,
        net_arch="tiny",
        activation_fn="tanh",
    )
    study = script.load_study(_study(tmp_path / "ppo.pkl", [(params, 1.0)]), None, None)
    entry, _, _ = script.best_entry(study, "ppo", {})
    assert entry["policy_kwargs"] == "dict(net_arch=dict(pi=[64], vf=[64]), activation_fn=nn.Tanh)"
    assert entry["n_steps"] == 256 and entry["gae_lambda"] == 0.95
