#!/usr/bin/env bash
# DMPC on Ballbot-v0 after the control cost entered Eq. 11's targets (control_cost_in_targets=True, the default
# since that commit), H = 10, with and without the running cost, seeds 0-2, 10k steps: the same protocol as
# ../dmpc_ballbot/ (whose SAC/TD3/PPO runs are unaffected by the change and not re-run).
# Usage (from the repo root): bash benchmarks/results/dmpc_ballbot_cc/run.sh [STEPS]
set -eu
steps=${1:-10000} out=benchmarks/results/dmpc_ballbot_cc
common=(--envs Ballbot-v0 --seeds 0 1 2 --timesteps "$steps" --eval-freq 2000 --eval-episodes 8 --jobs 1)
python benchmarks/compare.py --algos dmpc "${common[@]}" --out "$out/main"
python benchmarks/compare.py --algos dmpc "${common[@]}" --hyperparams dmpc:running_cost:False --out "$out/no_running_cost"
python benchmarks/compare.py --algos dmpc "${common[@]}" --hyperparams dmpc:horizon:20 --out "$out/horizon20"
python benchmarks/compare.py --algos dmpc "${common[@]}" --hyperparams dmpc:horizon:20 dmpc:running_cost:False \
  --out "$out/horizon20_no_running_cost"
