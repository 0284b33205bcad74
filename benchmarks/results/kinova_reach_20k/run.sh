#!/usr/bin/env bash
# KinovaReachObstacles-v0 at 20k steps for all five algorithms, seeds 0-2 (issue 14: twice the 10k budget of
# ../kinova_reach/, where nobody had learned to reach yet). Resumable: compare.py skips finished runs, so
# each session can run what is left. Two lanes of one core each (a Q-STAC run takes about 1.5 h of a core).
# Usage (from the repo root): bash benchmarks/results/kinova_reach_20k/run.sh LANE    (LANE = a or b)
set -eu
out=benchmarks/results/kinova_reach_20k
common=(--envs KinovaReachObstacles-v0 --timesteps 20000 --eval-freq 2000 --eval-episodes 20 --jobs 1 --out "$out")
case ${1:?usage: run.sh a|b} in
  a) python benchmarks/compare.py --algos qstac --seeds 0 1 2 "${common[@]}" ;;
  b) python benchmarks/compare.py --algos sac td3 ppo --seeds 0 1 2 "${common[@]}"
     python benchmarks/compare.py --algos s2ac --seeds 0 1 2 "${common[@]}" ;;
esac
# Then, per finished seed, the 1000-episode test from the best checkpoint (Table I):
#   python benchmarks/test_episodes.py --runs $out --algo ALGO --env KinovaReachObstacles-v0 --seeds S \
#       --episodes 1000 --n-envs 10 --checkpoint best --out $out/test_episodes/ALGO
# and the report: python benchmarks/compare.py --report-only --out $out --threshold KinovaReachObstacles-v0=13.2
