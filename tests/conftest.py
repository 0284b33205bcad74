"""Test-wide settings: one torch thread per process (2-core machines; pytest -n 2 runs two workers)."""

import os

import torch as th

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
th.set_num_threads(1)
# The MPC layer is interpreted in the tests unless a test asks for compiled=True
# (tests/test_mpc_compiled.py): compiling every OCP the suite builds would cost minutes.
os.environ.setdefault("SB3_STEIN_MPC_COMPILED", "0")
