"""Attention numerics against float64 references: torch paged ops (conformance grid), the paged backend end to
end (store + chunked prefill + decode over shuffled pages), the SDPA backend's paths, padded batches."""

from __future__ import annotations

import math
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagellm_backend.attention import (
    AttentionMetadata,
    PagedAttentionBackend,
    PagedAttentionMetadataBuilder,
    SDPAAttentionBackend,
    get_attention_diagnostics,
    reset_attention_diagnostics,
)
from sagellm_backend.attention.testing import check_paged_ops, make_arena_caches

torch = pytest.importorskip("torch")
F = torch.nn.functional
TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}


def _ref(q, k, v, q_pos, scale=None):
    """float64 SDPA: q [M,Hq,D] over k,v [L,Hkv,D]; query j sees keys 0..q_pos[j] (None: all)."""
    q, k, v = (t.double() for t in (q, k, v))
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    mask = None if q_pos is None else torch.arange(k.shape[0])[None, :] <= torch.as_tensor(q_pos)[:, None]
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask, scale=scale
    )
    return out.transpose(0, 1)


def _close(out, ref, dtype):
    tol = TOL[dtype]
    assert out.dtype == dtype and out.shape == ref.shape
    err = (out.double() - ref).abs()
    assert bool((err <= tol + tol * ref.abs()).all()), f"max err {float(err.max()):.3g} (tol {tol})"


# ---- ops -----------------------------------------------------------------------------------------------


def test_torch_ops_pass_conformance_grid() -> None:
    from sagellm_backend.attention import paged_torch

    tight = {"float32": (1e-5, 1e-5), "float16": (5e-3, 5e-3), "bfloat16": (3e-2, 3e-2)}
    results = check_paged_ops(paged_torch, "cpu", tolerances=tight)
    assert {r.op for r in results} == {"store_kv", "paged_decode", "paged_prefill"}
    assert {r.case["head_dim"] for r in results if r.op != "store_kv"} == {64, 128, 256}
    assert {(r.case["num_heads"], r.case["num_kv_heads"]) for r in results if r.op == "paged_decode"} == {
        (4, 4), (8, 2), (4, 1),
    }  # fmt: skip
    assert all(r.worst_ratio <= 1.0 for r in results)


@pytest.mark.parametrize("flaw", ["gqa_order", "ignores_seq_lens", "stores_padding", "ignores_cached_context"])
def test_conformance_check_catches_broken_ops(flaw: str) -> None:
    from sagellm_backend.attention import paged_torch as pt

    def decode(q, kc, vc, bt, lens, scale, out=None):
        if flaw == "gqa_order":
            hq, hkv = q.shape[1], kc.shape[2]
            q = q.view(q.shape[0], hkv, hq // hkv, -1).transpose(1, 2).reshape(q.shape)
        if flaw == "ignores_seq_lens":
            lens = torch.full_like(lens, int(lens.max()))
        return pt.paged_decode(q, kc, vc, bt, lens, scale, out)

    def store(k, v, kc, vc, slots):
        pt.store_kv(k, v, kc, vc, slots.clamp(min=0) if flaw == "stores_padding" else slots)

    def prefill(q, kc, vc, bt, cu, lens, scale, out=None):
        if flaw == "ignores_cached_context":
            lens = cu[1:] - cu[:-1]
        return pt.paged_prefill(q, kc, vc, bt, cu, lens, scale, out)

    broken = types.SimpleNamespace(store_kv=store, paged_decode=decode, paged_prefill=prefill)
    with pytest.raises(AssertionError):
        check_paged_ops(
            broken,
            "cpu",
            dtypes=(torch.float32,),
            head_dims=(64,),
            block_sizes=(16,),
            head_configs=((8, 2),),
            long_context=False,
        )


def test_torch_decode_reads_strided_arena_views_and_ignores_unused_table_entries() -> None:
    from sagellm_backend.attention import paged_torch

    g = torch.Generator().manual_seed(3)
    _, kc, vc = make_arena_caches(12, 16, 2, 64, torch.float32, "cpu", generator=g, num_layers=3, layer=2)
    assert kc.stride(0) == 2 * 3 * 16 * 2 * 64 and not kc.is_contiguous()
    q = torch.randn(2, 4, 64, generator=g)
    table = torch.tensor([[5, 9, -7, 10**6], [11, 2, 4, -1]])  # garbage beyond each sequence's pages
    out = paged_torch.paged_decode(q, kc, vc, table, torch.tensor([20, 48]), 0.125)
    for i, n in enumerate([20, 48]):
        ids = table[i, : math.ceil(n / 16)]
        k, v = kc[ids].reshape(-1, 2, 64)[:n], vc[ids].reshape(-1, 2, 64)[:n]
        _close(out[i : i + 1], _ref(q[i : i + 1], k, v, [n - 1], 0.125), torch.float32)


# ---- paged backend end to end ----------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    heads=st.sampled_from([(4, 4), (4, 2), (6, 3), (4, 1), (8, 2)]),
    head_dim=st.sampled_from([64, 128, 256]),
    block_size=st.sampled_from([16, 32]),
    dtype=st.sampled_from([torch.float32, torch.float32, torch.bfloat16, torch.float16]),
    lens=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 40)), min_size=1, max_size=4),
    decode_steps=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_paged_backend_chunked_prefill_then_decode(
    heads, head_dim, block_size, dtype, lens, decode_steps, seed
) -> None:
    hq, hkv = heads
    g = torch.Generator().manual_seed(seed)
    total = [c + n + decode_steps for c, n in lens]
    need = [math.ceil(t / block_size) for t in total]
    num_blocks = sum(need) + 2
    perm = torch.randperm(num_blocks, generator=g).tolist()
    rows, at = [], 0
    for n in need:
        rows.append(perm[at : at + n])
        at += n
    table = [r + [0] * (max(need) - len(r)) for r in rows]  # zero padding, as the engine's model runner does
    _, kc, vc = make_arena_caches(num_blocks, block_size, hkv, head_dim, dtype, "cpu", generator=g)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    seqs = [(rnd(t, hq, head_dim), rnd(t, hkv, head_dim), rnd(t, hkv, head_dim)) for t in total]
    backend, builder = PagedAttentionBackend(block_size=block_size), PagedAttentionMetadataBuilder(block_size)

    def run(md, spans):
        q, k, v = (torch.cat([seqs[i][j][a:b] for i, (a, b) in spans]) for j in range(3))
        return backend.forward(query=q, key=k, value=v, attn_metadata=md, kv_cache=(kc, vc), scale=None), q

    first = [(i, (0, c)) for i, (c, _) in enumerate(lens) if c]
    if first:  # chunk 1: the cached context of the sequences that have one
        md = builder.build_prefill_metadata(
            seq_lens=[c for _, (_, c) in first], block_tables=[table[i] for i, _ in first]
        )
        out, _ = run(md, first)
        at = 0
        for i, (_, c) in first:
            q, k, v = seqs[i]
            _close(out[at : at + c], _ref(q[:c], k[:c], v[:c], range(c)), dtype)
            at += c
    spans = [(i, (c, c + n)) for i, (c, n) in enumerate(lens)]
    md = builder.build_prefill_metadata(
        seq_lens=[n for _, n in lens], block_tables=table, cached_lens=[c for c, _ in lens], num_kv_heads=hkv
    )
    out, _ = run(md, spans)
    at = 0
    for i, (c, n) in enumerate(lens):
        q, k, v = seqs[i]
        _close(out[at : at + n], _ref(q[c : c + n], k[: c + n], v[: c + n], range(c, c + n)), dtype)
        at += n
    for step in range(decode_steps):
        ctx = [c + n + step for c, n in lens]
        md = builder.build_decode_metadata(context_lens=ctx, block_tables=torch.tensor(table), head_dim=head_dim)
        out, _ = run(md, [(i, (p, p + 1)) for i, p in enumerate(ctx)])
        for i, p in enumerate(ctx):
            q, k, v = seqs[i]
            _close(out[i : i + 1], _ref(q[p : p + 1], k[: p + 1], v[: p + 1], [p]), dtype)


def test_spec_example_prefill_equals_causal_sdpa() -> None:
    q, k, v = (torch.randn(5, 2, 8) for _ in range(3))
    ref = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True)
    for backend in (SDPAAttentionBackend(), PagedAttentionBackend(block_size=16, use_vllm_kernel=True)):
        out = backend.forward(q, k, v, AttentionMetadata.for_prefill([5], device="cpu"))
        assert torch.allclose(out, ref.transpose(0, 1), atol=1e-6)


def test_padded_prefill_with_hf_mask_matches_packed_and_zeroes_padding() -> None:
    g = torch.Generator().manual_seed(1)
    lens, width, hq, hkv, d, bs = [5, 2, 4], 5, 4, 2, 16, 4
    table = torch.tensor([[3, 0], [5, 0], [1, 6]])
    q, k, v = (
        torch.randn(15, hq, d, generator=g),
        torch.randn(15, hkv, d, generator=g),
        torch.randn(15, hkv, d, generator=g),
    )
    real = torch.zeros(3, width, dtype=torch.bool)
    for i, n in enumerate(lens):
        real[i, width - n :] = True  # left padding
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    mask = (causal[None] & real[:, None, :] & real[:, :, None])[:, None]
    md = PagedAttentionMetadataBuilder(bs).build_prefill_metadata(seq_lens=lens, block_tables=table)
    caches = [tuple(torch.zeros(8, bs, hkv, d) for _ in range(2)) for _ in range(2)]
    backend = PagedAttentionBackend(bs)
    padded = backend.forward(q, k, v, md, kv_cache=caches[0], attn_mask=mask)
    rows = real.reshape(-1).nonzero().squeeze(1)
    packed_md = PagedAttentionMetadataBuilder(bs).build_prefill_metadata(seq_lens=lens, block_tables=table)
    packed = backend.forward(q[rows], k[rows], v[rows], packed_md, kv_cache=caches[1])
    assert torch.equal(padded[rows], packed)
    assert not padded[~real.reshape(-1)].any()
    assert all(torch.equal(a, b) for a, b in zip(caches[0], caches[1]))
    sdpa = SDPAAttentionBackend().forward(q, k, v, AttentionMetadata.for_prefill(lens), attn_mask=mask)
    assert torch.allclose(sdpa[rows], packed, atol=1e-5) and not sdpa[~real.reshape(-1)].any()
    with pytest.raises(ValueError, match="real tokens"):
        bad = PagedAttentionMetadataBuilder(bs).build_prefill_metadata(seq_lens=[5, 3, 4], block_tables=table)
        backend.forward(q, k, v, bad, kv_cache=caches[0], attn_mask=mask)


def test_plan_is_reused_across_layers_and_revalidated_after_mutation() -> None:
    bs, d = 4, 8
    md = PagedAttentionMetadataBuilder(bs).build_decode_metadata(context_lens=[3, 6], block_tables=[[2, 0], [1, 4]])
    backend = PagedAttentionBackend(bs)
    q, k = torch.randn(2, 2, d), torch.randn(2, 2, d)
    for _ in range(3):  # three layers, each with its own cache
        backend.forward(q, k, k, md, kv_cache=(torch.zeros(5, bs, 2, d), torch.zeros(5, bs, 2, d)))
    assert len(md.step_plans) == 1  # one plan shared by the layers
    md.slot_mapping[0] = 0  # in place: version counter moves, so the call is validated again
    cache = (torch.zeros(5, bs, 2, d), torch.zeros(5, bs, 2, d))
    with pytest.raises(ValueError, match="slot_mapping"):
        backend.forward(q, k, k, md, kv_cache=cache)
    assert not cache[0].any()


def test_negative_slots_are_skipped_and_diagnostics_name_the_implementation() -> None:
    reset_attention_diagnostics()
    bs = 4
    md = PagedAttentionMetadataBuilder(bs).build_prefill_metadata(seq_lens=[3], block_tables=[[1]])
    md.slot_mapping = torch.tensor([4, -1, 6])
    kc, vc = torch.zeros(3, bs, 1, 8), torch.zeros(3, bs, 1, 8)
    k = torch.randn(3, 1, 8)
    PagedAttentionBackend(bs).forward(torch.randn(3, 2, 8), k, k, md, kv_cache=(kc, vc))
    flat = kc.reshape(-1, 1, 8)
    assert torch.equal(flat[4], k[0]) and torch.equal(flat[6], k[2]) and not flat[5].any()
    PagedAttentionBackend(bs).forward(torch.randn(3, 2, 8), k, k, AttentionMetadata.for_prefill([3]))
    diag = get_attention_diagnostics()
    assert diag["paged:implementation=dense_batch"]["kv_cache_calls"] == 1
    assert diag["paged:sdpa_fallback/varlen"]["total_calls"] == 1
    assert diag["_meta"]["latest_call"]["path_name"] == "sdpa_fallback/varlen"
    reset_attention_diagnostics()


# ---- SDPA backend paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lens", [[7], [5, 7, 3], [16, 16, 16], [40, 1, 90, 40, 13], [130], [0, 4, 0]], ids=lambda x: str(x)[:20]
)
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (4, 1)])
def test_sdpa_varlen_prefill_is_causal_per_sequence(lens, heads) -> None:
    hq, hkv = heads
    t = sum(lens)
    g = torch.Generator().manual_seed(len(lens))
    q, k, v = (
        torch.randn(t, hq, 16, generator=g),
        torch.randn(t, hkv, 16, generator=g),
        torch.randn(t, hkv, 16, generator=g),
    )
    out = SDPAAttentionBackend().forward(q, k, v, AttentionMetadata.for_prefill(lens), scale=0.3)
    at = 0
    for n in lens:
        _close(out[at : at + n], _ref(q[at : at + n], k[at : at + n], v[at : at + n], range(n), 0.3), torch.float32)
        at += n
    enc = SDPAAttentionBackend().forward(q, k, v, AttentionMetadata.for_prefill(lens, attn_type="encoder_only"))
    at = 0
    for n in lens:
        _close(enc[at : at + n], _ref(q[at : at + n], k[at : at + n], v[at : at + n], None), torch.float32)
        at += n


def test_sdpa_varlen_cases_cover_both_strategies() -> None:
    from sagellm_backend.attention.sdpa import use_block_diagonal

    assert use_block_diagonal([5, 7, 3]) and use_block_diagonal([0, 4, 0])
    assert not use_block_diagonal([40, 1, 90, 40, 13]) and not use_block_diagonal([16, 16, 16])


def test_sdpa_decode_without_cache_attends_to_itself() -> None:
    q, k, v = torch.randn(3, 4, 8), torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    out = SDPAAttentionBackend().forward(q, k, v, AttentionMetadata.for_decode([4, 9, 0], None))
    assert torch.equal(out, v.repeat_interleave(2, 1))


def test_ops_selection_on_cpu_and_env_override(monkeypatch) -> None:
    from sagellm_backend.attention import paged_torch
    from sagellm_backend.attention.paged import select_paged_ops

    ops, name = select_paged_ops(torch.device("cpu"), torch.float16, 128, 16)
    assert name == "torch" and ops.paged_decode is paged_torch.paged_decode
    monkeypatch.setenv("SAGELLM_PAGED_ATTENTION_IMPL", "torch")
    ops, name = select_paged_ops(torch.device("cuda"), torch.float16, 128, 16)
    assert name == "torch" and ops.paged_prefill is paged_torch.paged_prefill
    assert PagedAttentionBackend().implementation_for(torch.device("cpu"), torch.float32, 64, 16) == "torch"


def test_torch_ops_small_groups_and_query_chunks_give_the_same_results(monkeypatch) -> None:
    from sagellm_backend.attention import paged_torch

    monkeypatch.setattr(paged_torch, "CPU_GROUP_BYTES", 1)  # one sequence per decode group
    monkeypatch.setattr(paged_torch, "SCORE_BYTES", 4096)  # a few query rows per prefill chunk
    results = check_paged_ops(
        paged_torch, "cpu", dtypes=(torch.float32, torch.bfloat16), head_dims=(64,), block_sizes=(16,),
        head_configs=((8, 2),), tolerances={"float32": (1e-5, 1e-5)},
    )  # fmt: skip
    assert all(r.worst_ratio <= 1.0 for r in results)
    groups = paged_torch.decode_groups([1, 133, 2, 69, 1, 1], 1 << 14, on_cpu=False)
    assert groups == [([0, 4, 5], 1), (slice(1, 2), 133), (slice(2, 3), 2), (slice(3, 4), 69)]
    assert paged_torch.decode_groups([4] * 6, 1 << 14, on_cpu=False) == [(slice(0, 6), 4)]
    assert len(paged_torch.decode_groups([64] * 8, 1 << 14, on_cpu=True)) == 8  # 1 MiB per sequence > 1 byte


def test_op_checks_reject_unknown_and_missing_case_keys() -> None:
    import torch

    from sagellm_backend.attention import paged_torch
    from sagellm_backend.attention.testing import check_paged_decode, check_paged_variants

    geo = {"dtype": torch.float32, "head_dim": 16, "block_size": 4, "num_heads": 2, "num_kv_heads": 1}
    with pytest.raises(TypeError, match="unknown \\['pad_valu'\\]"):
        check_paged_decode(paged_torch, "cpu", seq_lens=[3], pad_valu=0, **geo)  # type: ignore[call-arg]  # the typo is the test
    with pytest.raises(TypeError, match="missing \\['num_heads'\\]"):
        check_paged_decode(paged_torch, "cpu", seq_lens=[3], **{k: v for k, v in geo.items() if k != "num_heads"})  # type: ignore[misc]  # the gap is the test
    with pytest.raises(TypeError, match="geometry keys"):
        check_paged_variants(paged_torch, "cpu", seq_lens=[3], q_lens=[1], use_out=True, **geo)  # type: ignore[call-arg]  # not a variant option
    assert check_paged_decode(paged_torch, "cpu", seq_lens=[3, 5], use_out=True, **geo).worst_ratio <= 1.0  # type: ignore[arg-type]  # geo is a plain dict
