#!/usr/bin/env bash
# Thirteenth pass, first call: the default split launches of the tree before the twelfth pass (old_src, made from
# a897e70) against this tree in neighbouring processes, twice, alternating; what the equal-length loss of long
# splits comes from (the grid's idle programs or the long-span code: the "z6 idle" point); the decode-step table.
#
#   OUT=DIR scripts/gpu_s13a.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for i in 1 2; do for t in old_src src; do
  PYTHONPATH=$t timeout 45 $PY bench/probe_split_ab.py --label "$t $i" 2>&1 | tee -a "$OUT/ab.txt" | grep -v Warn
done; done
run_step "long splits diagnosis" 70 "$OUT/diag.txt" $PY bench/probe_long_splits.py --json "$OUT/diag.json" \
  --cases "64 mixed<=8k" 64x8k 64x1k --points 6 "z6 idle" "z2 idle" "off again"
cat "$OUT/diag.txt"
run_step "decode step" 250 "$OUT/step.txt" $PY bench/bench_decode_step.py --json "$OUT/step.json" \
  --plot "$OUT/step.png" --time-budget 70
grep -E "^\|" "$OUT/step.txt"; tail -3 "$OUT/step.txt"
