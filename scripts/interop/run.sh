#!/usr/bin/env bash
# Interop suite: this checkout as the backend of the sageLLM engine.
#   phase 1: isagellm-core 0.5.4.26 + isagellm-protocol 0.5.4.16 + the isagellm 0.5.4.70 CLI (check_core_05.py)
#   phase 2: isagellm-core 0.2.2.8 + isagellm-protocol 0.1.2.4, the engine of the seed release's time (check_core_022.py)
# Each phase runs in its own Python 3.11 venv under $SAGELLM_INTEROP_DIR (default: <checkout>/.interop-venv), rebuilt
# only when its requirement lists change. sageLLM packages are installed with --no-deps and this project is installed
# from the checkout, never from a registry. Exit status: 0 when both phases pass.
# Environment: SAGELLM_INTEROP_DIR (cache root), SAGELLM_INTEROP_PYTHON (a Python 3.11, default python3.11),
# INTEROP_PHASES ("05 022" by default), INTEROP_TRACEBACK=1 (full tracebacks).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/scripts/interop"
BASE="${SAGELLM_INTEROP_DIR:-$ROOT/.interop-venv}"
PYTHON="${SAGELLM_INTEROP_PYTHON:-python3.11}"
PHASES="${INTEROP_PHASES:-05 022}"
TORCH_SPEC="torch==2.13.0"
BUILD_FORMAT=1 # bump to force a rebuild of every cached venv

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export PYTHONDONTWRITEBYTECODE=1

die() {
    echo "interop: ERROR: $*" >&2
    exit 2
}

now() { date +%s; }

command -v "$PYTHON" >/dev/null || die "$PYTHON not found; set SAGELLM_INTEROP_PYTHON to a Python 3.11 interpreter"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
    die "$PYTHON is not Python 3.11 (isagellm-core requires ==3.11.*)"

# venv_key LOCKFILE...: hash of everything that decides a venv's contents.
venv_key() {
    {
        echo "format=$BUILD_FORMAT torch=$TORCH_SPEC"
        "$PYTHON" -c 'import sys; print(sys.version)'
        cat "$@"
    } | sha256sum | cut -c1-16
}

# ensure_venv DIR SAGE_LOCK: (re)build DIR unless its stamp matches.
ensure_venv() {
    local dir="$1" sage_lock="$2" key
    key="$(venv_key "$HERE/requirements-thirdparty.txt" "$sage_lock")"
    if [[ -f "$dir/.interop-key" && "$(cat "$dir/.interop-key")" == "$key" ]]; then
        echo "interop: reusing $dir (key $key)"
        return
    fi
    local t0
    t0=$(now)
    echo "interop: building $dir (key $key)"
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    local pip=("$dir/bin/python" -m pip install --quiet --no-input)
    # torch first and alone: the machine's local CPU build (pip's find-links); --no-deps everywhere after it so
    # that no requirement can bring a CUDA build or a released isagellm-backend.
    "${pip[@]}" --no-deps "$TORCH_SPEC"
    "${pip[@]}" --no-deps -r "$HERE/requirements-thirdparty.txt"
    "${pip[@]}" --no-deps -r "$sage_lock"
    "$dir/bin/python" - <<'PY' || die "bad torch in $dir"
import sys
from importlib import metadata

import torch

names = [d.metadata["Name"] or "" for d in metadata.distributions()]
cuda = sorted(n for n in names if n.lower().startswith("nvidia-"))
if not torch.__version__.endswith("+cpu") or cuda:
    sys.exit(f"expected the CPU build of torch and no CUDA packages, found torch {torch.__version__} {cuda}")
PY
    echo "$key" >"$dir/.interop-key"
    echo "interop: built $dir in $(($(now) - t0))s"
}

# install_project DIR: this checkout, editable, then prove that is what imports.
install_project() {
    local dir="$1"
    "$dir/bin/python" -m pip install --quiet --no-input --no-deps --no-build-isolation -e "$ROOT" >/dev/null
    "$dir/bin/python" - "$ROOT" <<'PY' || die "sagellm_backend in $1 does not come from this checkout"
import pathlib
import sys

import sagellm_backend

where = pathlib.Path(sagellm_backend.__file__).resolve()
src = pathlib.Path(sys.argv[1], "src", "sagellm_backend").resolve()
if not where.is_relative_to(src):
    sys.exit(f"sagellm_backend imported from {where}, expected a path under {src}")
print(f"interop: sagellm_backend {sagellm_backend.__version__} from {where.parent}")
PY
}

ensure_models() {
    local py="$1" dir="$BASE/models" key
    key="$(venv_key "$HERE/make_models.py" "$HERE/requirements-thirdparty.txt")"
    if [[ -f "$dir/.interop-key" && "$(cat "$dir/.interop-key")" == "$key" ]]; then
        return
    fi
    rm -rf "$dir"
    "$py" "$HERE/make_models.py" "$dir" >/dev/null
    echo "$key" >"$dir/.interop-key"
}

mkdir -p "$BASE"
status=0
t_start=$(now)
log="$BASE/last-run.log"
: >"$log"
for phase in $PHASES; do
    case "$phase" in
    05) venv="$BASE/core05" lock="$HERE/requirements-core05.txt" check="$HERE/check_core_05.py" ;;
    022) venv="$BASE/core022" lock="$HERE/requirements-core022.txt" check="$HERE/check_core_022.py" ;;
    *) die "unknown phase '$phase' (expected 05 or 022)" ;;
    esac
    ensure_venv "$venv" "$lock"
    install_project "$venv"
    ensure_models "$venv/bin/python"
    echo "interop: phase $phase: $(basename "$check")"
    t0=$(now)
    if ! (cd "$BASE" && timeout 900 "$venv/bin/python" "$check" --models "$BASE/models" --checkout "$ROOT") |
        tee -a "$log"; then
        status=1
    fi
    echo "interop: phase $phase took $(($(now) - t0))s"
done
echo "interop: total $(($(now) - t_start))s, $([[ $status == 0 ]] && echo PASSED || echo FAILED)"
# One closing line over both phases, summed from each check's own "N passed, N failed, N skipped" line.
awk '/^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$/ { p += $1; f += $3; s += $5 }
    END { printf "interop: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
