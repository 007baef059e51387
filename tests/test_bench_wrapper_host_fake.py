"""The CPU host-cost bench of PagedAttentionWrapper.run (stand-in Triton launcher) runs and sees one kernel launch
per run() on the Triton path by default (two, store then decode, with ``SAGELLM_FUSED_DECODE=0``), with and
without variants and an fp8 cache, and per forward() on reused metadata; and it times plan()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("flags", [[], ["--variants", "--fp8"], ["--forward"]])
def test_fake_launcher_bench_reports_the_launches_per_run(flags: list[str], fused: bool) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("TRITON_INTERPRET", None)
    env["SAGELLM_FUSED_DECODE"] = "1" if fused else "0"
    cmd = [sys.executable, str(ROOT / "bench" / "bench_wrapper_host_fake.py"), "--reps", "50", *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["fp8"] == ("--fp8" in flags) and [r["batch"] for r in report["rows"]] == [1, 8, 64]
    for r in report["rows"]:
        assert r["launches_per_run"] == (1.0 if fused else 2.0) and r["median_us"] > 0, r


def test_fake_launcher_bench_times_plan() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, str(ROOT / "bench" / "bench_wrapper_host_fake.py"), "--reps", "50", "--plan"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["plan"] and [r["batch"] for r in report["rows"]] == [1, 8, 64]
    assert all(r["plan_us"] > 0 and r["trusted_us"] > 0 for r in report["rows"]), report
