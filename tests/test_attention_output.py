"""``forward(..., output=)`` (vLLM's ``AttentionImpl.forward`` ``output``) on the CPU backends: the result is written
into the caller's buffer and equals the allocating call bit for bit, on every path (prefill, padded prefill, decode,
the decode fast path of later layers, SDPA); a buffer that is not one (another shape, dtype or device, strided,
sharing memory with an input or a cache) is a typed error raised before anything is written."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagellm_backend.attention import (
    AttentionMetadata,
    PagedAttentionBackend,
    PagedAttentionMetadataBuilder,
    SDPAAttentionBackend,
)
from sagellm_backend.errors import (
    BackendError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidDeviceError,
    UnsupportedDTypeError,
)

torch = pytest.importorskip("torch")
BS, HQ, HKV, D = 4, 4, 2, 8


def _caches(seed: int) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, BS, HKV, D, generator=g), torch.randn(8, BS, HKV, D, generator=g)


def _qkv(t: int, seed: int) -> tuple[Any, Any, Any]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t, HQ, D, generator=g), torch.randn(t, HKV, D, generator=g), torch.randn(t, HKV, D, generator=g)


def _decode_md() -> AttentionMetadata:
    return PagedAttentionMetadataBuilder(BS).build_decode_metadata([3, 6], [[2, 0], [1, 4]])


def test_decode_layers_write_into_output_and_equal_the_allocating_calls() -> None:
    """Three layers on one metadata (the first checked, the next on the fast path), each with and without output."""
    backend, md = PagedAttentionBackend(BS), _decode_md()
    ref_md = _decode_md()
    for layer in range(3):
        q, k, v = _qkv(2, layer)
        cache, ref_cache = _caches(layer), _caches(layer)
        buf = torch.full((2, HQ, D), float("nan"))
        got = backend.forward(q, k, v, md, kv_cache=cache, output=buf)
        want = PagedAttentionBackend(BS).forward(q, k, v, ref_md, kv_cache=ref_cache)
        assert got is buf and torch.equal(buf, want), layer
        assert all(torch.equal(a, b) for a, b in zip(cache, ref_cache)), layer
    assert md.step_fast_paths.get((id(backend), "ready")) is not None  # layers 2 and 3 took the fast path


def test_prefill_padded_prefill_and_sdpa_copy_into_output() -> None:
    md = PagedAttentionMetadataBuilder(BS).build_prefill_metadata(seq_lens=[5, 2], block_tables=[[3, 0], [5, 1]])
    q, k, v = _qkv(7, 1)
    cache, ref_cache = _caches(2), _caches(2)
    buf = torch.empty(7, HQ, D)
    got = PagedAttentionBackend(BS).forward(q, k, v, md, kv_cache=cache, output=buf)
    assert got is buf and torch.equal(buf, PagedAttentionBackend(BS).forward(q, k, v, md, kv_cache=ref_cache))
    lens, width = [3, 2], 3
    real = torch.zeros(2, width, dtype=torch.bool)
    for i, n in enumerate(lens):
        real[i, width - n :] = True
    mask = (torch.ones(width, width, dtype=torch.bool).tril()[None] & real[:, None, :] & real[:, :, None])[:, None]
    pq, pk, pv = _qkv(6, 3)
    pmd = PagedAttentionMetadataBuilder(BS).build_prefill_metadata(seq_lens=lens, block_tables=[[3, 0], [5, 1]])
    pbuf = torch.full((6, HQ, D), float("nan"))
    got = PagedAttentionBackend(BS).forward(pq, pk, pv, pmd, kv_cache=_caches(4), attn_mask=mask, output=pbuf)
    want = PagedAttentionBackend(BS).forward(pq, pk, pv, pmd, kv_cache=_caches(4), attn_mask=mask)
    assert got is pbuf and torch.equal(pbuf, want)
    sbuf = torch.empty(7, HQ, D)
    sdpa = SDPAAttentionBackend()
    got = sdpa.forward(q, k, v, AttentionMetadata.for_prefill([5, 2]), output=sbuf)
    assert got is sbuf and torch.equal(sbuf, sdpa.forward(q, k, v, AttentionMetadata.for_prefill([5, 2])))


def _bad_outputs(q: Any, kbuf: Any, cache: tuple[Any, Any]) -> list[tuple[str, Any, type[BackendError]]]:
    wide = torch.empty(2, HQ, 2 * D)
    return [
        ("not a tensor", [[0.0]], InvalidArgumentTypeError),
        ("another shape", torch.empty(2, HQ, D + 1), InvalidArgumentError),
        ("another dtype", torch.empty(2, HQ, D, dtype=torch.float64), UnsupportedDTypeError),
        ("another device", torch.empty(2, HQ, D, device="meta"), InvalidDeviceError),
        ("strided", wide[..., :D], InvalidArgumentError),
        ("the query itself", q, InvalidArgumentError),
        ("inside the key cache", cache[0].view(-1)[: 2 * HQ * D].view(2, HQ, D), InvalidArgumentError),
        ("the buffer the key is a view of", kbuf, InvalidArgumentError),
    ]


@pytest.mark.parametrize("fast", [False, True], ids=["checked call", "fast path"])
def test_bad_outputs_raise_before_anything_is_written(fast: bool) -> None:
    backend, md = PagedAttentionBackend(BS), _decode_md()
    if fast:  # a first layer succeeds, so the next calls take the fast path
        q0, k0, v0 = _qkv(2, 9)
        backend.forward(q0, k0, v0, md, kv_cache=_caches(9))
    q, k0, v = _qkv(2, 0)
    kbuf = torch.zeros(2, HQ, D)
    k = kbuf[:, :HKV]  # the keys as a strided view of a query-shaped buffer
    k.copy_(k0)
    cache = _caches(0)
    for name, bad, err in _bad_outputs(q, kbuf, cache):
        before = [c.clone() for c in cache]
        snapshot = bad.clone() if isinstance(bad, torch.Tensor) and bad.device.type == "cpu" else None
        with pytest.raises(err):
            backend.forward(q, k, v, md, kv_cache=cache, output=bad)
        assert all(torch.equal(a, b) for a, b in zip(cache, before)), name  # the new K/V were not stored
        if snapshot is not None:
            assert torch.equal(bad, snapshot) or bad.isnan().equal(snapshot.isnan()), name
    good = torch.empty(2, HQ, D)
    assert backend.forward(q, k, v, md, kv_cache=cache, output=good) is good  # the backend still works


@settings(max_examples=40, deadline=None)
@given(offset=st.integers(-2 * HQ * D, 4 * HQ * D), layer=st.integers(0, 2))
def test_an_output_anywhere_in_a_shared_buffer_is_refused_exactly_when_it_overlaps(offset: int, layer: int) -> None:
    """The query lives in one buffer at element ``2 * HQ * D``; an output placed at ``offset`` elements from it is
    accepted exactly when their byte ranges are apart, on the checked call and on the fast path."""
    backend, md = PagedAttentionBackend(BS), _decode_md()
    for i in range(layer):
        qi, ki, vi = _qkv(2, 20 + i)
        backend.forward(qi, ki, vi, md, kv_cache=_caches(20 + i))
    n = 2 * HQ * D
    base = 2 * n
    buf = torch.zeros(6 * n)
    q = buf[base : base + n].view(2, HQ, D)
    q.copy_(_qkv(2, 1)[0])
    _, k, v = _qkv(2, 1)
    start = base + offset
    out = buf[start : start + n].view(2, HQ, D)
    cache = _caches(1)
    overlaps = not (start + n <= base or base + n <= start)
    if overlaps:
        with pytest.raises(InvalidArgumentError, match="sharing no memory"):
            backend.forward(q, k, v, md, kv_cache=cache, output=out)
    else:
        want = PagedAttentionBackend(BS).forward(q.clone(), k, v, _decode_md(), kv_cache=_caches(1))
        assert backend.forward(q, k, v, md, kv_cache=cache, output=out) is out
        assert torch.equal(out, want)


def _plan_overlapping_output(fast: bool) -> tuple[Any, ...]:
    """A decode whose block tables live inside the buffer the output is carved from (as an engine's arena could)."""
    arena = torch.zeros(2 * HQ * D + 64)
    out = arena[: 2 * HQ * D].view(2, HQ, D)
    bt = arena[2 * HQ * D - 8 : 2 * HQ * D].view(torch.int64).view(2, 2)  # the last 32 bytes of out
    bt.copy_(torch.tensor([[2, 0], [1, 4]]))
    md = PagedAttentionMetadataBuilder(BS).build_decode_metadata([3, 6], bt)
    backend = PagedAttentionBackend(BS)
    if fast:  # a first layer into a separate buffer: the next calls take the fast path
        q0, k0, v0 = _qkv(2, 9)
        backend.forward(q0, k0, v0, md, kv_cache=_caches(9), output=torch.empty(2, HQ, D))
    return backend, md, out, bt


@pytest.mark.parametrize("fast", [False, True], ids=["checked call", "fast path"])
def test_an_output_over_the_metadata_tensors_is_refused(fast: bool) -> None:
    """The decode reads the block tables and slots while it writes the output: an output sharing their memory is
    refused, and neither the cache nor the tables change."""
    backend, md, out, bt = _plan_overlapping_output(fast)
    if md.block_tables.data_ptr() != bt.data_ptr():
        pytest.skip("the builder copied the table")  # nothing of the caller's to overlap then
    q, k, v = _qkv(2, 0)
    cache = _caches(0)
    before, table = [c.clone() for c in cache], bt.clone()
    with pytest.raises(InvalidArgumentError, match="sharing no memory"):
        backend.forward(q, k, v, md, kv_cache=cache, output=out)
    assert all(torch.equal(a, b) for a, b in zip(cache, before)) and torch.equal(bt, table)


@pytest.mark.parametrize("fast", [False, True], ids=["checked call", "fast path"])
def test_outputs_torch_would_not_write_are_refused_before_the_store(fast: bool) -> None:
    """An output that requires grad (the kernels record no autograd) or an inference tensor outside inference mode
    is a typed error raised before the new K/V are stored; under inference mode the inference tensor is written."""
    backend, md = PagedAttentionBackend(BS), _decode_md()
    if fast:
        q0, k0, v0 = _qkv(2, 9)
        backend.forward(q0, k0, v0, md, kv_cache=_caches(9))
    q, k, v = _qkv(2, 0)
    cache = _caches(0)
    before = [c.clone() for c in cache]
    with torch.inference_mode():
        inference = torch.empty(2, HQ, D)
    for bad, what in ((torch.empty(2, HQ, D, requires_grad=True), "requires grad"), (inference, "inference")):
        with pytest.raises(InvalidArgumentError, match=what):
            backend.forward(q, k, v, md, kv_cache=cache, output=bad)
        assert all(torch.equal(a, b) for a, b in zip(cache, before)), what
    with torch.inference_mode():
        assert backend.forward(q, k, v, md, kv_cache=cache, output=inference) is inference
    assert torch.equal(inference, PagedAttentionBackend(BS).forward(q, k, v, _decode_md(), kv_cache=_caches(0)))


def test_an_output_inside_a_strided_querys_reach_is_refused_on_the_fast_path() -> None:
    """The query is every other row of a buffer (as q is a view of a fused QKV output); an output placed after the
    query's first ``numel`` elements but inside its reach overlaps the later rows and is refused."""
    backend, md = PagedAttentionBackend(BS), _decode_md()
    n = HQ * D  # one query row
    buf = torch.zeros(6 * n)
    q = buf.view(3, 2, HQ, D)[:, 0][:2]  # rows at 0 and 2n: reach 3n, numel 2n
    q.copy_(_qkv(2, 3)[0])
    _, k, v = _qkv(2, 3)
    backend.forward(q, k, v, md, kv_cache=_caches(3), output=torch.empty(2, HQ, D))  # records the fast path
    assert md.step_fast_paths.get((id(backend), "ready")) is not None
    out = buf[2 * n : 4 * n].view(2, HQ, D)  # starts at the query's second row
    before = buf.clone()
    with pytest.raises(InvalidArgumentError, match="sharing no memory"):
        backend.forward(q, k, v, md, kv_cache=_caches(3), output=out)
    assert torch.equal(buf, before)


@pytest.mark.parametrize("as_tuple", [False, True], ids=["lists", "tuples"])
def test_lengths_changed_in_place_on_reused_metadata_are_checked_again(as_tuple: bool) -> None:
    """An engine that replaces or edits in place a metadata's lengths between layers is checked again, not served
    the plan of the old lengths: lengths that no longer match the slots are refused; the same lengths as a tuple
    give the same result."""
    backend, md = PagedAttentionBackend(BS), _decode_md()
    q, k, v = _qkv(2, 4)
    want = backend.forward(q, k, v, md, kv_cache=_caches(4))
    assert torch.equal(backend.forward(q, k, v, md, kv_cache=_caches(4)), want)  # the fast path
    md.context_lens = (3, 6) if as_tuple else [3, 6]  # type: ignore[assignment]  # the same lengths
    assert torch.equal(backend.forward(q, k, v, md, kv_cache=_caches(4)), want)
    md.context_lens = (2, 6) if as_tuple else [2, 6]  # type: ignore[assignment]  # slot 11 is position 3's
    with pytest.raises(InvalidArgumentError, match="slot_mapping"):
        backend.forward(q, k, v, md, kv_cache=_caches(4))
    md.context_lens = [3, 6]
    assert torch.equal(backend.forward(q, k, v, md, kv_cache=_caches(4)), want)  # checked and recorded again
    md.context_lens[0] = 2  # edited in place: the same list object
    with pytest.raises(InvalidArgumentError, match="slot_mapping"):
        backend.forward(q, k, v, md, kv_cache=_caches(4))


@pytest.mark.parametrize("fast", [False, True], ids=["checked call", "fast path"])
def test_an_output_over_int32_block_tables_the_plan_copied_is_refused(fast: bool) -> None:
    """The plan holds int64 copies of int32 block tables; an output over the metadata's own table is still refused
    (writing it would corrupt the next layer's metadata), before anything is written."""
    buf = torch.zeros(2 * HQ * D)
    out = buf.view(2, HQ, D)
    bt = buf.view(torch.int32)[:4].view(2, 2)  # the metadata's table inside the output's bytes
    bt.copy_(torch.tensor([[2, 0], [1, 4]], dtype=torch.int32))
    md = AttentionMetadata.for_decode([3, 6], bt, slot_mapping=torch.tensor([2 * BS + 3, 4 * BS + 2]), block_size=BS)
    backend = PagedAttentionBackend(BS)
    q, k, v = _qkv(2, 5)
    if fast:
        backend.forward(q, k, v, md, kv_cache=_caches(5), output=torch.empty(2, HQ, D))  # records the fast path
        assert md.step_fast_paths.get((id(backend), "ready")) is not None
    before = buf.clone()
    with pytest.raises(InvalidArgumentError, match="sharing no memory"):
        backend.forward(q, k, v, md, kv_cache=_caches(5), output=out)
    assert torch.equal(buf, before)
    assert backend.forward(q, k, v, md, kv_cache=_caches(5)).shape == (2, HQ, D)  # the metadata is intact


def test_a_cpu_forward_under_inference_mode_leaves_later_forwards_on_the_thread_working() -> None:
    """The torch ops' per-thread gather buffer made during an inference-mode call is an ordinary tensor, so a later
    call outside inference mode on the same thread can still write it (and the results are the same)."""
    import threading

    results: list[Any] = []

    def work() -> None:
        q, k, v = _qkv(2, 6)
        with torch.inference_mode():
            first = PagedAttentionBackend(BS).forward(q, k, v, _decode_md(), kv_cache=_caches(6))
        results.append((first.clone(), PagedAttentionBackend(BS).forward(q, k, v, _decode_md(), kv_cache=_caches(6))))

    t = threading.Thread(target=work)  # a fresh thread: no buffer made before this test
    t.start()
    t.join(timeout=60)
    assert results and torch.equal(results[0][0], results[0][1])


def test_numpy_lengths_set_on_metadata_give_the_same_results_as_lists() -> None:
    """Lengths an engine sets as numpy arrays after building the metadata (a numpy array has no truth value) are
    read as the sequences they are, on the checked call, on the fast path and in prefill."""
    import numpy as np

    backend, md = PagedAttentionBackend(BS), _decode_md()
    q, k, v = _qkv(2, 7)
    want = PagedAttentionBackend(BS).forward(q, k, v, _decode_md(), kv_cache=_caches(7))
    md.context_lens = np.array([3, 6])  # type: ignore[assignment]
    assert torch.equal(backend.forward(q, k, v, md, kv_cache=_caches(7)), want)
    assert torch.equal(backend.forward(q, k, v, md, kv_cache=_caches(7)), want)  # the fast path
    builder = PagedAttentionMetadataBuilder(BS)
    pre = builder.build_prefill_metadata([2, 3], [[2, 0], [1, 4]], cached_lens=[1, 2])
    pq, pk, pv = _qkv(5, 8)
    want_pre = PagedAttentionBackend(BS).forward(pq, pk, pv, pre, kv_cache=_caches(8))
    pre_np = builder.build_prefill_metadata([2, 3], [[2, 0], [1, 4]], cached_lens=[1, 2])
    pre_np.cached_lens = np.array([1, 2])  # type: ignore[assignment]
    assert torch.equal(PagedAttentionBackend(BS).forward(pq, pk, pv, pre_np, kv_cache=_caches(8)), want_pre)
