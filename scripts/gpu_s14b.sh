#!/usr/bin/env bash
# Fourteenth pass, second call (prepared, not run). Do the split slices given in reverse (DecodeConfig.reverse_splits:
# the idle-prone later splits placed first) take back the loss of idle split programs (runs 51-52: placement, not
# the wave)? The reversed points of probe_long_splits.py, the long-split GPU test (reversed launches bit-equal to the
# unreversed ones), the placement orders, then the decode step with long splits, reversed, against the default
# (bf16). Limits add up to 370 s; the step rows take about 40 s each.
#
#   OUT=DIR scripts/gpu_s14b.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
run_step "reverse" 150 "$OUT/rev.txt" $PY bench/probe_long_splits.py --json "$OUT/rev.json" \
  --cases "64 mixed<=8k" 64x8k 64x1k 8x8k "63x1k+8k" "32 mixed<=8k" \
  --points 8 "8 rev" "z2 idle" "z2 idle rev" "z6 idle" "z6 idle rev" "off again"
cat "$OUT/rev.txt"
run_step pytest 60 "$OUT/pytest.txt" $PY -m pytest -q -p no:cacheprovider -k long_splits \
  tests/gpu/test_paged_triton_gpu.py
tail -3 "$OUT/pytest.txt"
run_step "placement" 40 "$OUT/place.txt" $PY bench/probe_sm_placement.py --json "$OUT/place.json"
cat "$OUT/place.txt"
for kv in auto; do
  CASES=("64 mixed<=8k" 64x8k)
  for mode in default long; do
    extra=()
    [ "$mode" = long ] && extra=(--long-splits 8 --reverse-splits)
    run_step "step $kv $mode" 60 "$OUT/step_${kv}_$mode.txt" $PY bench/bench_decode_step.py --hf-compile off \
      --kv-cache-dtype "$kv" --cases "${CASES[@]}" --json "$OUT/step_${kv}_$mode.json" "${extra[@]}"
    grep -E "^\| [0-9]" "$OUT/step_${kv}_$mode.txt"
  done
done
