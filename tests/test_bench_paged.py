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
