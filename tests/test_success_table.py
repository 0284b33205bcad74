"""benchmarks/success_table.py: first success, success per window and training-episode endings per run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from benchmark_script import BENCHMARKS, load_benchmark

ENV = "PointMassWindMaze-v0"  # max_episode_steps = 100


def _run(
    root: Path, algo: str, seed: int, run_id: int, successes: list[list[bool]], episodes: list[tuple]
) -> Path:
    folder = root / "logs" / f"seed_{seed}" / algo / f"{ENV}_{run_id}"
    folder.mkdir(parents=True)
    steps = 10 * np.arange(1, len(successes) + 1)
    results = np.where(np.array(successes), 40.0, 5.0)
    np.savez(folder / "evaluations.npz", timesteps=steps, results=results, successes=np.array(successes))
    rows = "\n".join(f"{r},{length},{i}.0" for i, (r, length) in enumerate(episodes))
    (folder / "0.monitor.csv").write_text('#{"t_start": 0, "env_id": "x"}\nr,l,t\n' + rows + "\n")
    return folder


@pytest.fixture
def script(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports compare.py as run from benchmarks/
    return load_benchmark("success_table")


def test_success_table_counts_each_runs_newest_folder(tmp_path: Path, script):
    _run(tmp_path, "sac", 0, 1, [[False, False]] * 5, [(1.0, 100)])  # older run of the same seed: ignored
    never, late, often = [False, False], [True, False], [True, True]
    _run(
        tmp_path,
        "sac",
        0,
        2,
        [never, never, late, often, often],
        [(45.0, 30), (2.0, 12), (3.0, 100), (25.0, 100)],
    )
    _run(tmp_path, "sac_zop", 1, 1, [never] * 3, [(4.0, 100), (-1.0, 7)])
    script.main(["--results", str(tmp_path), "--env", ENV, "--window", "20"])
    lines = (tmp_path / "success.md").read_text().splitlines()
    sac = next(line for line in lines if line.startswith("| sac | 0 |"))
    zop = next(line for line in lines if line.startswith("| sac_zop | 1 |"))
    # evaluations at 10..50 steps; windows of 20: (10, 20), (30, 40), (50)
    assert "| 0.05k | 0.03k | 0.00, 0.75, 1.00 |" in sac
    assert "| 2 of 4 | 1 (25.0 %) |" in sac  # 45 and 25 reached the goal; 2.0 ended at step 12
    assert "| none | 0.00, 0.00 |" in zop and "| 0 of 2 | 1 (50.0 %) |" in zop
    assert "seed_0/sac/PointMassWindMaze-v0_2" in lines[-1] and "PointMassWindMaze-v0_1`, `" not in lines[-1]


def test_success_table_errors_name_the_problem(tmp_path: Path, script):
    with pytest.raises(SystemExit):
        script.main(["--results", str(tmp_path), "--env", ENV])  # no runs
    with pytest.raises(SystemExit):
        script.main(["--results", str(tmp_path), "--env", ENV, "--window", "0"])
    folder = tmp_path / "logs" / "seed_0" / "sac" / f"{ENV}_1"
    folder.mkdir(parents=True)
    np.savez(folder / "evaluations.npz", timesteps=np.array([10]), results=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="has no successes"):
        script.main(["--results", str(tmp_path), "--env", ENV])
