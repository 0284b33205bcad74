"""Compiled casadi functions, cached on disk: casadi's JIT through a caching compiler command.

casadi's ``jit`` option generates C code for a Function (for an NLP solver: its objective, constraints
and their derivatives, Hessian included) and compiles it with the ``shell`` plugin's compiler command.
Compiling the cart-pole MPC's code takes tens of seconds; doing it again in every process, and after
every unpickling, would cost more than it saves. So the compiler command casadi runs is this module::

    <python> -I .../sb3_stein/common/jit_cache.py <real compiler> <casadi's flags and files>

(run as a script in isolated mode: it imports only the standard library, so a cache hit costs a
fraction of a second, not the package's import of torch).

It hashes the generated source (with casadi's per-instance name replaced by a fixed one, so that the
same problem gives the same hash in every process), the flags and the compiler's identity, and
compiles only on a miss: into the cache, under a per-hash file lock (two processes that need the
same object compile it once), written to a temporary name and renamed into place (a reader never sees
a partial file). Each object has a checksum file (its SHA-256 and its key): an object that does not
match it (damaged, or another source's object under this name) or has none is compiled again, with a
message, never linked. A cache that cannot be written (read-only, not creatable) is bypassed with a
message: the build compiles without it. casadi's link step (no ``-c``) is passed to the real compiler
unchanged.

**Where**: ``$SB3_STEIN_JIT_CACHE`` if set, else ``$XDG_CACHE_HOME/sb3_stein/casadi_jit``, else
``~/.cache/sb3_stein/casadi_jit``: one ``<hash>.o`` per compiled source (about 1-2 MB each), with its
``<hash>.sha256`` and ``<hash>.lock``.
**Clearing** it is always safe (the next build compiles again): delete the folder or call
:func:`clear_cache`. casadi's temporary files (the generated ``.c`` and its own copy of the
compiled library, which it keeps while the function lives) go into one folder private to the user
under the system's temporary directory (:func:`work_dir`), never into the working directory: a
user's project folder stays clean (an NLP solver's source passes through it for the moment of its
compile, :func:`jit_nlpsol`).

**Compiler**: ``$CC`` if set, else the first of ``gcc``, ``cc``, ``clang`` on ``PATH``
(:func:`find_compiler`).
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["CACHE_ENV", "cache_dir", "clear_cache", "find_compiler", "jit_nlpsol", "jit_options", "work_dir"]

#: The environment variable that moves the cache.
CACHE_ENV = "SB3_STEIN_JIT_CACHE"
#: The fixed name that replaces casadi's per-instance name in the hashed and compiled source.
CANONICAL_NAME = "sb3s_jit"
_counter = itertools.count()
_counter_lock = threading.Lock()
_work_dir: Path | None = None


def work_dir() -> Path:
    """The folder for casadi's temporary JIT files: ``<system temp>/sb3_stein_jit_<uid>``, private to the
    user (mode 0700), shared by the user's processes (the names in it are unique per process and
    instance); a private ``mkdtemp`` folder where that one belongs to someone else. casadi removes
    its files when the function is destroyed; a killed process leaves them here, not in a project."""
    global _work_dir
    with _counter_lock:
        if _work_dir is None or not _work_dir.is_dir():
            shared = Path(tempfile.gettempdir()) / f"sb3_stein_jit_{os.getuid()}"
            try:
                shared.mkdir(mode=0o700, exist_ok=True)
                usable = shared.stat().st_uid == os.getuid() and os.access(shared, os.W_OK)
            except OSError:
                usable = False
            _work_dir = shared if usable else Path(tempfile.mkdtemp(prefix="sb3_stein_jit_"))
        return _work_dir


def cache_dir() -> Path:
    """The cache folder (module docstring), not created."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sb3_stein" / "casadi_jit"


def clear_cache() -> int:
    """Delete every cached object; returns how many files were removed."""
    folder = cache_dir()
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.iterdir():
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


#: The compiler's default flags. ``-fno-semantic-interposition`` lets it inline casadi's small helpers
#: (``casadi_sq``, ``casadi_fabs``, ``casadi_fmax``, ...): they have external linkage in the generated
#: shared library, so without it every use is a call. Measured (benchmarks/results/compile_flags_riccati,
#: idle machine, 1 thread): the riccati cart-pole layer at T = 20, batch 256, cold forward 1.89 ms per
#: sample with ``-O1``, 1.89 with ``-O2``, 1.33 with these; the build with an empty cache 71 s, 116 s
#: and 125 s (once per problem: the cache keeps it).
DEFAULT_FLAGS: tuple[str, ...] = ("-O2", "-fno-semantic-interposition")


@lru_cache(maxsize=1)
def find_compiler() -> str | None:
    """The C compiler casadi's generated code is compiled with, or ``None`` when there is none."""
    candidates = [os.environ["CC"]] if os.environ.get("CC") else ["gcc", "cc", "clang"]
    for candidate in candidates:
        words = shlex.split(candidate)
        if words and shutil.which(words[0]):
            return candidate
    return None


def jit_options(kind: str, flags: tuple[str, ...] = DEFAULT_FLAGS) -> dict[str, Any]:
    """casadi options that JIT-compile a Function (or an NLP solver's functions) through the cache.

    :param kind: a short tag for the instance's name (``[a-z_]``), e.g. ``"mpc"``.
    :param flags: the compiler's optimisation flags.
    :raises RuntimeError: when no C compiler is found.
    """
    compiler = find_compiler()
    if compiler is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc, cc or clang)")
    with _counter_lock:
        number = next(_counter)
    command = shlex.join([sys.executable, "-I", str(Path(__file__).resolve()), *shlex.split(compiler)])
    return {
        "jit": True,
        "compiler": "shell",
        # casadi writes <directory><name>.c: a name unique to this process and instance (threads of
        # one process share the folder) in this process's own folder.
        "jit_name": f"sb3s_{kind}_{os.getpid()}_{number}",
        "jit_temp_suffix": False,
        "jit_options": {
            "compiler": command,
            "flags": list(flags),
            "verbose": False,
            "directory": str(work_dir()) + os.sep,
        },
    }


def jit_nlpsol(
    name: str,
    solver: str,
    nlp: dict[str, Any],
    options: dict[str, Any],
    kind: str,
    flags: tuple[str, ...] = DEFAULT_FLAGS,
) -> Any:
    """``casadi.nlpsol`` with its NLP functions compiled through the cache (:func:`jit_options`).

    casadi 3.8's NLP solvers write their generated source into the *working directory* whatever the
    shell compiler's ``directory`` (and then try to delete it from that directory, with a warning),
    so here casadi's clean-up is off and the source is deleted right after the solver is built: it
    is compiled by then, and the library casadi loaded lives in :func:`work_dir`.
    """
    import casadi as ca

    jit = {**jit_options(kind, flags), "jit_cleanup": False}
    try:
        return ca.nlpsol(name, solver, nlp, {**options, **jit})
    finally:
        Path(jit["jit_name"] + ".c").unlink(missing_ok=True)


def _compiler_identity(compiler: list[str]) -> str:
    try:
        version = subprocess.run([*compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    return " ".join(compiler) + "\n" + version


def _cached_object(folder: Path, digest: str) -> tuple[bytes | None, str | None]:
    """The cached object of ``digest`` if its checksum file vouches for it: ``(bytes, None)``;
    ``(None, None)`` when there is none; ``(None, why)`` when there is one that must not be loaded.

    The checksum file ``<digest>.sha256`` holds the object's SHA-256 and the key it was compiled for,
    so a damaged object, one without a checksum, and another source's object moved under this key
    are all recompiled instead of linked into the solver (never load the wrong code). The bytes are
    read once and verified as read, so a concurrent rebuild cannot swap them in between.
    """
    try:
        data = (folder / f"{digest}.o").read_bytes()
    except FileNotFoundError:
        return None, None
    try:
        recorded = (folder / f"{digest}.sha256").read_text().split()
    except OSError:
        return None, "it has no checksum file"
    if recorded != [hashlib.sha256(data).hexdigest(), digest]:
        return None, "it does not match its checksum (damaged, or compiled from another source)"
    return data, None


def _compile(compiler: list[str], flags: list[str], code: str, stem: Path) -> bytes | None:
    """Compile ``code`` via ``<stem>.c`` into an object; its bytes, or ``None`` when the compiler fails."""
    source, partial = Path(f"{stem}.c"), Path(f"{stem}.o.partial")
    try:
        source.write_text(code)
        if subprocess.run([*compiler, *flags, str(source), "-o", str(partial)]).returncode != 0:
            return None
        return partial.read_bytes()
    finally:
        source.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)


def _compile_into_cache(
    compiler: list[str], flags: list[str], code: str, folder: Path, digest: str
) -> bytes | None:
    """The verified cached object of ``digest``, compiled (under a per-key file lock, so that two
    processes compile it once) when it is missing or unusable; ``None`` when the compiler fails.
    Writes go to temporary names renamed into place, the checksum before the object: a reader never
    sees a partial file, and an object it sees always has its checksum."""
    with open(folder / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here instead of compiling again
        data, problem = _cached_object(folder, digest)  # another process may have compiled it meanwhile
        if data is not None:
            return data
        for leftover in [*folder.glob(f"{digest}.*.c"), *folder.glob(f"{digest}.*.partial")]:
            # Under this key's lock no one else is compiling it: these are a killed compile's files.
            leftover.unlink(missing_ok=True)
        target = folder / f"{digest}.o"
        if problem is not None:
            print(
                f"sb3_stein: not loading {target}: {problem}; compiling it again", file=sys.stderr, flush=True
            )
        print(
            f"sb3_stein: compiling casadi's generated code ({len(code) // 1000} kB) into {target} "
            "(once: later builds load it)",
            file=sys.stderr,
            flush=True,
        )
        unique = f"{os.getpid()}_{threading.get_ident()}"
        data = _compile(compiler, flags, code, folder / f"{digest}.{unique}")
        if data is None:
            return None
        checksum = folder / f"{digest}.{unique}.sha256.partial"
        partial = folder / f"{digest}.{unique}.o.partial"
        try:
            checksum.write_text(f"{hashlib.sha256(data).hexdigest()} {digest}\n")
            partial.write_bytes(data)
            os.replace(checksum, folder / f"{digest}.sha256")
            os.replace(partial, target)
        finally:
            checksum.unlink(missing_ok=True)
            partial.unlink(missing_ok=True)
        return data


def _compile_cached(compiler: list[str], args: list[str]) -> int:
    """casadi's compile step ``<flags> -c <source>.c -o <object>``, through the cache.

    A cache that cannot be written (read-only, not creatable, full) is bypassed with one message:
    the code is compiled for this build only, and a verified object already in it is still used.
    """
    source = next(a for a in args if a.endswith(".c"))
    out_index = args.index("-o") + 1
    output = args[out_index]
    flags = [a for i, a in enumerate(args) if a != source and i not in (out_index - 1, out_index)]
    name = Path(source).stem
    code = Path(source).read_text().replace(name, CANONICAL_NAME)
    digest = hashlib.sha256(
        "\n".join([code, shlex.join(flags), _compiler_identity(compiler)]).encode()
    ).hexdigest()[:32]
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        data, _ = _cached_object(folder, digest)
        if data is None:
            data = _compile_into_cache(compiler, flags, code, folder, digest)
            if data is None:
                return 1
    except OSError as error:
        print(
            f"sb3_stein: cannot use the compile cache {folder} ({error}); compiling without it "
            f"(set {CACHE_ENV} to a writable folder to keep the compiled code)",
            file=sys.stderr,
            flush=True,
        )
        data = _compile(
            compiler, flags, code, Path(output).with_name(f"{Path(output).stem}_{os.getpid()}_uncached")
        )
        if data is None:
            return 1
    Path(output).write_bytes(data)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The compiler command casadi runs: ``<real compiler...> <casadi's arguments>``."""
    args = list(sys.argv[1:] if argv is None else argv)
    # The real compiler is everything before casadi's first flag.
    split = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))
    compiler, rest = args[:split], args[split:]
    if not compiler:
        print("usage: python -I jit_cache.py COMPILER [ARGS...]", file=sys.stderr)
        return 2
    if "-c" not in rest or "-o" not in rest or not any(a.endswith(".c") for a in rest):
        return subprocess.run([*compiler, *rest]).returncode  # the link step
    return _compile_cached(compiler, rest)


if __name__ == "__main__":
    sys.exit(main())
