"""DMPC: Deep Value Model Predictive Control (Farshidian, Hoeller, Hutter, CoRL 2019)."""

from sb3_stein.dmpc.dmpc import DMPC
from sb3_stein.dmpc.policies import DMPCPolicy, MlpPolicy
from sb3_stein.dmpc.problem import MLPValue, ValueMPCProblem, ValueNetwork

__all__ = ["DMPC", "DMPCPolicy", "MLPValue", "MlpPolicy", "ValueMPCProblem", "ValueNetwork"]
