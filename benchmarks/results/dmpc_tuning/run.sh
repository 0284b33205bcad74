#!/usr/bin/env bash
# Optuna search for DMPC on Ballbot-v0 (issue 16; the paper "tuned the hyper-parameters ... for each scenario"):
# rl_zoo3 -optimize with the plugin's sampler (horizon, R, weight decay, rl_zoo3's off-policy space), 10k steps
# per trial, 2 evaluations of 8 episodes, TPE after 5 random trials, median pruner, seed 0, 1 torch thread.
# The study lives in a journal file beside this script, so a later invocation (or another worker on the same
# file) continues it; --max-total-trials caps the trials of all invocations together.
# Usage (from the repo root): bash benchmarks/results/dmpc_tuning/run.sh N_TRIALS [MAX_TOTAL]   (default 30)
set -eu
trials=$1 total=${2:-30} out=benchmarks/results/dmpc_tuning
OMP_NUM_THREADS=1 MPLBACKEND=Agg python -m rl_zoo3.train --algo dmpc --env Ballbot-v0 -n 10000 \
  -optimize --n-trials "$trials" --max-total-trials "$total" --n-startup-trials 5 --n-evaluations 2 \
  --eval-episodes 8 --sampler tpe --pruner median --n-jobs 1 --num-threads 1 --seed 0 --no-optim-plots \
  --storage "$out/dmpc_ballbot.log" --study-name dmpc-ballbot -f "$out/logs" >> "$out/dmpc_Ballbot-v0.log" 2>&1
