#!/usr/bin/env python
"""Compare RL algorithms through the real ``python -m rl_zoo3.train`` entry point.

Every (algo, env, seed) triple is trained in its own subprocess with rl_zoo3, then the
``evaluations.npz`` files written by rl_zoo3's ``EvalCallback`` are aggregated into
``summary.md``, ``summary.json`` and ``learning_curves.png`` inside ``--out``.

Example::

    python benchmarks/compare.py --algos s2ac sac --envs Pendulum-v1 --seeds 0 1 2 \\
        --timesteps 10000 --threshold Pendulum-v1=-200 --out benchmarks/results/pendulum

Layout of ``--out`` (rl_zoo3 conventions are kept for the run folders)::

    <out>/logs/seed_<S>/<algo>/<EnvName>_<id>/   rl_zoo3 run folder (-f <out>/logs/seed_<S>)
        evaluations.npz, 0.monitor.csv, <EnvName>.zip, <EnvName>/{config,args}.yml ...
    <out>/runs/<algo>/<EnvName>/seed_<S>.json      marker: status, command, timings, run folder
    <out>/runs/<algo>/<EnvName>/seed_<S>.log       stdout + stderr of the rl_zoo3 subprocess
    <out>/summary.md, summary.json, learning_curves.png

The summary covers every finished run in ``--out``, not only this call's: a folder can grow one
algo or seed at a time (resumable lanes), and each call reports all of it.

Several machines (or a scheduler's job array) split one sweep with ``--shard I/N``: each runs the
I-th of N disjoint parts of the same command, into its own ``--out`` (or a shared one), and
``--report-only --merge FOLDER ...`` gathers their runs into one folder and writes the summary::

    python benchmarks/compare.py ... --shard 1/2 --out sweep_1     # machine 1
    python benchmarks/compare.py ... --shard 2/2 --out sweep_2     # machine 2
    python benchmarks/compare.py --report-only --out sweep --merge sweep_1 sweep_2

See benchmarks/README.md for what every number means.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import datetime as dt
import glob
import importlib.metadata
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MARKER_VERSION = 1
NICE_MANTISSAS = (1.0, 2.0, 2.5, 5.0)
CHILD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MPLBACKEND": "Agg",
}


# ---------------------------------------------------------------------------
# Argument parsing
# ---------------------------------------------------------------------------


def env_folder_name(env_id: str) -> str:
    """Folder name rl_zoo3 uses for an env id.

    Same rule as ``huggingface_sb3.EnvironmentName`` (used by rl_zoo3's ExperimentManager), copied
    because importing huggingface_sb3 pulls in torch and SB3 (seconds) for three lines of logic.
    """
    name = env_id.replace("/", "-")
    if ":" in name:
        parts = name.split(":")
        if len(parts) != 2:
            raise ValueError(f"Environment name {env_id} contains more than one colon!")
        name = parts[1]
    return name


def parse_thresholds(items: Sequence[str] | None) -> dict[str, float]:
    """``["Pendulum-v1=-200", ...]`` -> ``{"Pendulum-v1": -200.0}``."""
    out: dict[str, float] = {}
    for item in items or []:
        env, sep, value = item.rpartition("=")
        if not sep or not env:
            raise argparse.ArgumentTypeError(f"--threshold expects ENV=VALUE, got {item!r}")
        try:
            out[env] = float(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"--threshold: {value!r} is not a number (in {item!r})") from e
    return out


def parse_hyperparams(items: Sequence[str] | None) -> dict[str, list[str]]:
    """``["sac:learning_starts:100", "all:gamma:0.98"]`` -> ``{"sac": ["learning_starts:100"], ...}``.

    The part after ``ALGO:`` is handed verbatim to rl_zoo3's ``--hyperparams KEY:VALUE``
    (rl_zoo3 ``eval()``s the value, so ``"sac:policy_kwargs:dict(net_arch=[64, 64])"`` works).
    """
    out: dict[str, list[str]] = {}
    for item in items or []:
        algo, sep, rest = item.partition(":")
        key = rest.partition(":")[0]
        if not sep or not algo or ":" not in rest or not key:
            raise argparse.ArgumentTypeError(f"--hyperparams expects ALGO:KEY:VALUE, got {item!r}")
        out.setdefault(algo, []).append(rest)
    return out


def parse_extra_args(items: Sequence[str] | None) -> dict[str, list[str]]:
    """``["s2ac=--conf-file hyperparams/s2ac.yml", "all=--device cpu"]`` -> shlex-split lists per algo."""
    out: dict[str, list[str]] = {}
    for item in items or []:
        algo, sep, rest = item.partition("=")
        if not sep or not algo:
            raise argparse.ArgumentTypeError(f"--extra-args expects ALGO=ARGS, got {item!r}")
        out.setdefault(algo, []).extend(shlex.split(rest))
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)``: the I-th (1-based) of N parts of a sweep."""
    parts = text.split("/")
    try:
        index, count = (int(part) for part in parts) if len(parts) == 2 else (0, 0)
    except ValueError:
        index, count = 0, 0
    if not 1 <= index <= count:
        raise argparse.ArgumentTypeError(
            f"--shard must be I/N with whole numbers 1 <= I <= N (e.g. 1/4), got {text!r}"
        )
    return index, count


def _flatten(values: list[list[str]] | None) -> list[str]:
    return [v for group in values or [] for v in group]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train algos x envs x seeds with `python -m rl_zoo3.train` and summarise the evals.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--algos", nargs="+", help="rl_zoo3 algo names (e.g. s2ac sac td3)")
    p.add_argument("--envs", nargs="+", help="gymnasium env ids")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds, one run per seed")
    p.add_argument("--timesteps", "-n", type=int, help="training env steps per run (rl_zoo3 -n)")
    p.add_argument("--out", required=True, help="output folder (runs, logs and summaries)")
    p.add_argument("--eval-freq", type=int, default=500, help="evaluate every N env steps")
    p.add_argument("--eval-episodes", type=int, default=5, help="episodes per evaluation")
    p.add_argument("--jobs", type=int, default=1, help="runs executed in parallel (each single-threaded)")
    p.add_argument("--num-threads", type=int, default=1, help="rl_zoo3 --num-threads for every run")
    p.add_argument(
        "--device", default=None, help="rl_zoo3 --device (not passed when omitted: rl_zoo3 'auto')"
    )
    p.add_argument(
        "--threshold",
        nargs="+",
        action="append",
        metavar="ENV=VALUE",
        help="return threshold per env for the steps-to-threshold column, e.g. Pendulum-v1=-200",
    )
    p.add_argument(
        "--hyperparams",
        nargs="+",
        action="append",
        metavar="ALGO:KEY:VALUE",
        help="per-algo rl_zoo3 --hyperparams overrides; ALGO 'all' applies to every algo",
    )
    p.add_argument(
        "--extra-args",
        nargs="+",
        action="append",
        metavar="ALGO=ARGS",
        help="raw extra rl_zoo3.train arguments per algo (shell-split), e.g. "
        "'s2ac=--conf-file hyperparams/s2ac.yml'; ALGO 'all' applies to every algo",
    )
    p.add_argument("--baseline", default="sac", help="algo the timing ratios are relative to")
    p.add_argument("--python", default=sys.executable, help="interpreter used for the rl_zoo3 subprocesses")
    p.add_argument(
        "--timeout", type=float, default=None, help="per-run timeout in seconds (counts as failed)"
    )
    p.add_argument(
        "--shard",
        type=parse_shard,
        default=None,
        metavar="I/N",
        help="run only the I-th of N disjoint parts of the sweep (the same command on N machines splits "
        "it; run i takes every N-th (algo, env, seed) of the algo-major list, so every part has about "
        "the same share of each algo); the summary is left to --report-only --merge",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="FOLDER",
        help="with --report-only: copy the runs of these --out folders (e.g. the shards') into --out first",
    )
    p.add_argument("--report-only", action="store_true", help="only rebuild summary.md/json/png from --out")
    p.add_argument("--dry-run", action="store_true", help="print the commands that would run, run nothing")
    p.add_argument("--rerun", action="store_true", help="re-run even runs that already have a done marker")
    p.add_argument(
        "--delete-models",
        action="store_true",
        help="delete *.zip / replay buffers from a run folder after a successful run (keeps results small)",
    )
    p.add_argument(
        "--table-every", type=int, default=None, help="column spacing (env steps) of the return table"
    )
    p.add_argument("--max-columns", type=int, default=10, help="max step columns in the auto-spaced table")
    p.add_argument(
        "--best-fraction",
        type=float,
        default=0.8,
        help="report the share of the budget each run needs to reach this fraction of the best return "
        "seen on the env (measured from the median first evaluation)",
    )
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.thresholds = parse_thresholds(_flatten(args.threshold))
        args.hyperparams_map = parse_hyperparams(_flatten(args.hyperparams))
        args.extra_args_map = parse_extra_args(_flatten(args.extra_args))
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    if not args.report_only:
        missing = [name for name in ("algos", "envs", "seeds", "timesteps") if getattr(args, name) is None]
        if missing:
            parser.error(
                "the following arguments are required unless --report-only: "
                + ", ".join("--" + m for m in missing)
            )
        if args.timesteps <= 0:
            parser.error("--timesteps must be positive")
    if args.shard and args.report_only:
        parser.error("--shard splits training; --report-only reads every run (merge the shards with --merge)")
    if args.merge and not args.report_only:
        parser.error("--merge goes with --report-only (train each part first, then merge)")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    if args.eval_freq <= 0:
        parser.error("--eval-freq must be positive (evaluations are what this script summarises)")
    if not 0.0 < args.best_fraction <= 1.0:
        parser.error(f"--best-fraction must be in (0, 1], got {args.best_fraction}")
    known = set(args.algos or []) | {"all"}
    for name, mapping in (("--hyperparams", args.hyperparams_map), ("--extra-args", args.extra_args_map)):
        unknown = sorted(set(mapping) - known)
        if unknown and args.algos:
            parser.error(f"{name} names algos not in --algos: {', '.join(unknown)}")
    return args


# ---------------------------------------------------------------------------
# Runs, markers and commands
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    algo: str
    env: str
    seed: int

    @property
    def env_name(self) -> str:
        return env_folder_name(self.env)

    def log_folder(self, out: Path) -> Path:
        """rl_zoo3 ``-f`` folder: one per seed so exp ids of different seeds never mix."""
        return out / "logs" / f"seed_{self.seed}"

    def algo_log_path(self, out: Path) -> Path:
        return self.log_folder(out) / self.algo

    def marker_path(self, out: Path) -> Path:
        return out / "runs" / self.algo / self.env_name / f"seed_{self.seed}.json"

    def stdout_path(self, out: Path) -> Path:
        return self.marker_path(out).with_suffix(".log")

    @property
    def label(self) -> str:
        return f"{self.algo} {self.env} seed={self.seed}"


def zoo_args(spec: RunSpec, args: argparse.Namespace, out: Path) -> list[str]:
    """Arguments after ``python -m rl_zoo3.train`` for one run."""
    cmd = [
        "--algo", spec.algo,
        "--env", spec.env,
        "--seed", str(spec.seed),
        "-n", str(args.timesteps),
        "--num-threads", str(args.num_threads),
        "-f", str(spec.log_folder(out)),
        # rl_zoo3 divides --eval-freq by n_envs itself, so this is in env steps
        "--eval-freq", str(args.eval_freq),
        "--eval-episodes", str(args.eval_episodes),
    ]  # fmt: skip
    if args.device:
        cmd += ["--device", args.device]
    hps = args.hyperparams_map.get("all", []) + args.hyperparams_map.get(spec.algo, [])
    if hps:
        cmd += ["--hyperparams", *hps]
    cmd += args.extra_args_map.get("all", []) + args.extra_args_map.get(spec.algo, [])
    return cmd


def full_command(spec: RunSpec, args: argparse.Namespace, out: Path) -> list[str]:
    return [args.python, "-m", "rl_zoo3.train", *zoo_args(spec, args, out)]


def list_run_dirs(spec: RunSpec, out: Path) -> list[Path]:
    """rl_zoo3 run folders ``<EnvName>_<id>`` of this spec, sorted by id (same rule as get_latest_run_id)."""
    base = spec.algo_log_path(out)
    found: list[tuple[int, Path]] = []
    for path in glob.glob(os.path.join(glob.escape(str(base)), glob.escape(spec.env_name) + "_[0-9]*")):
        run_id = path.split("_")[-1]
        if path[: -len(run_id) - 1].endswith(spec.env_name) and run_id.isdigit() and os.path.isdir(path):
            found.append((int(run_id), Path(path)))
    return [p for _, p in sorted(found)]


def load_marker(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def _comparable(zoo: Sequence[str]) -> list[str]:
    """rl_zoo3 args without the ``-f`` value (the same --out may be spelled differently)."""
    out: list[str] = []
    skip = False
    for item in zoo:
        if skip:
            skip = False
            continue
        if item in ("-f", "--log-folder"):
            skip = True
            continue
        out.append(item)
    return out


def run_status(spec: RunSpec, args: argparse.Namespace, out: Path) -> tuple[str, dict[str, Any] | None]:
    """Decide what to do with a run.

    Returns ``("done", marker)`` (skip), ``("mismatch", marker)`` (done with other zoo args),
    ``("failed", marker)`` (previous attempt failed: retried) or ``("todo", None)``.
    """
    marker = load_marker(spec.marker_path(out))
    if marker is None:
        return "todo", None
    if marker.get("status") != "ok":
        return "failed", marker
    run_dir = marker.get("run_dir")
    if not run_dir or not (out / run_dir / "evaluations.npz").is_file():
        return "todo", marker
    if _comparable(marker.get("zoo_args") or []) != _comparable(zoo_args(spec, args, out)):
        return "mismatch", marker
    return "done", marker


def machine_info(jobs: int | None = None, num_threads: int | None = None) -> dict[str, Any]:
    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    cpu_model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": version("torch"),
        "stable_baselines3": version("stable_baselines3"),
        "rl_zoo3": version("rl_zoo3"),
        "gymnasium": version("gymnasium"),
        "numpy": version("numpy"),
        "sb3_stein": version("sb3-stein"),
        "child_env": dict(CHILD_ENV),
    }
    if jobs is not None:
        info["jobs"] = jobs
    if num_threads is not None:
        info["torch_threads_per_run"] = num_threads
    return info


def git_revision(cwd: Path) -> str | None:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def compare_command_line(argv: Sequence[str] | None = None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    script = sys.argv[0] if sys.argv and sys.argv[0].endswith("compare.py") else "benchmarks/compare.py"
    return shlex.join(["python", script, *argv])


_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()
_stop = threading.Event()


def execute_run(
    spec: RunSpec, args: argparse.Namespace, out: Path, compare_cmd: str, extra_info: dict[str, Any]
) -> dict[str, Any]:
    """Run one rl_zoo3 training subprocess and write its marker (status ok / failed)."""
    cmd = full_command(spec, args, out)
    before = {p.name for p in list_run_dirs(spec, out)}
    log_path = spec.stdout_path(out)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **CHILD_ENV}
    started = now_iso()
    t0 = time.perf_counter()
    rc: int | None = None
    error = None
    with open(log_path, "w") as log:
        log.write(f"# {shlex.join(cmd)}\n")
        log.flush()
        # own session: a Ctrl-C on compare.py must not reach rl_zoo3, which would catch it,
        # save the half-trained model and exit 0 (a truncated run must never look finished)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        with _children_lock:
            _children.add(proc)
        try:
            rc = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
            error = f"timeout after {args.timeout} s"
        finally:
            with _children_lock:
                _children.discard(proc)
    wall = time.perf_counter() - t0
    new_dirs = [p for p in list_run_dirs(spec, out) if p.name not in before]
    run_dir = new_dirs[-1] if new_dirs else None
    if _stop.is_set():
        error = f"interrupted (return code {rc})"
    if error is None and rc != 0:
        error = f"return code {rc}"
    if error is None and (run_dir is None or not (run_dir / "evaluations.npz").is_file()):
        error = "no evaluations.npz in a new run folder (is --eval-freq larger than --timesteps?)"
    marker: dict[str, Any] = {
        "version": MARKER_VERSION,
        "status": "ok" if error is None else "failed",
        "error": error,
        "algo": spec.algo,
        "env": spec.env,
        "seed": spec.seed,
        "timesteps": args.timesteps,
        "eval_freq": args.eval_freq,
        "eval_episodes": args.eval_episodes,
        "command": shlex.join(cmd),
        "zoo_args": zoo_args(spec, args, out),
        "cwd": os.getcwd(),
        "compare_command": compare_cmd,
        "returncode": rc,
        "wall_s": wall,
        "started": started,
        "finished": now_iso(),
        "run_dir": os.path.relpath(run_dir, out) if run_dir else None,
        "log": os.path.relpath(log_path, out),
        "jobs": args.jobs,
        "machine": extra_info,
    }
    if error is None and args.delete_models and run_dir is not None:
        for pattern in ("*.zip", "replay_buffer.pkl", "**/*.zip"):
            for f in run_dir.glob(pattern):
                f.unlink(missing_ok=True)
    write_json(spec.marker_path(out), marker)
    return marker


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the process group of a run we started (it runs in its own session)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _terminate_children() -> None:
    with _children_lock:
        procs = list(_children)
    for proc in procs:
        _kill_group(proc, signal.SIGTERM)


def run_all(
    specs: list[RunSpec], args: argparse.Namespace, out: Path, compare_cmd: str
) -> list[dict[str, Any]]:
    info = machine_info(args.jobs, args.num_threads)
    info["git"] = git_revision(Path.cwd())
    total = len(specs)
    results: list[dict[str, Any]] = []
    counter = {"n": 0}
    lock = threading.Lock()

    def job(spec: RunSpec) -> dict[str, Any]:
        if _stop.is_set():
            return {"status": "cancelled"}
        print(f"[start] {spec.label}", flush=True)
        marker = execute_run(spec, args, out, compare_cmd, info)
        with lock:
            counter["n"] += 1
            state = "ok" if marker["status"] == "ok" else f"FAILED ({marker['error']})"
            print(
                f"[{counter['n']}/{total}] {spec.label}: {state} in {marker['wall_s']:.1f} s"
                f" -> {marker['run_dir']} (log: {out / marker['log']})",
                flush=True,
            )
        return marker

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs)
    try:
        futures = [pool.submit(job, s) for s in specs]
        for fut in futures:
            while True:
                try:
                    results.append(fut.result(timeout=0.5))
                    break
                except concurrent.futures.TimeoutError:
                    continue
    except KeyboardInterrupt:
        _stop.set()
        print("\nInterrupted: stopping running trainings (they will be re-run next time).", flush=True)
        _terminate_children()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


# ---------------------------------------------------------------------------
# Reading results
# ---------------------------------------------------------------------------


def load_evaluations(path: Path) -> dict[str, np.ndarray]:
    """Timesteps, per-eval mean/std return, raw episode returns and (when recorded) the success rate
    of each evaluation from an ``evaluations.npz``."""
    with np.load(path) as data:
        timesteps = np.asarray(data["timesteps"], dtype=np.int64).reshape(-1)
        results = np.asarray(data["results"], dtype=np.float64)
        # EvalCallback stores per-episode success flags when the env reports info["is_success"]
        successes = np.asarray(data["successes"], dtype=np.float64) if "successes" in data else None
    if results.ndim == 1:
        results = results[:, None]
    results = results.reshape(len(timesteps), -1)
    ev = {
        "timesteps": timesteps,
        "mean": results.mean(axis=1) if results.size else np.zeros(0),
        "std": results.std(axis=1) if results.size else np.zeros(0),
        "results": results,
    }
    if successes is not None and successes.size:
        ev["success_rate"] = successes.reshape(len(timesteps), -1).mean(axis=1)
    return ev


def read_monitor_timing(run_dir: Path) -> dict[str, Any] | None:
    """Training time from the SB3 ``*.monitor.csv`` files of a run.

    ``t_start`` (header) is written when rl_zoo3 creates the training env, each row's ``t`` is
    the time since then at an episode end.  The span from the earliest ``t_start`` to the last
    episode end covers model construction + training (periodic evaluations included) but not
    interpreter start-up, imports and the final model save.  It is divided by the env steps of
    the completed episodes (sum of ``l``) so that a trailing partial episode does not bias it.
    """
    files = sorted(run_dir.glob("*.monitor.csv"))
    if not files:
        return None
    starts: list[float] = []
    ends: list[float] = []
    steps = 0
    episodes = 0
    for file in files:
        with open(file) as f:
            first = f.readline()
            if not first.startswith("#"):
                continue
            try:
                t_start = float(json.loads(first[1:])["t_start"])
            except (ValueError, KeyError, TypeError):
                continue
            last_t = 0.0
            for row in csv.DictReader(f):
                try:
                    steps += int(float(row["l"]))
                    last_t = max(last_t, float(row["t"]))
                    episodes += 1
                except (KeyError, TypeError, ValueError):
                    continue
        starts.append(t_start)
        ends.append(t_start + last_t)
    if not starts or steps == 0:
        return None
    train_s = max(ends) - min(starts)
    return {"train_s": train_s, "monitor_steps": steps, "episodes": episodes, "n_monitor_files": len(files)}


def steps_to_threshold(timesteps: np.ndarray, means: np.ndarray, threshold: float) -> int | None:
    """First eval timestep whose mean eval return is >= threshold (None: not reached)."""
    hits = np.flatnonzero(np.asarray(means) >= threshold)
    return int(np.asarray(timesteps)[hits[0]]) if hits.size else None


def fraction_of_best_threshold(first_returns: Sequence[float], best_return: float, fraction: float) -> float:
    """Return level ``R0 + fraction * (R* - R0)``: ``R*`` is the best evaluation any run reached on the
    env, ``R0`` the median first evaluation (an untrained policy). With ``R0 = 0`` this is the paper's
    "80 % of the optimal return" (Q-STAC Fig. 4a); measuring from ``R0`` keeps it meaningful for
    negative returns, where ``0.8 * R*`` would lie above ``R*``."""
    start = float(np.median(first_returns))
    return start + fraction * (best_return - start)


def value_at(timesteps: np.ndarray, values: np.ndarray, step: float) -> float:
    """Latest evaluation at or before ``step`` (NaN if none yet)."""
    idx = int(np.searchsorted(timesteps, step, side="right")) - 1
    return float(values[idx]) if idx >= 0 else math.nan


def aggregate_curves(curves: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, list[Any]]:
    """Median and min/max over seeds on the union of eval timesteps.

    Each seed is held at its latest evaluation between its own eval points; the grid stops at
    the shortest seed's last evaluation so no seed is extrapolated.
    """
    curves = [(np.asarray(t), np.asarray(v)) for t, v in curves if len(t)]
    if not curves:
        return {"timesteps": [], "median": [], "min": [], "max": [], "n": []}
    end = min(int(t[-1]) for t, _ in curves)
    grid = np.unique(np.concatenate([t for t, _ in curves]))
    grid = grid[grid <= end]
    table = np.array([[value_at(t, v, s) for s in grid] for t, v in curves])
    n = np.sum(~np.isnan(table), axis=0)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(table, axis=0)
            lo = np.nanmin(table, axis=0)
            hi = np.nanmax(table, axis=0)
    return {
        "timesteps": [int(s) for s in grid],
        "median": [_num(x) for x in med],
        "min": [_num(x) for x in lo],
        "max": [_num(x) for x in hi],
        "n": [int(x) for x in n],
    }


def _num(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def median_or_none(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.median(vals)) if vals else None


def threshold_median(per_seed: Sequence[float | None]) -> float | None:
    """Median steps-to-threshold over seeds, "not reached" counted as +inf (None if median is inf)."""
    if not per_seed:
        return None
    vals = np.array([math.inf if v is None else float(v) for v in per_seed])
    med = float(np.median(vals))
    return None if math.isinf(med) or math.isnan(med) else med


def choose_columns(max_step: int, eval_spacing: int, max_columns: int, every: int | None = None) -> list[int]:
    """Step columns for the return table: multiples of a "nice" spacing (1, 2, 2.5, 5 x 10^k).

    The spacing is the smallest nice value >= the eval spacing giving at most ``max_columns``.
    """
    if max_step <= 0:
        return []
    if every is None:
        every = 1
        exponent = 0
        while True:
            candidates = [int(m * 10**exponent) for m in NICE_MANTISSAS]
            ok = [c for c in candidates if c >= max(eval_spacing, 1) and max_step // c <= max_columns]
            if ok:
                every = ok[0]
                break
            exponent += 1
    return list(range(every, max_step + 1, every))


def shard_specs(specs: Sequence[RunSpec], index: int, count: int) -> list[RunSpec]:
    """The ``index``-th (1-based) of ``count`` disjoint parts of ``specs``: every ``count``-th run of the
    algo-major order (so each part holds about ``1/count`` of every algo's runs), returned in the
    order of ``specs``. The same arguments give the same parts on every machine."""
    algo_major = sorted(specs, key=lambda s: (s.algo, s.env, s.seed))
    chosen = set(algo_major[index - 1 :: count])
    return [s for s in specs if s in chosen]


def _run_files(out: Path, marker_path: Path) -> tuple[dict[str, Any] | None, list[Path]]:
    """A marker and the files that belong to its run (marker, stdout log, run folder), relative to ``out``."""
    marker = load_marker(marker_path)
    files = [marker_path.relative_to(out)]
    if marker:
        for key in ("log", "run_dir"):
            if marker.get(key) and (out / marker[key]).exists():
                files.append(Path(marker[key]))
    return marker, files


def merge_folders(out: Path, sources: Sequence[Path]) -> int:
    """Copy every run of ``sources`` (``--out`` folders of compare.py) into ``out``; returns the number
    copied. Checks everything first: a run present in two folders with different markers, or a source
    without runs, raises ``ValueError`` before anything is written."""
    seen: dict[Path, tuple[Path, dict[str, Any]]] = {}  # marker path (relative) -> (folder, marker)
    plan: list[tuple[Path, list[Path]]] = []  # (source folder, files to copy)
    for source in sources:
        markers = sorted((source / "runs").glob("*/*/seed_*.json"))
        if not markers:
            raise ValueError(f"--merge: {source} has no runs (no {source / 'runs'}/<algo>/<env>/seed_*.json)")
        for marker_path in markers:
            rel = marker_path.relative_to(source)
            marker, files = _run_files(source, marker_path)
            if marker is None:
                raise ValueError(f"--merge: {marker_path} is not a readable marker")
            existing = load_marker(out / rel)
            for other, other_marker in (seen.get(rel, (source, marker)), (out, existing or marker)):
                if other_marker != marker:
                    raise ValueError(
                        f"--merge: {marker.get('algo')} {marker.get('env')} seed={marker.get('seed')} is in "
                        f"both {source} and {other} with different results; keep one of them"
                    )
            if existing is None and rel not in seen:
                plan.append((source, files))
            seen.setdefault(rel, (source, marker))
    for source, files in plan:
        for rel in files:
            src, dst = source / rel, out / rel
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    return len(plan)


def discover_specs(out: Path) -> list[RunSpec]:
    """All (algo, env, seed) with a marker under ``<out>/runs`` (for --report-only without lists)."""
    specs = []
    for path in sorted((out / "runs").glob("*/*/seed_*.json")):
        marker = load_marker(path)
        if marker and {"algo", "env", "seed"} <= marker.keys():
            specs.append(RunSpec(str(marker["algo"]), str(marker["env"]), int(marker["seed"])))
    return specs


def _ordered_unique(items: Sequence[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def collect_run(spec: RunSpec, out: Path) -> dict[str, Any]:
    """Everything known about one run (marker + evaluations + monitor timing)."""
    marker = load_marker(spec.marker_path(out))
    rec: dict[str, Any] = {
        "seed": spec.seed,
        "status": "missing",
        "marker": os.path.relpath(spec.marker_path(out), out),
    }
    run_dir: Path | None = None
    if marker is not None:
        rec["status"] = marker.get("status", "unknown")
        for key in (
            "error",
            "command",
            "compare_command",
            "returncode",
            "wall_s",
            "started",
            "finished",
            "timesteps",
            "eval_freq",
            "eval_episodes",
            "log",
            "jobs",
            "machine",
        ):
            rec[key] = marker.get(key)
        if marker.get("run_dir"):
            run_dir = out / marker["run_dir"]
    else:
        # no marker (e.g. runs made by hand with the same -f layout): latest run folder with evaluations
        for cand in reversed(list_run_dirs(spec, out)):
            if (cand / "evaluations.npz").is_file():
                run_dir = cand
                rec["status"] = "unmarked"
                break
    rec["run_dir"] = os.path.relpath(run_dir, out) if run_dir else None
    if rec["status"] in ("ok", "unmarked") and run_dir is not None:
        npz = run_dir / "evaluations.npz"
        if not npz.is_file():
            rec["status"] = "failed"
            rec["error"] = f"missing {npz}"
            return rec
        ev = load_evaluations(npz)
        rec["eval_timesteps"] = [int(t) for t in ev["timesteps"]]
        rec["eval_mean"] = [float(x) for x in ev["mean"]]
        rec["eval_std"] = [float(x) for x in ev["std"]]
        rec["eval_results"] = [[float(x) for x in row] for row in ev["results"]]
        if "success_rate" in ev:
            rec["eval_success_rate"] = [float(x) for x in ev["success_rate"]]
        timing = read_monitor_timing(run_dir)
        if timing:
            rec.update(timing)
        steps = rec.get("timesteps")
        if steps is None and rec["eval_timesteps"]:
            steps = rec["eval_timesteps"][-1]
            rec["timesteps"] = steps
        if rec.get("wall_s") is not None and steps:
            rec["wall_s_per_1k"] = rec["wall_s"] / steps * 1000.0
        if timing and timing["monitor_steps"]:
            rec["train_s_per_1k"] = timing["train_s"] / timing["monitor_steps"] * 1000.0
    return rec


def is_usable(run: dict[str, Any]) -> bool:
    """A run that enters the statistics: finished successfully (or unmarked) with evaluations."""
    return run["status"] in ("ok", "unmarked") and bool(run.get("eval_timesteps"))


def summarize(
    out: Path,
    specs: list[RunSpec],
    thresholds: dict[str, float],
    baseline: str = "sac",
    max_columns: int = 10,
    table_every: int | None = None,
    best_fraction: float = 0.8,
) -> dict[str, Any]:
    algos = _ordered_unique([s.algo for s in specs])
    envs = _ordered_unique([s.env for s in specs])
    seeds = _ordered_unique([s.seed for s in specs])
    summary: dict[str, Any] = {
        "algos": algos,
        "envs": envs,
        "seeds": seeds,
        "baseline": baseline,
        "envs_data": {},
    }
    problems: list[dict[str, Any]] = []
    for env in envs:
        thr = thresholds.get(env)
        env_data: dict[str, Any] = {"threshold": thr, "algos": {}}
        for algo in algos:
            runs = [collect_run(s, out) for s in specs if s.env == env and s.algo == algo]
            good = [r for r in runs if is_usable(r)]
            for r in runs:
                if not is_usable(r):
                    keys = ("seed", "status", "error", "returncode", "log", "marker")
                    problems.append({"algo": algo, "env": env, **{k: r.get(k) for k in keys}})
            curves = [(np.array(r["eval_timesteps"]), np.array(r["eval_mean"])) for r in good]
            finals = [r["eval_mean"][-1] for r in good]
            agg: dict[str, Any] = {
                "n_ok": len(good),
                "n_runs": len(runs),
                "seeds_ok": [r["seed"] for r in good],
                "curve": aggregate_curves(curves),
                "final_return": {
                    "median": median_or_none(finals),
                    "min": min(finals) if finals else None,
                    "max": max(finals) if finals else None,
                    "per_seed": finals,
                    "final_timesteps": [r["eval_timesteps"][-1] for r in good],
                },
                "wall_s_per_1k": median_or_none([r.get("wall_s_per_1k") for r in good]),
                "train_s_per_1k": median_or_none([r.get("train_s_per_1k") for r in good]),
                "wall_s_per_1k_per_seed": [r.get("wall_s_per_1k") for r in good],
                "train_s_per_1k_per_seed": [r.get("train_s_per_1k") for r in good],
            }
            if thr is not None:
                per_seed = [
                    steps_to_threshold(np.array(r["eval_timesteps"]), np.array(r["eval_mean"]), thr)
                    for r in good
                ]
                agg["steps_to_threshold"] = {
                    "threshold": thr,
                    "median": threshold_median(per_seed),
                    "per_seed": per_seed,
                    "n_reached": sum(v is not None for v in per_seed),
                }
            rates = [r["eval_success_rate"][-1] for r in good if r.get("eval_success_rate")]
            if rates:
                agg["final_success_rate"] = {
                    "median": median_or_none(rates),
                    "min": min(rates),
                    "max": max(rates),
                    "per_seed": rates,
                }
            env_data["algos"][algo] = {"aggregate": agg, "runs": runs}
        all_good = [r for a in env_data["algos"].values() for r in a["runs"] if is_usable(r)]
        if all_good:
            firsts = [r["eval_mean"][0] for r in all_good]
            best = max(max(r["eval_mean"]) for r in all_good)
            level = fraction_of_best_threshold(firsts, best, best_fraction)
            env_data["fraction_of_best"] = {"fraction": best_fraction, "return": level}
            for algo_data in env_data["algos"].values():
                good = [r for r in algo_data["runs"] if is_usable(r)]
                per_seed = [
                    steps_to_threshold(np.array(r["eval_timesteps"]), np.array(r["eval_mean"]), level)
                    for r in good
                ]
                shares = [
                    None if steps is None else steps / (r.get("timesteps") or r["eval_timesteps"][-1])
                    for steps, r in zip(per_seed, good)
                ]
                algo_data["aggregate"]["steps_to_fraction_of_best"] = {
                    "return": level,
                    "per_seed": per_seed,
                    "share_per_seed": shares,
                    "median_share": threshold_median(shares),
                    "n_reached": sum(v is not None for v in per_seed),
                }
        # ratios to the baseline for the same env
        base = env_data["algos"].get(baseline, {}).get("aggregate")
        for algo_data in env_data["algos"].values():
            agg = algo_data["aggregate"]
            for key in ("wall_s_per_1k", "train_s_per_1k"):
                b = base.get(key) if base else None
                agg[f"{key}_ratio_to_{baseline}"] = agg[key] / b if (b and agg[key] is not None) else None
        # table columns
        ends = [
            r["eval_timesteps"][-1]
            for a in env_data["algos"].values()
            for r in a["runs"]
            if r.get("eval_timesteps")
        ]
        spacings = [
            int(np.median(np.diff(r["eval_timesteps"])))
            if len(r["eval_timesteps"]) > 1
            else r["eval_timesteps"][0]
            for a in env_data["algos"].values()
            for r in a["runs"]
            if r.get("eval_timesteps")
        ]
        cols = choose_columns(
            max(ends) if ends else 0, min(spacings) if spacings else 1, max_columns, table_every
        )
        env_data["table_steps"] = cols
        for algo_data in env_data["algos"].values():
            good = [r for r in algo_data["runs"] if is_usable(r)]
            table = []
            for step in cols:
                vals = [
                    value_at(np.array(r["eval_timesteps"]), np.array(r["eval_mean"]), step)
                    for r in good
                    if r["eval_timesteps"][-1] >= step
                ]
                vals = [v for v in vals if not math.isnan(v)]
                table.append(
                    {
                        "step": step,
                        "median": median_or_none(vals),
                        "min": min(vals) if vals else None,
                        "max": max(vals) if vals else None,
                        "n": len(vals),
                    }
                )
            algo_data["aggregate"]["table"] = table
        summary["envs_data"][env] = env_data
    summary["problems"] = problems
    return summary


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def fmt_steps(step: float) -> str:
    step = float(step)
    if step >= 1e6 and step % 1e5 == 0:
        return f"{step / 1e6:g}M"
    if step >= 1000 and step % 100 == 0:
        return f"{step / 1000:g}k"
    return f"{int(step)}"


def fmt_ret(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def fmt_range(median: float | None, lo: float | None, hi: float | None, n: int, n_total: int) -> str:
    if median is None:
        return "–"
    cell = f"{median:.1f} [{lo:.1f}, {hi:.1f}]" if n > 1 else f"{median:.1f}"
    if n < n_total:
        cell += f" (n={n})"
    return cell


def fmt_time(value: float | None, ratio: float | None, baseline: str, is_baseline: bool) -> str:
    if value is None:
        return "–"
    cell = f"{value:.2f}"
    if ratio is not None and not is_baseline:
        cell += f" ({ratio:.2f}× {baseline})"
    return cell


def render_markdown(summary: dict[str, Any], header: dict[str, Any]) -> str:
    baseline = summary["baseline"]
    lines = ["# Algorithm comparison", ""]
    lines += [
        f"- **Command**: `{header['command']}`",
        f"- **Generated**: {header['date']}" + (" (report only)" if header.get("report_only") else ""),
    ]
    if header.get("git"):
        lines.append(f"- **Git revision(s) of the runs**: `{header['git']}`")
    m = header["machine"]
    lines.append(
        f"- **Machine**: nproc={m.get('nproc')} ({m.get('cpu_model') or 'unknown CPU'}), "
        f"{m.get('platform')}, "
        f"Python {m.get('python')}, torch {m.get('torch')}, stable-baselines3 {m.get('stable_baselines3')}, "
        f"rl_zoo3 {m.get('rl_zoo3')}"
    )
    jobs = ", ".join(map(str, header.get("jobs_used") or [m.get("jobs", "?")]))
    lines.append(
        f"- **Per run**: torch threads={m.get('torch_threads_per_run', '?')} (rl_zoo3 --num-threads), "
        + ", ".join(f"{k}={v}" for k, v in CHILD_ENV.items())
        + f"; concurrent runs (--jobs) = {jobs}"
    )
    settings = header.get("settings") or {}
    if settings:
        lines.append("- **Settings**: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    if header.get("training_commands"):
        lines.append("- **Runs produced by**: " + "; ".join(f"`{c}`" for c in header["training_commands"]))
    lines.append("")
    lines.append(
        "Returns are the mean over the evaluation episodes of one evaluation (deterministic policy, "
        "rl_zoo3 `EvalCallback`), then aggregated over seeds as **median [min, max]**. "
        "Timing: *wall* = whole `rl_zoo3.train` subprocess, *train* = span of the training env's "
        f"Monitor timestamps (model setup + training + periodic evals), both in seconds per 1k env steps; "
        f"`(r× {baseline})` is the ratio of medians to `{baseline}` on the same env. Timing ratios are only "
        "comparable between runs made with the same `--jobs` on the same machine. See benchmarks/README.md."
    )
    lines.append("")
    for env in summary["envs"]:
        env_data = summary["envs_data"][env]
        thr = env_data["threshold"]
        lines += [f"## {env}", ""]
        lines += ["### Evaluation return (median [min, max] over seeds)", ""]
        cols = env_data["table_steps"]
        lines.append("| algo | " + " | ".join(fmt_steps(c) for c in cols) + " | final |")
        lines.append("|---|" + "---:|" * (len(cols) + 1))
        for algo in summary["algos"]:
            agg = env_data["algos"][algo]["aggregate"]
            cells = [fmt_range(c["median"], c["min"], c["max"], c["n"], agg["n_ok"]) for c in agg["table"]]
            fr = agg["final_return"]
            final_steps = _ordered_unique(fr["final_timesteps"])
            final = fmt_range(fr["median"], fr["min"], fr["max"], agg["n_ok"], agg["n_ok"])
            if final_steps and fr["median"] is not None:
                final += " @" + "/".join(fmt_steps(s) for s in final_steps)
            lines.append(f"| {algo} | " + " | ".join(cells) + f" | {final} |")
        lines.append("")
        lines += ["### Summary", ""]
        thr_head = f" steps to ≥ {thr:g} (median; per seed) |" if thr is not None else ""
        fob = env_data.get("fraction_of_best")
        fob_head = (
            f" share of steps to {fob['fraction']:.0%} of best (≥ {fob['return']:.1f}; median; per seed) |"
            if fob
            else ""
        )
        has_success = any("final_success_rate" in a["aggregate"] for a in env_data["algos"].values())
        success_head = " final success rate |" if has_success else ""
        lines.append(
            f"| algo | seeds ok | final return |{success_head} best eval return |{thr_head}{fob_head} "
            "wall s/1k steps | train s/1k steps |"
        )
        n_extra = (thr is not None) + bool(fob) + has_success
        lines.append("|---|---:|---:|---:|" + "---:|" * n_extra + "---:|---:|")
        for algo in summary["algos"]:
            data = env_data["algos"][algo]
            agg = data["aggregate"]
            good = [r for r in data["runs"] if is_usable(r)]
            fr = agg["final_return"]
            final = fmt_range(fr["median"], fr["min"], fr["max"], agg["n_ok"], agg["n_ok"])
            bests = [max(r["eval_mean"]) for r in good]
            best = fmt_range(
                median_or_none(bests),
                min(bests, default=None),
                max(bests, default=None),
                len(bests),
                len(bests),
            )
            row = f"| {algo} | {agg['n_ok']}/{agg['n_runs']} | {final} |"
            if has_success:
                sr = agg.get("final_success_rate")
                row += " – |" if sr is None else f" {sr['median']:.0%} [{sr['min']:.0%}, {sr['max']:.0%}] |"
            row += f" {best} |"
            if thr is not None:
                st = agg["steps_to_threshold"]
                per = ", ".join("n/r" if v is None else fmt_steps(v) for v in st["per_seed"])
                med = "not reached" if st["median"] is None else fmt_steps(st["median"])
                if not st["per_seed"]:
                    med = "–"
                row += f" {med} ({per}; {st['n_reached']}/{len(st['per_seed'])} reached) |"
            if fob:
                sf = agg["steps_to_fraction_of_best"]
                per = ", ".join("n/r" if v is None else f"{v:.0%}" for v in sf["share_per_seed"])
                med = "not reached" if sf["median_share"] is None else f"{sf['median_share']:.0%}"
                if not sf["share_per_seed"]:
                    med = "–"
                row += f" {med} ({per}) |"
            is_base = algo == baseline
            row += (
                " "
                + fmt_time(
                    agg["wall_s_per_1k"], agg.get(f"wall_s_per_1k_ratio_to_{baseline}"), baseline, is_base
                )
                + " |"
            )
            row += (
                " "
                + fmt_time(
                    agg["train_s_per_1k"], agg.get(f"train_s_per_1k_ratio_to_{baseline}"), baseline, is_base
                )
                + " |"
            )
            lines.append(row)
        lines.append("")
        if fob:
            lines.append(
                f"Share of steps to {fob['fraction']:.0%} of best: the first evaluation reaching "
                f"R0 + {fob['fraction']:g}·(R* − R0), as a share of the run's budget; "
                "R* = the best evaluation of any run on this env, "
                "R0 = the median first evaluation (Q-STAC paper, Fig. 4a)."
            )
            lines.append("")
        if has_success:
            lines.append(
                "Final success rate: share of the last evaluation's episodes with `info['is_success']`, "
                "median [min, max] over seeds."
            )
            lines.append("")
        if thr is not None:
            lines.append(
                f"Steps to ≥ {thr:g}: first evaluation whose mean return reaches the threshold; "
                "'n/r' = not reached within the run; the median counts n/r as infinite."
            )
            lines.append("")
    problems = summary.get("problems") or []
    if problems:
        lines += [
            "## Failed or missing runs",
            "",
            "| algo | env | seed | status | error | log |",
            "|---|---|---:|---|---|---|",
        ]
        for p in problems:
            lines.append(
                f"| {p['algo']} | {p['env']} | {p['seed']} | {p['status']} | {p.get('error') or ''} | "
                f"{p.get('log') or p.get('marker') or ''} |"
            )
        lines.append("")
    lines += [
        "## Runs",
        "",
        "| env | algo | seed | status | wall s | train s | monitor steps | evals | run folder |",
        "|---|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for env in summary["envs"]:
        for algo in summary["algos"]:
            for r in summary["envs_data"][env]["algos"][algo]["runs"]:
                wall = "–" if r.get("wall_s") is None else f"{r['wall_s']:.1f}"
                train = "–" if r.get("train_s") is None else f"{r['train_s']:.1f}"
                status = (
                    r["status"]
                    if r.get("returncode") in (0, None)
                    else f"{r['status']} (rc={r['returncode']})"
                )
                lines.append(
                    f"| {env} | {algo} | {r['seed']} | {status} | {wall} | {train} | "
                    f"{r.get('monitor_steps', '–')} | {len(r.get('eval_timesteps') or [])} | "
                    f"`{r.get('run_dir') or r.get('log') or ''}` |"
                )
    lines.append("")
    lines += [
        "## Files",
        "",
        "- `summary.json`: every number above plus the raw per-seed evaluation returns and timings.",
        "- `learning_curves.png`: median (line) and min–max over seeds (band) of the evaluation return.",
        "- `runs/<algo>/<EnvName>/seed_<S>.json|.log`: per-run marker (command, timings, return code)"
        " and output.",
        "- `logs/seed_<S>/<algo>/<EnvName>_<id>/`: the rl_zoo3 run folders (`evaluations.npz`, monitor,"
        " config).",
        "",
    ]
    return "\n".join(lines)


def plot_curves(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = summary["envs"]
    n = max(len(envs), 1)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4.0 * nrows), squeeze=False)
    for i, env in enumerate(envs):
        ax = axes[i // ncols][i % ncols]
        env_data = summary["envs_data"][env]
        for j, algo in enumerate(summary["algos"]):
            agg = env_data["algos"][algo]["aggregate"]
            curve = agg["curve"]
            if not curve["timesteps"]:
                continue
            x = np.array(curve["timesteps"], dtype=float)
            med = np.array([np.nan if v is None else v for v in curve["median"]], dtype=float)
            lo = np.array([np.nan if v is None else v for v in curve["min"]], dtype=float)
            hi = np.array([np.nan if v is None else v for v in curve["max"]], dtype=float)
            color = f"C{j % 10}"
            ax.plot(
                x, med, color=color, marker="." if len(x) < 30 else None, label=f"{algo} (n={agg['n_ok']})"
            )
            if agg["n_ok"] > 1:
                ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
        if env_data["threshold"] is not None:
            ax.axhline(env_data["threshold"], color="grey", linestyle="--", linewidth=1, label="threshold")
        ax.set_title(env)
        ax.set_xlabel("env steps")
        ax.set_ylabel("mean eval return")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    for k in range(len(envs), nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    fig.suptitle("median over seeds (line), min–max (band)", fontsize="medium")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    out: Path, specs: list[RunSpec], args: argparse.Namespace, compare_cmd: str
) -> dict[str, Any]:
    summary = summarize(
        out, specs, args.thresholds, args.baseline, args.max_columns, args.table_every, args.best_fraction
    )
    markers = [load_marker(s.marker_path(out)) for s in specs]
    markers_ok = [mk for mk in markers if mk]
    training_commands = _ordered_unique(
        [mk.get("compare_command") for mk in markers_ok if mk.get("compare_command")]
    )
    jobs_used = _ordered_unique([mk.get("jobs") for mk in markers_ok if mk.get("jobs") is not None])
    # machine the runs were trained on (first marker), else this machine
    trained_on = next((mk["machine"] for mk in markers_ok if mk.get("machine")), None)
    machine = trained_on or machine_info(args.jobs, args.num_threads)
    # Runs added in later sessions were trained on other commits: name each one, in run order.
    run_revisions = _ordered_unique([(mk.get("machine") or {}).get("git") for mk in markers_ok])
    run_revisions = [rev for rev in run_revisions if rev]
    settings: dict[str, Any] = {}
    for key in ("timesteps", "eval_freq", "eval_episodes"):
        vals = _ordered_unique([mk.get(key) for mk in markers_ok if mk.get(key) is not None])
        if vals:
            settings[key] = "/".join(map(str, vals))
    if args.thresholds:
        settings["thresholds"] = ", ".join(f"{k}={v:g}" for k, v in args.thresholds.items())
    header = {
        "command": compare_cmd,
        "date": now_iso(),
        "report_only": args.report_only,
        "git": ", ".join(run_revisions) or git_revision(Path.cwd()),
        "machine": machine,
        "jobs_used": jobs_used,
        "settings": settings,
        "training_commands": [c for c in training_commands if c != compare_cmd],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(render_markdown(summary, header))
    write_json(out / "summary.json", {"header": header, "thresholds": args.thresholds, **summary})
    plot_curves(summary, out / "learning_curves.png")
    return summary


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    compare_cmd = compare_command_line(argv)

    if not args.thresholds:
        # keep the thresholds of the previous summary when resuming / regenerating
        previous = load_marker(out / "summary.json") or {}
        args.thresholds = dict(previous.get("thresholds") or {})
        if args.thresholds:
            print(f"Reusing thresholds from {out / 'summary.json'}: {args.thresholds}")

    if args.report_only:
        if args.merge:
            try:
                copied = merge_folders(out, [Path(m) for m in args.merge])
            except ValueError as exc:
                print(exc, file=sys.stderr)
                return 2
            print(f"Merged {copied} run(s) from {', '.join(args.merge)} into {out}")
        if args.algos and args.envs and args.seeds:
            specs = [RunSpec(a, e, s) for e in args.envs for a in args.algos for s in args.seeds]
        else:
            specs = discover_specs(out)
            if args.algos:
                specs = [s for s in specs if s.algo in args.algos]
            if args.envs:
                specs = [s for s in specs if s.env in args.envs]
            if args.seeds:
                specs = [s for s in specs if s.seed in args.seeds]
        if not specs:
            print(f"No runs found under {out / 'runs'}", file=sys.stderr)
            return 2
    else:
        # seed-major order: an interrupted comparison already has every algo for the first seeds
        specs = [RunSpec(a, e, s) for s in args.seeds for e in args.envs for a in args.algos]
        if args.shard:
            specs = shard_specs(specs, *args.shard)
            print(f"Shard {args.shard[0]}/{args.shard[1]}: {len(specs)} run(s) of this sweep", flush=True)

        todo: list[RunSpec] = []
        mismatched: list[tuple[RunSpec, dict[str, Any]]] = []
        for spec in specs:
            status, marker = ("todo", None) if args.rerun else run_status(spec, args, out)
            if status == "done":
                assert marker is not None
                print(f"[skip] {spec.label}: done ({marker.get('wall_s', 0):.1f} s, {marker['run_dir']})")
            elif status == "mismatch":
                assert marker is not None
                mismatched.append((spec, marker))
            else:
                if status == "failed":
                    assert marker is not None
                    print(f"[retry] {spec.label}: previous attempt failed ({marker.get('error')})")
                todo.append(spec)
        if mismatched:
            print(
                "These runs are already done in --out but with different rl_zoo3 arguments:", file=sys.stderr
            )
            for spec, marker in mismatched:
                print(f"  {spec.label}: {marker.get('command')}", file=sys.stderr)
            print("Use another --out, or --rerun to train everything again.", file=sys.stderr)
            return 2
        if args.dry_run:
            for spec in todo:
                print(shlex.join(full_command(spec, args, out)))
            return 0
        if todo:
            print(f"{len(todo)} run(s) to do, {len(specs) - len(todo)} skipped, jobs={args.jobs}", flush=True)
            try:
                run_all(todo, args, out, compare_cmd)
            except KeyboardInterrupt:
                return 130

    if args.shard:
        failed = [s for s in specs if run_status(s, args, out)[0] != "done"]
        print(
            f"Shard {args.shard[0]}/{args.shard[1]} finished: {len(specs) - len(failed)} of {len(specs)} ok. "
            "Summarise all parts with --report-only --out MERGED --merge <each part's --out>"
        )
        return 1 if failed else 0
    if not args.report_only:
        # A folder grows by runs (another algo, more seeds, a second lane): report every run it holds,
        # not just this call's, or adding one seed would drop the others from summary.md.
        specs = _ordered_unique([*specs, *discover_specs(out)])
    summary = write_report(out, specs, args, compare_cmd)
    print(f"Wrote {out / 'summary.md'}, {out / 'summary.json'}, {out / 'learning_curves.png'}")
    problems = summary["problems"]
    if problems:
        print(f"{len(problems)} run(s) failed or missing:", file=sys.stderr)
        for p in problems:
            print(
                f"  {p['algo']} {p['env']} seed={p['seed']}: {p['status']} {p.get('error') or ''} "
                f"{p.get('log') or ''}",
                file=sys.stderr,
            )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
