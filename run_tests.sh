#!/usr/bin/env bash
# Set up a virtual environment with the development tools and the CPU build of torch, then run
# the lint, the type check and the test suite (GPU tests are skipped without a GPU, with reasons).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install -q -e ".[dev]" "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/ruff check src tests bench examples scripts
.venv/bin/ruff format --check src tests bench scripts
.venv/bin/mypy
.venv/bin/python -m pytest tests -q -rs
