from sb3_stein.mpq.mpq import MPQ, MPPIController
from sb3_stein.mpq.policies import MlpPolicy, MPQPolicy

__all__ = ["MPQ", "MPPIController", "MPQPolicy", "MlpPolicy"]
