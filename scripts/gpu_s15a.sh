#!/usr/bin/env bash
# Fifteenth pass, first call: issue 22's targets in one run (the attention host cost beside the decode-step table),
# the traced decode launches (bench/probe_decode_trace.py: where a launch's time goes, program by program), then the
# prepared reversed-split experiment of scripts/gpu_s14b.sh (reversed points of probe_long_splits.py, the
# long-split GPU test, the placement orders, the step with long splits reversed against the default). Ordered by
# priority; limits add up to about 710 s (the call stops at 600).
#
#   OUT=DIR scripts/gpu_s15a.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
run_step "attention host cost" 50 "$OUT/host.txt" \
  $PY -m sagellm_backend bench --provider cuda --only "attention host cost" --report "$OUT/host.md"
grep "^| attention" "$OUT/host.md"
run_step "decode step" 170 "$OUT/step.txt" $PY bench/bench_decode_step.py --json "$OUT/step.json" \
  --plot "$OUT/step.png" --time-budget 70
grep -E "^\|" "$OUT/step.txt"
run_step "trace" 90 "$OUT/trace.txt" $PY bench/probe_decode_trace.py --json "$OUT/trace.json"
cat "$OUT/trace.txt"
run_step "trace test" 60 "$OUT/trace_test.txt" $PY -m pytest -q -p no:cacheprovider -k traced \
  tests/gpu/test_paged_triton_gpu.py
tail -3 "$OUT/trace_test.txt"
run_step "reverse" 120 "$OUT/rev.txt" $PY bench/probe_long_splits.py --json "$OUT/rev.json" \
  --cases "64 mixed<=8k" 64x8k 64x1k 8x8k "63x1k+8k" "32 mixed<=8k" \
  --points 8 "8 rev" "z2 idle" "z2 idle rev" "z6 idle" "z6 idle rev" "off again"
cat "$OUT/rev.txt"
run_step pytest 60 "$OUT/pytest.txt" $PY -m pytest -q -p no:cacheprovider -k long_splits \
  tests/gpu/test_paged_triton_gpu.py
tail -3 "$OUT/pytest.txt"
run_step "placement" 40 "$OUT/place.txt" $PY bench/probe_sm_placement.py --json "$OUT/place.json"
cat "$OUT/place.txt"
for mode in default long; do
  extra=()
  [ "$mode" = long ] && extra=(--long-splits 8 --reverse-splits)
  run_step "step $mode" 60 "$OUT/step_$mode.txt" $PY bench/bench_decode_step.py --hf-compile off \
    --cases "64 mixed<=8k" 64x8k --json "$OUT/step_$mode.json" "${extra[@]}"
  grep -E "^\| [0-9]" "$OUT/step_$mode.txt"
done
