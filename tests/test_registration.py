"""The package's gymnasium ids are known in every process where it is installed, not only after
``import sb3_stein``: the start-up hook (``_sb3_stein_zoo``, a ``.pth``) registers them when gymnasium
is imported. Subprocess tests use a fresh interpreter (site enabled), so the real start-up path runs.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import gymnasium as gym
import pytest
import sb3_stein.envs
from gymnasium.envs.registration import load_env_creator

import _sb3_stein_zoo

IDS = sorted(_sb3_stein_zoo.ENVIRONMENTS)
HEAVY = ("torch", "stable_baselines3", "sb3_stein", "rl_zoo3")


def _run(script: str, cwd: Path, **extra: str) -> dict:
    """Run ``script`` as a file (spawn and forkserver re-import ``__main__`` from a path) in a fresh
    interpreter and return the JSON it prints last."""
    path = cwd / "script.py"
    path.write_text(textwrap.dedent(script))
    env = {k: v for k, v in os.environ.items() if k != _sb3_stein_zoo.OFF_SWITCH}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="default", **extra)
    out = subprocess.run(
        [sys.executable, str(path)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("off_switch", ["", "1"])
def test_importing_gymnasium_registers_the_ids_and_nothing_heavy(tmp_path, off_switch):
    result = _run(
        f"""
        import json, sys
        import gymnasium
        known = [env_id for env_id in {IDS!r} if env_id in gymnasium.registry]
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        finders = [type(f).__name__ for f in sys.meta_path]
        steps = gymnasium.spec("Nav2DHard-v0").max_episode_steps
        print(json.dumps({{"known": known, "heavy": heavy, "finders": finders, "steps": steps}}))
        """,
        tmp_path,
        SB3_STEIN_NO_ZOO=off_switch,
    )
    assert result["known"] == IDS
    assert result["heavy"] == []  # registering needs no torch: the entry points are strings
    assert "_EnvironmentFinder" not in result["finders"]  # it leaves once gymnasium is imported
    assert result["steps"] == 200  # making one in a fresh process: the SubprocVecEnv test below


def test_subproc_vec_env_workers_know_the_ids(tmp_path):
    # The case: the parent never imports sb3_stein, the workers start from a fresh
    # interpreter (spawn) or from a fresh server process (forkserver); the zoo hook is switched off.
    result = _run(
        """
        import json, sys
        import numpy as np
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import SubprocVecEnv

        def main():
            shapes = {}
            for method, n_envs in (("spawn", 2), ("forkserver", 1)):
                venv = make_vec_env("CartPoleSwingUp-v0", n_envs=n_envs, vec_env_cls=SubprocVecEnv,
                                    vec_env_kwargs={"start_method": method})
                venv.reset()
                obs, *_ = venv.step(np.zeros((n_envs, 1), dtype=np.float32))
                shapes[method] = list(obs.shape)
                venv.close()
            parent = sorted({m.split(".")[0] for m in sys.modules} & {"sb3_stein"})
            print(json.dumps({"shapes": shapes, "parent": parent}))

        if __name__ == "__main__":
            main()
        """,
        tmp_path,
        SB3_STEIN_NO_ZOO="1",
    )
    assert result == {"shapes": {"spawn": [2, 4], "forkserver": [1, 4]}, "parent": []}


def test_the_hook_table_is_the_package_table():
    assert sb3_stein.envs.ENV_IDS == list(_sb3_stein_zoo.ENVIRONMENTS)
    for env_id in IDS:
        spec = gym.spec(env_id)
        assert spec.entry_point == _sb3_stein_zoo.ENVIRONMENTS[env_id]["entry_point"]
        creator = load_env_creator(spec.entry_point)
        assert issubclass(creator, gym.Env)
        module = importlib.import_module(creator.__module__)
        # The class's own constant, else the module's (not a second copy).
        expected = getattr(creator, "MAX_EPISODE_STEPS", getattr(module, "MAX_EPISODE_STEPS", None))
        if expected is not None:
            assert spec.max_episode_steps == expected, env_id


def test_module_prefixed_ids_work():
    # The fallback where .pth files do not run: gymnasium imports the named module first.
    env = gym.make("sb3_stein.envs:Chain-v0")
    assert env.spec.max_episode_steps == 200


def test_registration_is_idempotent_and_keeps_user_registrations(monkeypatch):
    monkeypatch.setattr(gym.envs.registration, "registry", dict(gym.envs.registration.registry))
    registry = gym.envs.registration.registry
    del registry["Chain-v0"]
    gym.register("Chain-v0", entry_point="gymnasium.envs.classic_control:PendulumEnv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium warns when an id is overridden
        _sb3_stein_zoo.register_environments()
        _sb3_stein_zoo.register_environments()
    assert registry["Chain-v0"].entry_point == "gymnasium.envs.classic_control:PendulumEnv"
    assert set(IDS) <= set(registry)


def test_hook_failure_is_a_warning(monkeypatch):
    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.setattr(_sb3_stein_zoo, "register_environments", broken)
    with pytest.warns(RuntimeWarning, match="boom.*import sb3_stein"):
        _sb3_stein_zoo._fire_gymnasium("gymnasium")
