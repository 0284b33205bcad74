#!/usr/bin/env bash
# KinovaPickPlace-v0 at 20k steps for all five algorithms, seeds 0-2 (issue 14; the reaching task's budget in
# ../kinova_reach_20k/). Resumable: compare.py skips finished runs.
# Usage (from the repo root): bash benchmarks/results/kinova_pickplace_20k/run.sh LANE    (LANE = a or b)
set -eu
out=benchmarks/results/kinova_pickplace_20k
common=(--envs KinovaPickPlace-v0 --timesteps 20000 --eval-freq 2000 --eval-episodes 20 --jobs 1 --out "$out")
case ${1:?usage: run.sh a|b} in
  a) python benchmarks/compare.py --algos qstac --seeds 0 1 2 "${common[@]}" ;;
  b) python benchmarks/compare.py --algos sac td3 ppo --seeds 0 1 2 "${common[@]}"
     python benchmarks/compare.py --algos s2ac --seeds 0 1 2 "${common[@]}" ;;
esac
# Then, per finished seed (Table I's two stages):
#   python benchmarks/test_episodes.py --runs $out --algo ALGO --env KinovaPickPlace-v0 --seeds S --episodes 1000 \
#       --n-envs 10 --checkpoint best --stages reached_cube --out $out/test_episodes/ALGO
# and the report: python benchmarks/compare.py --report-only --out $out --threshold KinovaPickPlace-v0=12.1
