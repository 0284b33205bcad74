"""Fast tests of benchmarks/compare.py (no real training: synthetic run folders and a fake rl_zoo3)."""

from __future__ import annotations

import json
import math
import os
import stat
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchmark_script import load_benchmark

compare = load_benchmark("compare")


# ---------------------------------------------------------------------------
# helpers building rl_zoo3-like run folders
# ---------------------------------------------------------------------------


def make_run(
    out: Path,
    algo: str,
    env: str,
    seed: int,
    timesteps: list[int],
    means: list[float],
    *,
    wall_s: float = 10.0,
    n_timesteps: int | None = None,
    train_s: float | None = 8.0,
    status: str = "ok",
    marker: bool = True,
    run_id: int = 1,
    episodes: int = 2,
) -> Path:
    """Create ``<out>/logs/seed_S/<algo>/<Env>_<id>/evaluations.npz`` (+ monitor + marker)."""
    spec = compare.RunSpec(algo, env, seed)
    run_dir = spec.algo_log_path(out) / f"{spec.env_name}_{run_id}"
    run_dir.mkdir(parents=True, exist_ok=True)
    # per-episode returns whose mean is the requested value
    results = np.array([[m - 1.0, m + 1.0][:episodes] if episodes == 2 else [m] * episodes for m in means])
    np.savez(
        run_dir / "evaluations.npz",
        timesteps=np.array(timesteps),
        results=results,
        ep_lengths=np.full_like(results, 200),
    )
    n_timesteps = n_timesteps if n_timesteps is not None else timesteps[-1]
    if train_s is not None:
        n_ep = max(n_timesteps // 200, 1)
        rows = "".join(f"-1000.0,200,{train_s * (i + 1) / n_ep:.6f}\n" for i in range(n_ep))
        (run_dir / "0.monitor.csv").write_text(f'#{{"t_start": 1000.0, "env_id": "{env}"}}\nr,l,t\n{rows}')
    if marker:
        mk = {
            "version": 1,
            "status": status,
            "error": None if status == "ok" else "return code 1",
            "algo": algo,
            "env": env,
            "seed": seed,
            "timesteps": n_timesteps,
            "eval_freq": timesteps[0],
            "eval_episodes": episodes,
            "command": "python -m rl_zoo3.train ...",
            "zoo_args": [],
            "compare_command": "python benchmarks/compare.py --fake",
            "returncode": 0 if status == "ok" else 1,
            "wall_s": wall_s,
            "run_dir": os.path.relpath(run_dir, out),
            "log": os.path.relpath(spec.stdout_path(out), out),
            "jobs": 1,
            "machine": {"nproc": 2, "torch": "x", "torch_threads_per_run": 1, "jobs": 1},
        }
        compare.write_json(spec.marker_path(out), mk)
    return run_dir


def specs(algos: list[str], envs: list[str], seeds: list[int]) -> list[Any]:
    return [compare.RunSpec(a, e, s) for e in envs for a in algos for s in seeds]


# ---------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------


def test_parse_args_defaults_and_maps():
    args = compare.parse_args(
        [
            "--algos", "s2ac", "sac",
            "--envs", "Pendulum-v1",
            "--seeds", "0", "1", "2",
            "--timesteps", "10000",
            "--out", "x",
            "--threshold", "Pendulum-v1=-200", "MountainCarContinuous-v0=90",
            "--hyperparams", "sac:learning_starts:100", "all:policy_kwargs:dict(net_arch=[64, 64])",
            "--hyperparams", "s2ac:gamma:0.98",
            "--extra-args", "s2ac=--conf-file hyperparams/s2ac.yml --device cpu",
        ]
    )  # fmt: skip
    assert args.eval_freq == 500 and args.eval_episodes == 5 and args.jobs == 1 and args.num_threads == 1
    assert args.seeds == [0, 1, 2] and args.timesteps == 10000
    assert args.thresholds == {"Pendulum-v1": -200.0, "MountainCarContinuous-v0": 90.0}
    assert args.hyperparams_map == {
        "sac": ["learning_starts:100"],
        "all": ["policy_kwargs:dict(net_arch=[64, 64])"],
        "s2ac": ["gamma:0.98"],
    }
    assert args.extra_args_map == {"s2ac": ["--conf-file", "hyperparams/s2ac.yml", "--device", "cpu"]}


@pytest.mark.parametrize(
    "argv",
    [
        ["--out", "x", "--algos", "sac"],  # missing envs/seeds/timesteps
        ["--out", "x", "--algos", "sac", "--envs", "E", "--seeds", "0", "-n", "10", "--threshold", "E:1"],
        ["--out", "x", "--algos", "sac", "--envs", "E", "--seeds", "0", "-n", "10", "--threshold", "E=abc"],
        [
            "--out",
            "x",
            "--algos",
            "sac",
            "--envs",
            "E",
            "--seeds",
            "0",
            "-n",
            "10",
            "--hyperparams",
            "sac:lr",
        ],
        [
            "--out",
            "x",
            "--algos",
            "sac",
            "--envs",
            "E",
            "--seeds",
            "0",
            "-n",
            "10",
            "--hyperparams",
            "td3:a:1",
        ],
        [
            "--out",
            "x",
            "--algos",
            "sac",
            "--envs",
            "E",
            "--seeds",
            "0",
            "-n",
            "10",
            "--extra-args",
            "--device",
        ],
        ["--out", "x", "--algos", "sac", "--envs", "E", "--seeds", "0", "-n", "10", "--jobs", "0"],
    ],
)
def test_parse_args_errors(argv):
    with pytest.raises(SystemExit):
        compare.parse_args(argv)


def test_report_only_needs_only_out():
    args = compare.parse_args(["--report-only", "--out", "x"])
    assert args.report_only and args.algos is None and args.thresholds == {}


def test_zoo_command(tmp_path):
    args = compare.parse_args(
        [
            *"--algos sac td3 --envs ALE/Pong-v5 --seeds 3 -n 2000 --eval-freq 250 --eval-episodes 2".split(),
            *["--out", str(tmp_path), "--hyperparams", "sac:learning_starts:100", "all:gamma:0.9"],
            *["--extra-args", "all=--device cpu"],
        ]
    )
    spec = compare.RunSpec("sac", "ALE/Pong-v5", 3)
    cmd = compare.full_command(spec, args, tmp_path)
    assert cmd[:3] == [sys.executable, "-m", "rl_zoo3.train"]
    zoo = cmd[3:]

    def value(flag):
        return zoo[zoo.index(flag) + 1]

    assert value("--algo") == "sac" and value("--env") == "ALE/Pong-v5" and value("--seed") == "3"
    assert value("-n") == "2000" and value("--num-threads") == "1"
    assert value("--eval-freq") == "250" and value("--eval-episodes") == "2"
    assert value("-f") == str(tmp_path / "logs" / "seed_3")
    # one --hyperparams group ("all" first) and raw extra args at the end
    assert zoo.count("--hyperparams") == 1
    i = zoo.index("--hyperparams")
    assert zoo[i + 1 : i + 3] == ["gamma:0.9", "learning_starts:100"]
    assert zoo[-2:] == ["--device", "cpu"]
    td3 = compare.zoo_args(compare.RunSpec("td3", "ALE/Pong-v5", 3), args, tmp_path)
    assert "learning_starts:100" not in td3 and "gamma:0.9" in td3
    # rl_zoo3 folder naming: slashes become dashes
    assert spec.env_name == "ALE-Pong-v5"
    assert spec.marker_path(tmp_path) == tmp_path / "runs" / "sac" / "ALE-Pong-v5" / "seed_3.json"


# ---------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------


def test_steps_to_threshold():
    ts = np.array([500, 1000, 1500, 2000])
    assert compare.steps_to_threshold(ts, np.array([-900, -300, -150, -400]), -200) == 1500
    assert compare.steps_to_threshold(ts, np.array([-900, -200, -150, -100]), -200) == 1000  # >= counts
    assert compare.steps_to_threshold(ts, np.array([-900, -300, -250, -201]), -200) is None


def test_threshold_median_not_reached():
    assert compare.threshold_median([1000, 3000, None]) == 3000
    assert compare.threshold_median([1000, None, None]) is None
    assert compare.threshold_median([1000, 2000]) == 1500
    assert compare.threshold_median([1000, None]) is None
    assert compare.threshold_median([]) is None


def test_aggregate_curves_median_min_max():
    ts = np.array([500, 1000, 1500])
    agg = compare.aggregate_curves(
        [(ts, np.array([1.0, 5.0, 9.0])), (ts, np.array([2.0, 3.0, 4.0])), (ts, np.array([0.0, 4.0, 10.0]))]
    )
    assert agg["timesteps"] == [500, 1000, 1500]
    assert agg["median"] == [1.0, 4.0, 9.0]
    assert agg["min"] == [0.0, 3.0, 4.0]
    assert agg["max"] == [2.0, 5.0, 10.0]
    assert agg["n"] == [3, 3, 3]


def test_aggregate_curves_different_grids_hold_last_and_truncate():
    a = (np.array([500, 1000, 1500, 2000]), np.array([1.0, 2.0, 3.0, 4.0]))
    b = (np.array([600, 1200]), np.array([10.0, 20.0]))  # shorter run, other grid
    agg = compare.aggregate_curves([a, b])
    assert agg["timesteps"] == [500, 600, 1000, 1200]  # stops at the shortest run's last eval
    assert agg["n"] == [1, 2, 2, 2]
    assert agg["median"] == [1.0, 5.5, 6.0, 11.0]
    assert compare.aggregate_curves([])["timesteps"] == []


def test_choose_columns():
    assert compare.choose_columns(10000, 500, 10) == list(range(1000, 10001, 1000))
    assert compare.choose_columns(1000, 500, 10) == [500, 1000]
    assert compare.choose_columns(20000, 500, 10) == list(range(2000, 20001, 2000))
    assert compare.choose_columns(25000, 500, 10) == list(range(2500, 25001, 2500))
    assert compare.choose_columns(3000, 1000, 10) == [1000, 2000, 3000]
    assert compare.choose_columns(10000, 500, 10, every=5000) == [5000, 10000]
    assert compare.choose_columns(0, 500, 10) == []


def test_read_monitor_timing(tmp_path):
    (tmp_path / "0.monitor.csv").write_text(
        '#{"t_start": 100.0, "env_id": "E"}\nr,l,t\n-1,200,2.0\n-1,200,5.0\n-1,100,6.5\n'
    )
    (tmp_path / "1.monitor.csv").write_text('#{"t_start": 101.0, "env_id": "E"}\nr,l,t\n-1,300,6.0\n')
    timing = compare.read_monitor_timing(tmp_path)
    assert timing is not None
    assert timing["monitor_steps"] == 800 and timing["episodes"] == 4 and timing["n_monitor_files"] == 2
    assert timing["train_s"] == pytest.approx(7.0)  # max(100+6.5, 101+6) - 100
    assert compare.read_monitor_timing(tmp_path / "nothing") is None


def test_load_evaluations(tmp_path):
    np.savez(tmp_path / "evaluations.npz", timesteps=[500, 1000], results=[[1.0, 3.0, 5.0], [2.0, 2.0, 2.0]])
    ev = compare.load_evaluations(tmp_path / "evaluations.npz")
    assert ev["timesteps"].tolist() == [500, 1000]
    assert ev["mean"].tolist() == [3.0, 2.0]
    assert ev["results"].shape == (2, 3)


def test_summarize_synthetic(tmp_path):
    out = tmp_path
    ts = [500, 1000, 1500, 2000]
    env = "Pendulum-v1"
    # sac: reaches -200 at 1500 / 1000 / never
    make_run(out, "sac", env, 0, ts, [-1000, -500, -150, -140], wall_s=20.0, train_s=16.0)
    make_run(out, "sac", env, 1, ts, [-1000, -190, -180, -170], wall_s=22.0, train_s=18.0)
    make_run(out, "sac", env, 2, ts, [-1000, -900, -800, -700], wall_s=24.0, train_s=20.0)
    # s2ac: 3x slower, never reaches, one seed failed
    make_run(out, "s2ac", env, 0, ts, [-1200, -1100, -1000, -900], wall_s=60.0, train_s=54.0)
    make_run(out, "s2ac", env, 1, ts, [-1300, -1200, -1100, -1000], wall_s=66.0, train_s=54.0)
    make_run(out, "s2ac", env, 2, ts, [-1, -1, -1, -1], status="failed")
    summary = compare.summarize(out, specs(["s2ac", "sac"], [env], [0, 1, 2]), {env: -200.0})

    sac = summary["envs_data"][env]["algos"]["sac"]["aggregate"]
    assert sac["n_ok"] == 3
    assert sac["final_return"]["median"] == -170 and sac["final_return"]["min"] == -700
    assert sac["final_return"]["max"] == -140
    st = sac["steps_to_threshold"]
    assert st["per_seed"] == [1500, 1000, None] and st["median"] == 1500 and st["n_reached"] == 2
    assert sac["wall_s_per_1k"] == pytest.approx(11.0)  # median 22 s / 2000 steps
    assert sac["train_s_per_1k"] == pytest.approx(9.0)  # 18 s / 2000 monitor steps
    assert sac["wall_s_per_1k_ratio_to_sac"] == pytest.approx(1.0)
    assert sac["curve"]["median"] == [-1000, -500, -180, -170]

    s2ac = summary["envs_data"][env]["algos"]["s2ac"]["aggregate"]
    assert s2ac["n_ok"] == 2 and s2ac["n_runs"] == 3 and s2ac["seeds_ok"] == [0, 1]
    assert s2ac["steps_to_threshold"]["median"] is None and s2ac["steps_to_threshold"]["n_reached"] == 0
    assert s2ac["wall_s_per_1k"] == pytest.approx(31.5)
    assert s2ac["wall_s_per_1k_ratio_to_sac"] == pytest.approx(31.5 / 11.0)
    assert s2ac["train_s_per_1k_ratio_to_sac"] == pytest.approx(27.0 / 9.0)
    assert s2ac["final_return"]["median"] == -950

    # the failed run is reported, not dropped silently
    assert [(p["algo"], p["seed"], p["status"]) for p in summary["problems"]] == [("s2ac", 2, "failed")]

    # table columns: every 500 steps (eval spacing) because 2000 steps fit in 10 columns
    assert summary["envs_data"][env]["table_steps"] == [500, 1000, 1500, 2000]
    table = {c["step"]: c for c in sac["table"]}
    assert table[1000]["median"] == -500 and table[1000]["min"] == -900 and table[1000]["max"] == -190

    header = {"command": "python benchmarks/compare.py ...", "date": "now", "machine": {"nproc": 2}}
    md = compare.render_markdown(summary, header)
    assert "## Pendulum-v1" in md and "not reached (n/r, n/r; 0/2 reached)" in md
    assert "1.5k (1.5k, 1k, n/r; 2/3 reached)" in md
    assert "(2.86× sac)" in md and "(3.00× sac)" in md
    assert "## Failed or missing runs" in md and "python benchmarks/compare.py ..." in md
    assert "-170.0 [-700.0, -140.0] @2k" in md


def test_summarize_without_baseline_and_missing(tmp_path):
    make_run(tmp_path, "td3", "E-v0", 0, [1000], [5.0])
    summary = compare.summarize(tmp_path, specs(["td3", "ppo"], ["E-v0"], [0]), {})
    td3 = summary["envs_data"]["E-v0"]["algos"]["td3"]["aggregate"]
    assert td3["wall_s_per_1k_ratio_to_sac"] is None and "steps_to_threshold" not in td3
    assert [(p["algo"], p["status"]) for p in summary["problems"]] == [("ppo", "missing")]


def test_unmarked_runs_use_latest_run_folder(tmp_path):
    make_run(tmp_path, "sac", "E-v0", 0, [1000], [1.0], marker=False, run_id=1)
    make_run(tmp_path, "sac", "E-v0", 0, [1000], [2.0], marker=False, run_id=2)
    rec = compare.collect_run(compare.RunSpec("sac", "E-v0", 0), tmp_path)
    assert rec["status"] == "unmarked" and rec["run_dir"].endswith("E-v0_2") and rec["eval_mean"] == [2.0]


def test_write_report_files(tmp_path):
    make_run(tmp_path, "sac", "E-v0", 0, [500, 1000], [1.0, 2.0])
    make_run(tmp_path, "sac", "E-v0", 1, [500, 1000], [3.0, 4.0])
    args = compare.parse_args(["--report-only", "--out", str(tmp_path), "--threshold", "E-v0=3"])
    compare.write_report(tmp_path, specs(["sac"], ["E-v0"], [0, 1]), args, "python benchmarks/compare.py x")
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["thresholds"] == {"E-v0": 3.0}
    assert data["envs_data"]["E-v0"]["algos"]["sac"]["aggregate"]["steps_to_threshold"]["per_seed"] == [
        None,
        500,
    ]
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000
    md = (tmp_path / "summary.md").read_text()
    assert "python benchmarks/compare.py x" in md and "nproc=2" in md


def test_report_names_the_revision_of_every_run(tmp_path):
    """Runs added later were trained on other commits: the header lists each, not the first run's only."""
    for seed, rev in ((0, "aaa1111"), (1, "bbb2222"), (2, "aaa1111")):
        make_run(tmp_path, "sac", "E-v0", seed, [500, 1000], [1.0, 2.0])
        marker = compare.RunSpec("sac", "E-v0", seed).marker_path(tmp_path)
        mk = json.loads(marker.read_text())
        mk["machine"]["git"] = rev
        compare.write_json(marker, mk)
    args = compare.parse_args(["--report-only", "--out", str(tmp_path)])
    compare.write_report(tmp_path, specs(["sac"], ["E-v0"], [0, 1, 2]), args, "c")
    assert json.loads((tmp_path / "summary.json").read_text())["header"]["git"] == "aaa1111, bbb2222"
    assert "`aaa1111, bbb2222`" in (tmp_path / "summary.md").read_text()


# ---------------------------------------------------------------------------
# resume / skip logic
# ---------------------------------------------------------------------------


def _args(out: Path, *extra: str):
    return compare.parse_args(
        ["--algos", "sac", "--envs", "E-v0", "--seeds", "0", "-n", "1000", "--out", str(out), *extra]
    )


def test_run_status(tmp_path):
    args = _args(tmp_path)
    spec = compare.RunSpec("sac", "E-v0", 0)
    assert compare.run_status(spec, args, tmp_path) == ("todo", None)

    run_dir = make_run(tmp_path, "sac", "E-v0", 0, [500, 1000], [1.0, 2.0])
    marker = compare.load_marker(spec.marker_path(tmp_path))
    marker["zoo_args"] = compare.zoo_args(spec, args, tmp_path)
    compare.write_json(spec.marker_path(tmp_path), marker)
    assert compare.run_status(spec, args, tmp_path)[0] == "done"
    # same out spelled differently still matches
    other = Path(os.path.relpath(tmp_path))
    assert compare.run_status(spec, _args(other), other)[0] == "done"
    # different settings -> mismatch (not silently reused)
    assert compare.run_status(spec, _args(tmp_path, "--eval-freq", "250"), tmp_path)[0] == "mismatch"
    # done marker but the run folder lost its evaluations -> run again
    (run_dir / "evaluations.npz").unlink()
    assert compare.run_status(spec, args, tmp_path)[0] == "todo"
    # failed attempt -> retried
    marker["status"] = "failed"
    compare.write_json(spec.marker_path(tmp_path), marker)
    assert compare.run_status(spec, args, tmp_path)[0] == "failed"


FAKE_ZOO = """\
#!{python}
# Stand-in for `python -m rl_zoo3.train`: writes an rl_zoo3-like run folder instantly.
import argparse, json, os, sys
import numpy as np
assert sys.argv[1:3] == ["-m", "rl_zoo3.train"], sys.argv
p = argparse.ArgumentParser()
for flag in ("--algo", "--env", "-f", "--hyperparams"):
    p.add_argument(flag, nargs="+" if flag == "--hyperparams" else None)
for flag in ("--seed", "-n", "--eval-freq", "--eval-episodes", "--num-threads"):
    p.add_argument(flag, type=int)
a, _ = p.parse_known_args(sys.argv[3:])
with open(os.environ["FAKE_ZOO_CALLS"], "a") as f:
    f.write(json.dumps({{"algo": a.algo, "seed": a.seed, "omp": os.environ.get("OMP_NUM_THREADS"),
                        "mpl": os.environ.get("MPLBACKEND")}}) + "\\n")
if a.algo == os.environ.get("FAKE_ZOO_FAIL"):
    print("boom", file=sys.stderr)
    sys.exit(3)
base = os.path.join(a.f, a.algo)
os.makedirs(base, exist_ok=True)
ids = [int(d.rsplit("_", 1)[1]) for d in os.listdir(base) if d.startswith(a.env + "_")]
run = os.path.join(base, f"{{a.env}}_{{max(ids, default=0) + 1}}")
os.makedirs(run)
ts = np.arange(a.eval_freq, a.n + 1, a.eval_freq)
np.savez(os.path.join(run, "evaluations.npz"), timesteps=ts,
         results=np.tile((ts / 100.0 + a.seed)[:, None], (1, a.eval_episodes)))
with open(os.path.join(run, "0.monitor.csv"), "w") as f:
    f.write('#{{"t_start": 0.0, "env_id": "%s"}}\\nr,l,t\\n' % a.env)
    for i in range(a.n // 100):
        f.write(f"-1.0,100,{{0.01 * (i + 1)}}\\n")
print(f"Log path: {{run}}")
"""


@pytest.fixture
def fake_python(tmp_path, monkeypatch):
    script = tmp_path / "fake_python"
    script.write_text(FAKE_ZOO.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_ZOO_CALLS", str(calls))
    monkeypatch.delenv("FAKE_ZOO_FAIL", raising=False)
    return script, calls


def _calls(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_main_runs_skips_and_reports_failures(tmp_path, fake_python, monkeypatch, capsys):
    script, calls = fake_python
    out = tmp_path / "out"
    argv = [
        *"--algos sac td3 --envs E-v0 --seeds 0 1 -n 1000 --eval-freq 250 --eval-episodes 2".split(),
        *["--out", str(out), "--python", str(script), "--threshold", "E-v0=7", "--jobs", "2"],
    ]
    monkeypatch.setenv("FAKE_ZOO_FAIL", "td3")
    assert compare.main(argv) == 1  # td3 failed -> non-zero exit, still a summary
    first = _calls(calls)
    assert len(first) == 4 and {c["omp"] for c in first} == {"1"} and {c["mpl"] for c in first} == {"Agg"}
    td3_marker = json.loads((out / "runs" / "td3" / "E-v0" / "seed_0.json").read_text())
    assert td3_marker["status"] == "failed" and td3_marker["returncode"] == 3
    assert "boom" in (out / td3_marker["log"]).read_text()
    sac_marker = json.loads((out / "runs" / "sac" / "E-v0" / "seed_1.json").read_text())
    assert sac_marker["status"] == "ok" and sac_marker["run_dir"] == "logs/seed_1/sac/E-v0_1"
    assert sac_marker["wall_s"] > 0 and sac_marker["started"] and sac_marker["finished"]
    assert "--eval-freq 250" in sac_marker["command"] and "--python" in sac_marker["compare_command"]
    md = (out / "summary.md").read_text()
    assert "## Failed or missing runs" in md and "return code 3" in md

    # second invocation: sac runs are skipped, the failed td3 runs are retried
    monkeypatch.delenv("FAKE_ZOO_FAIL")
    assert compare.main(argv) == 0
    second = _calls(calls)[len(first) :]
    assert sorted((c["algo"], c["seed"]) for c in second) == [("td3", 0), ("td3", 1)]
    assert "[skip] sac E-v0 seed=0" in capsys.readouterr().out
    td3_marker = json.loads((out / "runs" / "td3" / "E-v0" / "seed_0.json").read_text())
    assert td3_marker["status"] == "ok"

    # third invocation: nothing to do
    assert compare.main(argv) == 0
    assert len(_calls(calls)) == 6

    data = json.loads((out / "summary.json").read_text())
    sac = data["envs_data"]["E-v0"]["algos"]["sac"]["aggregate"]
    # fake returns: ts/100 + seed -> final 10 / 11, seed 0 reaches 7 at 750 (7.5), seed 1 at 750 (8.5)
    assert sac["final_return"]["per_seed"] == [10.0, 11.0]
    assert sac["steps_to_threshold"]["per_seed"] == [750, 750]
    assert sac["train_s_per_1k"] == pytest.approx(0.1)
    assert data["envs_data"]["E-v0"]["algos"]["td3"]["aggregate"]["train_s_per_1k_ratio_to_sac"] == (
        pytest.approx(1.0)
    )

    # report-only rebuilds from the markers alone and keeps the thresholds
    (out / "summary.md").unlink()
    assert compare.main(["--report-only", "--out", str(out)]) == 0
    md = (out / "summary.md").read_text()
    assert "steps to ≥ 7" in md and "--report-only" in md
    assert len(_calls(calls)) == 6


def test_summary_keeps_the_runs_of_earlier_calls(tmp_path, fake_python):
    """Adding a seed (or an algo) to a folder reports it with the runs already there."""
    script, _ = fake_python
    out = tmp_path / "out"
    common = [
        *"--envs E-v0 -n 500 --eval-freq 250 --eval-episodes 2".split(),
        "--out",
        str(out),
        "--python",
        str(script),
    ]
    assert compare.main(["--algos", "sac", "--seeds", "0", "1", *common]) == 0
    assert compare.main(["--algos", "td3", "--seeds", "2", *common]) == 0
    algos = json.loads((out / "summary.json").read_text())["envs_data"]["E-v0"]["algos"]
    assert algos["sac"]["aggregate"]["final_return"]["per_seed"] == [5.0, 6.0]
    assert algos["td3"]["aggregate"]["final_return"]["per_seed"] == [7.0]


def test_dry_run_prints_commands(tmp_path, capsys):
    argv = ["--algos", "sac", "--envs", "E-v0", "--seeds", "0", "1", "-n", "100", "--out", str(tmp_path),
            "--dry-run"]  # fmt: skip
    assert compare.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("-m rl_zoo3.train --algo sac --env E-v0" in line for line in lines)
    assert not (tmp_path / "runs").exists()


def test_mismatch_is_refused(tmp_path, fake_python):
    script, calls = fake_python
    base = ["--algos", "sac", "--envs", "E-v0", "--seeds", "0", "-n", "1000", "--out", str(tmp_path),
            "--python", str(script)]  # fmt: skip
    assert compare.main(base) == 0
    assert compare.main([*base, "--eval-freq", "250"]) == 2
    assert len(_calls(calls)) == 1
    assert compare.main([*base, "--eval-freq", "250", "--rerun"]) == 0
    assert len(_calls(calls)) == 2
    marker = json.loads((tmp_path / "runs" / "sac" / "E-v0" / "seed_0.json").read_text())
    assert marker["run_dir"].endswith("E-v0_2") and marker["eval_freq"] == 250


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "ALE/Pong-v5", "my_pkg:MyEnv-v0", "a/b:C-v1"])
def test_env_folder_name_matches_rl_zoo3(env_id):
    naming = pytest.importorskip("huggingface_sb3.naming_schemes")
    assert compare.env_folder_name(env_id) == str(naming.EnvironmentName(env_id))


def test_value_at():
    ts, vals = np.array([500, 1000]), np.array([1.0, 2.0])
    assert math.isnan(compare.value_at(ts, vals, 499))
    assert compare.value_at(ts, vals, 500) == 1.0 and compare.value_at(ts, vals, 999) == 1.0
    assert compare.value_at(ts, vals, 5000) == 2.0


def test_script_help_runs():
    # the script is importable and has a working CLI
    text = textwrap.dedent(compare.build_parser().format_help())
    assert "--report-only" in text and "--jobs" in text


def test_success_rate_and_share_to_fraction_of_best(tmp_path):
    out = tmp_path
    env = "Nav-v0"
    ts = [1000, 2000, 3000, 4000]
    # best return over all runs: 100; median first evaluation: 0 -> 80 % level = 80
    run = make_run(out, "qstac", env, 0, ts, [0.0, 85.0, 90.0, 100.0], episodes=2)
    with np.load(run / "evaluations.npz") as data:
        arrays = dict(data)
    arrays["successes"] = np.array([[0, 0], [1, 0], [1, 1], [1, 1]], dtype=bool)
    np.savez(run / "evaluations.npz", **arrays)
    make_run(out, "sac", env, 0, ts, [0.0, 10.0, 20.0, 79.0])
    make_run(out, "sac", env, 1, ts, [-5.0, 10.0, 81.0, 60.0])
    summary = compare.summarize(out, specs(["qstac", "sac"], [env], [0, 1]), {})
    env_data = summary["envs_data"][env]
    assert env_data["fraction_of_best"]["return"] == pytest.approx(80.0)
    q = env_data["algos"]["qstac"]["aggregate"]
    assert q["final_success_rate"]["per_seed"] == [1.0]
    assert q["steps_to_fraction_of_best"]["per_seed"] == [2000]
    assert q["steps_to_fraction_of_best"]["median_share"] == pytest.approx(0.5)
    sac = env_data["algos"]["sac"]["aggregate"]
    assert "final_success_rate" not in sac
    assert sac["steps_to_fraction_of_best"]["share_per_seed"] == [None, 0.75]
    assert sac["steps_to_fraction_of_best"]["median_share"] is None  # one of two seeds never reached it
    md = compare.render_markdown(summary, {"command": "c", "date": "d", "machine": {}})
    assert "share of steps to 80% of best (≥ 80.0" in md and "final success rate" in md
    assert "| qstac | 1/2 | 100.0 | 100% [100%, 100%] |" in md  # seed 1 of qstac is missing
    assert "not reached (n/r, 75%)" in md


def test_fraction_of_best_threshold_negative_returns():
    # Pendulum-like: untrained -1500, best -150 -> 80 % of the way: -420
    level = compare.fraction_of_best_threshold([-1500.0, -1400.0, -1600.0], -150.0, 0.8)
    assert level == pytest.approx(-420.0)


def test_best_fraction_is_checked():
    with pytest.raises(SystemExit):
        compare.parse_args(["--out", "x", "--report-only", "--best-fraction", "0"])


# ---------------------------------------------------------------------------
# sharded sweeps
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["3/2", "0/2", "1/0", "a/b", "1", "1/2/3", "1.5/2"])
def test_bad_shard_specs_are_refused_before_anything_runs(text, tmp_path, capsys):
    argv = ["--algos", "sac", "--envs", "E", "--seeds", "0", "-n", "10", "--out", str(tmp_path / "o"),
            "--shard", text]  # fmt: skip
    with pytest.raises(SystemExit):
        compare.parse_args(argv)
    assert "--shard must be I/N" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_shards_are_disjoint_cover_the_sweep_and_balance_the_algos():
    full = [compare.RunSpec(a, "E", s) for s in range(3) for a in ("a", "b", "c", "d")]
    parts = [compare.shard_specs(full, i, 2) for i in (1, 2)]
    assert sorted(parts[0] + parts[1], key=full.index) == full
    assert not set(parts[0]) & set(parts[1])
    for part in parts:  # every algo's 3 seeds are split 2 + 1, never 3 + 0
        assert {sum(s.algo == a for s in part) for a in "abcd"} <= {1, 2}
        assert part == sorted(part, key=full.index)  # still seed-major
    assert compare.shard_specs(full, 1, 1) == full
    assert compare.shard_specs(full, 5, 20) == [sorted(full, key=lambda s: (s.algo, s.seed))[4]]


def test_shard_runs_merge_and_report(tmp_path, fake_python, capsys):
    script, calls = fake_python
    sweep = [
        *"--algos sac td3 --envs E-v0 --seeds 0 1 2 -n 1000 --eval-freq 250".split(),
        "--python",
        str(script),
    ]
    for i in (1, 2):
        assert compare.main([*sweep, "--shard", f"{i}/2", "--out", str(tmp_path / f"part{i}")]) == 0
        assert not (tmp_path / f"part{i}" / "summary.md").exists()  # a part's summary would be partial
    assert "--merge" in capsys.readouterr().out
    done = sorted((c["algo"], c["seed"]) for c in _calls(calls))
    assert done == sorted((a, s) for a in ("sac", "td3") for s in range(3))  # each run once
    merged = tmp_path / "merged"
    parts = [str(tmp_path / "part1"), str(tmp_path / "part2")]
    assert compare.main(["--report-only", "--out", str(merged), "--merge", *parts]) == 0
    data = json.loads((merged / "summary.json").read_text())
    assert data["envs_data"]["E-v0"]["algos"]["td3"]["aggregate"]["final_return"]["per_seed"] == [10, 11, 12]
    # merging again copies nothing new; the merged folder resumes like any --out
    assert compare.main(["--report-only", "--out", str(merged), "--merge", *parts]) == 0
    assert compare.main([*sweep, "--out", str(merged)]) == 0
    assert len(_calls(calls)) == 6


def test_merge_refuses_conflicts_and_empty_folders_without_writing(tmp_path, fake_python, capsys):
    script, _ = fake_python
    for name, freq in (("a", "250"), ("b", "500")):  # the same run, different results
        argv = [
            *"--algos sac --envs E-v0 --seeds 0 -n 1000 --eval-freq".split(),
            freq,
            "--python",
            str(script),
        ]
        assert compare.main([*argv, "--out", str(tmp_path / name)]) == 0
    merged = tmp_path / "merged"
    assert compare.main(["--report-only", "--out", str(merged), "--merge", str(tmp_path / "a"),
                         str(tmp_path / "b")]) == 2  # fmt: skip
    assert "is in both" in capsys.readouterr().err
    assert not merged.exists()
    (tmp_path / "empty").mkdir()
    assert compare.main(["--report-only", "--out", str(merged), "--merge", str(tmp_path / "empty")]) == 2
    assert "has no runs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare.parse_args(
            ["--out", "x", "--merge", "y", "--algos", "sac", "--envs", "E", "--seeds", "0", "-n", "1"]
        )
    with pytest.raises(SystemExit):
        compare.parse_args(["--out", "x", "--report-only", "--shard", "1/2"])
