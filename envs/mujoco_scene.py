"""What the MuJoCo environments share: dm_control's model files and offscreen ``rgb_array`` rendering.

``BallInCupSparse-v0`` (:mod:`sb3_stein.envs.ball_in_cup`) and the Kinova tasks
(:mod:`sb3_stein.envs.kinova`) read their MJCF and meshes from the installed ``dm-control`` wheel
without importing dm_control, and render through MuJoCo's own ``mujoco.Renderer``.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np

INSTALL_HINT = (
    "the MuJoCo tasks (BallInCupSparse-v0, the Kinova arm) need MuJoCo and dm_control's model files: "
    "pip install 'sb3-stein[mujoco]' (dm-control==1.0.50, mujoco==3.17.0)"
)


def import_mujoco() -> Any:
    """``import mujoco``, or an ``ImportError`` saying how to install it, or a ``RuntimeError`` naming
    ``MUJOCO_GL`` when MuJoCo's import fails on the OpenGL backend that variable asks for (with
    ``MUJOCO_GL=osmesa`` and no system OSMesa, PyOpenGL fails inside ``import mujoco`` with an
    ``AttributeError`` that names neither)."""
    try:
        import mujoco
    except Exception as error:
        if isinstance(error, ModuleNotFoundError) and error.name == "mujoco":
            raise ImportError(INSTALL_HINT) from error
        if os.environ.get("MUJOCO_GL") is None:
            raise
        raise RuntimeError(_gl_hint("MuJoCo cannot be imported", error)) from error
    return mujoco


def _gl_hint(what: str, error: BaseException) -> str:
    return (
        f"{what}: MuJoCo found no OpenGL context for MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} "
        "(install the system's OSMesa, e.g. Debian's libosmesa6, for MUJOCO_GL=osmesa, or EGL for "
        "MUJOCO_GL=egl; unset MUJOCO_GL to run without rendering): "
        f"{type(error).__name__}: {error}"
    )


def dm_control_path(*parts: str) -> str:
    """A path inside the installed dm_control package (its data files; dm_control is not imported)."""
    spec = importlib.util.find_spec("dm_control")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(INSTALL_HINT)
    return os.path.join(next(iter(spec.submodule_search_locations)), *parts)


class MujocoRendering:
    """Mixin for a ``gymnasium.Env`` with ``model``, ``data`` and ``render_mode``: ``rgb_array`` frames
    of ``render_camera`` at ``render_size`` (height, width) from an offscreen ``mujoco.Renderer``.

    Headless rendering needs an OpenGL context for MuJoCo (``MUJOCO_GL=osmesa`` with the system's OSMesa,
    e.g. Debian's ``libosmesa6``, or ``MUJOCO_GL=egl``); without one ``render()`` raises a ``RuntimeError``
    saying so.
    """

    render_size: tuple[int, int] = (240, 320)
    render_camera: str = ""
    render_mode: str | None
    model: Any
    data: Any
    _renderer: Any = None

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        mujoco = import_mujoco()

        if self._renderer is None:
            try:
                self._renderer = mujoco.Renderer(self.model, *self.render_size)
            except Exception as error:
                name = getattr(getattr(self, "spec", None), "id", None) or type(self).__name__
                raise RuntimeError(_gl_hint(f"{name} cannot render", error)) from error
        self._renderer.update_scene(self.data, camera=self.render_camera)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
