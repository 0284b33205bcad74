#!/usr/bin/env bash
# Optuna search (rl_zoo3 -optimize; the plugin's samplers for s2ac and qstac) on the Kinova arm tasks.
# Usage: bash benchmarks/results/kinova_tuning/run.sh ALGO ENV_ID N_TRIALS [STEPS]   (from the repo root)
# STEPS per trial: 10,000 by default (a third of the reaching budget; see NOTE.md).
set -eu
algo=$1 env=$2 trials=$3 steps=${4:-10000} out=benchmarks/results/kinova_tuning
mkdir -p "$out"
OMP_NUM_THREADS=1 MPLBACKEND=Agg python -m rl_zoo3.train --algo "$algo" --env "$env" -n "$steps" \
  -optimize --n-trials "$trials" --n-startup-trials 5 --n-evaluations 2 --eval-episodes 10 \
  --sampler tpe --pruner median --n-jobs 1 --num-threads 1 --seed 0 --no-optim-plots \
  -f "$out/logs" > "$out/${algo}_${env}.log" 2>&1
