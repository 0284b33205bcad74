"""sb3-stein: Stein-variational and model-predictive actor-critics for Stable-Baselines3.

Importing the package registers its gymnasium environments (``MultiGoal-v0``, ...). So does the
start-up hook (``_sb3_stein_zoo``) in every process that imports gymnasium, without this import.
"""

import os as _os

# The environments (``envs/``) and zoo hyperparameters (``hyperparams/``) sit next to this folder
# in the source tree and are installed as ``sb3_stein.envs`` / ``sb3_stein.hyperparams``
# (setup.cfg ``package_dir``). When Python runs from a source checkout's root, the plain folder
# ``sb3_stein/`` shadows that installed mapping; let it find the two subpackages there too.
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_checkout, "setup.cfg")) and _os.path.isfile(
    _os.path.join(_checkout, "envs", "__init__.py")
):
    __path__.append(_checkout)  # type: ignore[name-defined]

import sb3_stein.envs  # noqa: E402, F401  (registers the environments)
from sb3_stein.common.dynamics import (  # noqa: E402
    make_dynamics_model,
    register_dynamics_model,
    registered_dynamics_models,
)
from sb3_stein.common.ocp import register_ocp, registered_ocps  # noqa: E402
from sb3_stein.dmpc import DMPC  # noqa: E402
from sb3_stein.mpq import MPQ  # noqa: E402
from sb3_stein.qstac import QSTAC  # noqa: E402
from sb3_stein.s2ac import S2AC  # noqa: E402
from sb3_stein.sac_mpc import SACFOA, SACFOP, SACZOP  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "DMPC",
    "MPQ",
    "QSTAC",
    "S2AC",
    "SACFOA",
    "SACFOP",
    "SACZOP",
    "__version__",
    "make_dynamics_model",
    "register_dynamics_model",
    "register_ocp",
    "registered_dynamics_models",
    "registered_ocps",
]
