"""FP8 KV caches on a CUDA GPU: the Triton store's bits equal the torch quantiser's, decode and prefill match
the float64 reference over the dequantised cache, the backend picks Triton, a captured decode replays with new
scales, and the fp8 bench rows. Marked `gpu`."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from sagellm_backend.attention import paged_torch  # noqa: E402  # after the skips
from sagellm_backend.attention import paged_triton as pt  # noqa: E402
from sagellm_backend.attention import paged_triton_prefill as pp  # noqa: E402
from sagellm_backend.attention.reference import (  # noqa: E402
    make_block_tables,
    reference_paged_decode,
    reference_paged_prefill,
)

FORMATS = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
BS, HQ, HKV, D = 16, 32, 8, 128


def _filled(fmt: str, qdt: Any, lens: list[int], per_head: bool, seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    fp8 = FORMATS[fmt]
    nb = sum(-(-n // BS) for n in lens) + 3
    table = make_block_tables(lens, BS, nb, generator=g).cuda()
    slots = torch.cat([table[i, torch.arange(n, device="cuda") // BS] * BS + torch.arange(n, device="cuda") % BS
                       for i, n in enumerate(lens)])  # fmt: skip
    k, v = (torch.randn(sum(lens), HKV, D, generator=g).to(device="cuda", dtype=qdt) * 2 for _ in range(2))
    k[0, 0, 0] = 1e4  # saturates
    amax = [x.float().abs().amax(dim=(0, 2) if per_head else None).reshape(-1) for x in (k, v)]
    ks, vs = (a / torch.finfo(fp8).max * 4 for a in amax)  # some values saturate
    caches = [torch.zeros(nb, BS, HKV, D, dtype=fp8, device="cuda") for _ in range(4)]
    pt.store_kv(k, v, caches[0], caches[1], slots, k_scale=ks, v_scale=vs)
    paged_torch.store_kv(k, v, caches[2], caches[3], slots, k_scale=ks, v_scale=vs)
    return {"table": table, "kc": caches[0], "vc": caches[1], "tk": caches[2], "tv": caches[3], "ks": ks, "vs": vs}


@pytest.mark.parametrize(
    ("fmt", "qdt"), [("fp8_e4m3", torch.bfloat16), ("fp8_e4m3", torch.float16), ("fp8_e5m2", torch.bfloat16)]
)
def test_fp8_value_tiles_converted_by_inline_asm_match(fmt: str, qdt: Any) -> None:
    """``DecodeConfig(fp8_v_asm=True)`` (value tiles converted by inline assembly before their layout change) gives
    the plain conversion's results and stays within the reference's tolerance: the element order of the packed
    conversion is right, for both tile sizes the fp8 configurations use, split or not, with the
    fused store of the step's token."""
    lens = [1, 33, 700, 2113]
    c = _filled(fmt, qdt, lens, per_head=True, seed=3)
    s, lt = D**-0.5, torch.tensor(lens, device="cuda", dtype=torch.int32)
    kw = {"k_scale": c["ks"], "v_scale": c["vs"]}
    q = torch.randn(len(lens), HQ, D, device="cuda", dtype=qdt)
    ref = reference_paged_decode(q, c["kc"], c["vc"], c["table"], lt.cpu(), s, **kw)
    f16 = qdt == torch.bfloat16
    for bn, warps, stages in ((128, 4, 2), (64, 4, 2)):
        for splits in (1, 4):
            base = pt.DecodeConfig(block_n=bn, num_warps=warps, num_stages=stages, fp8_f16_dot=f16)
            asm = pt.DecodeConfig(block_n=bn, num_warps=warps, num_stages=stages, fp8_f16_dot=f16, fp8_v_asm=True)
            want = pt.paged_decode(q, c["kc"], c["vc"], c["table"], lt, s, cfg=base, splits=splits, **kw)
            got = pt.paged_decode(q, c["kc"], c["vc"], c["table"], lt, s, cfg=asm, splits=splits, **kw)
            diff = float((got.float() - want.float()).abs().max())
            assert diff <= 1e-3 * float(want.float().abs().max()), (bn, warps, stages, splits, diff)
            err = (got.double().cpu() - ref).abs()
            assert float((err / (3e-2 + 3e-2 * ref.abs())).max()) <= 1.0
    # the fused store + decode of a new token, both ways, into two copies of the cache
    k_new, v_new = (torch.randn(len(lens), HKV, D, device="cuda", dtype=qdt) for _ in range(2))
    pos = lt.long()
    slots = c["table"][torch.arange(len(lens), device="cuda"), pos // BS].long() * BS + pos % BS
    outs, caches = [], []
    for on in (False, True):
        kc, vc = c["kc"].clone(), c["vc"].clone()
        cfg = pt.DecodeConfig(block_n=128, num_warps=4, num_stages=2, fp8_f16_dot=f16, fp8_v_asm=on)
        outs.append(pt.paged_decode_store(q, k_new, v_new, kc, vc, c["table"], lt + 1, slots, s, cfg=cfg, **kw))
        caches.append((kc, vc))
    assert torch.equal(caches[0][0].view(torch.uint8), caches[1][0].view(torch.uint8))
    assert torch.equal(caches[0][1].view(torch.uint8), caches[1][1].view(torch.uint8))
    assert float((outs[1].float() - outs[0].float()).abs().max()) <= 1e-3 * float(outs[0].float().abs().max())


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("qdt", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("per_head", [False, True])
def test_fp8_triton_store_decode_prefill(fmt: str, qdt: Any, per_head: bool) -> None:
    lens, qlens = [1, 33, 700, 2113], [1, 20, 300, 513]
    c = _filled(fmt, qdt, lens, per_head)
    assert torch.equal(c["kc"].view(torch.uint8), c["tk"].view(torch.uint8))
    assert torch.equal(c["vc"].view(torch.uint8), c["tv"].view(torch.uint8))
    s, lt = D**-0.5, torch.tensor(lens, device="cuda", dtype=torch.int32)
    kw = {"k_scale": c["ks"], "v_scale": c["vs"]}
    tol = {torch.float32: 2e-3, torch.float16: 1e-2, torch.bfloat16: 3e-2}[qdt]
    q = torch.randn(len(lens), HQ, D, device="cuda", dtype=qdt)
    ref = reference_paged_decode(q, c["kc"], c["vc"], c["table"], lt.cpu(), s, **kw)
    early = pt.DecodeConfig(block_n=128, num_stages=1, fp8_f16_dot=True, early_v=True)
    for out in (pt.paged_decode(q, c["kc"], c["vc"], c["table"], lt, s, **kw),
                pt.paged_decode(q, c["kc"], c["vc"], c["table"], lt, s, splits=1, **kw),  # unsplit: 2 stages
                pt.paged_decode(q, c["kc"], c["vc"], c["table"], lt, s, cfg=early, **kw),
                paged_torch.paged_decode(q, c["kc"], c["vc"], c["table"], lt, s, **kw)):  # fmt: skip
        err = (out.double().cpu() - ref).abs()
        assert float((err / (tol + tol * ref.abs())).max()) <= 1.0
    cu = torch.tensor([0, *torch.tensor(qlens).cumsum(0).tolist()], device="cuda", dtype=torch.int32)
    qp = torch.randn(sum(qlens), HQ, D, device="cuda", dtype=qdt)
    for window in (None, 256):
        ref = reference_paged_prefill(
            qp, c["kc"], c["vc"], c["table"], cu.cpu(), lt.cpu(), s, sliding_window=window, **kw
        )
        out = pp.paged_prefill(qp, c["kc"], c["vc"], c["table"], cu, lt, s, sliding_window=window, **kw)
        err = (out.double().cpu() - ref).abs()
        assert float((err / (tol + tol * ref.abs())).max()) <= 1.0


def test_backend_uses_triton_for_fp8_on_cuda() -> None:
    from sagellm_backend.attention import (
        PagedAttentionBackend,
        PagedAttentionMetadataBuilder,
        get_attention_diagnostics,
        reset_attention_diagnostics,
    )

    backend = PagedAttentionBackend(block_size=BS, kv_cache_dtype="fp8")
    assert backend.implementation_for(torch.device("cuda"), torch.bfloat16, D, BS) == "triton"
    reset_attention_diagnostics()
    kc, vc = (torch.zeros(8, BS, HKV, D, dtype=torch.float8_e4m3fn, device="cuda") for _ in range(2))
    md = PagedAttentionMetadataBuilder(BS, device=torch.device("cuda")).build_prefill_metadata(
        seq_lens=[40], block_tables=torch.tensor([[5, 1, 3]], device="cuda")
    )
    q, k = (
        torch.randn(40, HQ, D, device="cuda", dtype=torch.bfloat16),
        torch.randn(40, HKV, D, device="cuda", dtype=torch.bfloat16),
    )
    one = torch.full((1,), 0.05, device="cuda")
    out = backend.forward(q, k, k, md, kv_cache=(kc, vc), k_scale=one, v_scale=one)
    ref = reference_paged_prefill(q, kc, vc, md.block_tables.cpu(), torch.tensor([0, 40]), torch.tensor([40]), D**-0.5,
                                  k_scale=one, v_scale=one)  # fmt: skip
    assert float((out.double().cpu() - ref).abs().max()) < 3e-2
    assert get_attention_diagnostics()["paged:implementation=triton"]["total_calls"] == 1


def test_fp8_decode_replays_in_a_cuda_graph_with_new_scales() -> None:
    c = _filled("fp8_e4m3", torch.bfloat16, [300, 1000], False)
    lt = torch.tensor([300, 1000], device="cuda", dtype=torch.int32)
    q = torch.randn(2, HQ, D, device="cuda", dtype=torch.bfloat16)
    out = torch.empty_like(q)
    ks, vs = c["ks"].clone(), c["vs"].clone()

    def step() -> None:
        pt.paged_decode(q, c["kc"], c["vc"], c["table"], lt, D**-0.5, out=out, k_scale=ks, v_scale=vs)

    step()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    ks.mul_(0.5)
    vs.mul_(2.0)
    q.copy_(torch.randn_like(q))
    graph.replay()
    torch.cuda.synchronize()
    want = pt.paged_decode(q, c["kc"], c["vc"], c["table"], lt, D**-0.5, k_scale=ks, v_scale=vs)
    assert torch.equal(out, want)


@pytest.mark.parametrize("case_index", [0, 1])
def test_fp8_decode_bench_rows(case_index: int) -> None:
    """The fp8 bench rows (64 x 4k, 4 x 32k) run and agree with bf16; fp8 is not slower than bf16. The issue's
    targets (>= 1.8x bf16, >= 90% of the copy bandwidth) are benchmark claims: docs/PERFORMANCE.md records them."""
    from sagellm_backend.bench.paged_cases import CASES
    from sagellm_backend.bench.paged_variants import bench_fp8_decode

    row = bench_fp8_decode(CASES[case_index], "cuda")
    print(f"\n{row.case}: fp8 {row.ours:.1f} us, bf16 {row.naive:.1f} us, {row.extra}")
    assert row.extra["max abs diff vs bf16 x1e3"] < 100
    assert row.extra["same result in every layout"] == 1.0  # token-major and head-major pages
    assert row.ours <= 1.1 * row.naive, row
