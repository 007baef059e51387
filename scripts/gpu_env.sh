# Sourced by the lent-GPU call scripts (gpu_chunk.sh, gpu_final.sh, gpu_verify.sh) once OUT is set: makes OUT, goes
# to the repository root, sets the environment every such call runs with (NCCL's NVLink multicast off, the source
# tree on PYTHONPATH), PY, and step() (a timestamped banner).
mkdir -p "$OUT"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 PYTHONPATH=src
PY=${PYTHON:-python3}
step() { echo "== $(date -u +%H:%M:%S) $1"; }
