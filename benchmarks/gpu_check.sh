#!/usr/bin/env bash
# The GPU path (issue 17), on a machine with a CUDA GPU and a CUDA build of torch:
#   1. tests/test_device.py: every algorithm learns and predicts with device="cuda", all its tensors there;
#   2. benchmarks/speed_s2ac.py and speed_qstac.py with --device cuda: S2AC's and Q-STAC's gradient steps,
#      predict and learn per 1k steps against SB3 SAC on the same GPU, in the same process, interleaved.
# Usage (from the repository root): bash benchmarks/gpu_check.sh [OUT]   (default benchmarks/results/gpu_check)
# Targets (issue 17): S2AC's gradient step at the paper's settings <= 2x SAC's, Q-STAC's <= 3x, predict <= 2x
# SAC's with the amortized sampler off; the ratios are in OUT/speed_*/speed.json ("ratios") and speed.md.
set -euo pipefail
out=${1:-benchmarks/results/gpu_check}
mkdir -p "$out"
python - <<'PY'
import torch
assert torch.cuda.is_available(), f"no CUDA device visible to torch {torch.__version__} (a CPU build?)"
print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))
PY
{ date -u; nvidia-smi || true; python -c "import torch; print(torch.__version__, torch.version.cuda)"; } > "$out/machine.txt"
python -m pytest -q tests/test_device.py 2>&1 | tee "$out/test_device.txt"
python benchmarks/speed_s2ac.py --device cuda --out "$out/speed_s2ac" 2>&1 | tee "$out/speed_s2ac.log"
python benchmarks/speed_qstac.py --device cuda --out "$out/speed_qstac" 2>&1 | tee "$out/speed_qstac.log"
echo "results in $out"
