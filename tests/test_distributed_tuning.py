"""Distributed tuning: two ``rl_zoo3.train -optimize`` workers on one Optuna study in a real PostgreSQL
server (and in a journal file), the storage checks of :mod:`sb3_stein.tuning`, the best trial converted
by ``benchmarks/optuna_to_yml.py``.

The PostgreSQL test starts its own throw-away server from Debian's ``postgresql`` binaries (``initdb``,
``pg_ctl``; ``.ci/run`` installs the package) in a temporary folder, on a free local port; it skips,
saying why, where those binaries or the driver are missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from benchmark_script import load_benchmark

from sb3_stein.tuning import check_study_storage

# S2AC on Pendulum at a few hundred steps: the cheapest plugin run with a real evaluation.
TRIAL = (
    "--algo",
    "s2ac",
    "--env",
    "Pendulum-v1",
    "-n",
    "150",
    "--n-evaluations",
    "1",
    "--eval-episodes",
    "1",
)
TRIAL += ("--num-threads", "1", "--sampler", "random", "--pruner", "none", "--n-jobs", "1", "-optimize")


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL server with an empty database ``optuna``; its URL."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb); on Debian: apt-get install postgresql")
    try:
        import psycopg  # noqa: F401  (SQLAlchemy's driver for postgresql://)
    except ImportError:
        pytest.skip("the PostgreSQL driver psycopg is not installed (pip install 'sb3-stein[distributed]')")
    prefix: list[str] = []
    # Not under pytest's basetemp: that folder is private to this user, the server may run as another.
    root = Path(tempfile.mkdtemp(prefix="sb3_stein_pg_"))
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without runuser to start the server as 'postgres'")
        prefix = [runuser, "-u", "postgres", "--"]
        os.chown(root, user.pw_uid, user.pw_gid)
    data, port = root / "data", _free_port()

    def pg(tool: str, *args: str) -> None:
        subprocess.run([*prefix, str(bindir / tool), *args], check=True, capture_output=True, timeout=120)

    pg("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off"
    pg("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-w", "-o", options, "start")
    try:
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna")
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _worker(cwd: Path, i: int, storage: str, study: str, total: int) -> subprocess.Popen:
    args = (*TRIAL, "--storage", storage, "--study-name", study, "--max-total-trials", str(total))
    args += ("--seed", str(i), "-f", f"logs_{i}", "--optimization-log-path", f"trials_{i}")
    log = open(cwd / f"worker_{i}.log", "w")  # the process owns it
    return subprocess.Popen(
        [sys.executable, "-m", "rl_zoo3.train", *args], cwd=cwd, stdout=log, stderr=subprocess.STDOUT
    )


def _two_workers_share_one_study(tmp_path: Path, storage: str, total: int = 3) -> optuna.Study:
    study_name = "s2ac-pendulum"
    workers = [_worker(tmp_path, i, storage, study_name, total) for i in (0, 1)]
    for i, worker in enumerate(workers):
        assert worker.wait(timeout=900) == 0, (tmp_path / f"worker_{i}.log").read_text()[-4000:]
    opened = (
        optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
        if (storage.endswith(".log"))
        else storage
    )
    study = optuna.load_study(study_name=study_name, storage=opened)
    finished = [t for t in study.trials if t.state.is_finished()]
    # rl_zoo3 counts running trials too; Optuna's MaxTrialsCallback can still overshoot by one trial
    # per extra worker when two finish at the same instant (its documentation), never more.
    assert total <= len(finished) <= total + 1 and len(study.trials) == len(finished)
    per_worker = [len(list((tmp_path / f"trials_{i}").glob("trial_*"))) for i in (0, 1)]
    assert all(n >= 1 for n in per_worker) and sum(per_worker) == len(finished), per_worker
    return study


@pytest.mark.slow
def test_two_workers_share_one_postgresql_study_and_its_best_trial_converts(postgres_url, tmp_path, capsys):
    study = _two_workers_share_one_study(tmp_path, postgres_url)
    assert study.user_attrs["command"].count("--algo s2ac") == 1
    script = load_benchmark("optuna_to_yml")
    script.main(
        [
            "--algo",
            "s2ac",
            "--env",
            "Pendulum-v1",
            "--storage",
            postgres_url,
            "--study-name",
            study.study_name,
        ]
    )
    entry = yaml.safe_load(capsys.readouterr().out)["Pendulum-v1"]
    assert entry["n_particles"] == study.best_trial.params["n_particles"]
    # A worker of another algorithm must not join this study: refused before rl_zoo3 builds anything.
    other = subprocess.run(
        [sys.executable, "-m", "rl_zoo3.train", "--algo", "sac", "--env", "Pendulum-v1", "-optimize",
         "--storage", postgres_url, "--study-name", study.study_name, "-n", "100", "-f", "sac_logs"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert other.returncode != 0 and "was created by `--algo s2ac --env Pendulum-v1`" in other.stderr
    assert not (tmp_path / "sac_logs").exists()


@pytest.mark.slow
def test_two_workers_share_one_journal_file_study(tmp_path):
    """The no-server alternative: rl_zoo3 opens ``*.log`` as an Optuna journal (checked with the
    installed Optuna)."""
    _two_workers_share_one_study(tmp_path, str(tmp_path / "study.log"), total=2)


def test_unreachable_storage_and_foreign_study_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"--storage 'postgresql://u:\*\*\*@127.0.0.1:\d+/db': cannot open"):
        check_study_storage(f"postgresql://u:secret@127.0.0.1:{_free_port()}/db", "s", "s2ac", "Pendulum-v1")
    with pytest.raises(ValueError, match="--storage 'not a url'"):
        check_study_storage("not a url", "s", "s2ac", "Pendulum-v1")
    journal = tmp_path / "study.log"
    check_study_storage(str(journal), "s", "s2ac", "Pendulum-v1")  # a new journal: nothing to check ...
    assert not journal.exists()  # ... and nothing written
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.create_study(study_name="s", storage=storage)
    study.set_user_attr("command", "python -m rl_zoo3.train --algo qstac --env Pendulum-v1 -optimize")
    check_study_storage(str(journal), "s", "qstac", "Pendulum-v1")
    check_study_storage(str(journal), "other", "s2ac", "Pendulum-v1")
    with pytest.raises(ValueError, match=r"--study-name 's'.*--algo qstac --env Pendulum-v1"):
        check_study_storage(str(journal), "s", "s2ac", "Pendulum-v1")
    with pytest.raises(ValueError, match="--study-name 's'"):
        check_study_storage(str(journal), "s", "qstac", "MultiGoal-v0")
