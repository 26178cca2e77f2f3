#!/usr/bin/env bash
# One-shot GPU check for a bare machine with a CUDA GPU (target: under 8 minutes).
# Installs what is missing (from wheels in .whl/ when there is no internet), installs the
# project without touching its torch, and runs the benchmark suite at 512x512 (make bench).
#   bash benchmarks/gpu_check.sh            # prints the figures; CSV in results/bench/bench.csv
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  $PY -m pip install -q segmentation-models-pytorch monai nibabel pydicom
fi
$PY -m pip install -q --no-deps -e . 2>/dev/null || export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0),
      "bf16", torch.cuda.is_bf16_supported())
PY
timeout 420 $PY benchmarks/run_all.py --repeats 2 --out results/bench/bench.csv
