"""Prefill on an empty cache attends over the call's own K/V (attention/paged_dense.py): the same results as the
paged prefill op and a float64 reference, the cache written as before, and the paged op where it must run."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from sagellm_backend.attention import PagedAttentionBackend, PagedAttentionMetadataBuilder, paged_torch  # noqa: E402
from sagellm_backend.attention.diagnostics import get_attention_diagnostics, reset_attention_diagnostics  # noqa: E402
from sagellm_backend.attention.paged_dense import dense_prefill, equal_length_runs  # noqa: E402
from sagellm_backend.attention.reference import reference_paged_prefill  # noqa: E402

TOL = {torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float64: 1e-10}


def _setup(lens: list[int], hq: int, hkv: int, d: int, bs: int, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    t = sum(lens)
    q, k, v = (torch.randn(t, h, d, generator=g).to(dtype) for h in (hq, hkv, hkv))
    need = [-(-n // bs) for n in lens]
    n_blocks = sum(need) + 3
    perm = torch.randperm(n_blocks, generator=g).tolist()
    table = torch.zeros(len(lens), max([*need, 1]), dtype=torch.int64)
    at = 0
    for i, nb in enumerate(need):
        table[i, :nb] = torch.tensor(perm[at : at + nb], dtype=torch.int64)
        at += nb
    caches = [torch.full((n_blocks, bs, hkv, d), float("nan"), dtype=dtype) for _ in range(2)]  # stale memory
    md = PagedAttentionMetadataBuilder(bs).build_prefill_metadata(seq_lens=lens, block_tables=table)
    return q, k, v, md, table, caches


@settings(max_examples=40, deadline=None)
@given(
    lens=st.lists(st.integers(0, 19), min_size=1, max_size=4).filter(lambda x: sum(x) > 0),
    heads=st.sampled_from([(4, 4), (4, 2), (6, 1)]),
    d=st.sampled_from([8, 16]),
    bs=st.sampled_from([4, 16]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_empty_cache_prefill_matches_paged_op_and_float64_reference(lens, heads, d, bs, dtype, seed) -> None:
    hq, hkv = heads
    q, k, v, md, table, (kc, vc) = _setup(lens, hq, hkv, d, bs, dtype, seed)
    scale = d**-0.5
    reset_attention_diagnostics()
    out = PagedAttentionBackend(bs).forward(q, k, v, md, kv_cache=(kc, vc), scale=scale)
    (key,) = (name for name in get_attention_diagnostics() if name.startswith("paged:"))
    assert key.startswith("paged:implementation=dense_")
    # the cache holds the new K/V at their slots, exactly
    flat_k, flat_v = kc.reshape(-1, hkv, d), vc.reshape(-1, hkv, d)
    assert torch.equal(flat_k[md.slot_mapping], k) and torch.equal(flat_v[md.slot_mapping], v)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    key_lens = torch.tensor(lens, dtype=torch.int32)
    ref = reference_paged_prefill(q, kc, vc, table, cu, key_lens, scale)
    paged = paged_torch.paged_prefill(q, kc, vc, table, cu, key_lens, scale)
    assert out.dtype == dtype and out.shape == q.shape
    tol = TOL[dtype]
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)
    torch.testing.assert_close(out.double(), paged.double(), atol=tol, rtol=tol)


def test_equal_length_runs() -> None:
    assert equal_length_runs([3, 3, 0, 3, 5, 5, 2]) == [(0, 3, 3), (9, 2, 5), (19, 1, 2)]
    assert equal_length_runs([0, 0]) == []
    assert equal_length_runs([4]) == [(0, 1, 4)]


@pytest.mark.parametrize("lens", [[6, 6, 6], [2, 7, 7, 3]])
def test_dense_prefill_paths(lens: list[int]) -> None:
    q, k, v, *_ = _setup(lens, 4, 2, 8, 4, torch.float32, 0)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    res = dense_prefill(q, k, v, lens, 0.3)
    assert res is not None
    out, how = res
    assert how == ("batch" if len(set(lens)) == 1 else "runs")
    for i, n in enumerate(lens):  # each sequence alone, through plain causal SDPA with repeated KV heads
        s = slice(int(cu[i]), int(cu[i]) + n)
        ref = torch.nn.functional.scaled_dot_product_attention(
            q[s].transpose(0, 1), k[s].repeat_interleave(2, 1).transpose(0, 1),
            v[s].repeat_interleave(2, 1).transpose(0, 1), is_causal=True, scale=0.3,
        ).transpose(0, 1)  # fmt: skip
        torch.testing.assert_close(out[s], ref, atol=1e-5, rtol=1e-5)


def test_cached_context_or_another_cache_dtype_keeps_the_paged_op() -> None:
    bs, d = 4, 8
    lens = [5, 3]
    q, k, v, md, table, (kc, vc) = _setup(lens, 2, 2, d, bs, torch.float32, 1)
    reset_attention_diagnostics()
    backend = PagedAttentionBackend(bs)
    backend.forward(q, k, v, md, kv_cache=(kc, vc))
    chunked = PagedAttentionMetadataBuilder(bs).build_prefill_metadata(
        seq_lens=[1, 1], block_tables=table, cached_lens=[4, 2]
    )
    backend.forward(q[:2], k[:2], v[:2], chunked, kv_cache=(kc, vc))
    diag = get_attention_diagnostics()
    assert diag["paged:implementation=dense_runs"]["total_calls"] == 1
    assert diag["paged:implementation=torch"]["total_calls"] == 1
