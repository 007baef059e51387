#!/usr/bin/env bash
# One lent-GPU call for the sixth and seventh passes: the decode kernel inside a step against alone
# (bench/probe_decode_in_step.py; PROBE=0 skips it), the graphed step at 1k with the default decode configuration
# and DECODE_CFG (STEPAB=1), the decode-step bench (eager layers with in-place norms and
# caller-owned results, beside the same step allocating; BENCH=0 skips it), the step profile (PROFILE=0), the
# attention host cost (HOST=0), the chunk/fp8 sweep (CHUNK=0; CHUNK_ARGS its options), then the GPU tests of decode (TESTS_S seconds, 0
# skips them; TESTS replaces the list). CHUNK_S: the sweep's time limit (100 s). STEPFP8=1: the decode-step bench
# over an fp8 cache; PROBEHOST=1: bench/probe_forward_host.py with raw launches off and on, alternating.
#
#   scripts/gpu_pass6.sh OUT
set -u
OUT="${1:?usage: scripts/gpu_pass6.sh OUT}"
. "$(dirname "$0")/gpu_env.sh"
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  if [[ "${PROBE:-1}" == 1 ]]; then
    run_step "decode in step probe" 150 "$OUT/probe.txt" $PY bench/probe_decode_in_step.py
  fi
  if [[ "${BENCH:-1}" == 1 ]]; then
    run_step "decode-step bench" 150 "$OUT/decode_step.txt" \
      $PY bench/bench_decode_step.py --json "$OUT/decode_step.json" --plot "$OUT/decode_step.png" --time-budget 70
  fi
  if [[ "${STEPAB:-0}" == 1 ]]; then  # the graphed step at batch 1, 8, 64 x 1k: default decode, then DECODE_CFG
    for cfg in default "${DECODE_CFG:-32/4/1/1}"; do
      opt=(); [[ $cfg == default ]] || opt=(--decode-config "$cfg")
      # shellcheck disable=SC2086  # STEPAB_CASES is a list of case names
      run_step "decode-step A/B: $cfg" 120 "$OUT/step_ab_${cfg//\//_}.txt" $PY bench/bench_decode_step.py \
        --cases ${STEPAB_CASES:-1x1k 8x1k 64x1k} --hf-compile off "${opt[@]}" --json "$OUT/step_ab_${cfg//\//_}.json"
    done
  fi
  if [[ "${STEPFP8:-0}" == 1 ]]; then  # the decode step over an fp8 (e4m3) cache, without the compiled HF rows
    run_step "decode-step bench, fp8 cache" 150 "$OUT/decode_step_fp8.txt" $PY bench/bench_decode_step.py \
      --kv-cache-dtype fp8_e4m3 --hf-compile off --json "$OUT/decode_step_fp8.json"
  fi
  if [[ "${PROBEHOST:-0}" == 1 ]]; then  # forward's host parts, raw launches off then on, twice (neighbours compare)
    for i in 1 2; do
      for raw in 0 1; do
        run_step "forward host parts, raw $raw ($i)" 60 "$OUT/probe_host_raw${raw}_$i.txt" \
          env SAGELLM_TRITON_RAW_LAUNCH=$raw $PY bench/probe_forward_host.py
      done
    done
  fi
  if [[ "${PROFILE:-1}" == 1 ]]; then
    run_step "profile" 60 "$OUT/profile.txt" $PY bench/profile_decode_step.py --batches 1 64
  fi
  if [[ "${HOST:-1}" == 1 ]]; then
    run_step "attention host cost" 90 "$OUT/host_cost.txt" \
      $PY -m sagellm_backend bench --provider cuda --only "attention host cost" --report "$OUT/host_cost.md"
  fi
  if [[ "${CHUNK:-1}" == 1 ]]; then
    # shellcheck disable=SC2086  # CHUNK_ARGS is a list of options
    run_step "chunk + fp8 sweep" "${CHUNK_S:-100}" "$OUT/chunk.txt" $PY bench/tune_decode_chunk.py ${CHUNK_ARGS:-}
  fi
  if [[ "${TESTS_S:-150}" != 0 ]]; then
    step "GPU tests"
    # shellcheck disable=SC2086  # TESTS is a list of paths
    timeout "${TESTS_S:-150}" $PY -m pytest -v -p no:cacheprovider -rs -x ${TESTS:-tests/gpu/test_decode_graph_gpu.py \
      tests/gpu/test_fused_decode_gpu.py tests/gpu/test_paged_triton_gpu.py tests/gpu/test_attention_fp8_gpu.py} \
      > "$OUT/pytest.txt" 2>&1
    echo "pytest rc=$?"
  fi
  step done
} > "$OUT/final.txt" 2>&1
cat "$OUT/final.txt"
cut -c1-400 "$OUT/probe.txt" 2>/dev/null
grep '^|' "$OUT/decode_step.txt" 2>/dev/null | head -12
for f in "$OUT"/step_ab_*.txt; do [[ -e $f ]] && { echo "$f"; grep -E '^\|' "$f" | head -6; }; done
grep -E "^\| (add_rmsnorm|silu_mul|attention|torch.add|F.linear|one eager|decode_kernel|rmsnorm_kernel)|^## (eager|graphed)" "$OUT/profile.txt" 2>/dev/null | head -30
grep -v -i warn "$OUT/chunk.txt" 2>/dev/null | cut -c1-300 | head -40
grep '^|' "$OUT/decode_step_fp8.txt" 2>/dev/null | head -10
for f in "$OUT"/probe_host_raw*.txt; do [[ -e $f ]] && { echo "$f"; grep -E "torch.add|forward|run\(|bound|same_call" "$f"; }; done
grep -c PASSED "$OUT/pytest.txt" 2>/dev/null; grep -E "FAILED|ERROR|passed|failed" "$OUT/pytest.txt" 2>/dev/null | grep -v PASSED | tail -15
tail -c 300 "$OUT/pytest.txt" 2>/dev/null
cat "$OUT/host_cost.md" 2>/dev/null | head -30
