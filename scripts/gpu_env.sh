# Sourced by the lent-GPU call scripts (gpu_chunk.sh, gpu_final.sh, gpu_verify.sh, gpu_pass6.sh) once OUT is set:
# makes OUT, goes to the repository root, sets the environment every such call runs with (NCCL's NVLink multicast
# off, the source tree on PYTHONPATH), PY, step() (a timestamped banner) and run_step() (a banner, a command under a
# time limit with its output in a file, then its exit status).
mkdir -p "$OUT"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 PYTHONPATH=src
PY=${PYTHON:-python3}
step() { echo "== $(date -u +%H:%M:%S) $1"; }
# run_step NAME SECONDS FILE CMD...
run_step() {
  local name=$1 secs=$2 file=$3
  shift 3
  step "$name"
  timeout "$secs" "$@" > "$file" 2>&1
  echo "rc=$?"
}
