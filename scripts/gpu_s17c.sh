#!/usr/bin/env bash
# Seventeenth pass, last call (about 280 s of device time left): the attention host cost (cases in shared rounds),
# then the decode-step table, on whatever host the call gets. Limits add up to 170 s.
#
#   OUT=DIR scripts/gpu_s17c.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
run_step "attention host cost" 50 "$OUT/host.txt" \
  $PY -m sagellm_backend bench --provider cuda --only "attention host cost" --report "$OUT/host.md"
grep "^| attention" "$OUT/host.md"
rm -f "$OUT/host.txt"
run_step "decode step" 120 "$OUT/step.txt" $PY bench/bench_decode_step.py --json "$OUT/step.json" \
  --time-budget 30
grep -E "^\|" "$OUT/step.txt"
