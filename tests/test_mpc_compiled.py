"""The compiled MPC layer: the interpreted layer's results, a disk cache shared by processes, clear errors."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from test_mpc import TinyCartPoleOCP, _batch

import sb3_stein.common.mpc as mpc_module
from sb3_stein.common import jit_cache
from sb3_stein.common.mpc import COMPILED_ENV, MPCLayer

pytestmark = pytest.mark.skipif(jit_cache.find_compiler() is None, reason="no C compiler on this machine")

#: -O0 compiles the tiny cart-pole in seconds; the flags enter the cache key like the source.
FLAGS = ("-O0",)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("jit_cache")
    previous = os.environ.get(jit_cache.CACHE_ENV)
    os.environ[jit_cache.CACHE_ENV] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop(jit_cache.CACHE_ENV, None)
    else:
        os.environ[jit_cache.CACHE_ENV] = previous


@pytest.fixture(scope="module")
def compiled(cache) -> MPCLayer:
    return MPCLayer(TinyCartPoleOCP(), compiled=True, compile_flags=FLAGS)


def _objects(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.o")}


def test_compiled_layer_gives_the_interpreted_controls_iterations_and_gradients(compiled):
    interpreted = MPCLayer(TinyCartPoleOCP(), compiled=False)
    states, params = _batch(8, seed=3)
    a, b = interpreted.solve(states, params), compiled.solve(states, params)
    assert a.success.all() and b.success.all()
    np.testing.assert_allclose(b.u0, a.u0, rtol=1e-12, atol=1e-12)
    assert compiled.mapped  # compiled: one mapped call per batch by default
    looped = MPCLayer(TinyCartPoleOCP(), compiled=True, compile_flags=FLAGS, batch_mode="loop")
    np.testing.assert_array_equal(looped.solve(states, params).iterations, a.iterations)
    weights = np.random.default_rng(0).normal(size=(8, 1))
    for ga, gb in zip(interpreted.vjp(a, weights), compiled.vjp(b, weights)):
        np.testing.assert_allclose(gb, ga, rtol=1e-10, atol=1e-12)
    warm = looped.solve(states, params, initial_guess=b.z)  # warm starts go through the same solver
    assert warm.iterations.mean() < a.iterations.mean()


def test_a_second_process_and_an_unpickled_layer_reuse_the_cached_objects(compiled, cache, tmp_path):
    compiled.solve(*_batch(2, seed=4))  # builds the KKT check too (on first use), whatever ran before
    objects = _objects(cache)
    assert len(objects) >= 2  # the forward solver's functions and the backward pass
    clone = pickle.loads(pickle.dumps(compiled))
    assert clone.compiled and _objects(cache) == objects
    states, params = _batch(2, seed=4)
    np.testing.assert_array_equal(clone.solve(states, params).u0, compiled.solve(states, params).u0)
    tests = Path(__file__).parent
    script = (
        f"import json, sys; sys.path.insert(0, {str(tests)!r})\n"
        "from test_mpc import TinyCartPoleOCP, _batch\n"
        "from sb3_stein.common.mpc import MPCLayer\n"
        f"layer = MPCLayer(TinyCartPoleOCP(), compiled=True, compile_flags={FLAGS!r})\n"
        "u0 = layer.solve(*_batch(2, seed=4)).u0.tolist()\n"
        "import os; print(json.dumps([u0, os.listdir('.')]))\n"  # while casadi's temporaries exist
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    u0, in_working_dir = json.loads(result.stdout.splitlines()[-1])
    np.testing.assert_array_equal(u0, compiled.solve(states, params).u0)
    assert in_working_dir == []  # casadi's .c and library copies live in the process's own folder
    assert _objects(cache) == objects  # another pid, another casadi name: the same hashes


def test_cache_compiles_a_source_once_for_concurrent_callers_and_ignores_casadi_names(tmp_path, monkeypatch):
    monkeypatch.setenv(jit_cache.CACHE_ENV, str(tmp_path / "cache"))
    compiler = jit_cache.find_compiler()
    assert compiler is not None
    body = "double {name}_twice(double x) {{ return 2 * x; }}\n"
    sources = []
    for name in ("sb3s_a_1_0", "sb3s_b_2_7"):  # two instances' names: the same canonical source
        source = tmp_path / f"{name}.c"
        source.write_text(body.format(name=name))
        sources.append(source)
    codes = []

    def compile_one(i: int) -> None:
        args = [
            *compiler.split(),
            "-O0",
            "-fPIC",
            "-c",
            str(sources[i % 2]),
            "-o",
            str(tmp_path / f"out{i}.o"),
        ]
        codes.append(jit_cache.main(args))

    threads = [threading.Thread(target=compile_one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [0, 0, 0, 0]
    assert len(_objects(tmp_path / "cache")) == 1
    outputs = {(tmp_path / f"out{i}.o").read_bytes() for i in range(4)}
    assert len(outputs) == 1 and outputs != {b""}
    assert not list((tmp_path / "cache").glob("*.c")) and not list((tmp_path / "cache").glob("*.partial"))
    assert jit_cache.clear_cache() >= 1 and not _objects(tmp_path / "cache")


def test_a_compile_error_is_reported_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv(jit_cache.CACHE_ENV, str(tmp_path / "cache"))
    source = tmp_path / "broken.c"
    source.write_text("this is not C\n")
    compiler = jit_cache.find_compiler()
    args = [*compiler.split(), "-c", str(source), "-o", str(tmp_path / "broken.o")]
    assert jit_cache.main(args) != 0
    assert not _objects(tmp_path / "cache")


def _compile_source(tmp_path: Path, name: str, body: str, output: str) -> int:
    """Run the cache's compiler command on a one-function source, as casadi would."""
    compiler = jit_cache.find_compiler()
    assert compiler is not None
    source = tmp_path / f"{name}.c"
    source.write_text(body.format(name=name))
    return jit_cache.main(
        [*compiler.split(), "-O0", "-fPIC", "-c", str(source), "-o", str(tmp_path / output)]
    )


TWO = "double {name}_two(double x) {{ return 2 * x; }}\n"
THREE = "double {name}_three(double x) {{ return 3 * x; }}\n"


def test_a_damaged_or_foreign_cached_object_is_compiled_again_never_loaded(tmp_path, monkeypatch, capfd):
    cache = tmp_path / "cache"
    monkeypatch.setenv(jit_cache.CACHE_ENV, str(cache))
    assert _compile_source(tmp_path, "sb3s_a_1_0", TWO, "two.o") == 0
    assert _compile_source(tmp_path, "sb3s_b_1_0", THREE, "three.o") == 0
    keys = {}
    for checksum in cache.glob("*.sha256"):
        data = checksum.with_suffix(".o").read_bytes()
        keys[b"sb3s_jit_two" in data] = checksum.stem
    assert set(keys) == {True, False}
    two, three = keys[True], keys[False]
    capfd.readouterr()

    assert _compile_source(tmp_path, "sb3s_a_2_0", TWO, "hit.o") == 0  # a verified hit: silent
    assert b"sb3s_jit_two" in (tmp_path / "hit.o").read_bytes() and capfd.readouterr().err == ""

    cases = {
        "damaged": (lambda: (cache / f"{two}.o").write_bytes(b"\x7fELF not an object"), "does not match"),
        "foreign": (
            lambda: [
                shutil.copy(cache / f"{three}{ext}", cache / f"{two}{ext}") for ext in (".o", ".sha256")
            ],
            "does not match",
        ),
        "no checksum": (lambda: (cache / f"{two}.sha256").unlink(), "has no checksum file"),
    }
    for case, (spoil, message) in cases.items():
        spoil()
        assert _compile_source(tmp_path, "sb3s_a_3_0", TWO, f"{case}.o") == 0, case
        output = (tmp_path / f"{case}.o").read_bytes()
        assert b"sb3s_jit_two" in output and b"sb3s_jit_three" not in output, case
        assert message in capfd.readouterr().err, case
        assert jit_cache._cached_object(cache, two)[0] == (cache / f"{two}.o").read_bytes(), case  # repaired

    # A compile killed half-way leaves its files behind; the next compile of that key removes them.
    leftovers = [
        cache / f"{two}.123_456.c",
        cache / f"{two}.123_456.o.partial",
        cache / f"{two}.1_2.sha256.partial",
    ]
    for leftover in leftovers:
        leftover.write_text("")
    (cache / f"{two}.o").unlink()
    assert _compile_source(tmp_path, "sb3s_a_4_0", TWO, "again.o") == 0
    assert not any(leftover.exists() for leftover in leftovers)
    assert (cache / f"{three}.o").exists() and (cache / f"{three}.sha256").exists()  # other keys untouched


def test_a_cache_that_cannot_be_written_is_bypassed_with_a_message(tmp_path, monkeypatch, capfd):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv(jit_cache.CACHE_ENV, str(blocker / "cache"))  # not creatable
    assert _compile_source(tmp_path, "sb3s_a_1_0", TWO, "out.o") == 0
    assert b"sb3s_jit_two" in (tmp_path / "out.o").read_bytes()
    assert "cannot use the compile cache" in capfd.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "out.o", "sb3s_a_1_0.c"]  # no leftovers

    # Read-only (as root, permissions would not stop the writes: the first write is refused instead).
    cache = tmp_path / "cache"
    monkeypatch.setenv(jit_cache.CACHE_ENV, str(cache))
    assert _compile_source(tmp_path, "sb3s_a_2_0", TWO, "cached.o") == 0  # a verified object already there

    def read_only_open(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(jit_cache, "open", read_only_open, raising=False)
    assert _compile_source(tmp_path, "sb3s_a_3_0", TWO, "hit.o") == 0
    assert (tmp_path / "hit.o").read_bytes() == (tmp_path / "cached.o").read_bytes()
    capfd.readouterr()
    assert _compile_source(tmp_path, "sb3s_b_1_0", THREE, "miss.o") == 0
    assert b"sb3s_jit_three" in (tmp_path / "miss.o").read_bytes()
    assert "Read-only file system" in capfd.readouterr().err
    assert len(_objects(cache)) == 1


def test_a_layer_built_over_damaged_cached_objects_recompiles_them(tmp_path, monkeypatch, compiled):
    monkeypatch.setenv(jit_cache.CACHE_ENV, str(tmp_path / "cache"))
    states, params = _batch(3, seed=6)
    MPCLayer(TinyCartPoleOCP(), compiled=True, compile_flags=FLAGS).solve(states, params)
    objects = _objects(tmp_path / "cache")
    assert objects
    for name in objects:
        (tmp_path / "cache" / name).write_bytes(b"damaged")
    layer = MPCLayer(TinyCartPoleOCP(), compiled=True, compile_flags=FLAGS)
    a, b = layer.solve(states, params), compiled.solve(states, params)
    np.testing.assert_array_equal(a.u0, b.u0)
    assert a.success.all() and _objects(tmp_path / "cache") == objects
    assert all(jit_cache._cached_object(tmp_path / "cache", Path(name).stem)[0] for name in objects)


def test_compiled_needs_a_compiler_and_auto_falls_back_with_a_warning(monkeypatch):
    monkeypatch.setattr(mpc_module, "find_compiler", lambda: None)
    monkeypatch.delenv(COMPILED_ENV, raising=False)
    with pytest.raises(ValueError, match="compiled=True needs a C compiler"):
        MPCLayer(TinyCartPoleOCP(), compiled=True)
    monkeypatch.setattr(mpc_module, "_warned_interpreted", False)
    with pytest.warns(UserWarning, match="no C compiler found"):
        layer = MPCLayer(TinyCartPoleOCP())
    assert not layer.compiled
    with pytest.raises(ValueError, match="compiled must be True, False or None"):
        MPCLayer(TinyCartPoleOCP(), compiled="yes")  # type: ignore[arg-type]
    monkeypatch.setenv(COMPILED_ENV, "maybe")
    with pytest.raises(ValueError, match=COMPILED_ENV):
        MPCLayer(TinyCartPoleOCP())
    monkeypatch.setenv(COMPILED_ENV, "0")
    assert not MPCLayer(TinyCartPoleOCP()).compiled


def test_layers_pickled_before_the_option_existed_load_interpreted():
    layer = MPCLayer(TinyCartPoleOCP(), compiled=False)
    state = layer.__getstate__()
    for key in ("compiled", "compile_flags", "build_seconds"):
        state.pop(key)
    old = MPCLayer.__new__(MPCLayer)
    old.__setstate__(state)
    assert old.compiled is False
    states, params = _batch(1, seed=5)
    np.testing.assert_array_equal(old.solve(states, params).u0, layer.solve(states, params).u0)


def test_auto_leaves_a_large_nlp_interpreted_with_a_warning(monkeypatch):
    monkeypatch.delenv(COMPILED_ENV, raising=False)
    monkeypatch.setattr(mpc_module, "AUTO_COMPILE_MAX_INSTRUCTIONS", 1000)  # the tiny cart-pole: ~44k
    with pytest.warns(UserWarning, match="casadi instructions"):
        layer = MPCLayer(TinyCartPoleOCP())
    assert not layer.compiled


def test_compiled_ipopt_layer_gives_the_interpreted_results(cache):
    interpreted = MPCLayer(TinyCartPoleOCP(), solver="ipopt", compiled=False, batch_mode="loop")
    compiled = MPCLayer(TinyCartPoleOCP(), solver="ipopt", compiled=True, compile_flags=FLAGS)
    states, params = _batch(4, seed=3)
    a, b = interpreted.solve(states, params), compiled.solve(states, params)
    assert a.success.all() and b.success.all()
    np.testing.assert_allclose(b.u0, a.u0, rtol=1e-12, atol=1e-12)
    for ga, gb in zip(interpreted.vjp(a, np.ones((4, 1))), compiled.vjp(b, np.ones((4, 1)))):
        np.testing.assert_allclose(gb, ga, rtol=1e-10, atol=1e-12)


def test_compiled_mapped_layer_with_a_control_barrier_gives_the_interpreted_results(cache):
    """The barrier is part of the generated code (its own cache entry); the KKT check of a mapped
    solve accepts the barrier's interior solutions."""
    interpreted = MPCLayer(TinyCartPoleOCP(), compiled=False, control_barrier=1.0)
    compiled = MPCLayer(TinyCartPoleOCP(), compiled=True, compile_flags=FLAGS, control_barrier=1.0)
    states, params = _batch(6, seed=1)
    a, b = interpreted.solve(states, params), compiled.solve(states, params)
    assert a.success.all() and b.success.all() and compiled.mapped
    np.testing.assert_allclose(b.u0, a.u0, rtol=1e-10, atol=1e-10)
    for ga, gb in zip(interpreted.vjp(a, np.ones((6, 1))), compiled.vjp(b, np.ones((6, 1)))):
        np.testing.assert_allclose(gb, ga, rtol=1e-8, atol=1e-10)
