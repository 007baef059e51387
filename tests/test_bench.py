"""The benchmark library runs, checks what it timed, names rows by what they measure, and
writes its report and plot only to paths checked before anything runs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from sagellm_backend import MockBackendProvider, get_provider
from sagellm_backend.bench import (
    LinkedFreeQueue,
    Result,
    bench_copy_blocks,
    bench_copy_short_lists,
    bench_pool_alloc,
    plan,
    run_cli,
    run_suite,
)
from sagellm_backend.cli import main
from sagellm_backend.kv.pool import KVCachePool

SHORT_CASES = ["1 pair (Python lists)", "4 pairs (Python lists)", "32 pairs (Python lists)"]
OLD_ID = re.compile(r"\bP\d\b")


def test_suite_quick_on_mock_names_what_is_measured() -> None:
    p = MockBackendProvider()
    labels = [label for label, _ in plan(p, quick=True)]
    results = run_suite(p, quick=True, progress=False)
    rows = {(r.bench, r.case) for r in results}
    assert {
        ("pool allocate+free", "batches of 64, refcounts on"),
        ("copy_blocks", "64 x 64 KiB"),
        ("copy_blocks", "256 x 64 KiB"),
        ("swap_out", "256 x 64 KiB, steady state (host buffer reused)"),
        ("swap_out", "256 x 64 KiB, first call (allocates host memory)"),
        ("swap_in", "256 x 64 KiB"),
    } | {("copy_blocks", c) for c in SHORT_CASES} == rows
    for text in labels + [f"{r.bench} {r.case} {r.target}" for r in results]:
        assert not OLD_ID.search(text), text
    for r in results:
        assert r.ours > 0 and (r.ceiling is None or r.ceiling > 0) and (r.naive is None or r.naive > 0)
        d = r.to_dict()
        assert d["of_ceiling"] is None or d["of_ceiling"] > 0
    short = [r for r in results if r.unit == "us/call"]
    assert [r.case for r in short] == SHORT_CASES
    assert all(r.met is None and r.naive is not None for r in short)  # numpy baseline; target not judged on Mock


def test_short_list_case_on_cpu_quick() -> None:
    pytest.importorskip("torch")
    from sagellm_backend import CPUBackendProvider

    results = run_suite(
        CPUBackendProvider(), quick=True, only={"copy_blocks 1 pair", "copy_blocks 4", "copy_blocks 32"}, progress=False
    )
    assert [(r.bench, r.case, r.unit) for r in results] == [("copy_blocks", c, "us/call") for c in SHORT_CASES]
    for r in results:
        assert not r.higher_is_better and r.ceiling is None
        assert r.ours > 0 and r.naive is not None and r.naive > 0
        assert set(r.extra) == {"validate=False", "engine copy, indices on device"}
        assert all(v > 0 for v in r.extra.values())
        assert r.target == "<= engine's own path" and r.met == (r.ours <= r.naive)
        assert r.vs_naive == pytest.approx(r.naive / r.ours)


def test_timed_copy_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(KVCachePool, "copy_blocks", lambda self, *a, **k: None)
    with pytest.raises(AssertionError, match="is not a copy of block"):
        bench_copy_short_lists(MockBackendProvider(), 4, quick=True)
    with pytest.raises(AssertionError, match="is not a copy of block"):
        bench_copy_blocks(MockBackendProvider(), 64, quick=True)


def test_short_list_rejects_zero_pairs() -> None:
    with pytest.raises(ValueError, match="n_pairs must be >= 1"):
        bench_copy_short_lists(MockBackendProvider(), 0)


def test_copy_and_alloc_on_cpu() -> None:
    pytest.importorskip("torch")
    from sagellm_backend import CPUBackendProvider

    p = CPUBackendProvider()
    r = bench_copy_blocks(p, 64, quick=True)
    assert (r.bench, r.case, r.unit) == ("copy_blocks", "64 x 64 KiB", "GB/s")
    assert r.ours > 0 and "validated_python_lists" in r.extra
    a = bench_pool_alloc(p, quick=True)
    assert a.bench == "pool allocate+free" and a.naive is not None
    assert a.ours > a.naive  # the id arrays beat one-object-per-block


def test_linked_queue_baseline_is_a_real_allocator() -> None:
    q = LinkedFreeQueue(4)
    got = q.allocate(3)
    assert [b.block_id for b in got] == [0, 1, 2] and q.num_free == 1
    q.free(got[:1])
    assert q.allocate(2)[1].block_id == 0
    with pytest.raises(MemoryError):
        q.allocate(1)


@pytest.mark.parametrize("provider", ["mock", "cpu"])
def test_swap_out_rows_steady_state_and_first_call(provider: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Two swap_out rows, as an engine meets them: the first call allocates host memory, later ones reuse it."""
    if provider == "cpu":
        pytest.importorskip("torch")
    rc = main(["bench", "--provider", provider, "--quick", "--only", "swap"])
    out = capsys.readouterr().out
    assert rc == 0
    steady = [ln for ln in out.splitlines() if "steady state (host buffer reused)" in ln]
    first = [ln for ln in out.splitlines() if "first call (allocates host memory)" in ln]
    assert len(steady) == 1 and len(first) == 1 and all("| swap_out |" in ln for ln in steady + first), out
    rows = run_suite(get_provider(provider), quick=True, only={"swap"}, progress=False)
    by_case = {r.case.split(", ")[-1]: r for r in rows if r.bench == "swap_out"}
    assert set(by_case) == {"steady state (host buffer reused)", "first call (allocates host memory)"}
    assert all(r.ours > 0 and r.ceiling and r.naive and r.met is None for r in by_case.values())  # no target on hosts


def test_only_filter_new_names_and_old_ids() -> None:
    p = MockBackendProvider()
    assert {r.bench for r in run_suite(p, quick=True, only={"swap"}, progress=False)} == {"swap_out", "swap_in"}
    assert [r.bench for r in run_suite(p, quick=True, only={"P5"}, progress=False)] == ["pool allocate+free"]
    with pytest.raises(ValueError, match="only='events' matches no benchmark for this provider"):
        run_suite(p, quick=True, only={"events"}, progress=False)  # events need an accelerator


def test_cli_report_plot_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    report, plot = tmp_path / "r.md", tmp_path / "p.png"
    assert run_cli("mock", report=str(report), plot=str(plot), quick=True, only="copy_blocks") == 0
    text = report.read_text()
    assert (
        "| copy_blocks | 64 x 64 KiB | GB/s |" in text and "| copy_blocks | 1 pair (Python lists) | us/call |" in text
    )
    assert "--only copy_blocks" in text and not OLD_ID.search(text)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert run_cli("mock", as_json=True, quick=True, only="pool") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["provider"] == "mock" and [r["bench"] for r in doc["results"]] == ["pool allocate+free"]
    assert set(doc["results"][0]) == {*Result.__dataclass_fields__, "of_ceiling", "vs_naive"}


@pytest.mark.parametrize("flag", ["--report", "--plot"])
def test_cli_checks_output_paths_before_running(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sagellm_backend.bench as bench

    def must_not_run(*args: object, **kwargs: object) -> list[Result]:
        raise AssertionError("benchmarks ran before the output path was checked")

    monkeypatch.setattr(bench, "run_suite", must_not_run)
    missing = tmp_path / "no_such_dir" / "out"
    assert main(["bench", "--provider", "mock", "--quick", flag, str(missing)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and str(missing.parent) in err and "Traceback" not in err
    assert main(["bench", "--provider", "mock", "--quick", flag, str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_cli_unknown_only_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--provider", "mock", "--quick", "--only", "nonesuch"]) == 2
    err = capsys.readouterr().err
    assert "'nonesuch'" in err and "'copy_blocks 1 pair (Python lists)'" in err


def test_measure_propagates_errors_and_only_named_baselines_may_be_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import math

    from sagellm_backend.bench import paged_cases

    monkeypatch.setattr(paged_cases, "time_cuda", lambda fn: (fn(), 2.5)[1])  # the call, then its "time"

    def broken(exc: BaseException) -> Callable[[], None]:
        def fn() -> None:
            raise exc

        return fn

    assert paged_cases.measure(lambda: None) == 2.5
    with pytest.raises(RuntimeError, match="kernel failed"):  # ours failing is an error, never a NaN row
        paged_cases.measure(broken(RuntimeError("kernel failed")))
    for exc in (RuntimeError("No available kernel"), NotImplementedError("no"), ImportError("no flex")):
        with pytest.warns(UserWarning, match=r"SDPA cudnn cannot run with this torch build, reported as NaN: "):
            assert math.isnan(paged_cases.measure_optional(broken(exc), "SDPA cudnn"))
    with pytest.raises(ValueError, match="bad shape"):  # not a missing baseline: propagates
        paged_cases.measure_optional(broken(ValueError("bad shape")), "SDPA cudnn")
    assert paged_cases.measure_optional(lambda: None, "SDPA cudnn") == 2.5
