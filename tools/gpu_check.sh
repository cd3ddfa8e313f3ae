#!/usr/bin/env bash
# The GPU checks (issues 4 and 5, and the figures the README still lacks): run on a machine with
# a CUDA GPU, from the repository root, with CIFAR10_DATA_DIR pointing at the data. It prints the
# modern recipe's gpu94 benchmark (5 seeds), the GPU notebook's per-epoch table and the DDP entry
# point's JSON line on the GPU(s). The first command alone takes about a minute on an H100.
#   CIFAR10_DATA_DIR=/abs/path/cifar10-jpg bash tools/gpu_check.sh [OUT_DIR]
set -euo pipefail
out=${1:-runs/gpu_check}
mkdir -p "$out"
python - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "devices",
      [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
assert torch.cuda.is_available(), "no CUDA GPU here"
PY
python -m cifar_helpers.bench fast --preset gpu94 --seeds 5 --device cuda
python -m cifar_helpers.run_all --only 06 --out "$out" -p device cuda
python - "$out/06_gpu.ipynb" <<'PY'
import sys, nbformat
nb = nbformat.read(sys.argv[1], as_version=4)
for cell in nb.cells:
    for o in cell.get("outputs", []):
        if o.get("name") == "stdout" and "seconds per epoch" in o.get("text", ""):
            print(o["text"])
PY
ngpu=$(python -c "import torch; print(torch.cuda.device_count())")
torchrun --standalone --nproc_per_node "$ngpu" -m cifar_helpers.distributed \
  --data-dir "$CIFAR10_DATA_DIR" --epochs 2 --batch-size 128 --lr 0.032 | tail -1
torchrun --standalone --nproc_per_node "$ngpu" -m cifar_helpers.distributed \
  --data-dir "$CIFAR10_DATA_DIR" --epochs 2 --batch-size 4 --lr 0.001 | tail -1
python -m cifar_helpers.bench tutorial --skip-baseline --device cuda
