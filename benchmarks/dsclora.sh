#!/usr/bin/env bash
# A real DSCLoRA run (issue 6): finetune SPAN-tiny with a frozen teacher on ../shared/data/train,
# export the merged student, and score it next to the student (Y, Set5 / Set14 / BSD100).
# Usage: bash benchmarks/dsclora.sh RUN_DIR [extra esr finetune-lora options, e.g. --set lora.affinity_weight=0]
# Environment: SHARED (default ../shared), TEACHER (default the ESPAN file), STEPS, LR, PATCH (LR patch, 48),
# BORDER (LR pixels at each patch edge left out of the losses, 8), DATA (training folders under data/train,
# "BSD200"), STRENGTHS (adapter strengths to export, "1 0.5 0.25").
# The run is exported at each strength and every export's per-image gains over the student are printed
# on the held-out T91 and the benchmark sets; choose the strength on T91 alone (its worst fold).
set -euo pipefail
run=${1:?usage: bash benchmarks/dsclora.sh RUN_DIR [options]}
shift
shared=${SHARED:-../shared}
w=$shared/weights
t=$shared/data/train
b=$shared/data/benchmark
teacher=${TEACHER:-$w/espan_x4_ntire25_team36.pth}
student=$w/span_tiny_ch26_x4_ntire24_team39.pth

data=()
for d in ${DATA:-BSD200}; do data+=(--data "$t/$d"); done

# T91 is held out for validation; the benchmark sets are only scored, never trained or tuned on.
start=$(date +%s)
esr finetune-lora --teacher "$teacher" --student "$student" \
  "${data[@]}" --val "$t/T91" --out "$run" \
  --steps "${STEPS:-300}" --batch 8 --lr-patch "${PATCH:-48}" --set loss.border="${BORDER:-8}" --lr "${LR:-1e-5}" --workers 1 \
  --set data.val_limit=0 --set run.val_every=50 --set run.log_every=25 --set optim.warmup=20 \
  --quiet "$@"
echo "finetune: $(( $(date +%s) - start )) s"
models=()
for strength in ${STRENGTHS:-1 0.5 0.25}; do
  esr export "$run" --strength "$strength" --out "$run/merged-s$strength.safetensors" --overwrite
  models+=("$run/merged-s$strength.safetensors")
done
python benchmarks/image_gains.py "$student" "${models[@]}" --data "$t/T91" --data "$b/Set5" --data "$b/Set14" --data "$b/BSD100"
