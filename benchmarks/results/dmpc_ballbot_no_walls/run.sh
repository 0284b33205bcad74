#!/usr/bin/env bash
# Diagnosis for issue 16: DMPC on Ballbot-v0 with the walls removed (rl_zoo3 --env-kwargs walls:[]), so that
# reaching the target needs no detour: with and without the running cost, and SAC, seed 0, 10k steps.
# Usage (from the repo root): bash benchmarks/results/dmpc_ballbot_no_walls/run.sh [STEPS]
set -eu
steps=${1:-10000} out=benchmarks/results/dmpc_ballbot_no_walls
common=(--envs Ballbot-v0 --seeds 0 --timesteps "$steps" --eval-freq 2000 --eval-episodes 8 --jobs 1
  --extra-args "all=--env-kwargs walls:[]")
python benchmarks/compare.py --algos dmpc sac "${common[@]}" --out "$out/main"
python benchmarks/compare.py --algos dmpc "${common[@]}" --hyperparams dmpc:running_cost:False --out "$out/no_running_cost"
# Exploration: SB3's Gaussian action noise on the MPC's action (DMPC's action_noise; rl_zoo3 noise_type/noise_std,
# in the [-1, 1]-scaled action: 0.3 = 3 N m per wheel), with the running cost.
python benchmarks/compare.py --algos dmpc "${common[@]}" --hyperparams dmpc:noise_type:"'normal'" dmpc:noise_std:0.3 \
  --out "$out/action_noise"
# After commit "DMPC: Eq. 11's cost is the path cost of Eq. 4" (control_cost_in_targets=True, the new default;
# the three DMPC runs above predate it and had c = -r): the running-cost DMPC again.
python benchmarks/compare.py --algos dmpc "${common[@]}" --out "$out/control_cost_in_targets"
