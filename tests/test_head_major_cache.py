"""Caches whose pages are stored head-major (FlashInfer's HND: ``[num_blocks, Hkv, block_size, D]`` passed as its
``.permute(0, 2, 1, 3)`` view) work wherever contiguous (token-major) caches do, with the same bits: prefill and
decode through ``forward``, ``PagedAttentionWrapper.run``; any other layout (D not innermost, blocks that overlap) is
a typed error before anything is written. The Triton kernels over head-major pages are checked under the
interpreter in ``test_wrapper_triton_interpret.py``."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagellm_backend.errors import InvalidArgumentError

torch = pytest.importorskip("torch")

from sagellm_backend.attention import (  # noqa: E402
    PagedAttentionBackend,
    PagedAttentionMetadataBuilder,
    PagedAttentionWrapper,
)
from sagellm_backend.attention.validation import page_layout  # noqa: E402

HQ, HKV, D, BS, NB = 4, 2, 8, 4, 12


def head_major(cache: torch.Tensor) -> torch.Tensor:
    """The same values as ``cache``, stored ``[num_blocks, Hkv, block_size, D]``, seen ``[nb, bs, Hkv, D]``."""
    return cache.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.tuples(*[st.integers(2, 5)] * 4), order=st.sampled_from(list(itertools.permutations((1, 2, 3))))
)  # fmt: skip
def test_page_layout_names_exactly_token_and_head_major_pages(sizes: tuple[int, ...], order: tuple[int, ...]) -> None:
    nb, bs, hkv, d = sizes
    stored = torch.zeros([nb, *(sizes[i] for i in order)])
    view = stored.permute(0, *(1 + order.index(i) for i in (1, 2, 3)))  # seen [nb, bs, hkv, d]
    assert tuple(view.shape) == sizes
    want = {(1, 2, 3): "NHD", (2, 1, 3): "HND"}.get(order)
    assert page_layout(view) == want
    assert page_layout(view[:1].expand(nb, bs, hkv, d)) is None  # every block the same memory


def _caches(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(NB, BS, HKV, D, generator=g), torch.randn(NB, BS, HKV, D, generator=g)


def test_forward_prefill_then_decode_over_head_major_pages_equals_token_major() -> None:
    g = torch.Generator().manual_seed(3)
    nhd = _caches(1)
    hnd = tuple(head_major(c) for c in nhd)
    backend = PagedAttentionBackend(BS)
    builder = PagedAttentionMetadataBuilder(BS)
    tables = [[3, 7, 1], [5, 0, 9]]
    prompt = [5, 7]
    md = builder.build_prefill_metadata(prompt, tables, HKV, D)
    q, k, v = (torch.randn(sum(prompt), h, D, generator=g) for h in (HQ, HKV, HKV))
    outs = [backend.forward(q, k, v, md, kv_cache=c) for c in (nhd, hnd)]
    assert torch.equal(outs[0], outs[1])
    for step in range(3):
        ctx = [n + step for n in prompt]
        md_n, md_h = (builder.build_decode_metadata(ctx, tables, HKV, D) for _ in range(2))
        q, k, v = (torch.randn(2, h, D, generator=g) for h in (HQ, HKV, HKV))
        assert torch.equal(backend.forward(q, k, v, md_n, kv_cache=nhd), backend.forward(q, k, v, md_h, kv_cache=hnd))
    assert torch.equal(nhd[0], hnd[0]) and torch.equal(nhd[1], hnd[1])  # the same values stored


def test_wrapper_run_over_head_major_pages_equals_token_major_and_refuses_other_layouts() -> None:
    g = torch.Generator().manual_seed(4)
    nhd = _caches(2)
    hnd = tuple(head_major(c) for c in nhd)
    w = PagedAttentionWrapper(HQ, HKV, D, block_size=BS, max_batch=2, max_blocks_per_seq=3, device="cpu")
    w.plan([6, 9], [[3, 7, 1], [5, 0, 9]], [7 * BS + 2, 9 * BS + 1])
    q, k, v = (torch.randn(2, h, D, generator=g) for h in (HQ, HKV, HKV))
    assert torch.equal(w.run(q, k, v, nhd), w.run(q, k, v, hnd))  # the layout changes between calls
    assert torch.equal(nhd[0], hnd[0]) and torch.equal(nhd[1], hnd[1])
    d_major = tuple(c.transpose(2, 3).contiguous().transpose(2, 3) for c in nhd)
    overlapping = tuple(c[:1].expand_as(c) for c in nhd)
    for bad in (d_major, overlapping, (nhd[0], d_major[1])):
        before = [c.clone() for c in bad]
        with pytest.raises(InvalidArgumentError, match="head-major"):
            w.run(q, k, v, bad)
        assert all(torch.equal(a, b) for a, b in zip(bad, before))
    assert torch.equal(w.run(q, k, v, hnd), w.run(q, k, v, nhd))


def test_pool_head_major_views_store_pages_head_major_and_attend_like_token_major() -> None:
    from sagellm_backend import DType, InvalidArgumentTypeError, MockBackendProvider, get_provider

    geom = {"num_layers": 2, "num_kv_heads": HKV, "head_dim": D}
    pool = get_provider("cpu", kv_geometry=geom).create_kv_pool(NB, block_size=BS, dtype=DType.FP32)
    kh, vh = pool.kv_caches(1, page_layout="HND")
    assert tuple(kh.shape) == (NB, BS, HKV, D) and page_layout(kh) == "HND" and page_layout(vh) == "HND"
    (b,) = pool.allocate(1)
    kh[b, 3, 1] = 7.0  # token 3, head 1 of layer 1's K
    raw = torch.frombuffer(bytearray(pool.read_block(b)), dtype=torch.float32).view(2, 2, HKV, BS, D)
    assert bool((raw[0, 1, 1, 3] == 7.0).all()) and int((raw == 7.0).sum()) == D  # stored [Hkv, bs, D]
    # attention over the pool's head-major views equals token-major caches holding the same values
    g = torch.Generator().manual_seed(5)
    pool.arena.copy_(torch.randn(pool.arena.shape, generator=g))
    nhd = tuple(c.contiguous() for c in pool.kv_caches(1, page_layout="HND"))
    hnd = pool.kv_caches(1, page_layout="HND")
    w = PagedAttentionWrapper(HQ, HKV, D, block_size=BS, max_batch=1, max_blocks_per_seq=3, device="cpu")
    w.plan([9], [[4, 8, 2]], [2 * BS + 1])
    q, k, v = (torch.randn(1, h, D, generator=g) for h in (HQ, HKV, HKV))
    assert torch.equal(w.run(q, k, v, hnd), w.run(q, k, v, nhd))
    assert torch.equal(hnd[0], nhd[0]) and torch.equal(hnd[1], nhd[1])
    mock_k, _ = (
        MockBackendProvider(kv_geometry=geom)
        .create_kv_pool(4, block_size=BS, dtype=DType.FP32)
        .kv_caches(0, page_layout="HND")
    )
    assert tuple(mock_k.shape) == (4, BS, HKV, D) and mock_k.strides[1:] == (D * 4, BS * D * 4, 4)  # numpy views
    with pytest.raises(InvalidArgumentError, match="HND"):
        pool.kv_caches(0, page_layout="hnd")
    with pytest.raises(InvalidArgumentTypeError):
        pool.kv_caches(0, page_layout=1)  # type: ignore[arg-type]


def test_a_pool_keeps_the_page_layout_of_its_first_views_and_migrates_only_to_the_same() -> None:
    from sagellm_backend import DType, get_provider

    p = get_provider("cpu", kv_geometry={"num_layers": 2, "num_kv_heads": HKV, "head_dim": D})
    hnd, nhd, fresh = (p.create_kv_pool(4, block_size=BS, dtype=DType.FP32) for _ in range(3))
    assert hnd.page_layout is None
    hnd.kv_caches(page_layout="HND")
    nhd.kv_caches(0)
    assert (hnd.page_layout, nhd.page_layout) == ("HND", "NHD")
    with pytest.raises(InvalidArgumentError, match="HND pages"):
        hnd.kv_caches(0)  # the default, token-major
    assert hnd.page_layout == "HND" and hnd.kv_caches(1, page_layout="HND")[0].shape == (4, BS, HKV, D)
    ids = hnd.allocate(2)
    before = nhd.stats()
    with pytest.raises(InvalidArgumentError, match="holds NHD pages, this one HND"):
        hnd.migrate_blocks(ids, nhd)
    assert nhd.stats() == before  # nothing allocated there
    moved = hnd.migrate_blocks(ids, fresh)  # a pool whose views were never made takes either
    assert len(moved) == 2 and fresh.page_layout is None
