"""``python -m sb3_stein.train ...`` is ``python -m rl_zoo3.train ...`` with sb3-stein registered.

Normally not needed: the ``sb3_stein_zoo.pth`` start-up hook registers sb3-stein whenever
rl_zoo3 is imported. This fallback is for interpreters where ``.pth`` files do not run
(``python -S``, ``pip install --target``, PYTHONPATH-only installs, ``SB3_STEIN_NO_ZOO=1``).
"""

from __future__ import annotations


def main() -> None:
    from sb3_stein.zoo import register_all

    register_all()
    from rl_zoo3.train import train

    train()


if __name__ == "__main__":
    main()
