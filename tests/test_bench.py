"""The benchmark library runs, checks what it timed, and writes its report and plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from sagellm_backend import MockBackendProvider
from sagellm_backend.bench import LinkedFreeQueue, bench_copy_blocks, bench_pool_alloc, run_cli, run_suite


def test_suite_quick_on_mock() -> None:
    results = run_suite(MockBackendProvider(), quick=True, progress=False)
    names = {r.bench for r in results}
    assert {"P5 pool alloc+free", "P6 copy_blocks", "P2 swap_out", "P2 swap_in"} <= names
    for r in results:
        assert r.ours > 0 and (r.ceiling is None or r.ceiling > 0)
        d = r.to_dict()
        assert d["of_ceiling"] is None or d["of_ceiling"] > 0


def test_copy_and_alloc_on_cpu() -> None:
    pytest.importorskip("torch")
    from sagellm_backend import CPUBackendProvider

    p = CPUBackendProvider()
    r = bench_copy_blocks(p, 64, quick=True)
    assert r.unit == "GB/s" and r.ours > 0 and "validated_python_lists" in r.extra
    a = bench_pool_alloc(p, quick=True)
    assert a.ours > a.naive  # the id arrays beat one-object-per-block


def test_linked_queue_baseline_is_a_real_allocator() -> None:
    q = LinkedFreeQueue(4)
    got = q.allocate(3)
    assert [b.block_id for b in got] == [0, 1, 2] and q.num_free == 1
    q.free(got[:1])
    assert q.allocate(2)[1].block_id == 0
    with pytest.raises(MemoryError):
        q.allocate(1)


def test_cli_report_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report, plot = tmp_path / "r.md", tmp_path / "p.png"
    assert run_cli("mock", report=str(report), plot=str(plot), quick=True, only="copy_blocks") == 0
    assert "| P6 copy_blocks |" in report.read_text()
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
