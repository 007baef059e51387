#!/usr/bin/env bash
# One lent-GPU call for programmatic dependent launch: bench/probe_pdl.py (on/off in one process), then the GPU
# tests of the decode kernels, graphs and fp8 with the new defaults.
#
#   OUT=DIR scripts/gpu_pdl.sh [pytest files...]
set -u
: "${OUT:?set OUT}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -c "import triton, triton.language as tl; print('triton', triton.__version__, tl.extra.cuda.gdc_wait)"
run_step probe 240 "$OUT/probe.txt" $PY bench/probe_pdl.py --json "$OUT/probe.json"
cat "$OUT/probe.txt"
tests=${*:-tests/gpu/test_paged_triton_gpu.py tests/gpu/test_decode_graph_gpu.py tests/gpu/test_fused_decode_gpu.py tests/gpu/test_attention_fp8_gpu.py tests/gpu/test_forward_fast_gpu.py}
run_step pytest 300 "$OUT/pytest.txt" $PY -m pytest -q -p no:cacheprovider $tests
tail -15 "$OUT/pytest.txt"
