"""The paged-attention benchmark's work counts and case set (no GPU needed)."""

from __future__ import annotations

import pytest

from sagellm_backend.bench.paged_cases import CASES, HEAD_DIM, HKV, HQ, PagedCase


@pytest.mark.parametrize("batch,new,cached", [(1, 1, 0), (2, 5, 0), (3, 4, 7), (1, 16, 16)])
def test_prefill_flops_count_every_visible_pair(batch: int, new: int, cached: int) -> None:
    pairs = sum(1 for _ in range(batch) for j in range(new) for k in range(cached + new) if k <= cached + j)
    assert PagedCase("prefill", batch, new, cached).work() == 4 * pairs * HQ * HEAD_DIM


def test_decode_bytes_are_k_plus_v_of_the_context() -> None:
    c = PagedCase("decode", 3, 1, 100)
    assert c.keys == 100
    assert c.work() == 3 * 100 * HKV * HEAD_DIM * 2 * 2  # K and V, 2-byte elements


def test_cases_are_the_issue_targets() -> None:
    assert [(c.kind, c.batch, c.new, c.cached, c.path) for c in CASES] == [
        ("decode", 64, 1, 4096, "kernel"), ("decode", 4, 1, 32768, "kernel"), ("prefill", 8, 2048, 0, "kernel"),
        ("prefill", 8, 512, 4096, "kernel"), ("prefill", 8, 2048, 0, "backend"),
    ]  # fmt: skip
    assert CASES[4].label == "prefill 8 x 2048 new tokens on empty cache, backend forward"
    assert (HQ, HKV, HEAD_DIM) == (32, 8, 128)


def test_backend_row_forward_computes_the_ceilings_attention_on_cpu() -> None:
    torch = pytest.importorskip("torch")
    from sagellm_backend.bench import paged_attention as bp
    from sagellm_backend.bench import paged_cases

    case = PagedCase("prefill", 2, 40, 0, path="backend")
    t = paged_cases.build_case(case, "cpu")
    pages_before = (t["kc"].clone(), t["vc"].clone())
    got = bp._backend_forward(case, t)()
    sdpa, mask_kind = paged_cases.sdpa_fn(case, t)
    ref = sdpa(t["k"], t["v"]).transpose(1, 2).reshape(got.shape)
    assert mask_kind == "is_causal"
    torch.testing.assert_close(got.float(), ref.float(), atol=3e-2, rtol=3e-2)
    assert torch.equal(t["kc"], pages_before[0]) and torch.equal(
        t["vc"], pages_before[1]
    )  # the packed K/V are the pages: the row rewrites them unchanged


def test_variant_rows_time_graph_replays_and_fall_back_to_eager_calls_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sliding-window and fp8 rows compare device work (graph replays); where any call cannot be captured,
    every call of the row is timed eagerly, so a row never mixes the two, and the row says which it used."""
    from sagellm_backend.bench import paged_variants as pv

    graph = {"a": 2e-6, "b": 3e-6}
    eager = {"a": 5e-5, "b": 7e-5}
    fns = {k: (lambda k=k: k) for k in graph}
    monkeypatch.setattr(pv, "device_time_per_call", lambda fn: graph[fn()])
    monkeypatch.setattr(pv, "measure", lambda fn: eager[fn()])
    assert pv.device_seconds(fns) == (graph, 1.0)
    graph["b"] = None  # type: ignore[assignment]  # not capturable
    assert pv.device_seconds(fns) == (eager, 0.0)


def test_fp8_row_refuses_a_page_layout_the_pool_does_not_offer_before_any_work() -> None:
    from sagellm_backend.bench.paged_variants import bench_fp8_decode
    from sagellm_backend.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=r"\('NHD', 'HND'\)"):
        bench_fp8_decode(CASES[0], "no-such-device", page_layout="HDN")


@pytest.mark.parametrize("page_size", [0, 4, 24, 16.0, True])
def test_fp8_row_refuses_a_page_size_the_kernels_do_not_take_before_any_work(page_size: object) -> None:
    from sagellm_backend.bench.paged_variants import bench_fp8_decode
    from sagellm_backend.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=r"\(powers of two >= 8\)"):
        bench_fp8_decode(CASES[0], "no-such-device", page_size=page_size)  # type: ignore[arg-type]


def test_variant_bench_times_each_fp8_case_at_each_row_page_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from sagellm_backend.bench import paged_variants as pv

    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(pv, "bench_sliding_window", lambda device: "window")
    monkeypatch.setattr(pv, "bench_fp8_decode", lambda case, device, page_size: calls.append((case.label, page_size)))
    rows = pv.bench_paged_variants("cuda")
    decode = [c.label for c in CASES if c.kind == "decode"]
    assert calls == [(label, p) for label in decode for p in (16, 128)]
    assert pv.FP8_ROW_PAGES == (16, 128) and rows[0] == "window" and len(rows) == 1 + 2 * len(decode)
