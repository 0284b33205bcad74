"""rl_zoo3 hyperparameter files shipped with sb3-stein (installed as ``sb3_stein.hyperparams``).

One ``<algo>.yml`` per zoo algorithm name, in rl_zoo3's format; ``sb3_stein.zoo`` points
rl_zoo3 at them when no ``--conf-file`` is given.
"""
