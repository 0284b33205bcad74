"""Headless ``rgb_array`` rendering of the MuJoCo tasks: a picture where the system has an OpenGL
backend for MuJoCo, else the env's clear ``RuntimeError`` naming ``MUJOCO_GL`` and a skip."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("mujoco")
pytest.importorskip("dm_control")

ENVS = [
    ("sb3_stein.envs.ball_in_cup", "BallInCupSparseEnv"),
    ("sb3_stein.envs.kinova", "KinovaReachEnv"),
    ("sb3_stein.envs.kinova", "KinovaPickPlaceEnv"),
]


@pytest.mark.parametrize("module, cls", ENVS, ids=[cls for _, cls in ENVS])
def test_render_gives_a_picture_or_a_clear_error(module: str, cls: str):
    """In a fresh process with MUJOCO_GL=osmesa (MuJoCo reads it at import), as on this machine with
    Debian's libosmesa6; without OSMesa the import inside the env already fails and must say why."""
    script = (
        "import json\n"
        "try:\n"
        f"    from {module} import {cls}\n"
        f"    env = {cls}(render_mode='rgb_array'); env.reset(seed=0)\n"
        "    frame = env.render(); env.close()\n"
        "    size = [*env.unwrapped.render_size, 3]\n"
        "    print(json.dumps({'shape': list(frame.shape), 'size': size, 'mean': float(frame.mean())}))\n"
        "except Exception as error:\n"
        "    print(json.dumps({'error': f'{type(error).__name__}: {error}'}))\n"
    )
    env = {**os.environ, "MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if "error" in result:
        assert result["error"].startswith("RuntimeError") and "MUJOCO_GL" in result["error"], result["error"]
        pytest.skip(f"no OSMesa for MuJoCo here: {result['error'][:200]}")
    assert result["shape"] == result["size"] and result["mean"] > 10  # not a blank frame
