#!/usr/bin/env bash
# One lent-GPU call for the per-sequence split spreading and the fp8 default: the chunk/fp8 sweep (graph-replayed
# launches), the GPU tests of decode (plain, graphed, fp8), the end-to-end decode-step bench and the step profile.
#
#   scripts/gpu_chunk.sh OUT
set -u
OUT="${1:?usage: scripts/gpu_chunk.sh OUT}"
. "$(dirname "$0")/gpu_env.sh"
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  run_step "chunk + fp8 sweep" 100 "$OUT/chunk.txt" $PY bench/tune_decode_chunk.py
  run_step "decode-step bench" 150 "$OUT/decode_step.txt" \
    $PY bench/bench_decode_step.py --json "$OUT/decode_step.json" --plot "$OUT/decode_step.png" --time-budget 70
  step "GPU tests"
  timeout "${TESTS_S:-110}" $PY -m pytest -q -p no:cacheprovider -rs tests/gpu/test_decode_graph_gpu.py \
    tests/gpu/test_paged_triton_gpu.py tests/gpu/test_attention_fp8_gpu.py tests/gpu/test_fused_decode_gpu.py \
    > "$OUT/pytest.txt" 2>&1
  echo "pytest rc=$?"
  if [[ "${PROFILE:-1}" == 1 ]]; then
    run_step "profile" 45 "$OUT/profile.txt" $PY bench/profile_decode_step.py
  fi
  step done
} > "$OUT/final.txt" 2>&1
cat "$OUT/final.txt"
grep -v -i warn "$OUT/chunk.txt" | cut -c1-420
grep -E "FAILED|ERROR|passed|failed" "$OUT/pytest.txt" | tail -15
grep '^|' "$OUT/decode_step.txt" | head -10
[[ -f "$OUT/profile.txt" ]] && grep -A12 "graphed step" "$OUT/profile.txt" | head -30
