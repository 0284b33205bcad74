"""rl_zoo3 integration: the start-up hook, registration, hyperparameter files, Optuna, CLI.

Fast tests check the hook and the registration (a few use a subprocess, so that the real
``.pth`` start-up path is exercised). Tests marked ``slow`` run the real
``python -m rl_zoo3.train`` / ``enjoy`` / ``-optimize`` commands in a temporary folder, as
``shared/checks/zoo-cycle`` does.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import _sb3_stein_zoo
from sb3_stein import zoo

HEAVY = ("torch", "stable_baselines3", "rl_zoo3", "sb3_stein", "gymnasium", "numpy", "optuna", "yaml")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != _sb3_stein_zoo.OFF_SWITCH}
    env.update(OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONWARNINGS="default")
    env.update(extra)
    return env


def _python(code: str, cwd: Path | None = None, **extra: str) -> dict:
    """Run ``code`` in a fresh interpreter (site enabled) and return the JSON it prints last."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=_env(**extra),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the hook


def test_pth_is_installed_at_site_packages_root():
    # the installed distribution (a build's sb3_stein.egg-info in the checkout may be found first)
    records = [f for dist in importlib.metadata.distributions(name="sb3-stein") for f in dist.files or []]
    pths = [Path(str(f.locate())) for f in records if str(f) == "sb3_stein_zoo.pth"]
    assert pths, "pip install (-e) . should install (and record) sb3_stein_zoo.pth"
    pth = pths[0]
    assert pth.is_file()
    assert str(pth.parent) in {*site.getsitepackages(), site.getusersitepackages()}
    line = pth.read_text().strip()
    assert line.startswith("import ") and "_sb3_stein_zoo" in line and "\n" not in line


def test_stale_pth_line_is_silent(monkeypatch):
    """A .pth left behind by a moved or removed install must not print a traceback at every start-up."""
    import builtins

    line = (Path(__file__).resolve().parent.parent / "sb3_stein_zoo.pth").read_text().strip()
    real_import = builtins.__import__

    def no_hook(name, *args, **kwargs):
        if name == "_sb3_stein_zoo":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_hook)
    exec(line, {})  # what site.py does with an "import ..." line


def test_startup_installs_only_the_light_hook(tmp_path):
    code = """
        import json, sys
        print(json.dumps({"modules": sorted(sys.modules),
                          "finders": [type(f).__name__ for f in sys.meta_path]}))
    """
    result = _python(code, cwd=tmp_path)
    assert "_sb3_stein_zoo" in result["modules"]
    assert result["finders"][0] == "_AfterImportFinder"
    heavy = [m for m in result["modules"] if m.split(".")[0] in HEAVY]
    assert heavy == []


def test_off_switch(tmp_path):
    code = """
        import json, sys
        finders = [type(f).__name__ for f in sys.meta_path]
        import rl_zoo3
        print(json.dumps({"finders": finders, "s2ac": "s2ac" in rl_zoo3.ALGOS,
                          "zoo": "sb3_stein.zoo" in sys.modules}))
    """
    result = _python(code, cwd=tmp_path, SB3_STEIN_NO_ZOO="1")
    assert result == {"finders": result["finders"], "s2ac": False, "zoo": False}
    assert "_AfterImportFinder" not in result["finders"]


@pytest.mark.parametrize(
    ("value", "off"), [("", False), ("0", False), ("false", False), ("no", False), ("1", True), ("yes", True)]
)
def test_off_switch_values(monkeypatch, value, off):
    monkeypatch.setenv(_sb3_stein_zoo.OFF_SWITCH, value)
    assert _sb3_stein_zoo.disabled() is off


def test_hook_registers_everything_after_import(tmp_path):
    code = """
        import json, sys
        import rl_zoo3
        after_package = "s2ac" in rl_zoo3.ALGOS
        from rl_zoo3.exp_manager import ExperimentManager
        from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
        import sb3_stein
        from sb3_stein import zoo
        print(json.dumps({
            "after_package": after_package,
            "algo": rl_zoo3.ALGOS.get("s2ac") is sb3_stein.S2AC,
            "sampler": HYPERPARAMS_SAMPLER.get("s2ac") is zoo.sample_s2ac_params,
            "converter": HYPERPARAMS_CONVERTER.get("s2ac") is zoo.convert_s2ac_params,
            "wrapped": getattr(ExperimentManager.__init__, "__sb3_stein_wrapped__", False),
            "finder_left": [name for name in map(lambda f: type(f).__name__, sys.meta_path)
                            if name == "_AfterImportFinder"],
            "multigoal": "MultiGoal-v0" in __import__("gymnasium").registry,
        }))
    """
    result = _python(code, cwd=tmp_path)
    assert result == {
        "after_package": True,
        "algo": True,
        "sampler": True,
        "converter": True,
        "wrapped": True,
        "finder_left": [],
        "multigoal": True,
    }


def test_hook_failure_is_a_warning(monkeypatch):
    class Broken:
        @staticmethod
        def on_import(name):
            raise RuntimeError("boom")

    monkeypatch.setitem(sys.modules, "sb3_stein.zoo", Broken)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.setattr(_sb3_stein_zoo, "_pending", {"rl_zoo3"})
    with pytest.warns(RuntimeWarning, match="boom"):
        _sb3_stein_zoo._fire("rl_zoo3")


def test_registration_is_idempotent():
    from rl_zoo3 import ALGOS
    from rl_zoo3.exp_manager import ExperimentManager
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER

    import sb3_stein

    zoo.register_all()
    zoo.register_all()
    assert ALGOS["s2ac"] is sb3_stein.S2AC
    assert HYPERPARAMS_SAMPLER["s2ac"] is zoo.sample_s2ac_params
    init = ExperimentManager.__init__
    assert getattr(init, "__sb3_stein_wrapped__", False)
    assert not getattr(vars(init)["__wrapped__"], "__sb3_stein_wrapped__", False)  # wrapped exactly once


# ----------------------------------------------------------------------------- hyperparameter files


def test_shipped_hyperparams():
    import yaml

    s2ac = yaml.safe_load(zoo.hyperparams_file("s2ac").read_text())
    assert {"default", "Pendulum-v1", "MultiGoal-v0"} <= set(s2ac)
    assert s2ac["Pendulum-v1"]["n_timesteps"] == 20000 and s2ac["Pendulum-v1"]["learning_rate"] == 1e-3
    multigoal = s2ac["MultiGoal-v0"]
    assert (multigoal["gamma"], multigoal["learning_rate"], multigoal["batch_size"]) == (0.8, 3e-4, 100)
    assert (multigoal["svgd_steps"], multigoal["n_particles"], multigoal["svgd_step_size"]) == (10, 10, 0.01)
    sac = yaml.safe_load(zoo.hyperparams_file("sac").read_text())
    assert sac["MultiGoal-v0"]["gamma"] == 0.8
    nav = {"Nav2DEasy-v0", "Nav2DMedium-v0", "Nav2DHard-v0"}
    for algo in ("sac", "td3", "ppo", "s2ac", "qstac"):
        sections = set(yaml.safe_load(zoo.hyperparams_file(algo).read_text()))
        assert nav <= sections, algo
        if algo not in zoo.ALGORITHMS:  # only the plugin's envs: everything else is rl_zoo3's own file
            assert all(zoo.is_plugin_env(env_id) for env_id in sections), algo
    lecture = {"CartPoleSwingUp-v0", "PointMassWindMaze-v0", "Chain-v0"}
    for algo in ("sac", "td3", "ppo", "sac_zop", "sac_fop", "sac_foa"):
        assert lecture <= set(yaml.safe_load(zoo.hyperparams_file(algo).read_text())), algo
    zop = yaml.safe_load(zoo.hyperparams_file("sac_zop").read_text())["CartPoleSwingUp-v0"]
    assert (zop["batch_size"], zop["learning_rate"], zop["train_freq"], zop["ent_coef"]) == (
        64,
        1e-3,
        4,
        "auto_0.02",
    )


@pytest.mark.parametrize("algo", list(zoo.ALGORITHMS))
def test_every_algorithm_has_hyperparams_and_a_sampler(algo):
    assert zoo.hyperparams_file(algo).is_file()
    assert algo in zoo.OPTUNA


def test_resolve_config():
    from huggingface_sb3 import EnvironmentName

    ours_s2ac = str(zoo.hyperparams_file("s2ac"))
    ours_sac = str(zoo.hyperparams_file("sac"))
    assert zoo.resolve_config("s2ac", "Pendulum-v1", None) == ours_s2ac
    assert zoo.resolve_config("s2ac", "SomeUnknownEnv-v0", None) == ours_s2ac  # its 'default' section
    assert zoo.resolve_config("s2ac", "Pendulum-v1", "mine.yml") == "mine.yml"  # --conf-file wins
    assert zoo.resolve_config("sac", "MultiGoal-v0", None) == ours_sac
    assert zoo.resolve_config("sac", EnvironmentName("MultiGoal-v0"), None) == ours_sac
    assert zoo.resolve_config("sac", "MultiGoal-v0", "mine.yml") == "mine.yml"
    assert zoo.resolve_config("sac", "Pendulum-v1", None) is None  # builtin env: rl_zoo3's file
    assert zoo.resolve_config("td3", "MultiGoal-v0", None) is None  # no td3.yml of ours
    assert zoo.is_plugin_env("MultiGoal-v0")
    assert not zoo.is_plugin_env("Pendulum-v1")
    assert not zoo.is_plugin_env("NoSuchEnv-v0")


def test_resolve_config_needs_a_plugin_env(monkeypatch):
    # An env id with a section in our sac.yml that is not one of our envs keeps rl_zoo3's file.
    monkeypatch.setattr(zoo, "is_plugin_env", lambda env_id: False)
    assert zoo.resolve_config("sac", "MultiGoal-v0", None) is None


def _manager(tmp_path, algo, env_id, **kwargs):
    from rl_zoo3.exp_manager import ExperimentManager

    zoo.register_all()
    return ExperimentManager(argparse.Namespace(), algo, env_id, str(tmp_path), **kwargs)


def test_experiment_manager_reads_our_files(tmp_path, capsys):
    manager = _manager(tmp_path, "s2ac", "Pendulum-v1")
    assert manager.config == str(zoo.hyperparams_file("s2ac"))
    hyperparams, _ = manager.read_hyperparameters()
    assert hyperparams["n_particles"] == 10 and hyperparams["learning_rate"] == 1e-3
    assert "hyperparameters from" in capsys.readouterr().out  # what shared/checks/zoo-cycle looks for

    assert _manager(tmp_path, "sac", "MultiGoal-v0").config == str(zoo.hyperparams_file("sac"))
    rl_zoo3_sac = _manager(tmp_path, "sac", "Pendulum-v1").config
    assert Path(rl_zoo3_sac).parent.parent.name == "rl_zoo3" and Path(rl_zoo3_sac).name == "sac.yml"


def test_experiment_manager_user_conf_file_wins(tmp_path):
    conf = tmp_path / "mine.yml"
    conf.write_text("Pendulum-v1:\n  n_timesteps: 10\n  policy: MlpPolicy\n  n_particles: 5\n")
    manager = _manager(tmp_path, "s2ac", "Pendulum-v1", config=str(conf))
    assert manager.config == str(conf)
    assert manager.read_hyperparameters()[0]["n_particles"] == 5
    assert _manager(tmp_path, "sac", "MultiGoal-v0", config=str(conf)).config == str(conf)


# ----------------------------------------------------------------------------- Optuna


@pytest.mark.parametrize("algo, max_batch", [("sac_zop", 256), ("sac_fop", 128), ("sac_foa", 128)])
def test_sac_mpc_samplers_and_converters_round_trip(algo, max_batch):
    import inspect

    import optuna

    accepted = set(inspect.signature(zoo._load(zoo.ALGORITHMS[algo]).__init__).parameters)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    no_her = {"using_her_replay_buffer": False, "her_kwargs": {}}
    interfaces = set()
    for _ in range(20):
        trial = study.ask()
        sampled = getattr(zoo, f"sample_{algo}_params")(trial, 1, 1, no_her)
        assert set(sampled) <= accepted, set(sampled) - accepted
        assert 32 <= sampled["batch_size"] <= max_batch
        interfaces.add(sampled["param_interface"])
        assert getattr(zoo, f"convert_{algo}_params")(trial.params) == sampled
        study.tell(trial, 0.0)
    assert interfaces == {"global", "stage"}


@pytest.mark.parametrize("algo", ["s2ac", "qstac"])
def test_stein_sampler_and_converter_round_trip(algo):
    import inspect

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    accepted = set(inspect.signature(zoo._load(zoo.ALGORITHMS[algo]).__init__).parameters)
    sample = getattr(zoo, f"sample_{algo}_params")
    convert = getattr(zoo, f"convert_{algo}_params")
    seen_bandwidths, seen_horizons = set(), set()
    for _ in range(8):
        trial = study.ask()
        sampled = sample(trial, 1, 1, {"using_her_replay_buffer": False, "her_kwargs": {}})
        assert set(sampled) <= accepted, set(sampled) - accepted
        assert {"gamma", "learning_rate", "batch_size", "tau", "policy_kwargs"} <= set(sampled)
        assert sampled["n_particles"] in (5, 10, 20)
        assert sampled["svgd_steps"] in (1, 3, 5, 10)
        assert 0.01 <= sampled["svgd_step_size"] <= 0.5
        seen_bandwidths.add(sampled["kernel_bandwidth"])
        seen_horizons.add(sampled.get("horizon"))
        # --trial-id loading converts the raw trial params into the same keyword arguments
        assert convert(trial.params) == sampled
        study.tell(trial, 0.0)
    assert seen_bandwidths <= {"paper", "median"}
    assert seen_horizons <= ({None} if algo == "s2ac" else {1, 3, 5, 8})
    assert algo == "s2ac" or len(seen_horizons) > 1


@pytest.mark.parametrize("algo", ["mpq", "mppi"])
def test_mppi_sampler_and_converter_round_trip(algo):
    import inspect

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    accepted = set(inspect.signature(zoo._load(zoo.ALGORITHMS["mpq"]).__init__).parameters)
    for _ in range(8):
        trial = study.ask()
        sampled = getattr(zoo, f"sample_{algo}_params")(trial, 1, 1, {"using_her_replay_buffer": False})
        assert set(sampled) <= accepted, set(sampled) - accepted
        assert sampled["horizon"] in (2, 4, 8, 16) and sampled["n_samples"] in (16, 24, 36, 64)
        assert 0.1 <= sampled["noise_sigma"] <= 10 and 0.01 <= sampled["temperature"] <= 1
        assert 0.2 <= sampled["mppi_step_size"] <= 1 and 0 < sampled["gamma"] < 1
        assert ("learning_rate" in sampled) == (algo == "mpq")  # the baseline learns nothing
        assert getattr(zoo, f"convert_{algo}_params")(trial.params) == sampled
        study.tell(trial, 0.0)


def test_dmpc_sampler_and_converter_round_trip():
    import inspect

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    accepted = set(inspect.signature(zoo._load(zoo.ALGORITHMS["dmpc"]).__init__).parameters)
    for _ in range(8):
        trial = study.ask()
        sampled = zoo.sample_dmpc_params(trial, 3, 1, {"using_her_replay_buffer": False})
        assert set(sampled) <= accepted and "policy_kwargs" not in sampled  # the paper's 3 x 12 tanh stays
        assert sampled["horizon"] in (5, 10, 20) and 1e-3 <= sampled["control_weight"] <= 10
        assert 1e-6 <= sampled["weight_decay"] <= 1e-2 and sampled["batch_size"] <= 256
        assert zoo.convert_dmpc_params(trial.params) == sampled
        assert "net_arch" not in trial.params  # no dead dimension in the search
        study.tell(trial, 0.0)
    # A trial of a study made before the network size left the search still converts.
    assert zoo.convert_dmpc_params({**trial.params, "net_arch": "big"}) == sampled


def test_sampler_drops_keys_the_algorithm_does_not_take():
    assert zoo._accepted("s2ac", {"learning_rate": 1e-3, "use_sde": True}) == {"learning_rate": 1e-3}


@pytest.mark.parametrize("algo, max_batch", [("s2ac", 256), ("qstac", 128)])
def test_stein_samplers_keep_batches_affordable(algo, max_batch):
    import inspect

    import optuna

    accepted = set(inspect.signature(zoo._load(zoo.ALGORITHMS[algo]).__init__).parameters)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    no_her = {"using_her_replay_buffer": False, "her_kwargs": {}}
    for _ in range(30):
        sampled = getattr(zoo, f"sample_{algo}_params")(study.ask(), 1, 1, no_her)
        assert set(sampled) <= accepted
        assert 32 <= sampled["batch_size"] <= max_batch
        assert sampled["svgd_steps"] in (1, 3, 5) and sampled["n_particles"] in (5, 10, 20)


def test_qstac_sampler_keeps_an_update_within_its_row_budget():
    """Every trial's ``batch x particles x horizon x SVGD steps`` fits the budget, every value of the
    space is still drawn somewhere, and TPE copes with the ranges that shrink (define-by-run)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    no_her = {"using_her_replay_buffer": False, "her_kwargs": {}}
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(n_startup_trials=40, seed=0))
    seen: dict[str, set] = {"horizon": set(), "n_particles": set(), "svgd_steps": set(), "batch_size": set()}
    for _ in range(60):
        trial = study.ask()
        sampled = zoo.sample_qstac_params(trial, 1, 1, no_her)
        rows = sampled["batch_size"] * sampled["n_particles"] * sampled["horizon"] * sampled["svgd_steps"]
        assert rows <= zoo.QSTAC_SEARCH_ROW_BUDGET, sampled
        assert zoo.convert_qstac_params(trial.params) == sampled
        for key in seen:
            seen[key].add(sampled[key])
        study.tell(trial, -rows / 1000.0)  # TPE start-up is over after 40: the last 20 use its model
    assert seen == {
        "horizon": {1, 3, 5, 8},
        "n_particles": {5, 10, 20},
        "svgd_steps": {1, 3, 5},
        "batch_size": {32, 64, 128},
    }
    # The largest particle sets on the longest horizon get one SVGD step on 32 states, not a pruned trial:
    # the ranges offered to the sampler shrink to exactly that.
    study.enqueue_trial({"horizon": 8, "n_particles": 20})
    trial = study.ask()
    sampled = zoo.sample_qstac_params(trial, 1, 1, no_her)
    assert sampled["batch_size"] == 32 and sampled["svgd_steps"] == 1
    assert trial.distributions["svgd_steps"].high == 1 and trial.distributions["batch_size_pow"].high == 5


def test_qstac_sampler_refuses_a_study_from_the_unbudgeted_space():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    old = study.ask()
    old.suggest_categorical("svgd_steps", [1, 3, 5])
    study.tell(old, 0.0)
    with pytest.raises(ValueError, match=r"'svgd_steps' as a categorical.*start a new study"):
        zoo.sample_qstac_params(study.ask(), 1, 1, {"using_her_replay_buffer": False, "her_kwargs": {}})


# ----------------------------------------------------------------------------- real commands


def _run(cwd: Path, *args: str, off: bool = False) -> str:
    """Run ``python *args`` in ``cwd`` (start-up hook switched off if ``off``); return its output."""
    env = _env(SB3_STEIN_NO_ZOO="1") if off else _env()
    out = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    return log


PENDULUM = ("--env", "Pendulum-v1", "--num-threads", "1", "--seed", "0")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("algo", "env_id"),
    [
        ("s2ac", "Pendulum-v1"),
        ("qstac", "Pendulum-v1"),
        ("sac_zop", "CartPoleSwingUp-v0"),
        ("sac_fop", "PointMassWindMaze-v0"),
        ("sac_foa", "CartPoleSwingUp-v0"),
        ("mpq", "Pendulum-v1"),
        ("mppi", "Pendulum-v1"),
        ("mpq", "BallInCupSparse-v0"),
        ("qstac", "KinovaReachObstacles-v0"),
        ("s2ac", "KinovaPickPlace-v0"),
        ("dmpc", "CartPoleSwingUp-v0"),
        ("dmpc", "Ballbot-v0"),
    ],
)
def test_rl_zoo3_train_enjoy_optimize(tmp_path, algo, env_id):
    # what shared/checks/zoo-cycle runs, with fewer steps (learning_starts is 100: 20-100 updates)
    common = ("--env", env_id, "--num-threads", "1", "--seed", "0")
    log = _run(
        tmp_path,
        *("-m", "rl_zoo3.train", "--algo", algo, *common, "-n", "200", "-f", "logs"),
        *("--eval-freq", "100", "--eval-episodes", "1"),
    )
    assert f"Loading hyperparameters from: {zoo.hyperparams_file(algo)}" in log
    run_dir = tmp_path / "logs" / algo / f"{env_id}_1"
    assert (run_dir / f"{env_id}.zip").is_file()
    assert (run_dir / "evaluations.npz").is_file()

    enjoy = ("--algo", algo, "--env", env_id, "-f", "logs", "--exp-id", "1", "--no-render")
    _run(tmp_path, "-m", "rl_zoo3.enjoy", *enjoy, "-n", "100")
    _run(tmp_path, "-m", "sb3_stein.enjoy", *enjoy, "-n", "50", off=True)  # the fallback entry point

    log = _run(
        tmp_path,
        *("-m", "rl_zoo3.train", "--algo", algo, *common, "-n", "120", "-f", "optlogs", "-optimize"),
        *("--n-trials", "2", "--n-jobs", "1", "--n-startup-trials", "1", "--n-evaluations", "1"),
        *("--eval-episodes", "1"),
    )
    assert "Number of finished trials:  2" in log
    assert any(p.suffix == ".csv" for p in (tmp_path / "optlogs" / algo).iterdir())


@pytest.mark.slow
def test_fallback_train_without_the_hook(tmp_path):
    args = ("--algo", "s2ac", *PENDULUM, "-n", "120", "-f", "logs", "--eval-freq", "-1")
    with pytest.raises(AssertionError, match="invalid choice: 's2ac'"):
        _run(tmp_path, "-m", "rl_zoo3.train", *args, off=True)  # the off switch really is off
    log = _run(tmp_path, "-m", "sb3_stein.train", *args, off=True)
    assert f"Loading hyperparameters from: {zoo.hyperparams_file('s2ac')}" in log
    assert (tmp_path / "logs" / "s2ac" / "Pendulum-v1_1" / "Pendulum-v1.zip").is_file()


@pytest.mark.slow
def test_rl_zoo3_sac_reads_our_file_for_our_env(tmp_path):
    log = _run(
        tmp_path,
        *("-m", "rl_zoo3.train", "--algo", "sac", "--env", "MultiGoal-v0", "--num-threads", "1"),
        *("--seed", "0", "-n", "150", "-f", "logs", "--eval-freq", "-1"),
    )
    assert f"Loading hyperparameters from: {zoo.hyperparams_file('sac')}" in log
    assert "('gamma', 0.8)" in log
    assert (tmp_path / "logs" / "sac" / "MultiGoal-v0_1" / "MultiGoal-v0.zip").is_file()
