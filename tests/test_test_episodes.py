"""benchmarks/test_episodes.py: seeds tested by separate commands accumulate in one report."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark_script import load_benchmark
from stable_baselines3 import SAC


def test_seeds_accumulate_are_skipped_and_other_settings_start_over(tmp_path: Path):
    script = load_benchmark("test_episodes")
    for seed in (0, 1):  # compare.py's layout: <runs>/logs/seed_<s>/<algo>/<env>_1/<env>.zip
        folder = tmp_path / "logs" / f"seed_{seed}" / "sac" / "Pendulum-v1_1"
        folder.mkdir(parents=True)
        SAC("MlpPolicy", "Pendulum-v1", seed=seed, learning_starts=0).save(folder / "Pendulum-v1.zip")
    common = ["--runs", str(tmp_path), "--algo", "sac", "--env", "Pendulum-v1", "--episodes", "1"]
    script.main([*common, "--seeds", "0"])
    script.main([*common, "--seeds", "1"])
    report = json.loads((tmp_path / "test_episodes.json").read_text())
    assert sorted(report["runs"]) == ["0", "1"] and len(report["commands"]) == 2
    first = report["runs"]["0"]
    script.main([*common, "--seeds", "0", "1"])  # both already there: nothing is played again
    assert json.loads((tmp_path / "test_episodes.json").read_text())["runs"]["0"] == first
    md = (tmp_path / "test_episodes.md").read_text()
    assert "| 0 |" in md and "| 1 |" in md
    script.main([*common[:-1], "2", "--seeds", "1"])  # other settings: a new report
    report = json.loads((tmp_path / "test_episodes.json").read_text())
    assert sorted(report["runs"]) == ["1"] and report["settings"]["episodes"] == 2


def test_batched_environments_play_the_same_episodes():
    """A deterministic policy gives the same episodes one by one and as a batch of environments (here 2
    for 3 episodes: one slot idles at the end); stage keys are counted per episode."""
    script = load_benchmark("test_episodes")
    model = SAC("MlpPolicy", "Pendulum-v1", seed=0)
    one = script.play(model, "Pendulum-v1", 3, 100, deterministic=True)
    batched = script.play(model, "Pendulum-v1", 3, 100, deterministic=True, n_envs=2, stages=("absent",))
    assert batched["n_envs"] == 2 and batched["absent_rate"] == 0.0
    assert abs(one["mean_return"] - batched["mean_return"]) < 1e-3 * abs(one["mean_return"])
    assert abs(one["std_return"] - batched["std_return"]) < 1e-2 * max(1.0, one["std_return"])


def test_best_checkpoint_loads_best_model_and_is_reported_apart(tmp_path: Path):
    """``--checkpoint best`` plays rl_zoo3's best_model.zip and starts its own report (other settings);
    a missing best model is a clear error naming the path."""
    import pytest

    script = load_benchmark("test_episodes")
    folder = tmp_path / "logs" / "seed_0" / "sac" / "Pendulum-v1_1"
    folder.mkdir(parents=True)
    SAC("MlpPolicy", "Pendulum-v1", seed=0, learning_starts=0).save(folder / "Pendulum-v1.zip")
    common = [
        "--runs",
        str(tmp_path),
        "--algo",
        "sac",
        "--env",
        "Pendulum-v1",
        "--episodes",
        "1",
        "--seeds",
        "0",
    ]
    with pytest.raises(SystemExit, match=r"best_model\.zip"):
        script.main([*common, "--checkpoint", "best"])
    SAC("MlpPolicy", "Pendulum-v1", seed=1, learning_starts=0).save(folder / "best_model.zip")
    script.main([*common, "--checkpoint", "best"])
    report = json.loads((tmp_path / "test_episodes.json").read_text())
    assert report["settings"]["checkpoint"] == "best" and list(report["runs"]) == ["0"]
    assert "(best model)" in (tmp_path / "test_episodes.md").read_text()
    script.main(common)  # the final model: settings without the key, a new report
    assert "checkpoint" not in json.loads((tmp_path / "test_episodes.json").read_text())["settings"]
