"""Head-major KV pages (``[num_blocks, Hkv, block_size, D]`` storage seen ``[nb, bs, Hkv, D]``) on the GPU: the
compiled Triton launches behind ``PagedAttentionBackend.forward`` (prefill and decode) and
``PagedAttentionWrapper.run`` (eager and replayed in a CUDA graph), for bf16 and fp8 caches, give the same bits and
store the same values as over token-major pages; a pool's head-major views attend like its token-major copies."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from sagellm_backend.attention import (  # noqa: E402
    PagedAttentionBackend,
    PagedAttentionMetadataBuilder,
    PagedAttentionWrapper,
)
from sagellm_backend.attention.validation import page_layout  # noqa: E402
from sagellm_backend.errors import InvalidArgumentError  # noqa: E402

HQ, HKV, D, BS, NB = 16, 4, 128, 16, 96
CACHE = {"auto": torch.bfloat16, "fp8_e4m3": torch.float8_e4m3fn}


def head_major(cache: torch.Tensor) -> torch.Tensor:
    """The same values as ``cache``, stored head-major."""
    return cache.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)


def _caches(kv: str, seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    nhd = tuple(torch.randn(NB, BS, HKV, D, generator=g).cuda().to(CACHE[kv]) for _ in range(2))
    hnd = tuple(head_major(c) for c in nhd)
    assert [page_layout(c) for c in (*nhd, *hnd)] == ["NHD", "NHD", "HND", "HND"]
    return (nhd[0], nhd[1]), (hnd[0], hnd[1])


def _scales(kv: str) -> dict[str, Any]:
    if kv == "auto":
        return {}
    return {
        "k_scale": torch.tensor([0.02, 0.03, 0.01, 0.02], device="cuda"),
        "v_scale": torch.tensor([0.02], device="cuda"),
    }


def _same(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> bool:
    return all(torch.equal(x.view(torch.uint8), y.view(torch.uint8)) for x, y in zip(a, b))


@pytest.mark.parametrize("kv", list(CACHE))
def test_forward_prefill_then_decode_over_head_major_pages_equals_token_major(kv: str) -> None:
    g = torch.Generator().manual_seed(3)
    nhd, hnd = _caches(kv, 1)
    sc = _scales(kv)
    backend = PagedAttentionBackend(BS, kv_cache_dtype=kv)
    builder = PagedAttentionMetadataBuilder(BS, device="cuda")
    tables = torch.tensor([[3, 7, 1, 40, 41], [5, 0, 9, 60, 61]], device="cuda")
    prompt = [37, 50]
    md = builder.build_prefill_metadata(prompt, tables, HKV, D)
    q, k, v = (torch.randn(sum(prompt), h, D, generator=g).cuda().bfloat16() for h in (HQ, HKV, HKV))
    outs = [backend.forward(q, k, v, md, kv_cache=c, **sc) for c in (nhd, hnd)]
    assert torch.equal(outs[0], outs[1]) and _same(nhd, hnd)
    for step in range(3):
        ctx = [n + step for n in prompt]
        md_n, md_h = (builder.build_decode_metadata(ctx, tables, HKV, D) for _ in range(2))
        q, k, v = (torch.randn(2, h, D, generator=g).cuda().bfloat16() for h in (HQ, HKV, HKV))
        a = backend.forward(q, k, v, md_n, kv_cache=nhd, **sc)
        b = backend.forward(q, k, v, md_h, kv_cache=hnd, **sc)
        assert torch.equal(a, b)
    assert _same(nhd, hnd)


@pytest.mark.parametrize("kv", list(CACHE))
def test_wrapper_run_eager_and_graphed_over_head_major_pages_equals_token_major(kv: str) -> None:
    g = torch.Generator().manual_seed(4)
    nhd, hnd = _caches(kv, 2)
    sc = _scales(kv)
    w = PagedAttentionWrapper(HQ, HKV, D, block_size=BS, max_batch=4, max_blocks_per_seq=6, device="cuda",
                              kv_cache_dtype=kv)  # fmt: skip
    tables = [[3, 7, 1, 40, 41, 42], [5, 0, 9, 60, 61, 62], [11, 12, 13, 14, 15, 16]]

    def plan(ctx: list[int]) -> None:
        slots = [t[n // BS] * BS + n % BS for t, n in zip(tables, ctx)]
        w.plan(ctx, tables, slots, batch_size=4)

    qkv = [tuple(torch.randn(4, h, D, generator=g).cuda().bfloat16() for h in (HQ, HKV, HKV)) for _ in range(3)]
    plan([20, 33, 1])
    eager = [w.run(*qkv[0], nhd, **sc), w.run(*qkv[0], hnd, **sc)]
    assert torch.equal(eager[0], eager[1]) and _same(nhd, hnd)
    out = torch.empty_like(eager[0])
    graph = torch.cuda.CUDAGraph()
    q_in, k_in, v_in = (t.clone() for t in qkv[1])
    plan([21, 34, 2])
    ref = (tuple(c.clone() for c in nhd), tuple(c.clone() for c in hnd))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        w.run(q_in, k_in, v_in, hnd, out=out, **sc)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    for c, r in zip(hnd, ref[1]):
        c.copy_(r)
    with torch.cuda.graph(graph):
        w.run(q_in, k_in, v_in, hnd, out=out, **sc)
    for step, ctx in enumerate(([21, 34, 2], [90, 35, 3])):  # lengths change across a page boundary
        plan(ctx)
        for t, s in zip((q_in, k_in, v_in), qkv[1 + step]):
            t.copy_(s)
        graph.replay()
        want = w.run(*qkv[1 + step], nhd, **sc)
        torch.cuda.synchronize()
        assert torch.equal(out, want) and _same(nhd, hnd)


def test_wrapper_run_on_cuda_refuses_pages_neither_token_nor_head_major() -> None:
    nhd, _ = _caches("auto", 5)
    w = PagedAttentionWrapper(HQ, HKV, D, block_size=BS, max_batch=1, max_blocks_per_seq=2, device="cuda")
    w.plan([5], [[2, 3]], [2 * BS + 5])
    q, k, v = (torch.randn(1, h, D, device="cuda", dtype=torch.bfloat16) for h in (HQ, HKV, HKV))
    w.run(q, k, v, nhd)
    d_major = tuple(c.transpose(2, 3).contiguous().transpose(2, 3) for c in nhd)
    before = [c.clone() for c in d_major]
    with pytest.raises(InvalidArgumentError, match="head-major"):
        w.run(q, k, v, (d_major[0], d_major[1]))
    assert all(torch.equal(a, b) for a, b in zip(d_major, before))


def test_cuda_pool_head_major_views_attend_like_token_major_copies() -> None:
    from sagellm_backend import DType, get_provider

    geom = {"num_layers": 2, "num_kv_heads": HKV, "head_dim": D}
    pool = get_provider("cuda", kv_geometry=geom).create_kv_pool(NB, block_size=BS, dtype=DType.BF16)
    hnd = pool.kv_caches(1, page_layout="HND")
    assert hnd[0].is_cuda and page_layout(hnd[0]) == "HND"
    g = torch.Generator().manual_seed(6)
    for c in hnd:
        c.copy_(torch.randn(c.shape, generator=g).to(c.dtype))
    nhd = tuple(c.contiguous() for c in hnd)
    w = PagedAttentionWrapper(HQ, HKV, D, block_size=BS, max_batch=1, max_blocks_per_seq=3, device="cuda")
    w.plan([40], [[4, 8, 2]], [2 * BS + 8])
    q, k, v = (torch.randn(1, h, D, generator=g).cuda().bfloat16() for h in (HQ, HKV, HKV))
    assert torch.equal(w.run(q, k, v, hnd), w.run(q, k, v, (nhd[0], nhd[1])))
    assert torch.equal(hnd[0], nhd[0]) and torch.equal(hnd[1], nhd[1])
