"""``python -m sb3_stein.enjoy ...`` is ``python -m rl_zoo3.enjoy ...`` with sb3-stein registered.

Fallback for interpreters where the ``sb3_stein_zoo.pth`` start-up hook does not run; see
:mod:`sb3_stein.train`.
"""

from __future__ import annotations


def main() -> None:
    from sb3_stein.zoo import register_all

    register_all()
    from rl_zoo3.enjoy import enjoy

    enjoy()


if __name__ == "__main__":
    main()
