from sb3_stein.s2ac.policies import MlpPolicy, S2ACPolicy
from sb3_stein.s2ac.s2ac import S2AC

__all__ = ["S2AC", "MlpPolicy", "S2ACPolicy"]
