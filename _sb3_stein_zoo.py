"""Start-up hook of sb3-stein (standard library only): gymnasium ids everywhere, rl_zoo3 algorithms.

The one-line ``sb3_stein_zoo.pth`` installed at the root of site-packages runs
``import _sb3_stein_zoo; _sb3_stein_zoo.install_at_startup()`` at every interpreter start.
That puts two small duck-typed finders at the front of ``sys.meta_path``, which do nothing
until the module they wait for has been imported:

* the environment finder waits for ``gymnasium``. Once it has *executed*, the package's ids
  (:data:`ENVIRONMENTS`: ``MultiGoal-v0``, ``Nav2DEasy-v0``, ...) are registered with string
  entry points, so that ``gymnasium.make("Nav2DEasy-v0")`` works in every process where the
  package is installed, ``SubprocVecEnv`` workers started by spawn or forkserver included,
  without ``import sb3_stein`` first. gymnasium >= 1.0 has no plugin mechanism of its own
  (gym's ``gym.envs`` entry-point group and ``load_plugin_envs`` were removed), hence the hook.
  It is always on: registering seven ids costs microseconds and imports nothing (the entry
  points are strings; ``torch`` is imported only when one of these environments is made);
* the rl_zoo3 finder waits for ``rl_zoo3`` (the package), ``rl_zoo3.hyperparams_opt`` and
  ``rl_zoo3.exp_manager``. Once such a module has executed, it calls
  ``sb3_stein.zoo.on_import(name)``, which registers the algorithms (``ALGOS``), the Optuna
  samplers/converters and the ``ExperimentManager`` hyperparameter-file redirect.

Each finder removes itself from ``sys.meta_path`` when everything it waits for has fired.
Where ``.pth`` files don't run (``python -S``, ``pip install --target``, PYTHONPATH-only
installs), ``import sb3_stein`` (or ``import sb3_stein.envs``) registers the ids too, and
gymnasium's ``"module:id"`` form works in any process: ``gymnasium.make("sb3_stein.envs:Nav2DEasy-v0")``.

Rules this module keeps:

* standard library only, and nothing heavy: torch, stable_baselines3 and rl_zoo3 are never
  imported at start-up (``tests/test_zoo.py`` checks ``sys.modules``), and registering the
  environment ids imports nothing beyond gymnasium (``tests/test_registration.py``);
* the finders are plain classes with a ``find_spec`` method, *not* ``importlib.abc``
  subclasses (in a bare venv, ``import importlib.abc`` alone costs ~40 ms: it pulls in
  ``importlib.resources`` and ``typing``); for the same reason there is no ``typing`` import;
* off switch for the rl_zoo3 part: ``SB3_STEIN_NO_ZOO=1`` (any value except ``""``, ``0``,
  ``false``, ``no``) makes ``install_at_startup`` skip the rl_zoo3 finder.
  ``python -m sb3_stein.train`` and ``import sb3_stein.zoo`` still register explicitly. The
  environment ids are registered regardless (they change nothing for users of other ids);
* any exception becomes a ``RuntimeWarning``, never a crash of the user's interpreter.

Measured start-up cost (Python 3.11.7, shared 2-core container, load 2-4, 2026-11-22),
``python -X importtime -c pass``, self time of ``_sb3_stein_zoo`` (30 runs, median):

* with bytecode cached (every ``pip install``; ``pip install -e`` after the first start):
  0.32 ms non-editable, 0.36 ms editable (the editable finder's lookup), 0.22 ms in a bare
  venv once site-packages has been scanned (0.5 ms when this is the first import from it);
* without bytecode (``PYTHONDONTWRITEBYTECODE=1`` with an editable install, as in this
  container): 1.2-1.9 ms, almost all of it compiling this file (1.25 ms in-process);
* ``install_at_startup()`` itself: 2 us; the finder costs 0.06 us per later import.

Wall time of ``python -c pass``, alternating runs: in a bare venv, with the ``.pth`` 14.5 ms
vs 13.9 ms without it (median of 300, +0.6 ms); in the full environment, hook on vs
``SB3_STEIN_NO_ZOO=1``: 49.4 vs 49.7 ms and 62.4 vs 60.1 ms (two runs of 300), i.e. below
the machine's noise. All well under the 5 ms budget. Nothing heavy is imported: the hook
adds only ``_sb3_stein_zoo`` to ``sys.modules``. (These numbers predate the environment finder.)

The environment finder (same container, load 3.5-4.5): ``python -X importtime -c "import gymnasium"``,
30 alternating runs against the hook without it, self time of ``gymnasium`` (where the registration
runs) 0.70 vs 0.55 ms median (0.52 vs 0.37 ms min), i.e. about +0.15 ms; cumulative time of
``gymnasium`` 112.7 vs 113.1 ms min (medians 228 vs 295 ms: the machine's noise). In-process,
:func:`register_environments` takes 0.09-0.15 ms for the seven ids and the finder 0.15 us per
unrelated import. ``import gymnasium`` imports no torch, stable_baselines3 or sb3_stein either way.
"""

import os
import sys

__all__ = [
    "ENVIRONMENTS",
    "GYMNASIUM",
    "OFF_SWITCH",
    "TARGETS",
    "disabled",
    "install",
    "install_at_startup",
    "install_environments",
    "register_environments",
    "uninstall",
]

#: Environment variable that disables the rl_zoo3 part of the start-up hook.
OFF_SWITCH = "SB3_STEIN_NO_ZOO"

#: Modules whose execution triggers a registration step in ``sb3_stein.zoo``.
#: Hook the ``rl_zoo3`` package, not ``rl_zoo3.utils``: registering while ``rl_zoo3`` is
#: only partially initialised causes an import cycle when an algorithm imports ``rl_zoo3``.
TARGETS = ("rl_zoo3", "rl_zoo3.hyperparams_opt", "rl_zoo3.exp_manager")

#: The module whose execution triggers :func:`register_environments`. The package, not
#: ``gymnasium.envs.registration``: every import of a gymnasium submodule runs the package first,
#: and once it has executed, ``gymnasium.register`` and gymnasium's own ids are all in place.
GYMNASIUM = "gymnasium"

#: gymnasium id -> keyword arguments of ``gymnasium.register``, for every environment of the
#: package (``sb3_stein.envs`` registers the same table on import). Entry points are strings, so
#: registering imports nothing; each ``max_episode_steps`` equals the module's ``MAX_EPISODE_STEPS``
#: (not imported here, to keep this module light; ``tests/test_registration.py`` compares them).
ENVIRONMENTS: dict[str, dict] = {
    "MultiGoal-v0": {"entry_point": "sb3_stein.envs.multigoal:MultiGoalEnv", "max_episode_steps": 30},
    # One-step tasks with multimodal soft-optimal policies (S2AC's expressivity; issue 12).
    "MultiModalBandit-v0": {"entry_point": "sb3_stein.envs.bandit:MultiModalBanditEnv"},  # ends itself
    **{
        f"Nav2D{level.capitalize()}-v0": {
            "entry_point": "sb3_stein.envs.nav2d:Nav2DEnv",
            "max_episode_steps": 200,
            "kwargs": {"level": level},
        }
        for level in ("easy", "medium", "hard")
    },
    # The leap-c lecture's environments (SAC-ZOP/FOP); each also has an OCP (sb3_stein.common.ocp).
    "CartPoleSwingUp-v0": {
        "entry_point": "sb3_stein.envs.cartpole_swingup:CartPoleSwingUpEnv",
        "max_episode_steps": 200,  # 10 s at dt = 0.05
    },
    "PointMassWindMaze-v0": {
        "entry_point": "sb3_stein.envs.windmaze:WindMazeEnv",
        "max_episode_steps": 100,  # 10 s at dt = 0.1
    },
    "Chain-v0": {
        "entry_point": "sb3_stein.envs.chain:ChainEnv",
        "max_episode_steps": 200,  # 10 s at dt = 0.05
    },
    # MPQ's sparse ball-in-cup on dm_control's MuJoCo model (needs the [mujoco] extra).
    "BallInCupSparse-v0": {
        "entry_point": "sb3_stein.envs.ball_in_cup:BallInCupSparseEnv",
        "max_episode_steps": 200,  # 4 s at the suite's control step 0.02
    },
    # Q-STAC's arm tasks on dm_control's Kinova Jaco model (needs the [mujoco] extra).
    "KinovaReachObstacles-v0": {
        "entry_point": "sb3_stein.envs.kinova:KinovaReachEnv",
        "max_episode_steps": 200,  # 4 s at the control step 0.02
    },
    "KinovaPickPlace-v0": {
        "entry_point": "sb3_stein.envs.kinova:KinovaPickPlaceEnv",
        "max_episode_steps": 500,  # 10 s at the control step 0.02: reach, grasp (about 1 s), carry, place
    },
    # DMPC's ballbot target reaching past walls; the deadline terminates (time to go is in the observation).
    "Ballbot-v0": {
        "entry_point": "sb3_stein.envs.ballbot:BallbotEnv",
        "max_episode_steps": 60,  # 3 s at dt = 0.05
    },
}

# rl_zoo3 target modules not yet seen (the rl_zoo3 finder's only state).
_pending: set[str] = set()


def disabled() -> bool:
    """Return True when the off switch ``SB3_STEIN_NO_ZOO`` is set."""
    return os.environ.get(OFF_SWITCH, "").strip().lower() not in ("", "0", "false", "no")


def _warn(message: str, hint: str = f"set {OFF_SWITCH}=1 to disable this hook") -> None:
    import warnings

    warnings.warn(f"sb3-stein: {message} ({hint})", RuntimeWarning, stacklevel=3)


def register_environments() -> None:
    """Register each id of :data:`ENVIRONMENTS` not yet in gymnasium's registry (idempotent).

    Imports ``gymnasium`` (nothing else). Ids already registered, by an earlier call or by the
    user, are left untouched.
    """
    from gymnasium.envs.registration import register, registry

    for env_id, spec in ENVIRONMENTS.items():
        if env_id not in registry:
            arguments = dict(spec)
            if "kwargs" in arguments:  # a copy: gymnasium keeps the dict it is given
                arguments["kwargs"] = dict(arguments["kwargs"])
            register(id=env_id, **arguments)


def _fire(name: str) -> None:
    """Tell ``sb3_stein.zoo`` that ``name`` has finished executing; never raises."""
    _pending.discard(name)
    if not _pending:
        uninstall()
    try:
        if "sb3_stein.zoo" in sys.modules:
            sys.modules["sb3_stein.zoo"].on_import(name)
        else:  # importing it registers into every rl_zoo3 module already imported
            import sb3_stein.zoo  # noqa: F401
    except Exception as exc:  # a broken plugin must not break rl_zoo3 or the interpreter
        _warn(f"could not register with rl_zoo3 after importing {name!r}: {exc!r}")


def _fire_gymnasium(name: str) -> None:
    """``gymnasium`` has executed: register the environment ids; never raises."""
    _uninstall_environments()
    try:
        register_environments()
    except Exception as exc:  # e.g. an incompatible gymnasium: gymnasium itself must keep working
        _warn(
            f"could not register the environment ids with {name!r}: {exc!r}",
            hint="import sb3_stein before making its environments",
        )


def _spec_calling_after_exec(finder, fullname, path, target, after):  # type: ignore[no-untyped-def]
    """The spec the other finders give ``fullname``, with its loader patched to call
    ``after(fullname)`` once the module has executed (``None`` if no finder knows it)."""
    for other in sys.meta_path:
        if other is finder:
            continue
        find_spec = getattr(other, "find_spec", None)
        if find_spec is None:
            continue
        spec = find_spec(fullname, path, target)
        if spec is not None:
            break
    else:
        return None
    loader = spec.loader
    original = getattr(loader, "exec_module", None)
    if original is None:
        return spec

    def exec_module(module):  # type: ignore[no-untyped-def]
        # Restore the loader first, so that a reload runs the plain loader.
        try:
            del loader.exec_module
        except AttributeError:
            pass
        original(module)  # an exception propagates: the module failed, nothing to register
        after(fullname)

    # Patch the loader instance (not the class, not the spec) so that the module keeps
    # its real loader object and ``__spec__``/``importlib.resources`` behave as usual.
    loader.exec_module = exec_module
    return spec


class _AfterImportFinder:
    """Meta-path finder that runs :func:`_fire` after an rl_zoo3 target module has executed.

    Duck-typed on purpose: only ``find_spec`` is needed by the import system.
    """

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if fullname not in _pending:
            return None
        try:
            return _spec_calling_after_exec(self, fullname, path, target, _fire)
        except Exception as exc:
            _warn(f"import hook failed for {fullname!r}: {exc!r}")
            return None

    def __repr__(self) -> str:
        return f"<sb3-stein rl_zoo3 hook waiting for {sorted(_pending)}>"


class _EnvironmentFinder:
    """Meta-path finder that runs :func:`_fire_gymnasium` after ``gymnasium`` has executed.

    A class of its own (not an :class:`_AfterImportFinder`) because it has its own lifetime:
    it stays installed under ``SB3_STEIN_NO_ZOO`` and leaves after one module.
    """

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if fullname != GYMNASIUM:
            return None
        try:
            return _spec_calling_after_exec(self, fullname, path, target, _fire_gymnasium)
        except Exception as exc:
            _warn(
                f"import hook failed for {fullname!r}: {exc!r}",
                hint="import sb3_stein before making its environments",
            )
            return None

    def __repr__(self) -> str:
        return "<sb3-stein hook registering its environment ids once gymnasium is imported>"


_finder = _AfterImportFinder()
_environment_finder = _EnvironmentFinder()


def install() -> None:
    """Install the rl_zoo3 finder for the targets not imported yet (idempotent).

    Targets that are already imported are left to the caller (``sb3_stein.zoo`` registers
    into them when it is imported).
    """
    _pending.clear()
    _pending.update(name for name in TARGETS if name not in sys.modules)
    if _pending and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    """Remove the rl_zoo3 finder from ``sys.meta_path`` (idempotent)."""
    try:
        sys.meta_path.remove(_finder)
    except ValueError:
        pass


def install_environments() -> None:
    """Register the environment ids once ``gymnasium`` is imported (now, if it already is)."""
    if GYMNASIUM in sys.modules:
        register_environments()
    elif _environment_finder not in sys.meta_path:
        sys.meta_path.insert(0, _environment_finder)


def _uninstall_environments() -> None:
    try:
        sys.meta_path.remove(_environment_finder)
    except ValueError:
        pass


def install_at_startup() -> None:
    """Entry point of ``sb3_stein_zoo.pth``: install both finders (the rl_zoo3 one unless switched
    off); never raises."""
    try:
        install_environments()
    except Exception as exc:
        _warn(f"could not install the gymnasium import hook: {exc!r}", hint="import sb3_stein first")
    try:
        if not disabled():
            install()  # after the environment finder: it goes first in sys.meta_path
    except Exception as exc:
        _warn(f"could not install the rl_zoo3 import hook: {exc!r}")
