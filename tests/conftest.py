"""Test-wide settings: one torch thread per process (2-core machines; pytest -n 2 runs two workers)."""

import os

import torch as th

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
th.set_num_threads(1)
