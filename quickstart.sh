#!/usr/bin/env bash
# Set up a virtual environment, install sagellm-backend with the CPU build of torch, and run the
# main job: `sagellm-backend info` (providers, availability, the chosen provider's capability),
# the seed's usage examples, and a short demo on the default provider.
#   TORCH_SPEC="torch"   ./quickstart.sh   # on a GPU machine: bring your own torch build
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install -q -e . "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/sagellm-backend info
.venv/bin/python examples/seed_usage.py
.venv/bin/sagellm-backend demo
