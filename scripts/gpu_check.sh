#!/usr/bin/env bash
# The GPU checks of issue 13 in one call, for a lent device machine (its python3 has torch, jax, flax and
# transformers; nothing needs installing): the conformance runner on the GPU, then bench_cpu.py with
# --device cuda (bf16 and fp32, batch 16 x 10 s, the reference class against this library's torch and
# Flax backends). Results go to $OUT (default /tmp/gpu_check): gpu.txt, conformance.txt/.json, bench.txt.
#
#   bash scripts/gpu_check.sh            # about 5 minutes on an H200
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3 XLA_PYTHON_CLIENT_PREALLOCATE=false
PYTHON=${PYTHON:-python3}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PYTHON" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, torch.cuda.get_device_name(0))"
  "$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tail -1
  "$PYTHON" -c "import transformers; print('transformers', transformers.__version__)" 2>&1 | tail -1
} 2>&1 | tee "$OUT/gpu.txt"

echo "== wav2vec2 conformance --devices cuda"
timeout 180 "$PYTHON" -m wav2vec2 conformance --devices cuda --json "$OUT/conformance.json" 2>&1 \
  | tail -60 | tee "$OUT/conformance.txt"

echo "== bench_cpu.py --device cuda --batch 16"
timeout 330 "$PYTHON" benchmarks/bench_cpu.py --device cuda --batch 16 --seconds 10 --repeats 10 --warmup 2 2>&1 \
  | tee "$OUT/bench.txt"
