#!/usr/bin/env bash
# DMPC on Ballbot-v0 at the yml's own budget (30k steps; issue 16, the paper's Fig. 2b "upon convergence"):
# with and without the running cost (Eq. 14) at H = 10, against SAC, TD3 and PPO, seeds 0-2.
# Usage (from the repo root): bash benchmarks/results/dmpc_ballbot_30k/run.sh [STEPS]   (default 30000)
set -eu
steps=${1:-30000} out=benchmarks/results/dmpc_ballbot_30k
common=(--envs Ballbot-v0 --seeds 0 1 2 --timesteps "$steps" --eval-freq 3000 --eval-episodes 8 --jobs 1)
python benchmarks/compare.py --algos dmpc sac td3 ppo "${common[@]}" --out "$out/main"
python benchmarks/compare.py --algos dmpc "${common[@]}" --hyperparams dmpc:running_cost:False --out "$out/no_running_cost"
