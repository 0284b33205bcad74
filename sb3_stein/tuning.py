"""Shared Optuna storages for ``rl_zoo3.train -optimize``: the checks made before a worker joins a study.

Distributed tuning is rl_zoo3's own: N workers started with the same ``--storage`` and ``--study-name``
share one Optuna study (``--max-total-trials`` caps the trials of all of them together; README,
"Tuning on many workers"). rl_zoo3 opens the storage only after it has built the experiment, and a
study of the same name made by another algorithm is silently reused: its trials' parameters belong to
another sampler, and the best trial would be converted with the wrong converter. The plugin's
``ExperimentManager`` hook (:mod:`sb3_stein.zoo`) therefore calls :func:`check_study_storage` first,
for every algorithm (the plugin's and SB3's alike), whenever ``--storage`` and ``--study-name`` are
given:

* the storage must open (an unreachable PostgreSQL server, a missing driver, an unwritable journal
  folder): a ``ValueError`` naming ``--storage`` (password hidden) and the cause, before any file
  is written;
* an existing study of that name must have been created by the same ``--algo`` on the same
  ``--env`` (rl_zoo3 stores the creating command in the study's ``command`` user attribute).

Storages: an RDB URL (``postgresql://user:password@host:port/db``, the one to use for many workers;
SQLAlchemy 2.1 opens ``postgresql://`` with the driver ``psycopg`` 3, in the ``distributed`` extra) or
a path ending in ``.log``, which rl_zoo3 opens as an Optuna journal file (no server; workers on one
machine or one shared file system). SQLite is not recommended for parallel workers (Optuna's
documentation).
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import Any

__all__ = ["check_study_storage", "open_storage", "study_origin"]


def _hidden(storage: str) -> str:
    """``storage`` with any password replaced by ``***``."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(storage).render_as_string(hide_password=True)
    except Exception:
        return storage


def open_storage(storage: str, create: bool = False) -> Any:
    """The Optuna storage rl_zoo3 would use for ``--storage storage`` (a journal for ``*.log``).

    :param storage: an RDB URL or a journal file path ending in ``.log``.
    :param create: create a journal file that does not exist yet (otherwise ``None`` is returned for
        it, so that a check writes nothing).
    :raises ValueError: naming ``--storage`` when the storage cannot be opened.
    """
    import optuna

    if storage.endswith(".log"):
        path = Path(storage)
        folder = path.parent if str(path.parent) else Path(".")
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise ValueError(f"--storage {storage!r}: the journal file is not readable and writable")
        if not path.exists():
            existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
            if existing is None or not os.access(existing, os.W_OK):
                raise ValueError(f"--storage {storage!r}: cannot create the journal file in {folder}")
            if not create:
                return None
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(storage))
    try:
        return _open_rdb(storage)
    except (ModuleNotFoundError, ImportError) as exc:
        raise ValueError(
            f"--storage {_hidden(storage)!r}: the database driver is missing ({exc}); for PostgreSQL "
            "install psycopg (pip install 'sb3-stein[distributed]')"
        ) from exc
    except Exception as exc:  # sqlalchemy's OperationalError, ArgumentError, ...
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"--storage {_hidden(storage)!r}: cannot open the Optuna storage "
            f"({type(exc).__name__}: {cause}). "
            "Is the database server running and reachable, and is the URL of the form "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE?"
        ) from exc


def _open_rdb(storage: str, attempts: int = 5) -> Any:
    """``RDBStorage(storage)``, retried when workers started together race to create Optuna's tables in
    an empty database (optuna/optuna#1092: ``IntegrityError`` / "already exists"; the maintainers'
    remedy, ``optuna create-study`` before the workers, is the README's recipe)."""
    import optuna

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(storage)
        except Exception as exc:
            racing = type(exc).__name__ in ("IntegrityError", "ProgrammingError") or "already exists" in str(
                exc
            )
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


def study_origin(study: Any) -> tuple[str | None, str | None]:
    """``(algo, env)`` of the rl_zoo3 command that created ``study`` (``None`` where unknown)."""
    command = study.user_attrs.get("command")
    if not isinstance(command, str):
        return None, None
    try:
        tokens = shlex.split(command)
    except ValueError:
        tokens = command.split()
    found: dict[str, str | None] = {"--algo": None, "--env": None}
    for i, token in enumerate(tokens):
        for flag in found:
            if token == flag and i + 1 < len(tokens):
                found[flag] = tokens[i + 1]
            elif token.startswith(flag + "="):
                found[flag] = token.split("=", 1)[1]
    return found["--algo"], found["--env"]


def check_study_storage(storage: str, study_name: str | None, algo: str, env_id: str) -> None:
    """Refuse, before anything is written, a storage that does not open or a study of another run.

    :param storage: rl_zoo3's ``--storage``.
    :param study_name: rl_zoo3's ``--study-name`` (``None``: Optuna makes a new study, nothing to check
        beyond the storage).
    :param algo: rl_zoo3's ``--algo`` of this worker.
    :param env_id: rl_zoo3's ``--env`` of this worker.
    :raises ValueError: naming ``--storage`` or ``--study-name``.
    """
    import optuna

    opened = open_storage(storage)
    if opened is None or study_name is None:
        return
    try:
        study = optuna.load_study(study_name=study_name, storage=opened)
    except KeyError:  # a new study: rl_zoo3 creates it
        return
    their_algo, their_env = study_origin(study)
    if (their_algo is not None and their_algo != algo) or (their_env is not None and their_env != env_id):
        raise ValueError(
            f"--study-name {study_name!r}: the study in {_hidden(storage)!r} was created by "
            f"`--algo {their_algo} --env {their_env}`, this worker runs `--algo {algo} --env {env_id}`; "
            "its trials' parameters belong to another search space. Use another --study-name."
        )
