#!/usr/bin/env bash
# For a machine with a CUDA GPU, in under 8 minutes: the gpu-marked tests, then benchmarks/gpu.py (fp32 / bf16 /
# fp16 images/s, eager and compiled, at the gpu preset; 2 minutes of Fashion-MNIST training with its FID), whose
# numbers go to benchmarks/results/gpu.json. Each part has a time limit, so that one that hangs leaves the others
# their time. Fashion-MNIST's IDX files: FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist; without
# them the run trains on the bundled digits.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA_DIR=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
DATA=(--data fashion-mnist --data-dir "$DATA_DIR")
[ -d "$DATA_DIR" ] || DATA=(--data digits)
status=0
echo "== gpu-marked tests"
timeout 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests || status=1
echo "== throughput and a 2-minute run"
timeout 330 "$PY" benchmarks/gpu.py --device cuda --steps 200 --minutes 2 "${DATA[@]}" --out "${TMPDIR:-/tmp}/gpu-runs" \
    || status=1
exit $status
