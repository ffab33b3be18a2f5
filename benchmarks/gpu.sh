#!/usr/bin/env bash
# For a machine with a CUDA GPU: the gpu-marked tests, then benchmarks/gpu.py (fp32 / bf16 /
# fp16 images/s, eager and compiled, at the gpu preset; 2 minutes of Fashion-MNIST training with its FID), whose
# numbers go to benchmarks/results/gpu.json, then the light model and dcgan at 256 px (throughput.py). Each part has a time limit, so that one that hangs leaves the others
# their time. Fashion-MNIST's IDX files: FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist; without
# them the run trains on the bundled digits.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if ! "$PY" -c "import torch, ganforge" 2>/dev/null; then
    echo "benchmarks/gpu.sh needs a Python with torch and ganforge: run \`make setup\` (it makes .venv) or set" \
         "PYTHON=/path/to/python; a machine without network needs .venv carried with the working tree" >&2
    exit 2
fi
for tool in git gcc; do  # git: the commit each results file records; gcc: torch.compile's rows (inductor builds C++)
    if ! command -v "$tool" >/dev/null; then
        echo "benchmarks/gpu.sh needs $tool on PATH (git records the commit of every result; gcc is what" \
             "torch.compile's inductor builds with): install it (apt-get install $tool) and run again" >&2
        exit 2
    fi
done
DATA_DIR=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
DATA=(--data fashion-mnist --data-dir "$DATA_DIR")
[ -d "$DATA_DIR" ] || DATA=(--data digits)
status=0
echo "== gpu-marked tests"
timeout 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests || status=1
echo "== throughput and a 2-minute run"
timeout 330 "$PY" benchmarks/gpu.py --device cuda --steps 200 --minutes 2 "${DATA[@]}" --out "${TMPDIR:-/tmp}/gpu-runs" \
    || status=1
echo "== the light model and dcgan at 256 px, each precision (benchmarks/results/throughput-faces-256-cuda.json)"
timeout 240 "$PY" benchmarks/throughput.py --device cuda --data faces --image-size 256 --models light dcgan \
    --precisions fp32 bf16 fp16 --batch-size 64 --steps 50 --rounds 2 || status=1
exit $status
