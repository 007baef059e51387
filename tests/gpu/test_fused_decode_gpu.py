"""The fused store + decode (``paged_triton.paged_decode_store``, one launch: what ``PagedAttentionWrapper.run`` and
``PagedAttentionBackend.forward``'s decode launch on CUDA) compiled on the GPU: the cache it writes equals
``store_kv``'s bit for bit, its output matches ``store_kv`` then ``paged_decode`` and the float64 reference, with
padding rows (length 0, slot -1), a real row whose store is skipped, variants, fp8 caches and forced splits; and
``forward`` on reused metadata equals ``wrapper.run`` bit for bit."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from sagellm_backend.attention import paged_triton as pt  # noqa: E402
from sagellm_backend.attention.reference import make_block_tables, reference_paged_decode  # noqa: E402

HQ, HKV, D, BS, NB = 32, 8, 128, 16, 600
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "all": {"sliding_window": 300, "logits_soft_cap": 30.0, "alibi_slopes": "slopes"},
}


@pytest.mark.parametrize("kv", ["auto", "fp8_e4m3", "fp8_e5m2"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("splits", [None, 1, 4])
def test_fused_decode_matches_two_launches_and_the_reference(kv: str, variant: str, splits: int | None) -> None:
    g = torch.Generator(device="cpu").manual_seed(7)
    lens = [0, 1, 17, 1000, 2049, 300]  # keys incl. the new token; row 0 is padding
    table = make_block_tables([max(n, 1) for n in lens], BS, NB, generator=g, pad_value=0, extra_cols=2).int().cuda()
    slots = [-1] + [int(table[i, (n - 1) // BS]) * BS + (n - 1) % BS for i, n in enumerate(lens) if i]
    slots[5] = -1  # a real row whose store is skipped: its token is read from the cache
    sl = torch.tensor(slots, device="cuda")
    seq = torch.tensor(lens, dtype=torch.int32, device="cuda")
    cdt = {"auto": torch.bfloat16, "fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}[kv]
    kc0, vc0 = (torch.randn(NB, BS, HKV, D, generator=g).to("cuda").to(cdt) for _ in range(2))
    q = torch.randn(len(lens), HQ, D, generator=g).cuda().bfloat16()
    k, v = (torch.randn(len(lens), HKV, D, generator=g).cuda().bfloat16() for _ in range(2))
    sc: dict[str, Any] = {}
    if kv != "auto":
        sc = {"k_scale": torch.rand(HKV, device="cuda") * 0.02 + 0.01, "v_scale": torch.tensor([0.02], device="cuda")}
    opts = dict(VARIANTS[variant])
    if opts.get("alibi_slopes") == "slopes":
        opts["alibi_slopes"] = torch.linspace(-0.1, 0.1, HQ, device="cuda")
    kf, vf = kc0.clone(), vc0.clone()
    fused = pt.paged_decode_store(q, k, v, kf, vf, table, seq, sl, D**-0.5, splits=splits, **opts, **sc)
    ks, vs = kc0.clone(), vc0.clone()
    pt.store_kv(k, v, ks, vs, sl, **sc)
    apart = pt.paged_decode(q, ks, vs, table, seq, D**-0.5, splits=splits, **opts, **sc)
    torch.cuda.synchronize()
    assert torch.equal(kf.view(torch.uint8), ks.view(torch.uint8))
    assert torch.equal(vf.view(torch.uint8), vs.view(torch.uint8))
    assert not fused[0].any() and torch.isfinite(fused).all()
    assert float((fused.float() - apart.float()).abs().max()) <= 2e-2
    slopes = opts.get("alibi_slopes")
    ref = reference_paged_decode(
        q[1:].cpu(), kf.cpu(), vf.cpu(), table[1:].cpu(), seq[1:].cpu(), D**-0.5,
        sliding_window=opts.get("sliding_window"), logits_soft_cap=opts.get("logits_soft_cap"),
        alibi_slopes=None if slopes is None else slopes.cpu(), **{n: t.cpu() for n, t in sc.items()},
    )  # fmt: skip
    assert float((fused[1:].double().cpu() - ref).abs().max()) <= 2e-2


@pytest.mark.parametrize("into", [False, True], ids=["new results", "caller buffers"])
def test_forward_on_reused_metadata_equals_wrapper_run_bit_for_bit(into: bool) -> None:
    """Also with ``forward(output=)`` and ``run(out=)``: the same bits in the caller's buffers, and a buffer over the
    query refused by both (the bound launches' overlap checks) with the caches unchanged."""
    from sagellm_backend.attention import PagedAttentionBackend, PagedAttentionMetadataBuilder, PagedAttentionWrapper
    from sagellm_backend.errors import InvalidArgumentError

    batch, width = 8, 64
    nb = batch * width + 1
    table = torch.randperm(nb - 1)[: batch * width].view(batch, width).int()
    ctx = [width * BS - 1 - 37 * i for i in range(batch)]
    slots = [int(table[i, c // BS]) * BS + c % BS for i, c in enumerate(ctx)]
    init = [torch.randn(nb, BS, HKV, D, device="cuda").bfloat16() for _ in range(2)]
    cache_w = (init[0].clone(), init[1].clone())
    cache_f = (init[0].clone(), init[1].clone())
    w = PagedAttentionWrapper(HQ, HKV, D, block_size=BS, max_batch=batch, max_blocks_per_seq=width, device="cuda")
    w.plan(ctx, table, slots)
    backend = PagedAttentionBackend(BS)
    md = PagedAttentionMetadataBuilder(BS, device="cuda").build_decode_metadata(ctx, table.cuda())
    for layer in range(4):  # layer 0: checked call; 1: fast path binds; 2, 3: bound launches
        q = torch.randn(batch, HQ, D, device="cuda").bfloat16()
        k, v = (torch.randn(batch, HKV, D, device="cuda").bfloat16() for _ in range(2))
        bufs = (torch.empty_like(q), torch.empty_like(q)) if into else (None, None)
        got = w.run(q, k, v, cache_w, out=bufs[0])
        want = backend.forward(q, k, v, md, kv_cache=cache_f, output=bufs[1])
        torch.cuda.synchronize()
        assert torch.equal(got, want), layer
        assert not into or (got is bufs[0] and want is bufs[1]), layer
        assert torch.equal(cache_w[0], cache_f[0]) and torch.equal(cache_w[1], cache_f[1]), layer
    if into:
        before = [c.clone() for c in (*cache_w, *cache_f)]
        with pytest.raises(InvalidArgumentError):
            w.run(q, k, v, cache_w, out=q)
        with pytest.raises(InvalidArgumentError):
            backend.forward(q, k, v, md, kv_cache=cache_f, output=q)
        torch.cuda.synchronize()
        assert all(torch.equal(a, b) for a, b in zip(before, (*cache_w, *cache_f)))


@pytest.mark.parametrize("neox", [True, False])
@pytest.mark.parametrize("kv", ["auto", "fp8_e4m3"])
def test_wrapper_rope_inside_the_decode_equals_rotating_first(neox: bool, kv: str) -> None:
    """``run(..., cos_sin_cache=)`` (RoPE inside the fused launch) against ``rotary_embedding`` on copies of q and k
    and then ``run``: same caches and outputs up to the fp32 rounding of the rotation (one fused multiply-add apart),
    eager and replayed from a CUDA graph."""
    from sagellm_backend.attention import PagedAttentionWrapper
    from sagellm_backend.kernels import torch_ops

    g = torch.Generator(device="cpu").manual_seed(3)
    ctx = [0, 16, 999, 4000]
    table = make_block_tables([c + 1 for c in ctx], BS, NB, generator=g, pad_value=0, extra_cols=1).int()
    slots = [int(table[i, c // BS]) * BS + c % BS for i, c in enumerate(ctx)]
    cs = torch.randn(4096, D, generator=g).cuda()  # position 4000 is inside; ctx 0 too
    cdt = torch.bfloat16 if kv == "auto" else torch.float8_e4m3fn
    init = [torch.randn(NB, BS, HKV, D, generator=g).to(cdt).cuda() for _ in range(2)]
    sc = (
        {}
        if kv == "auto"
        else {"k_scale": torch.tensor([0.02], device="cuda"), "v_scale": torch.tensor([0.03], device="cuda")}
    )
    w1, w2 = (PagedAttentionWrapper(HQ, HKV, D, block_size=BS, max_batch=4, max_blocks_per_seq=table.shape[1],
                                    device="cuda", kv_cache_dtype=kv) for _ in range(2))  # fmt: skip
    for w in (w1, w2):
        w.plan(ctx, table, slots)
    q = torch.randn(4, HQ, D, generator=g).bfloat16().cuda()
    k, v = (torch.randn(4, HKV, D, generator=g).bfloat16().cuda() for _ in range(2))
    c1, c2 = (init[0].clone(), init[1].clone()), (init[0].clone(), init[1].clone())
    got = w1.run(q, k, v, c1, cos_sin_cache=cs, is_neox=neox, **sc)
    qr, kr = q.clone(), k.clone()
    torch_ops.rotate_in_place(w2.positions, [qr, kr], D, cs, neox)
    want = w2.run(qr, kr, v, c2, **sc)
    assert float((got.float() - want.float()).abs().max()) <= 2e-2
    for a, b in zip(c1, c2):
        assert float((a.float() - b.float()).abs().max()) <= (2e-2 if kv == "auto" else 0.25)
    out = torch.empty_like(q)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        w1.run(q, k, v, c1, out=out, cos_sin_cache=cs, is_neox=neox, **sc)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        w1.run(q, k, v, c1, out=out, cos_sin_cache=cs, is_neox=neox, **sc)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, w1.run(q, k, v, c1, cos_sin_cache=cs, is_neox=neox, **sc))
