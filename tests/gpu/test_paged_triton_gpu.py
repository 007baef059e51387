"""The Triton paged-attention kernels on a CUDA GPU against the float64 reference: every dtype, head dim
and block size of the conformance grid, random shapes over shuffled pages, forced split counts and
launch configurations other than the defaults."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from sagellm_backend.attention import paged_triton as pt  # noqa: E402
from sagellm_backend.attention import paged_triton_prefill as pp  # noqa: E402
from sagellm_backend.attention import testing as chk  # noqa: E402
from sagellm_backend.attention.reference import (  # noqa: E402
    make_arena_caches,
    make_block_tables,
    reference_paged_decode,
    reference_paged_prefill,
)


class Ops:
    store_kv = staticmethod(pt.store_kv)
    paged_decode = staticmethod(pt.paged_decode)
    paged_prefill = staticmethod(pp.paged_prefill)


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
HEADS = [(32, 8), (8, 8), (16, 1), (12, 4), (64, 4), (6, 2)]


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_conformance_grid(dtype: str) -> None:
    results = chk.check_paged_ops(Ops, "cuda", dtypes=(DTYPES[dtype],))
    assert len(results) == 3 * 2 * 4 + 2
    assert max(r.worst_ratio for r in results) <= 1.0


@pytest.mark.parametrize("seed", range(12))
def test_random_decode(seed: int) -> None:
    rng = random.Random(seed)
    hq, hkv = rng.choice(HEADS)
    lens = [rng.choice([1, rng.randint(1, 300), rng.randint(300, 3000)]) for _ in range(rng.randint(1, 9))]
    chk.check_paged_decode(
        Ops, "cuda", dtype=DTYPES[rng.choice(list(DTYPES))], head_dim=rng.choice([64, 128, 256]),
        block_size=rng.choice([8, 16, 32, 64]), num_heads=hq, num_kv_heads=hkv, seq_lens=lens,
        index_dtype=rng.choice([torch.int32, torch.int64]), pad_value=rng.choice([-1, 0]), use_out=rng.random() < 0.5,
        seed=seed,
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(12))
def test_random_prefill(seed: int) -> None:
    rng = random.Random(100 + seed)
    hq, hkv = rng.choice(HEADS)
    n = rng.randint(1, 6)
    q_lens = [rng.choice([1, rng.randint(1, 64), rng.randint(64, 700)]) for _ in range(n)]
    cached = [rng.choice([0, rng.randint(1, 100), rng.randint(100, 1500)]) for _ in range(n)]
    chk.check_paged_prefill(
        Ops, "cuda", dtype=DTYPES[rng.choice(list(DTYPES))], head_dim=rng.choice([64, 128, 256]),
        block_size=rng.choice([8, 16, 32, 64]), num_heads=hq, num_kv_heads=hkv, q_lens=q_lens, cached_lens=cached,
        index_dtype=rng.choice([torch.int32, torch.int64]), pad_value=rng.choice([-1, 0]), use_out=rng.random() < 0.5,
        seed=seed,
    )  # fmt: skip


def _decode_case(dtype: Any, d: int, bs: int, hq: int, hkv: int, lens: list[int]) -> tuple[Any, ...]:
    g = torch.Generator().manual_seed(3)
    n_blocks = sum(-(-n // bs) for n in lens) + 5
    _, kc, vc = make_arena_caches(n_blocks, bs, hkv, d, dtype, "cuda", generator=g)
    table = make_block_tables(lens, bs, n_blocks, generator=g, pad_value=-1)
    q = torch.randn(len(lens), hq, d, generator=g).to(dtype=dtype, device="cuda")
    ref = reference_paged_decode(q, kc, vc, table, torch.tensor(lens), d**-0.5)
    return q, kc, vc, table.cuda(), torch.tensor(lens, device="cuda"), ref


@pytest.mark.parametrize("splits", [1, 2, 7, 64, 300])
@pytest.mark.parametrize("block_n", [16, 64, 128])
def test_decode_forced_splits(splits: int, block_n: int) -> None:
    """Forced split counts against float64."""
    q, kc, vc, table, lens, ref = _decode_case(torch.bfloat16, 128, 16, 32, 8, [1, 17, 4000, 9000])
    cfg = pt.DecodeConfig(block_n=block_n, num_warps=4, num_stages=3)
    got = pt.paged_decode_with(q, kc, vc, table, lens, 128**-0.5, cfg=cfg, splits=splits)
    err = (got.double().cpu() - ref).abs()
    assert float((err / (3e-2 + 3e-2 * ref.abs())).max()) <= 1.0


@pytest.mark.parametrize(
    "cfg", [pp.PrefillConfig(64, 32, 4, 2), pp.PrefillConfig(128, 128, 8, 2), pp.PrefillConfig(64, 64, 4, 4)]
)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_prefill_other_configs(cfg: Any, dtype: str) -> None:
    dt = DTYPES[dtype]
    g = torch.Generator().manual_seed(5)
    q_lens, cached = [300, 1, 77, 129], [0, 900, 40, 1000]
    keys = [a + b for a, b in zip(q_lens, cached)]
    n_blocks = sum(-(-n // 16) for n in keys) + 5
    _, kc, vc = make_arena_caches(n_blocks, 16, 8, 128, dt, "cuda", generator=g)
    table = make_block_tables(keys, 16, n_blocks, generator=g, pad_value=-1)
    q = torch.randn(sum(q_lens), 32, 128, generator=g).to(dtype=dt, device="cuda")
    cu = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()])
    ref = reference_paged_prefill(q, kc, vc, table, cu, torch.tensor(keys), 0.1)
    got = pp.paged_prefill_with(q, kc, vc, table.cuda(), cu.cuda(), torch.tensor(keys).cuda(), 0.1, cfg=cfg)
    err = (got.double().cpu() - ref).abs()
    assert float((err / (3e-2 + 3e-2 * ref.abs())).max()) <= 1.0


def test_caches_with_large_block_stride_and_offset() -> None:
    # Pages of a big arena: element offsets past 2**31 must not overflow the address arithmetic.
    bs, hkv, d = 16, 2, 128
    n_blocks = 8400
    arena = torch.zeros(n_blocks, 2, 32, bs, hkv, d, dtype=torch.float16, device="cuda")  # 4.4 GB
    kc, vc = arena[:, 0, 31], arena[:, 1, 31]
    lens = [70, 3]
    table = torch.tensor([[n_blocks - 1, n_blocks - 5, 2, n_blocks - 3, 1], [n_blocks - 2, 0, 0, 0, 0]], device="cuda")
    slots = (table[0, :, None] * bs + torch.arange(bs, device="cuda")).flatten()[:70]
    slots = torch.cat([slots, table[1, 0] * bs + torch.arange(3, device="cuda")])
    g = torch.Generator().manual_seed(1)
    k = torch.randn(73, hkv, d, generator=g).half().cuda()
    v = torch.randn(73, hkv, d, generator=g).half().cuda()
    pt.store_kv(k, v, kc, vc, slots)
    assert torch.equal(kc.reshape(-1, hkv, d)[slots], k) and torch.equal(vc.reshape(-1, hkv, d)[slots], v)
    q = torch.randn(2, 8, d, generator=g).half().cuda()
    ref = reference_paged_decode(q, kc, vc, table.cpu(), torch.tensor(lens), 0.09)
    got = pt.paged_decode(q, kc, vc, table, torch.tensor(lens, device="cuda"), 0.09)
    assert float((got.double().cpu() - ref).abs().max()) < 1e-2
    del arena
    torch.cuda.empty_cache()


def test_programmatic_dependent_launch_is_bit_equal_eager_and_in_a_graph() -> None:
    """``DecodeConfig(pdl=True)`` after a store into the same pages (the kernel before it writes what it reads):
    bit-equal to ``pdl=False``, eager and replayed from a CUDA graph with the stored K/V changed between replays."""
    q, kc, vc, table, lens, _ = _decode_case(torch.bfloat16, 128, 16, 32, 8, [1, 17, 4000, 9000])
    slots = torch.stack([table[i, (int(n) - 1) // 16] * 16 + (int(n) - 1) % 16 for i, n in enumerate(lens)])
    k_new, v_new = (torch.randn(4, 8, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    outs = {flag: torch.empty_like(q) for flag in (False, True)}

    def step(flag: bool) -> None:
        pt.store_kv(k_new, v_new, kc, vc, slots)
        pt.paged_decode_with(q, kc, vc, table, lens, 128**-0.5, outs[flag], cfg=pt.DecodeConfig(pdl=flag), splits=7)

    for flag in (False, True):
        step(flag)
    assert torch.equal(outs[False], outs[True])
    graphs = {}
    for flag in (False, True):
        graphs[flag] = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graphs[flag]):
            step(flag)
    for _ in range(3):
        k_new.normal_()
        v_new.normal_()
        for flag in (False, True):
            graphs[flag].replay()
        torch.cuda.synchronize()
        assert torch.equal(outs[False], outs[True])
        step(False)  # eager, on what the replays stored
        assert torch.equal(outs[False], outs[True])


@pytest.mark.parametrize("kv", ["bf16", "fp8"])
def test_long_splits_of_a_mixed_batch_match_the_reference_and_replay_bit_equal(kv: str) -> None:
    """``DecodeConfig(long_splits=6)`` on a batch of 48 (one split fills the GPU): the long spans split, the result
    matches float64; a CUDA graph of the launch replayed with new lengths (a padding row, a new outlier) equals the
    eager launch on the same lengths bit for bit, and leaves the counters zero."""
    from sagellm_backend.attention.kv_quant import fp8_dtype, quantize
    from sagellm_backend.attention.paged_workspace import DecodeWorkspace

    lens = [100 + 7 * i for i in range(46)] + [5000, 9000]
    q, kc, vc, table, lens_t, ref = _decode_case(torch.bfloat16, 128, 16, 32, 8, lens)
    sc: dict[str, Any] = {}
    if kv == "fp8":
        f8 = fp8_dtype("fp8_e4m3")
        ks, vs = (c.float().abs().amax().reshape(1) / torch.finfo(f8).max for c in (kc, vc))
        shape = kc.shape
        kc, vc = (quantize(c.reshape(-1, 8, 128), s, f8).view(shape) for c, s in ((kc, ks), (vc, vs)))
        sc = {"k_scale": ks, "v_scale": vs}
        deq_k, deq_v = (c.float().cpu() * s.cpu() for c, s in ((kc, ks), (vc, vs)))
        ref = reference_paged_decode(q.cpu(), deq_k, deq_v, table.cpu(), lens_t.cpu(), 128**-0.5)
    base = pt.decode_config(128, torch.bfloat16, 4, kv_fp8=kv == "fp8")
    cfg = dataclasses.replace(base, long_splits=6)
    ws = DecodeWorkspace(
        torch.empty(48 * 32 * 6 * 128, device="cuda"), torch.empty(48 * 32 * 6, device="cuda"),
        torch.zeros(48 * 8, dtype=torch.int32, device="cuda"),
    )  # fmt: skip
    grid, _, kw = pt.decode_launch_args(q, kc, vc, table, lens_t, 128**-0.5, q, cfg=cfg, workspace=ws, **sc)
    assert grid[2] == 6 and kw["LONG_ROWS"] == 64
    out = torch.empty_like(q)

    def call() -> None:
        pt.paged_decode(q, kc, vc, table, lens_t, 128**-0.5, out, cfg=cfg, workspace=ws, **sc)

    call()
    err = (out.double().cpu() - ref).abs()
    assert float((err / (3e-2 + 3e-2 * ref.abs())).max()) <= 1.0
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        call()
    gen = torch.Generator(device="cpu").manual_seed(4)
    for step in range(3):
        new = torch.minimum(torch.randint(1, 300, (48,), generator=gen), torch.tensor(lens))  # within each table
        new[int(torch.randint(0, 46, (1,), generator=gen))] = 0  # a padding row
        new[46 + step % 2] = int(torch.randint(2000, lens[46 + step % 2] + 1, (1,), generator=gen))  # one long row
        lens_t.copy_(new)
        g.replay()
        torch.cuda.synchronize()
        replayed = out.clone()
        call()
        assert torch.equal(replayed, out)
        assert int(ws.counters.abs().sum()) == 0


@pytest.mark.parametrize("splits", [1, 7])
def test_traced_decode_equals_the_plain_launch_and_records_ordered_times(splits: int) -> None:
    """``TRACE`` (the diagnostic of ``bench/probe_decode_trace.py``) leaves the result bit-equal to the plain launch
    and records, per program with keys, a start <= end of keys <= counted <= end, its SM, and one merging program
    per (sequence, KV head); programs past their span record no end."""
    from sagellm_backend.attention.triton_kernels import TRACE_FIELDS
    from sagellm_backend.kernels.triton_launch import launch

    q, kc, vc, table, lens, _ = _decode_case(torch.bfloat16, 128, 16, 32, 8, [1, 700, 4000, 9000])
    out = torch.empty_like(q)
    grid, a, kw = pt.decode_launch_args(q, kc, vc, table, lens, 128**-0.5, out, splits=splits)
    launch(pt.decode_kernel, grid)(*a, **kw)
    plain = out.clone()
    trace = torch.full((grid[0] * grid[1] * grid[2], TRACE_FIELDS), -1, dtype=torch.int64, device="cuda")
    launch(pt.decode_kernel, grid)(*a, **{**kw, "TRACE": True, "trace_ptr": trace})
    assert torch.equal(out, plain)
    t = trace.cpu()
    assert bool((t[:, 0] > 0).all())  # every program records its start
    used = t[:, 3] >= 0
    assert int(used.sum()) > 0 and (splits == 1) == bool(used.all())
    u = t[used]
    assert bool((u[:, 0] <= u[:, 1]).all() and (u[:, 1] <= u[:, 2]).all() and (u[:, 2] <= u[:, 3]).all())
    assert bool(((u[:, 5] >= 0) & (u[:, 5] < pt.sm_count(torch.device("cuda")))).all())
    assert int(u[:, 4].sum()) == 4 * 8  # one program stores each (sequence, KV head)'s result
