#!/usr/bin/env bash
# The GPU check, one command for one H100/H200, under 8 minutes (cjepa_hf.bench.check):
#   1. the CUDA-only tests (pytest -k "cuda or inductor"; the host-sync tests of the training step among them);
#   2. the trainer's real step (TrainerStep) for ViT-B/16 at 224 px, batch 256, bf16, SDPA, without and with
#      torch.compile, and ViT-L/16 at batch 128: images/s, TFLOP/s, MFU against the GPU's bf16 dense peak
#      (by device name; PEAK_TFLOPS=... overrides), peak memory;
#   3. the input pipeline (training's: uint8 crops in the workers, pinned, normalised on the GPU) with one
#      DataLoader worker per core against the images/s the step consumes: the verdict says whether the step
#      waits for data; when it does, JPEG decoding on the GPU (nvJPEG, torchvision.io.decode_jpeg, only here,
#      never in CI) is timed as the way out;
#   4. the trainer's step on ViT-L/16 under DDP and FSDP on every GPU (torchrun; FSDP "skipped" until the
#      trainer has it).
# Everything goes into one JSON ($OUT) and the figures are printed.
#
#   bash scripts/gpu_check.sh                     # on the GPU machine; or `make gpu-check`
#   DRY_RUN=1 bash scripts/gpu_check.sh           # tiny sizes on the CPU, end to end (tests/test_gpu_check.py)
#
# Knobs: OUT (default docs/benchmarks/gpu_check.json), PYTHON, PEAK_TFLOPS, ATTN (sdpa | flash_attention_2),
# VIT_L_COMPILE=1 (ViT-L/16 compiled too: about 3 more minutes), WORKERS (default: every core), BUDGET_S (470).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python || command -v python3)}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's cjepa_hf, installed or not
OUT=${OUT:-docs/benchmarks/gpu_check.json}
ARGS=(--output "$OUT" --attn-implementation "${ATTN:-sdpa}" --budget-s "${BUDGET_S:-470}" --python "$PY")
[ -n "${PEAK_TFLOPS:-}" ] && ARGS+=(--peak-tflops "$PEAK_TFLOPS")
[ -n "${WORKERS:-}" ] && ARGS+=(--workers "$WORKERS")
[ "${VIT_L_COMPILE:-0}" = 1 ] && ARGS+=(--vit-l-compile)
if [ "${DRY_RUN:-0}" = 1 ]; then
  ARGS+=(--dry-run --overlap)
elif ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: no CUDA device; run with DRY_RUN=1 for the CPU dry run" >&2
  exit 2
fi
start=$(date +%s)
"$PY" -m cjepa_hf.bench.check "${ARGS[@]}"
echo "gpu_check: done in $(( $(date +%s) - start )) s; results in $OUT"
