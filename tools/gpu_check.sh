#!/usr/bin/env bash
# The GPU measurements the README still lacks (issue 5's gpu94 figure, notebook 06's table, DDP
# and the fast recipe on CUDA), in one run of a few minutes on one GPU. It prints, in order:
#   1. bench fast --preset gpu94 --seeds 5 --device cuda   (issue 5: mean >= 0.94 in <= 5.0 s?)
#   2. bench epochs --device cuda                           (notebook 06's seconds-per-epoch table)
#   3. the DDP entry point's JSON line at global batch 128 and 4, one process per GPU
#   4. bench tutorial --skip-baseline --device cuda         (the fast Net recipe)
# and keeps everything in $OUT/gpu_check.log (runs/gpu_check/ when $OUT is unset).
#
# On a CUDA machine with the data:   CIFAR10_DATA_DIR=/abs/path/cifar10-jpg bash tools/gpu_check.sh
# With the `device` tool (the machine has python3 + torch but not ../shared, which does not
# travel): pack the JPEG copy once here, 20 MB, in .gpu/ (ignored by git, never committed),
#   mkdir -p .gpu && tar czf .gpu/cifar10-jpg.tar.gz --exclude=.cache -C ../shared/data cifar10-jpg
# then  run(command="bash tools/gpu_check.sh", carry=[".gpu"], timeout_s=540):
# the script unpacks it to /tmp when CIFAR10_DATA_DIR is unset.
# GPU_CHECK_DRY_RUN=1: every step tiny and on the CPU, to test this script (tests/test_tools.py).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}                  # the device machines have python3, not always python
out=${OUT:-runs/gpu_check}
mkdir -p "$out"
log="$out/gpu_check.log"
: >"$log"
say() { "$@" 2>&1 | tee -a "$log"; }

if [ -z "${CIFAR10_DATA_DIR:-}" ] && [ -f .gpu/cifar10-jpg.tar.gz ]; then
  mkdir -p /tmp/gpu_check_data
  tar xzf .gpu/cifar10-jpg.tar.gz -C /tmp/gpu_check_data
  export CIFAR10_DATA_DIR=/tmp/gpu_check_data/cifar10-jpg
fi
if [ -z "${CIFAR10_DATA_DIR:-}" ] || [ ! -d "$CIFAR10_DATA_DIR" ]; then
  echo "gpu_check: no data: set CIFAR10_DATA_DIR to the CIFAR-10 folder, or pack it into" \
       ".gpu/cifar10-jpg.tar.gz (see the top of this script)" >&2
  exit 2
fi

if [ "${GPU_CHECK_DRY_RUN:-0}" = 1 ]; then
  device=cpu
  fast=(--preset demo --seeds 1 --set widths=[8,16,16] --set batch_size=16)
  ddp=(--epochs 1)
  ddp_batches=("16 0.032" "4 0.001")
  tutorial=(--train-size 64 --test-size 32)
  nproc=1
else
  device=cuda
  fast=(--preset gpu94 --seeds 5)
  ddp=(--epochs 2)
  ddp_batches=("128 0.032" "4 0.001")          # global batch, lr
  tutorial=()
  say "$py" - <<'PY'
import torch
assert torch.cuda.is_available(), "gpu_check: no CUDA GPU here"
print("torch", torch.__version__, "cuda", torch.version.cuda, "devices",
      [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
PY
  nproc=$("$py" -c "import torch; print(torch.cuda.device_count())")
fi
export PYTHONUNBUFFERED=1
data=$CIFAR10_DATA_DIR

say echo "## 1. modern recipe"
say "$py" -m cifar_helpers.bench fast --data-dir "$data" --device "$device" "${fast[@]}"
say echo "## 2. seconds per epoch (notebook 06)"
say "$py" -m cifar_helpers.bench epochs --device "$device"
say echo "## 3. DDP, $nproc process(es)"
for batch_lr in "${ddp_batches[@]}"; do
  read -r batch lr <<<"$batch_lr"
  "$py" -m torch.distributed.run --standalone --nproc_per_node "$nproc" -m cifar_helpers.distributed \
    --data-dir "$data" --device "$device" --batch-size "$batch" --lr "$lr" "${ddp[@]}" \
    2>>"$log" | tail -1 | tee -a "$log"
done
say echo "## 4. fast Net recipe"
say "$py" -m cifar_helpers.bench tutorial --skip-baseline --data-dir "$data" --device "$device" "${tutorial[@]}"
say echo "## gpu_check done"
