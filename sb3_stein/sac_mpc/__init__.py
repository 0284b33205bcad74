"""SAC with an MPC prior: SAC-ZOP, SAC-FOP and the action-noise baseline SAC-FOA."""

from sb3_stein.sac_mpc.policies import ActionNoisePolicy, MPCParameterPolicy
from sb3_stein.sac_mpc.sac_mpc import SACFOA, SACFOP, SACZOP

__all__ = ["SACFOA", "SACFOP", "SACZOP", "ActionNoisePolicy", "MPCParameterPolicy"]
