"""bench/bench_decode_step.py on a GPU, two layers and two cases (a minute): every row runs, the graphed step equals
the eager one bit for bit after replays with changing lengths, and one step of ours agrees with Hugging Face."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sagellm_backend

pytestmark = pytest.mark.gpu

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_decode_step.py"
SRC = str(Path(sagellm_backend.__file__).resolve().parents[1])


def test_small_gpu_run(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    out = tmp_path / "r.json"
    cmd = [sys.executable, str(BENCH), "--device", "cuda", "--layers", "2", "--cases", "8x1k", "64 mixed<=8k",
           "--steps", "5", "--warmup", "2", "--hf-compile", "off", "--json", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["correctness"]["dtype"] == "bfloat16"
    assert report["correctness"]["max_rel_err"] < 5e-2, report["correctness"]
    by = {(r["case"], r["impl"]): r for r in report["rows"]}
    for case in ("8x1k", "64 mixed<=8k"):
        assert by[(case, "ours eager")]["tokens_per_s"] > 0 and by[(case, "hf eager")]["tokens_per_s"] > 0
        graphed = by[(case, "ours graphed")]
        if report["config"]["attention"] == "PagedAttentionWrapper":
            assert graphed["status"] == "ok" and graphed["equals_eager"] is True, graphed
            assert graphed["tokens_per_s"] > by[(case, "ours eager")]["tokens_per_s"] * 0.5
        else:
            assert graphed["status"] == "unavailable"
