#!/usr/bin/env bash
# Optuna search (rl_zoo3 -optimize, the plugin's samplers for s2ac) of the baselines on Nav2DHard-v0.
# Usage: bash benchmarks/results/nav2d_tuning/run.sh ALGO N_TRIALS   (from the repository root)
set -eu
algo=$1 trials=$2 out=benchmarks/results/nav2d_tuning
OMP_NUM_THREADS=1 MPLBACKEND=Agg python -m rl_zoo3.train --algo "$algo" --env Nav2DHard-v0 -n 5000 \
  -optimize --n-trials "$trials" --n-startup-trials 5 --n-evaluations 2 --eval-episodes 5 \
  --sampler tpe --pruner median --n-jobs 1 --num-threads 1 --seed 0 --no-optim-plots \
  -f "$out/logs" > "$out/$algo.log" 2>&1
