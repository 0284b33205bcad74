"""Setuptools shim: everything is declared in setup.cfg, except one thing.

``sb3_stein_zoo.pth`` (the rl_zoo3 start-up hook, see ``_sb3_stein_zoo.py``) must land at the
root of site-packages. A normal wheel gets it from setup.cfg's package data
(``sb3_stein = ../sb3_stein_zoo.pth``); an editable wheel (``pip install -e .``) has no
declarative option for it, so the ``editable_wheel`` command below adds it to the built wheel,
with its RECORD line, so that the installer also removes it on uninstall (the approach of
coverage.py).
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from pathlib import Path

from setuptools import setup
from setuptools.command.editable_wheel import editable_wheel

PTH = "sb3_stein_zoo.pth"


def add_to_wheel(wheel: Path, name: str, data: bytes) -> None:
    """Rewrite ``wheel`` with ``name`` added at its root and listed in its RECORD."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record_line = f"{name},sha256={digest},{len(data)}\n".encode()
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if item.filename == name:
                continue
            payload = src.read(item.filename)
            if item.filename.endswith(".dist-info/RECORD"):
                dst.writestr(name, data)
                payload += record_line
            dst.writestr(item, payload)
    os.replace(tmp, wheel)


class editable_wheel_with_pth(editable_wheel):
    """``editable_wheel`` that also installs ``sb3_stein_zoo.pth`` at the site-packages root."""

    def _create_wheel_file(self, bdist_wheel):  # type: ignore[no-untyped-def]
        wheel = super()._create_wheel_file(bdist_wheel)
        add_to_wheel(Path(wheel), PTH, Path(__file__).with_name(PTH).read_bytes())
        return wheel


setup(cmdclass={"editable_wheel": editable_wheel_with_pth})
