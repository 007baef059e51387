"""Paged attention straight from the KV pool's blocks (issue 13): the pool's per-layer K/V views are
the caches, pool block ids are the block-table ids, and fork + make_writable (copy-on-write) +
decode, swaps and migrations keep every sequence's attention exact."""

from __future__ import annotations

import pytest

from sagellm_backend import DType, InvalidArgumentError, MockBackendProvider, UnsupportedOperationError, get_provider

torch = pytest.importorskip("torch")

from sagellm_backend.attention import PagedAttentionBackend, PagedAttentionMetadataBuilder  # noqa: E402

LAYERS, HKV, HQ, D, BS = 2, 2, 4, 64, 16
GEOM = {"num_layers": LAYERS, "num_kv_heads": HKV, "head_dim": D}


def _reference(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    """float64 attention of the last len(q) positions, causal, GQA by repetition."""
    q, keys, values = q.cpu(), keys.cpu(), values.cpu()
    t, n = q.shape[0], keys.shape[0]
    k = keys.double().repeat_interleave(HQ // HKV, dim=1)
    v = values.double().repeat_interleave(HQ // HKV, dim=1)
    scores = torch.einsum("thd,nhd->htn", q.double(), k) * scale
    pos = torch.arange(n - t, n)[:, None]
    scores = scores.masked_fill(torch.arange(n)[None, :] > pos, float("-inf"))
    return torch.einsum("htn,nhd->thd", scores.softmax(-1), v)


def _decode(backend: PagedAttentionBackend, caches: list, table: list[int], pos: int, q, k, v) -> list:
    builder = PagedAttentionMetadataBuilder(block_size=BS, device=q.device)
    md = builder.build_decode_metadata(context_lens=[pos], block_tables=[table])
    return [backend.forward(q[i], k[i], v[i], md, kv_cache=caches[i], scale=D**-0.5) for i in range(LAYERS)]


def test_pool_views_have_the_attention_cache_layout() -> None:
    p = get_provider("cpu", kv_geometry=GEOM)
    pool = p.create_kv_pool(8, block_size=BS, dtype=DType.FP32)
    caches = pool.kv_caches()
    shape = PagedAttentionBackend(block_size=BS).get_kv_cache_shape(
        num_blocks=8, block_size=BS, num_kv_heads=HKV, head_dim=D
    )
    assert len(caches) == LAYERS and all(tuple(c.shape) == tuple(shape) for kv in caches for c in kv)
    k0, _v0 = pool.kv_caches(0)
    (b,) = pool.allocate(1)
    k0[b].fill_(1.5)
    raw = torch.frombuffer(bytearray(pool.read_block(b)), dtype=torch.float32).view(2, LAYERS, BS, HKV, D)
    assert bool((raw[0, 0] == 1.5).all()) and not bool((raw[1, 0] == 1.5).all())  # K of layer 0, not V
    with pytest.raises(InvalidArgumentError):
        pool.kv_caches(LAYERS)
    mock_k, _ = MockBackendProvider(kv_geometry=GEOM).create_kv_pool(4, block_size=BS, dtype=DType.FP32).kv_caches(0)
    assert not isinstance(mock_k, torch.Tensor) and tuple(mock_k.shape) == (4, *shape[1:])  # numpy on the Mock
    with pytest.raises(UnsupportedOperationError):
        p.create_kv_pool(4, block_size=BS, dtype=DType.INT8).kv_caches()


@pytest.mark.parametrize("provider_name", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_prefix_sharing_copy_on_write_and_swaps_keep_attention_exact(provider_name: str) -> None:
    if provider_name == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU and a CUDA torch")
    torch.manual_seed(0)
    p = get_provider(provider_name, kv_geometry=GEOM)
    dev = p.device
    pool = p.create_kv_pool(32, block_size=BS, dtype=DType.FP32)
    pool.arena.fill_(float("nan"))  # pool memory is uninitialised: nothing past a sequence may leak in
    caches = pool.kv_caches()
    backend = PagedAttentionBackend(block_size=BS)
    builder = PagedAttentionMetadataBuilder(block_size=BS, device=dev)
    scale = D**-0.5
    n = 40  # a shared prompt filling 2.5 blocks

    # prefill sequence A through shuffled pool blocks
    pool.allocate(5)  # make A's ids not 0, 1, 2
    table_a = pool.allocate(3)[::-1]
    q, k, v = (torch.randn(LAYERS, n, h, D, device=dev) for h in (HQ, HKV, HKV))
    md = builder.build_prefill_metadata(seq_lens=[n], block_tables=[table_a])
    for i in range(LAYERS):
        out = backend.forward(q[i], k[i], v[i], md, kv_cache=caches[i], scale=scale)
        torch.testing.assert_close(out.double().cpu(), _reference(q[i], k[i], v[i], scale), rtol=1e-5, atol=1e-5)

    # sequence B shares the whole prompt; its next token lands in the shared, half-full last block
    shared = pool.fork(table_a)
    assert [pool.refcount(b) for b in shared] == [2, 2, 2]
    table_b = shared[:2] + pool.make_writable(shared[2:])  # copy-on-write of the block B writes into
    assert table_b[:2] == table_a[:2] and table_b[2] != table_a[2]
    assert [pool.refcount(b) for b in table_a] == [2, 2, 1] and pool.refcount(table_b[2]) == 1

    qa, ka, va = (torch.randn(LAYERS, 1, h, D, device=dev) for h in (HQ, HKV, HKV))
    qb, kb, vb = (torch.randn(LAYERS, 1, h, D, device=dev) for h in (HQ, HKV, HKV))
    out_b = _decode(backend, caches, table_b, n, qb, kb, vb)
    out_a = _decode(backend, caches, table_a, n, qa, ka, va)  # writes A's own position 40 afterwards
    for i in range(LAYERS):
        ref_a = _reference(qa[i], torch.cat([k[i], ka[i]]), torch.cat([v[i], va[i]]), scale)
        ref_b = _reference(qb[i], torch.cat([k[i], kb[i]]), torch.cat([v[i], vb[i]]), scale)
        torch.testing.assert_close(out_a[i].double().cpu(), ref_a, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out_b[i].double().cpu(), ref_b, rtol=1e-5, atol=1e-5)

    # swap B out, clobber its private block, swap it back in: the next decode still sees B's history
    swapped = pool.swap_out(table_b)
    swapped.wait()
    for i in range(LAYERS):
        caches[i][0][table_b[2]].fill_(7.0)
    pool.swap_in(swapped, table_b)
    swapped.release()
    qc, kc, vc = (torch.randn(LAYERS, 1, h, D, device=dev) for h in (HQ, HKV, HKV))
    out_c = _decode(backend, caches, table_b, n + 1, qc, kc, vc)
    for i in range(LAYERS):
        keys = torch.cat([k[i], kb[i], kc[i]])
        values = torch.cat([v[i], vb[i], vc[i]])
        torch.testing.assert_close(
            out_c[i].double().cpu(), _reference(qc[i], keys, values, scale), rtol=1e-5, atol=1e-5
        )

    # copy B into fresh blocks with copy_blocks: the copy attends identically
    table_c = pool.allocate(3)
    pool.copy_blocks(table_b, table_c)
    qd = torch.randn(LAYERS, 1, HQ, D, device=dev)
    for i in range(LAYERS):
        mdd = builder.build_decode_metadata(context_lens=[n + 1], block_tables=[table_b])
        mdc = builder.build_decode_metadata(context_lens=[n + 1], block_tables=[table_c])
        kn, vn = torch.randn(1, HKV, D, device=dev), torch.randn(1, HKV, D, device=dev)
        o1 = backend.forward(qd[i], kn, vn, mdd, kv_cache=caches[i], scale=scale)
        o2 = backend.forward(qd[i], kn, vn, mdc, kv_cache=caches[i], scale=scale)
        torch.testing.assert_close(o1, o2, rtol=0, atol=0)
