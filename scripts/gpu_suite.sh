#!/usr/bin/env bash
# Run the GPU test suite and the GPU benchmarks end to end; write results to the folder given.
#
#   scripts/gpu_suite.sh OUTPUT_DIR
#
# Needs a CUDA build of torch (and Triton for the batched-copy kernel). Works from the source
# tree (PYTHONPATH=src), installs nothing. Writes at most 7 files: summary.txt (machine, info,
# tuning sweep, conformance table, collectives), pytest.txt, bench_cuda.{json,md,png},
# collectives_cuda.{json,md} (2+ GPUs). Keeps NCCL's NVLink multicast off.
set -u
OUT="${1:?usage: scripts/gpu_suite.sh OUTPUT_DIR}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
PY=${PYTHON:-python3}
S="$OUT/summary.txt"
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
{
  echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) gpus=$NGPU"
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv
  $PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  echo "== sagellm-backend info"; $PY -m sagellm_backend info
  echo "== copy kernel sweep"; $PY bench/tune_copy.py --env-file /tmp/sagellm_tune.env
} > "$S" 2>&1
[ -f /tmp/sagellm_tune.env ] && . /tmp/sagellm_tune.env && echo "using $SAGELLM_COPY_BLOCK/$SAGELLM_COPY_WARPS" >> "$S"
echo "== pytest (whole suite; gpu and multi_gpu tests run here)" >> "$S"
$PY -m pytest tests -q -rs -p no:cacheprovider --timeout 900 > "$OUT/pytest.txt" 2>&1
echo "pytest exit $? : $(tail -1 "$OUT/pytest.txt")" >> "$S"
echo "== sagellm-backend check cuda" >> "$S"
$PY -m sagellm_backend check cuda >> "$S" 2>&1
echo "== sagellm-backend bench --provider cuda" >> "$S"
$PY -m sagellm_backend bench --provider cuda --json --report "$OUT/bench_cuda.md" --plot "$OUT/bench_cuda.png" \
  > "$OUT/bench_cuda.json" 2>> "$S"
cat "$OUT/bench_cuda.md" >> "$S" 2>/dev/null
if [ "$NGPU" -ge 2 ]; then
  echo "== collectives (NCCL, 2 ranks)" >> "$S"
  $PY bench/bench_collectives.py --provider cuda --nproc 2 --out "$OUT" >> "$S" 2>&1
fi
echo "== done $(date -u +%H:%M:%S)" >> "$S"
