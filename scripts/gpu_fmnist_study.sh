#!/usr/bin/env bash
# The GPU version of the Fashion-MNIST study, one command for one H100/H200, under 8 minutes:
# the papers' 14 x 14 patch grid (Fashion-MNIST resized to 56 px, patch 4), a ViT-T-sized
# encoder, ijepa+encvar (I-JEPA + the encoder regulariser) against ijepa, the first CPU study's settings, each trained for
# RUN_SECONDS (max_steps from a timed calibration run), then judged on the full test split
# (k-NN and linear probe against the random initialisation and raw pixels).
#
#   bash scripts/gpu_fmnist_study.sh                  # on the GPU machine (Fashion-MNIST IDX files needed:
#                                                     # $CJEPA_FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist)
#   DRY_RUN=1 bash scripts/gpu_fmnist_study.sh        # tiny sizes on the CPU, end to end (the tests run this)
#
# Writes $OUT/runs/, $OUT/records/ and $OUT/{gpu_fmnist_14x14_summary.json, _table.md, _online_knn.png}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-outputs/gpu_fmnist}
RUN_SECONDS=${RUN_SECONDS:-120}
ARGS=(recipes/sweeps/gpu-fmnist-14x14.json --parallel 1 --threads_per_run "${THREADS:-8}"
      --work_dir "$OUT/runs" --records "$OUT/records" --output_dir "$OUT" --poll_seconds 2)
if [ "${DRY_RUN:-0}" = 1 ]; then
  RUN_SECONDS=${DRY_RUN_SECONDS:-4}
  ARGS+=(--threads_per_run 1 --calibration_steps 4
         --set 'config_overrides={"image_size":16,"patch_size":4,"hidden_size":32,"num_hidden_layers":1,"num_attention_heads":4,"predictor_hidden_size":32,"predictor_num_hidden_layers":1,"predictor_num_attention_heads":4,"projector_dims":[64,64],"min_keep":2}'
         --set bf16=false --set per_device_train_batch_size=16 --set dataloader_num_workers=0 --set shuffle_buffer=64
         --set eval_bank_size=64 --set eval_query_size=32 --set final_eval_train_samples=200
         --set final_eval_test_samples=100 --set eval_on_start=false --set save_steps=1000)
fi
if [ "${DRY_RUN:-0}" != 1 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: no CUDA device; run with DRY_RUN=1 for the CPU dry run" >&2
  exit 2
fi
start=$(date +%s)
"$PY" scripts/sweep.py "${ARGS[@]}" --calibrate_seconds "$RUN_SECONDS"
echo "gpu_fmnist_study: done in $(( $(date +%s) - start )) s; results in $OUT"
