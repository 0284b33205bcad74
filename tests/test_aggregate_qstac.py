"""Fast tests of benchmarks/aggregate_qstac.py on a hand-made compare.py folder (nothing is trained).

The fake comparison, env ``Fake-v0``, budget 1000 steps, one evaluation every 100 steps (10 points),
two episodes per evaluation (returns ``m - 1`` and ``m + 1``, so the evaluation point is ``m``):

    a seed 0: 0 2 4 6 8 10 10 10 10 10
    a seed 1: 0 0 0 0 0  5  9  9  9  9
    b seed 0: 0 1 1 1 1  1  1  1  1  1   + two evaluations past the budget (1100, 1200) at 100
    b seed 1: 2 2 2 2 2  2  2  2  2  2
    b seed 2: failed marker (reported, not used)

R0 = median(0, 0, 0, 2) = 0, R* = 10 (b's 100 lies past its budget), level = 0 + 0.8 * 10 = 8.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from benchmark_script import load_benchmark

agg = load_benchmark("aggregate_qstac")

CURVES = {
    ("a", 0): [0, 2, 4, 6, 8, 10, 10, 10, 10, 10],
    ("a", 1): [0, 0, 0, 0, 0, 5, 9, 9, 9, 9],
    ("b", 0): [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 100, 100],
    ("b", 1): [2] * 10,
}


def write_run(
    out: Path,
    algo: str,
    env: str,
    seed: int,
    means: Sequence[float],
    budget: int | None = 1000,
    status: str = "ok",
) -> None:
    """One compare.py run: marker (unless ``budget`` is None) and ``evaluations.npz`` (if ok)."""
    run_dir = out / "logs" / f"seed_{seed}" / algo / f"{env}_1"
    if status == "ok":
        run_dir.mkdir(parents=True)
        steps = 100 * np.arange(1, len(means) + 1)
        results = np.array([[m - 1.0, m + 1.0] for m in means])
        np.savez(
            run_dir / "evaluations.npz", timesteps=steps, results=results, ep_lengths=np.ones_like(results)
        )
    if budget is None:
        return
    marker = out / "runs" / algo / env / f"seed_{seed}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    data = {"status": status, "algo": algo, "env": env, "seed": seed, "timesteps": budget}
    if status == "ok":
        data["run_dir"] = f"logs/seed_{seed}/{algo}/{env}_1"
    else:
        data["error"] = "returncode 1"
    marker.write_text(json.dumps(data))


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    out = tmp_path / "cmp"
    for (algo, seed), means in CURVES.items():
        write_run(out, algo, "Fake-v0", seed, means)
    write_run(out, "b", "Fake-v0", 2, [], status="failed")
    return out


def test_per_run_scores_match_hand_computed_values(folder: Path) -> None:
    task = agg.summarize_task("Fake-v0", folder, ["a", "b"])
    ref = task["reference"]
    assert (ref["low"], ref["high"], task["level"]) == (0.0, 10.0, 8.0)
    assert ref["best"] == {"algo": "a", "seed": 0, "step": 600}
    a, b = task["algos"]["a"], task["algos"]["b"]
    # Fig. 4a: a seed 0 first reaches 8 at step 500, seed 1 at step 700 (9 >= 8); b never does.
    assert [r["steps_to_level"] for r in a["runs"]] == [500, 700]
    assert [r["share"] for r in a["runs"]] == pytest.approx([0.5, 0.7])
    assert a["share_median"] == pytest.approx(0.6) and a["n_reached"] == 2
    assert [r["share"] for r in b["runs"]] == [None, None] and b["share_median"] is None
    # Fig. 4b: the mean of the 10 normalized points (all of them: fewer than 50).
    assert [r["normalized_first"] for r in a["runs"]] == pytest.approx([0.7, 0.41])
    assert [r["normalized_first"] for r in b["runs"]] == pytest.approx([0.09, 0.2])
    assert a["normalized_first_median"] == pytest.approx(0.555)
    # b seed 0's evaluations past the budget are dropped; the failed seed 2 is reported.
    assert b["runs"][0]["n_evals"] == 10 and b["runs"][0]["n_evals_past_budget"] == 2
    assert [(p["algo"], p["seed"], p["status"]) for p in task["problems"]] == [("b", 2, "failed")]


def test_first_evals_and_reference_override(folder: Path) -> None:
    task = agg.summarize_task("Fake-v0", folder, ["a"], first_evals=5)
    # (0 + 2 + 4 + 6 + 8) / 5 / 10 and 0 / 10
    assert [r["normalized_first"] for r in task["algos"]["a"]["runs"]] == pytest.approx([0.4, 0.0])
    assert task["algos"]["a"]["n_evals_first"] == [5]
    task = agg.summarize_task("Fake-v0", folder, ["a"], fraction=0.5, reference=(-10.0, 10.0))
    assert task["level"] == 0.0 and task["reference"]["source"] == "--reference"
    # level 0: both seeds reach it at their first evaluation; normalized = (R + 10) / 20
    assert [r["share"] for r in task["algos"]["a"]["runs"]] == pytest.approx([0.1, 0.1])
    assert task["algos"]["a"]["runs"][0]["normalized_first"] == pytest.approx((7.0 + 10.0) / 20.0)


def test_rliable_aggregates_and_unequal_seed_counts(folder: Path, tmp_path: Path) -> None:
    other = tmp_path / "cmp2"
    for seed in range(3):
        write_run(other, "a", "Other-v0", seed, [0, 10])
    for seed in range(2):
        write_run(other, "b", "Other-v0", seed, [0, 0], budget=None)  # unmarked: budget = last step
    tasks = {
        "Fake-v0": agg.summarize_task("Fake-v0", folder, ["a", "b"]),
        "Other-v0": agg.summarize_task("Other-v0", other, ["a", "b"]),
    }
    # Other-v0: R0 = 0, R* = 10, level 8: a reaches at step 200 of 1000, b never (budget 200).
    assert [r["share"] for r in tasks["Other-v0"]["algos"]["a"]["runs"]] == pytest.approx([0.2] * 3)
    assert [r["budget"] for r in tasks["Other-v0"]["algos"]["b"]["runs"]] == [200, 200]
    result = agg.aggregate(tasks, ["a", "b"], reps=200, ci=0.95, seed=0)
    assert result["tasks"] == ["Fake-v0", "Other-v0"] and result["excluded_tasks"] == {}
    assert result["n_runs_per_task"] == {"a": 2, "b": 2}
    assert result["dropped_seeds"] == {"a": {"Other-v0": [2]}}
    a_norm = [[0.7, 0.5], [0.41, 0.5]]  # runs x tasks; Other-v0 a: mean(0, 1)
    assert np.allclose(result["scores"]["a"]["normalized_first"], a_norm)
    assert result["scores"]["b"]["share"] == [[1.0, 1.0], [1.0, 1.0]]  # never counted as the budget
    m = result["metrics"]
    # IQM of 4 values drops one at each end: (0.5 + 0.5) / 2
    assert m["a"]["normalized_first_iqm"]["point"] == pytest.approx(0.5)
    assert m["a"]["normalized_first_mean"]["point"] == pytest.approx((0.7 + 0.41 + 0.5 + 0.5) / 4)
    assert m["a"]["share_mean"]["point"] == pytest.approx((0.5 + 0.7 + 0.2 + 0.2) / 4)
    assert m["a"]["reach_rate"]["point"] == 1.0 and m["b"]["reach_rate"]["point"] == 0.0
    for algo in ("a", "b"):
        for est in m[algo].values():
            assert est["low"] <= est["point"] + 1e-12 and est["point"] <= est["high"] + 1e-12
    lo, hi = m["a"]["normalized_first_mean"]["low"], m["a"]["normalized_first_mean"]["high"]
    assert 0.41 <= lo < hi <= 0.7
    # the same --seed gives the same intervals
    assert agg.aggregate(tasks, ["a", "b"], reps=200, ci=0.95, seed=0)["metrics"] == m


def test_main_writes_files_and_reports_missing_algorithms(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "agg"
    argv = ["--task", f"Fake-v0={folder}", "--algos", "a", "b", "c", "--out", str(out), "--reps", "100"]
    assert agg.main(argv) == 1  # c is missing and b seed 2 failed
    data = json.loads((out / "aggregate.json").read_text())
    assert data["tasks"]["Fake-v0"]["algos"]["c"]["status"] == "missing"
    assert {(p["algo"], p["status"]) for p in data["problems"]} == {("b", "failed"), ("c", "missing")}
    assert data["aggregate"]["tasks"] == [] and "Fake-v0" in data["aggregate"]["excluded_tasks"]
    md = (out / "aggregate.md").read_text()
    assert "python benchmarks/aggregate_qstac.py --task" in md
    assert "| Fake-v0 | 60% (50%, 70%; 2/2) | never (never, never; 0/2) | missing |" in md
    assert (out / "aggregate.png").stat().st_size > 0
    assert agg.main(["--task", f"Fake-v0={folder}", "--algos", "a", "--out", str(out), "--reps", "100"]) == 0


def test_argument_errors(tmp_path: Path) -> None:
    x = str(tmp_path)
    for bad in (
        ["--task", f"E-v0={x}", "--task", f"E-v0={x}"],  # one --task per env
        ["--task", "E-v0"],
        ["--task", f"E-v0={tmp_path / 'absent'}"],
        ["--task", f"E-v0={x}", "--reference", "F-v0=0:1"],  # reference of an env without --task
        ["--task", f"E-v0={x}", "--reference", "E-v0=1:0"],  # HIGH below LOW
    ):
        with pytest.raises(SystemExit):
            agg.parse_args([*bad, "--out", "o"])
    args = agg.parse_args(["--task", f"E-v0={x}", "--reference", "E-v0=-5:1.5", "--out", "o"])
    assert args.references == {"E-v0": (-5.0, 1.5)} and args.tasks == {"E-v0": tmp_path}
