#!/usr/bin/env bash
# Long splits, the last call of the twelfth pass: default split launches of the tree before the pass (old_src, made
# from a897e70) against this tree in neighbouring processes, twice, alternating (bench/probe_split_ab.py); then what
# the equal-length loss of long splits comes from.
#
#   OUT=DIR scripts/gpu_long3.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
for i in 1 2; do for t in old_src src; do
  PYTHONPATH=$t timeout 45 $PY bench/probe_split_ab.py --label "$t $i" 2>&1 | tee -a "$OUT/ab.txt" | grep -v Warn
done; done
run_step "long splits diagnosis" 50 "$OUT/diag.txt" $PY bench/probe_long_splits.py --json "$OUT/diag.json" \
  --cases 64x8k 64x1k --points 6 "z6 idle"
cat "$OUT/diag.txt"
