#!/usr/bin/env bash
# Reproduce the published figures (REFERENCE.md section 5) from the released checkpoints, then
# score every released model on Y for comparison, and time each on the CPU.
# Usage: bash benchmarks/published.sh [SHARED_DIR]   (default ../shared)
set -euo pipefail
shared=${1:-../shared}
w=$shared/weights
d=$shared/data/benchmark
sets=(--data "$d/Set5" --data "$d/Set14" --data "$d/BSD100")

echo "== published protocol"
esr bench quality -m "$w/efdn_x4_EFDN_gv.pth" "${sets[@]}" --metric y --quiet
esr bench quality -m "$w/span_ch28_x4_ntire24_team38.pth" --data "$d/Set14" --data "$d/BSD100" --metric rgb --quiet
esr bench quality -m "$w/espan_x4_ntire25_team36.pth" --data "$d/Set14" --data "$d/BSD100" --metric rgb --quiet

echo "== every released model, Y"
for f in "$w"/*.pth; do
  esr bench quality -m "$f" "${sets[@]}" --metric y --quiet
done

echo "== CPU speed, 320x180 input"
for f in "$w"/*.pth; do
  esr bench speed -m "$f" --size 320x180 --device cpu
done
