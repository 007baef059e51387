#!/usr/bin/env bash
# Long splits, second call: what the equal-length loss comes from (the grid's idle programs or the long-span code),
# the decode-step bench with the default configuration (no torch.compile rows), then GPU tests not run since the
# eleventh pass.
#
#   OUT=DIR scripts/gpu_long2.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
run_step "long splits diagnosis" 60 "$OUT/diag.txt" $PY bench/probe_long_splits.py --json "$OUT/diag.json" \
  --cases "64 mixed<=8k" 64x8k 64x1k --points 6 2 "z6 idle"
cat "$OUT/diag.txt"
run_step "decode step" 180 "$OUT/step.txt" $PY bench/bench_decode_step.py --hf-compile off \
  --json "$OUT/step.json" --plot "$OUT/step.png"
grep -E "^\|" "$OUT/step.txt"
run_step pytest 90 "$OUT/pytest.txt" $PY -m pytest -q -p no:cacheprovider -rs tests/gpu/test_forward_fast_gpu.py \
  tests/gpu/test_attention_fp8_gpu.py tests/gpu/test_head_major_gpu.py tests/gpu/test_attention_variants_gpu.py
tail -8 "$OUT/pytest.txt"
