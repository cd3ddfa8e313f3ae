#!/usr/bin/env bash
# The measurements behind the GPU figures in docs/benchmarks.md (the modern recipe's GPU presets, notebook
# 06's table, DDP and the fast Net recipe on CUDA), in one run of about 6 minutes on one GPU
# (5 on an H200 before gpu5s was added; benchmarks/ holds that log). It prints, in order:
#   1. bench fast --preset gpu94, then gpu5s, --seeds 5 --device cuda   (the test-set figures)
#   2. longer and wider gpu94 variants on the validation split (5,000 held-out training images,
#      one seed each): how accuracy grows with the seconds spent (gpu5s was chosen from these)
#   3. bench epochs --device cuda                           (notebook 06's seconds-per-epoch table)
#   4. the DDP entry point's JSON line at global batch 128 and 4, one process per GPU
#   5. bench tutorial --skip-baseline --device cuda         (the fast Net recipe)
# and keeps everything in $OUT/gpu_check.log (runs/gpu_check/ when $OUT is unset). Each step has
# its own time limit and a failing step does not stop the others; the last line names the steps
# that failed or ran out of time, and the exit status is then 1.
#
# On a CUDA machine with the data:   CIFAR10_DATA_DIR=/abs/path/cifar10-jpg bash tools/gpu_check.sh
# With the `device` tool (the machine has python3 + torch but not ../shared, which does not
# travel): pack the JPEG copy once here, 20 MB, in .gpu/ (ignored by git, never committed),
#   mkdir -p .gpu && tar czf .gpu/cifar10-jpg.tar.gz --exclude=.cache -C ../shared/data cifar10-jpg
# then  run(command="bash tools/gpu_check.sh", carry=[".gpu"], timeout_s=540):
# the script unpacks it to /tmp when CIFAR10_DATA_DIR is unset.
# GPU_CHECK_DRY_RUN=1: every step tiny and on the CPU, to test this script (tests/test_tools.py).
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}                  # the device machines have python3, not always python
out=${OUT:-runs/gpu_check}
mkdir -p "$out"
log="$out/gpu_check.log"
: >"$log"
failed=()
say() { "$@" 2>&1 | tee -a "$log"; }
# step NAME SECONDS CMD...: run CMD under a time limit, its output into the log; note a failure
step() {
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    failed+=("$name (exit $rc$( [ "$rc" -eq 124 ] && echo ", over ${limit} s"))")
  fi
  say echo "# $name: exit $rc after $((SECONDS - start)) s"
}
# fast_step NAME SECONDS "ARGS": one bench fast run, its arguments given as one string
fast_step() {
  local a
  read -r -a a <<<"$3"
  step "$1 ${a[*]}" "$2" "$py" -m cifar_helpers.bench fast --data-dir "$data" --device "$device" "${a[@]}"
}

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
  tiny=(--set widths=[8,16,16] --set batch_size=16)
  fast=("--preset demo --seeds 1 ${tiny[*]}")
  sweep=("--preset demo --seeds 1 --val-size 16 ${tiny[*]}"
         "--preset demo --seeds 1 --val-size 16 ${tiny[*]} --set epochs=1")
  ddp=(--epochs 1)
  ddp_batches=("16 0.032" "4 0.001")
  tutorial=(--train-size 64 --test-size 32)
  nproc=1
else
  device=cuda
  fast=("--preset gpu94 --seeds 5" "--preset gpu5s --seeds 5")
  # one seed each on 45,000/5,000: longer, then wider (the validation split, not the test set)
  sweep=("--preset gpu94 --seeds 1 --val-size 5000"
         "--preset gpu94 --seeds 1 --val-size 5000 --set epochs=15"
         "--preset gpu94 --seeds 1 --val-size 5000 --set epochs=20"
         "--preset gpu94 --seeds 1 --val-size 5000 --set widths=[96,384,384] --set epochs=12"
         "--preset gpu94 --seeds 1 --val-size 5000 --set widths=[128,512,512] --set epochs=16")
  ddp=(--epochs 2)
  ddp_batches=("128 0.032" "4 0.001")          # global batch, lr
  tutorial=()
  say "$py" - <<'PY'
import torch
assert torch.cuda.is_available(), "gpu_check: no CUDA GPU here"
print("torch", torch.__version__, "cuda", torch.version.cuda, "devices",
      [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
PY
  [ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
  nproc=$("$py" -c "import torch; print(torch.cuda.device_count())")
fi
export PYTHONUNBUFFERED=1
data=$CIFAR10_DATA_DIR

say echo "## 1. modern recipe"
for args in "${fast[@]}"; do fast_step "1 fast" 120 "$args"; done
say echo "## 2. larger recipes, validation split"
for args in "${sweep[@]}"; do fast_step "2 sweep" 90 "$args"; done
say echo "## 3. seconds per epoch (notebook 06)"
step "3 epochs" 60 "$py" -m cifar_helpers.bench epochs --device "$device"
say echo "## 4. DDP, $nproc process(es)"
for batch_lr in "${ddp_batches[@]}"; do
  read -r batch lr <<<"$batch_lr"
  step "4 ddp batch $batch" 90 "$py" -m torch.distributed.run --standalone --nproc_per_node "$nproc" \
    -m cifar_helpers.distributed --data-dir "$data" --device "$device" --batch-size "$batch" \
    --lr "$lr" "${ddp[@]}"
done
say echo "## 5. fast Net recipe"
step "5 tutorial" 60 "$py" -m cifar_helpers.bench tutorial --skip-baseline --data-dir "$data" \
  --device "$device" "${tutorial[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  say echo "## gpu_check done; failed: $(IFS=';'; echo "${failed[*]}")"
  exit 1
fi
say echo "## gpu_check done"
