"""The Triton engine kernels run in Triton's CPU interpreter (a subprocess with TRITON_INTERPRET=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sagellm_backend

pytest.importorskip("torch")
pytest.importorskip("triton")

SRC = str(Path(sagellm_backend.__file__).resolve().parents[1])
WORKER = str(Path(__file__).with_name("triton_interpret_worker.py"))


def test_triton_kernels_match_torch_in_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, WORKER], capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr[-4000:]
    results = json.loads(out.stdout)
    assert len(results) >= 60, len(results)
    bad = [r for r in results if not r["ok"]]
    assert not bad, bad
    assert elapsed < 30, f"interpreter tests took {elapsed:.1f} s; keep them under 30 s"
