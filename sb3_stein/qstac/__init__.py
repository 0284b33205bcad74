from sb3_stein.qstac.policies import MlpPolicy, QSTACPolicy
from sb3_stein.qstac.qstac import QSTAC

__all__ = ["QSTAC", "MlpPolicy", "QSTACPolicy"]
