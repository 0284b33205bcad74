#!/usr/bin/env bash
# DMPC on Ballbot-v0 (issue 16, the paper's Fig. 2b): with and without the running cost (Eq. 14) at two
# horizons, against SAC, TD3 and PPO, seeds 0-2, the same step budget for all.
# Usage (from the repo root): bash benchmarks/results/dmpc_ballbot/run.sh [STEPS]   (default 10000)
set -eu
steps=${1:-10000} out=benchmarks/results/dmpc_ballbot
common=(--envs Ballbot-v0 --seeds 0 1 2 --timesteps "$steps" --eval-freq 2000 --eval-episodes 8 --jobs 1)
python benchmarks/compare.py --algos dmpc sac td3 ppo "${common[@]}" --out "$out/main"
python benchmarks/compare.py --algos dmpc "${common[@]}" --hyperparams dmpc:running_cost:False --out "$out/no_running_cost"
python benchmarks/compare.py --algos dmpc "${common[@]}" --hyperparams dmpc:horizon:20 --out "$out/horizon20"
python benchmarks/compare.py --algos dmpc "${common[@]}" --hyperparams dmpc:horizon:20 dmpc:running_cost:False \
  --out "$out/horizon20_no_running_cost"
