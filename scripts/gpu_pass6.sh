#!/usr/bin/env bash
# One lent-GPU call for the sixth pass: the decode-step bench (eager layers with in-place norms and caller-owned
# results, beside the same step allocating), the step profile (PROFILE=0 skips it), the attention host cost, the
# chunk/fp8 sweep (CHUNK=0 skips it), then the GPU tests of decode (TESTS_S seconds; TESTS replaces the list).
#
#   scripts/gpu_pass6.sh OUT
set -u
OUT="${1:?usage: scripts/gpu_pass6.sh OUT}"
. "$(dirname "$0")/gpu_env.sh"
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  run_step "decode-step bench" 150 "$OUT/decode_step.txt" \
    $PY bench/bench_decode_step.py --json "$OUT/decode_step.json" --plot "$OUT/decode_step.png" --time-budget 70
  if [[ "${PROFILE:-1}" == 1 ]]; then
    run_step "profile" 60 "$OUT/profile.txt" $PY bench/profile_decode_step.py --batches 1 64
  fi
  run_step "attention host cost" 90 "$OUT/host_cost.txt" \
    $PY -m sagellm_backend bench --provider cuda --only "attention host cost" --report "$OUT/host_cost.md"
  if [[ "${CHUNK:-1}" == 1 ]]; then
    run_step "chunk + fp8 sweep" 100 "$OUT/chunk.txt" $PY bench/tune_decode_chunk.py
  fi
  step "GPU tests"
  # shellcheck disable=SC2086  # TESTS is a list of paths
  timeout "${TESTS_S:-150}" $PY -m pytest -v -p no:cacheprovider -rs -x ${TESTS:-tests/gpu/test_decode_graph_gpu.py \
    tests/gpu/test_fused_decode_gpu.py tests/gpu/test_paged_triton_gpu.py tests/gpu/test_attention_fp8_gpu.py} \
    > "$OUT/pytest.txt" 2>&1
  echo "pytest rc=$?"
  step done
} > "$OUT/final.txt" 2>&1
cat "$OUT/final.txt"
grep '^|' "$OUT/decode_step.txt" | head -10
grep -E "^\| (add_rmsnorm|silu_mul|attention|torch.add|F.linear|one eager)|^## eager" "$OUT/profile.txt" | head -30
grep -v -i warn "$OUT/chunk.txt" | cut -c1-300 | head -40
grep -c PASSED "$OUT/pytest.txt"; grep -E "FAILED|ERROR|passed|failed" "$OUT/pytest.txt" | grep -v PASSED | tail -15
tail -c 300 "$OUT/pytest.txt"
cat "$OUT/host_cost.md" 2>/dev/null | head -30
