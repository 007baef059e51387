"""The paged-attention benchmark's work counts and case set (no GPU needed)."""

from __future__ import annotations

import pytest

from sagellm_backend.bench.paged_attention import CASES, HEAD_DIM, HKV, HQ, PagedCase


@pytest.mark.parametrize("batch,new,cached", [(1, 1, 0), (2, 5, 0), (3, 4, 7), (1, 16, 16)])
def test_prefill_flops_count_every_visible_pair(batch: int, new: int, cached: int) -> None:
    pairs = sum(1 for _ in range(batch) for j in range(new) for k in range(cached + new) if k <= cached + j)
    assert PagedCase("prefill", batch, new, cached).work() == 4 * pairs * HQ * HEAD_DIM


def test_decode_bytes_are_k_plus_v_of_the_context() -> None:
    c = PagedCase("decode", 3, 1, 100)
    assert c.keys == 100
    assert c.work() == 3 * 100 * HKV * HEAD_DIM * 2 * 2  # K and V, 2-byte elements


def test_cases_are_the_issue_targets() -> None:
    assert [(c.kind, c.batch, c.new, c.cached) for c in CASES] == [
        ("decode", 64, 1, 4096), ("decode", 4, 1, 32768), ("prefill", 8, 2048, 0), ("prefill", 8, 512, 4096),
    ]  # fmt: skip
    assert (HQ, HKV, HEAD_DIM) == (32, 8, 128)
