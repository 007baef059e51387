#!/usr/bin/env bash
# Sixteenth pass, first call: value pages stored transposed (HDN, beside head-major keys) on the GPU. Head-major
# and HDN pages against token-major ones (eager and graphed, bf16 and fp8), the paged Triton tests at the merge
# width's new default, then each fp8 launch traced with HND and with HDN value pages beside the copy ceiling and
# bf16, the fp8 bench rows and the decode-step table. Limits add up to 560 s.
#
#   OUT=DIR scripts/gpu_s16a.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
run_step pytest 170 "$OUT/pytest.txt" $PY -m pytest -q -p no:cacheprovider tests/gpu/test_head_major_gpu.py \
  tests/gpu/test_paged_triton_gpu.py
tail -4 "$OUT/pytest.txt"
run_step "trace" 150 "$OUT/trace.txt" $PY bench/probe_decode_trace.py --json "$OUT/trace.json" \
  --cases fp8x4x32k fp8vtx4x32k fp8x64x4k fp8vtx64x4k bf16x4x32k \
  --configs default maxnreg=128 block_n=32 num_stages=3 default
grep -E "^[a-z0-9]+x" "$OUT/trace.txt"
run_step "bench rows" 60 "$OUT/rows.txt" $PY -m pytest -v -s -p no:cacheprovider \
  tests/gpu/test_attention_fp8_gpu.py::test_fp8_decode_bench_rows
grep -E "us,|PASSED|FAILED|passed|failed" "$OUT/rows.txt" | tail -6
run_step "decode step" 180 "$OUT/step.txt" $PY bench/bench_decode_step.py --json "$OUT/step.json" \
  --time-budget 60
grep -E "^\|" "$OUT/step.txt"
