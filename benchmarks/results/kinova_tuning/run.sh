#!/usr/bin/env bash
# Optuna search (rl_zoo3 -optimize; the plugin's samplers for s2ac and qstac) on the Kinova arm tasks.
# Usage: bash benchmarks/results/kinova_tuning/run.sh ALGO ENV_ID N_TRIALS [STEPS] [SEED]   (from the repo root)
# STEPS per trial: 10,000 by default (a third of the reaching budget; see NOTE.md). SEED: 0 by default.
# RESUMABLE=1 keeps the study in an Optuna journal file, journals/ALGO_ENV_ID.log, and stops at N_TRIALS
# trials in total over every call (--max-total-trials): for searches whose trials are too slow to finish
# in one session, or for several workers at once (each its own lane, its own log ALGO_ENV_ID_seedSEED.log).
# Give each call its own SEED there: TPE's seeded start-up trials would otherwise repeat.
set -eu
algo=$1 env=$2 trials=$3 steps=${4:-10000} seed=${5:-0} out=benchmarks/results/kinova_tuning
mkdir -p "$out"
if [ "${RESUMABLE:-0}" = 1 ]; then
  study=(--storage "$out/journals/${algo}_${env}.log" --study-name "${algo}-${env}" --max-total-trials "$trials")
  log="$out/${algo}_${env}_seed${seed}.log"
else
  study=(--n-trials "$trials")
  log="$out/${algo}_${env}.log"
fi
OMP_NUM_THREADS=1 MPLBACKEND=Agg python -m rl_zoo3.train --algo "$algo" --env "$env" -n "$steps" \
  -optimize "${study[@]}" --n-startup-trials 5 --n-evaluations 2 --eval-episodes 10 \
  --sampler tpe --pruner median --n-jobs 1 --num-threads 1 --seed "$seed" --no-optim-plots \
  -f "$out/logs" >> "$log" 2>&1
