#!/usr/bin/env bash
# Second lent-GPU call for programmatic dependent launch (no early trigger): bench/probe_pdl.py, then the GPU tests
# not run since the tenth pass and those of the decode kernels, graphs and fp8.
#
#   OUT=DIR scripts/gpu_pdl2.sh
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
run_step probe 200 "$OUT/probe.txt" $PY bench/probe_pdl.py --json "$OUT/probe.json" --rounds 3
cat "$OUT/probe.txt"
run_step pytest 330 "$OUT/pytest.txt" $PY -m pytest -q -p no:cacheprovider -rs tests/gpu/test_decode_graph_gpu.py tests/gpu/test_fused_decode_gpu.py tests/gpu/test_paged_triton_gpu.py tests/gpu/test_paged_dense_gpu.py tests/gpu/test_pool_fp8_gpu.py tests/gpu/test_paged_attention_gpu.py tests/gpu/test_cuda.py
tail -15 "$OUT/pytest.txt"
