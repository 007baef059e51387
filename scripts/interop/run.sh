#!/usr/bin/env bash
# Interop suite: this checkout as the backend of the sageLLM engine.
#   phase 1: isagellm-core 0.5.4.26 + isagellm-protocol 0.5.4.16 + the isagellm 0.5.4.70 CLI (check_core_05.py)
#   phase 2: isagellm-core 0.2.2.8 + isagellm-protocol 0.1.2.4, the engine of the seed release's time (check_core_022.py)
# Each phase runs in its own Python 3.11 venv under $SAGELLM_INTEROP_DIR (default: <checkout>/.interop-venv), rebuilt
# only when what decides its contents changes. Phase 05 installs this checkout together with the engine packages by
# pip's normal dependency resolution (only the CPU torch build is pinned), then `pip install isagellm==0.5.4.70` as a
# user would, and fails unless the installed isagellm-backend is still this checkout (editable, same version) and
# `pip check` passes. Phase 022's engine requires isagellm-backend<0.3.0, which this 0.5-line project can never
# satisfy: it is installed with --no-deps over pinned third-party packages. Exit status: 0 when both phases pass.
# Environment: SAGELLM_INTEROP_DIR (cache root), SAGELLM_INTEROP_PYTHON (a Python 3.11, default python3.11),
# INTEROP_PHASES ("05 022" by default), INTEROP_TRACEBACK=1 (full tracebacks).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/scripts/interop"
BASE="${SAGELLM_INTEROP_DIR:-$ROOT/.interop-venv}"
PYTHON="${SAGELLM_INTEROP_PYTHON:-python3.11}"
PHASES="${INTEROP_PHASES:-05 022}"
TORCH_SPEC="torch==2.13.0"
UMBRELLA_SPEC="isagellm==0.5.4.70" # installed after the engine, as a user would
BUILD_FORMAT=2 # bump to force a rebuild of every cached venv

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

# check_torch DIR: the CPU build of torch and no CUDA package.
check_torch() {
    "$1/bin/python" - <<'PY' || die "bad torch in $1"
import sys
from importlib import metadata

import torch

names = [d.metadata["Name"] or "" for d in metadata.distributions()]
cuda = sorted(n for n in names if n.lower().startswith("nvidia-"))
if not torch.__version__.endswith("+cpu") or cuda:
    sys.exit(f"expected the CPU build of torch and no CUDA packages, found torch {torch.__version__} {cuda}")
PY
}

# ensure_venv PHASE DIR SAGE_LOCK: (re)build DIR unless its stamp matches.
ensure_venv() {
    local phase="$1" dir="$2" sage_lock="$3" key
    if [[ "$phase" == 05 ]]; then # resolved together with this project: its metadata decides the contents too
        key="$(venv_key "$sage_lock" "$ROOT/pyproject.toml" "$ROOT/src/sagellm_backend/_version.py" <(echo "$UMBRELLA_SPEC"))"
    else
        key="$(venv_key "$HERE/requirements-thirdparty.txt" "$sage_lock")"
    fi
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
    # torch first and alone: the machine's local CPU build (pip's find-links), so that nothing after it can bring a
    # CUDA build; every later install names it again, so the resolver keeps it.
    "${pip[@]}" "$TORCH_SPEC"
    if [[ "$phase" == 05 ]]; then
        # What a user types: this checkout and the engine, resolved together (fails with ResolutionImpossible when
        # this project's version is outside the engine's isagellm-backend range).
        "${pip[@]}" "$TORCH_SPEC" -e "$ROOT" -r "$sage_lock" || die "pip cannot install this checkout beside the engine"
    else
        "${pip[@]}" --no-deps -r "$HERE/requirements-thirdparty.txt"
        "${pip[@]}" --no-deps -r "$sage_lock"
    fi
    check_torch "$dir"
    echo "$key" >"$dir/.interop-key"
    echo "interop: built $dir in $(($(now) - t0))s"
}

# install_project PHASE DIR: this checkout, editable, then prove that is what imports (and, in phase 05, what pip
# records as isagellm-backend, also after the umbrella CLI is installed).
install_project() {
    local phase="$1" dir="$2"
    local pip=("$dir/bin/python" -m pip install --quiet --no-input)
    if [[ "$phase" == 05 ]]; then
        "${pip[@]}" "$TORCH_SPEC" -e "$ROOT" >/dev/null || die "pip cannot install this checkout in $dir"
        check_installed "$dir" "after pip install -e <checkout>"
        "${pip[@]}" "$TORCH_SPEC" "$UMBRELLA_SPEC" || die "pip cannot install $UMBRELLA_SPEC beside this checkout"
        check_installed "$dir" "after pip install $UMBRELLA_SPEC"
        "$dir/bin/python" -m pip check || die "pip check: the installed packages' requirements are not met"
        check_torch "$dir"
    else
        "${pip[@]}" --no-deps --no-build-isolation -e "$ROOT" >/dev/null
        check_installed "$dir" "installed with --no-deps"
    fi
}

# check_installed DIR WHEN: sagellm_backend imports from <checkout>/src and, for pip, isagellm-backend is this
# checkout's editable install of this version.
check_installed() {
    "$1/bin/python" - "$ROOT" "$2" <<'PY' || die "isagellm-backend in $1 is not this checkout ($2)"
import json
import pathlib
import sys
from importlib import metadata
from urllib.parse import unquote, urlparse

import sagellm_backend

root, when = pathlib.Path(sys.argv[1]).resolve(), sys.argv[2]
where = pathlib.Path(sagellm_backend.__file__).resolve()
if not where.is_relative_to(root / "src" / "sagellm_backend"):
    sys.exit(f"sagellm_backend imported from {where}, expected a path under {root / 'src'}")
dist = metadata.distribution("isagellm-backend")
if dist.version != sagellm_backend.__version__:
    sys.exit(f"pip records isagellm-backend {dist.version}, this checkout is {sagellm_backend.__version__}")
direct = json.loads(dist.read_text("direct_url.json") or "{}")
url, editable = direct.get("url", ""), direct.get("dir_info", {}).get("editable", False)
parsed = urlparse(url)
if not (editable and parsed.scheme == "file" and pathlib.Path(unquote(parsed.path)).resolve() == root):
    sys.exit(f"pip records isagellm-backend from {url or 'a registry'} (editable={editable}), not {root}")
print(f"interop: isagellm-backend {dist.version} is this checkout ({where.parent}), {when}")
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
    ensure_venv "$phase" "$venv" "$lock"
    install_project "$phase" "$venv"
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
