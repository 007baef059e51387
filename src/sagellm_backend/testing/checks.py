"""The conformance checks: written once, run against every provider (ours and third parties').

Each check takes a zero-argument factory returning a fresh provider, exercises one behaviour of
the contract, and raises ``AssertionError`` when the provider misbehaves or :class:`CheckSkipped`
(with what is required and what was found) when the check does not apply. Data checks use random
bytes, never zeros, and poison destinations before writing them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import Enum
from functools import partial
from typing import Any

from ..api import BackendProvider, KVBlock
from ..errors import (
    BackendError,
    BlockFreedError,
    DeviceUnreachableError,
    ForeignBlockError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidBlockError,
    KernelNotFoundError,
    ResourceExhaustedError,
    UnsupportedOperationError,
)
from ..protocol import CapabilityDescriptor, DType, ErrorCode

__all__ = ["CHECKS", "Check", "CheckSkipped", "check"]

Factory = Callable[[], BackendProvider]


class CheckSkipped(Exception):
    """The check does not apply to this provider; the message says what it needs and found."""


@dataclass(frozen=True)
class Check:
    """One conformance check."""

    name: str
    fn: Callable[[Factory], None]
    doc: str


CHECKS: list[Check] = []


def check(fn: Callable[[Factory], None]) -> Callable[[Factory], None]:
    """Register a conformance check (the function's docstring is its description).

    Args:
        fn: The check.

    Returns:
        ``fn`` unchanged.
    """
    CHECKS.append(Check(fn.__name__.removeprefix("check_"), fn, (fn.__doc__ or "").strip().split("\n")[0]))
    return fn


# ----------------------------------------------------------------- helpers
def _dtype(p: BackendProvider) -> DType:
    """A dtype the provider stores: fp16 where possible (the seed's example), else fp32."""
    storage = getattr(p, "kv_storage_dtypes", None)
    pool = storage() if callable(storage) else p.capability().supported_dtypes
    for d in (DType.FP16, DType.FP32, DType.BF16, DType.INT8):
        if d in pool:
            return d
    raise CheckSkipped(f"needs fp16/fp32/bf16/int8 KV storage; provider offers {pool}")


def _rw(p: BackendProvider) -> tuple[Callable[[KVBlock], bytes], Callable[[KVBlock, bytes], None]]:
    blk = p.kv_block_alloc(1, _dtype(p))
    try:
        p.kv_block_read(blk)
    except UnsupportedOperationError as exc:
        raise CheckSkipped(f"needs kv_block_read/kv_block_write; provider says: {exc}") from None
    finally:
        p.kv_block_free(blk)
    return p.kv_block_read, p.kv_block_write


def _sync(p: BackendProvider) -> None:
    p.synchronize()


def _stat(p: BackendProvider) -> tuple[int, int]:
    s = p.memory_stats()
    return s.get("kv_allocated_bytes", s.get("allocated_bytes", 0)), s.get("num_blocks", -1)


def _expect(
    exc_types: type[BaseException] | tuple[type[BaseException], ...], fn: Callable[[], Any], what: str
) -> BaseException:
    try:
        fn()
    except exc_types as exc:
        if isinstance(exc, BackendError):
            assert isinstance(exc.code, ErrorCode), f"{what}: error without a protocol code"
            assert len(str(exc)) > 20, f"{what}: message too short to say what/found/fix: {exc}"
        return exc
    except BaseException as exc:
        raise AssertionError(f"{what}: expected {exc_types}, got {type(exc).__name__}: {exc}") from exc
    raise AssertionError(f"{what}: expected {exc_types}, nothing was raised")


def _random_block(p: BackendProvider, tokens: int = 4) -> tuple[KVBlock, bytes]:
    _, write = _rw(p)
    blk = p.kv_block_alloc(tokens, _dtype(p))
    data = os.urandom(blk.nbytes)
    write(blk, data)
    return blk, data


def _closing(fn: Callable[[BackendProvider], None]) -> Callable[[Factory], None]:
    def run(make: Factory) -> None:
        p = make()
        try:
            fn(p)
        finally:
            p.close()

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


# ----------------------------------------------------------------- checks
@check
@_closing
def check_capability(p: BackendProvider) -> None:
    """capability() returns a protocol CapabilityDescriptor with all 17 fields, typed."""
    cap = p.capability()
    assert isinstance(cap, CapabilityDescriptor), type(cap)
    assert len(fields(cap)) == 17
    assert isinstance(cap.device_type, str) and cap.device_type != "unknown"
    assert cap.supported_dtypes and all(isinstance(d, DType) for d in cap.supported_dtypes)
    assert cap.has_stream and cap.has_event, "streams and events must be real on every provider"
    assert cap.total_memory_bytes is None or cap.total_memory_bytes > 0
    if cap.has_collective:
        assert cap.supported_collectives, "has_collective but no supported_collectives listed"


@check
@_closing
def check_alloc_size_and_handles(p: BackendProvider) -> None:
    """kv_block_alloc(128, fp16) owns 128 x bytes-per-token bytes; handles unique and increasing."""
    dt = _dtype(p)
    blocks = [p.kv_block_alloc(128, dt) for _ in range(3)]
    geo = getattr(p, "kv_geometry", blocks[0].geometry)
    for b in blocks:
        assert b.nbytes == 128 * geo.bytes_per_token(dt), (b.nbytes, geo)
        assert b.num_tokens == 128 and b.dtype is dt and b.device == p.device
        data = b.data
        shape = tuple(getattr(data, "shape", ()))
        assert shape == geo.storage_shape(128, dt), (shape, geo.storage_shape(128, dt))
    handles = [b.handle for b in blocks]
    assert handles == sorted(set(handles)), handles
    for b in blocks:
        p.kv_block_free(b)


@check
@_closing
def check_foreign_str_enum_dtype(p: BackendProvider) -> None:
    """A foreign str-enum DType (like sagellm_protocol.DType) works wherever DType does."""
    dt = _dtype(p)
    foreign: Any = Enum("DType", {m.name: m.value for m in DType}, type=str)  # type: ignore[misc]
    f: Any = foreign[dt.name]
    assert f == dt and hash(f) == hash(dt)
    blk = p.kv_block_alloc(2, f)
    assert blk.dtype is dt
    cap = p.capability()
    for d in cap.supported_dtypes:
        assert foreign[d.name] in cap.supported_dtypes
    p.kv_block_free(blk)


@check
@_closing
def check_write_read_roundtrip(p: BackendProvider) -> None:
    """Random bytes written to a block read back bit for bit."""
    read, _ = _rw(p)
    blk, data = _random_block(p, 8)
    assert read(blk) == data
    p.kv_block_free(blk)


@check
@_closing
def check_copy_bit_exact(p: BackendProvider) -> None:
    """kv_block_copy moves every byte of random data into a poisoned destination."""
    read, write = _rw(p)
    src, data = _random_block(p, 8)
    dst = p.kv_block_alloc(8, src.dtype)
    write(dst, b"\xa5" * dst.nbytes)
    p.kv_block_copy(src, dst)
    _sync(p)
    assert read(dst) == data, "destination differs from source after copy"
    assert read(src) == data, "copy changed the source"
    for b in (src, dst):
        p.kv_block_free(b)


@check
@_closing
def check_copy_mismatch_rejected(p: BackendProvider) -> None:
    """Copies between blocks of other size or dtype raise InvalidBlockError; dst is untouched."""
    read, write = _rw(p)
    src, _ = _random_block(p, 8)
    small = p.kv_block_alloc(4, src.dtype)
    write(small, b"\x5a" * small.nbytes)
    before = read(small)
    err = _expect(InvalidBlockError, lambda: p.kv_block_copy(src, small), "copy 8 -> 4 tokens")
    assert isinstance(err, ValueError)
    assert read(small) == before
    others = [d for d in (DType.FP32, DType.INT8, DType.FP16) if d is not src.dtype]
    try:
        other = p.kv_block_alloc(8, others[0])
    except BackendError:
        other = None
    if other is not None:
        _expect(InvalidBlockError, lambda: p.kv_block_copy(src, other), "copy between dtypes")
        p.kv_block_free(other)
    for b in (src, small):
        p.kv_block_free(b)


@check
@_closing
def check_double_free(p: BackendProvider) -> None:
    """Freeing a freed block raises BlockFreedError and changes nothing."""
    base = _stat(p)
    blk = p.kv_block_alloc(4, _dtype(p))
    p.kv_block_free(blk)
    assert _stat(p) == base
    err = _expect(BlockFreedError, lambda: p.kv_block_free(blk), "double free")
    assert isinstance(err, ValueError)
    assert _stat(p) == base, "a failed double free changed the accounting"
    assert blk.is_freed


@check
@_closing
def check_use_after_free(p: BackendProvider) -> None:
    """Copying from/to, migrating or reading a freed block raises BlockFreedError."""
    dt = _dtype(p)
    a = p.kv_block_alloc(4, dt)
    b = p.kv_block_alloc(4, dt)
    p.kv_block_free(a)
    _expect(BlockFreedError, lambda: p.kv_block_copy(a, b), "copy from freed")
    _expect(BlockFreedError, lambda: p.kv_block_copy(b, a), "copy into freed")
    _expect(BlockFreedError, lambda: p.kv_block_migrate(a, p.reachable_devices()[-1]), "migrate freed")
    _expect(BlockFreedError, lambda: a.data, "data of freed")
    p.kv_block_free(b)


@check
def check_foreign_block(make: Factory) -> None:
    """A block of another provider instance raises ForeignBlockError; both stay intact."""
    p, q = make(), make()
    try:
        dt = _dtype(p)
        mine = p.kv_block_alloc(4, dt)
        theirs = q.kv_block_alloc(4, dt)
        base_p, base_q = _stat(p), _stat(q)
        _expect(ForeignBlockError, lambda: p.kv_block_free(theirs), "free foreign")
        _expect(ForeignBlockError, lambda: p.kv_block_copy(theirs, mine), "copy from foreign")
        _expect(ForeignBlockError, lambda: p.kv_block_migrate(theirs, p.device), "migrate foreign")
        assert (_stat(p), _stat(q)) == (base_p, base_q)
        assert not theirs.is_freed
        p.kv_block_free(mine)
        q.kv_block_free(theirs)
    finally:
        p.close()
        q.close()


@check
@_closing
def check_migrate_roundtrip(p: BackendProvider) -> None:
    """Migrating to every reachable device and back keeps the bytes and the handle."""
    read, _ = _rw(p)
    blk, data = _random_block(p, 8)
    handle = blk.handle
    for dev in [*p.reachable_devices()[1:], p.device]:
        out = p.kv_block_migrate(blk, dev)
        _sync(p)
        assert out is blk and blk.device == dev and blk.handle == handle
        assert read(blk) == data, f"bytes changed migrating to {dev}"
    p.kv_block_free(blk)


@check
@_closing
def check_migrate_bad_device(p: BackendProvider) -> None:
    """Malformed, unknown or unreachable devices raise typed errors; the block stays put."""
    read, _ = _rw(p)
    blk, data = _random_block(p, 2)
    where = blk.device
    for bad in ("gpu", "", "cuda:x", "cpu:3"):
        _expect(InvalidArgumentError, partial(p.kv_block_migrate, blk, bad), f"migrate to {bad!r}")
    _expect(InvalidArgumentTypeError, lambda: p.kv_block_migrate(blk, None), "migrate to None")
    for far in ("cuda:99", "npu:99", "mock:99"):
        _expect(InvalidArgumentError, partial(p.kv_block_migrate, blk, far), f"migrate to {far}")
    if p.device_type != "npu":
        _expect(DeviceUnreachableError, lambda: p.kv_block_migrate(blk, "npu:0"), "migrate to npu:0")
    assert blk.device == where and read(blk) == data
    p.kv_block_free(blk)


@check
@_closing
def check_bad_token_counts(p: BackendProvider) -> None:
    """Zero, negative, fractional, boolean and absurd token counts raise typed errors; no leak."""
    dt = _dtype(p)
    base = _stat(p)
    for bad in (0, -1, -128):
        _expect(InvalidArgumentError, partial(p.kv_block_alloc, bad, dt), f"num_tokens={bad}")
    for bad in (1.5, "128", None, True):
        _expect(InvalidArgumentTypeError, partial(p.kv_block_alloc, bad, dt), f"num_tokens={bad!r}")
    err = _expect(ResourceExhaustedError, lambda: p.kv_block_alloc(10**12, dt), "num_tokens=1e12")
    assert isinstance(err, MemoryError)
    assert _stat(p) == base, "a failed allocation leaked accounting"


@check
@_closing
def check_bad_dtypes(p: BackendProvider) -> None:
    """Non-dtype objects raise TypeError-compatible errors, unknown names ValueError ones."""
    base = _stat(p)
    for bad in (3.14, None, object()):
        _expect(InvalidArgumentTypeError, partial(p.kv_block_alloc, 4, bad), f"dtype={bad!r}")
    for bad in ("fp64", "float16", ""):
        _expect(InvalidArgumentError, partial(p.kv_block_alloc, 4, bad), f"dtype={bad!r}")
    assert _stat(p) == base


@check
@_closing
def check_memory_stats_baseline(p: BackendProvider) -> None:
    """memory_stats() counts allocations and returns to baseline after frees."""
    dt = _dtype(p)
    base = _stat(p)
    blocks = [p.kv_block_alloc(16, dt) for _ in range(5)]
    used, n = _stat(p)
    assert n == base[1] + 5, (n, base)
    assert used >= base[0] + sum(b.nbytes for b in blocks)
    for b in blocks:
        p.kv_block_free(b)
    assert _stat(p) == base, (_stat(p), base)
    stats = p.memory_stats()
    for key in ("allocated_bytes", "reserved_bytes", "peak_allocated_bytes", "total", "available"):
        assert key in stats and isinstance(stats[key], int), key


@check
@_closing
def check_stream_async_copy_and_events(p: BackendProvider) -> None:
    """A copy enqueued on a stream completes by synchronize(); events time it (>= 0 ms)."""
    read, write = _rw(p)
    src, data = _random_block(p, 64)
    dst = p.kv_block_alloc(64, src.dtype)
    write(dst, b"\x11" * dst.nbytes)
    s = p.create_stream()
    start = s.record_event()
    p.kv_block_copy(src, dst, stream=s)
    end = s.record_event()
    s.synchronize()
    assert s.query() and end.query()
    ms = end.elapsed_ms(start)
    assert ms >= 0.0, ms
    assert read(dst) == data
    assert repr(s) and s == s and hash(s) == hash(s)
    for b in (src, dst):
        p.kv_block_free(b)


@check
@_closing
def check_stream_wait_event(p: BackendProvider) -> None:
    """wait_event orders a second stream after the first: A->B on s1, then B->C on s2."""
    read, write = _rw(p)
    a, data = _random_block(p, 64)
    b = p.kv_block_alloc(64, a.dtype)
    c = p.kv_block_alloc(64, a.dtype)
    write(b, b"\x22" * b.nbytes)
    write(c, b"\x33" * c.nbytes)
    s1, s2 = p.create_stream(), p.create_stream()
    assert s1 != s2
    p.kv_block_copy(a, b, stream=s1)
    ev = s1.record_event()
    s2.wait_event(ev)
    p.kv_block_copy(b, c, stream=s2)
    s2.synchronize()
    assert read(c) == data, "s2 ran before s1's copy completed"
    for blk in (a, b, c):
        p.kv_block_free(blk)


@check
@_closing
def check_stream_context_manager(p: BackendProvider) -> None:
    """Inside `with stream:` provider copies are enqueued on that stream."""
    read, write = _rw(p)
    a, data = _random_block(p, 16)
    b = p.kv_block_alloc(16, a.dtype)
    write(b, b"\x44" * b.nbytes)
    s = p.create_stream()
    with s:
        p.kv_block_copy(a, b)
        end = s.record_event()
    end.synchronize()
    s.synchronize()
    assert read(b) == data
    for blk in (a, b):
        p.kv_block_free(blk)


@check
@_closing
def check_event_misuse(p: BackendProvider) -> None:
    """elapsed_ms between unrecorded events raises InvalidArgumentError."""
    e1, e2 = p.create_event(), p.create_event()
    _expect(InvalidArgumentError, lambda: e2.elapsed_ms(e1), "elapsed of unrecorded events")
    e1.record()
    e2.record()
    assert e2.elapsed_ms(e1) >= 0.0


@check
@_closing
def check_kernel_registry(p: BackendProvider) -> None:
    """register_kernel/get_kernel with priorities; a missing name is KeyError "Kernel 'x' not found"."""

    def low(x: int) -> int:
        return x

    def high(x: int) -> int:
        return x + 1

    p.register_kernel("conformance_k", low, priority=1)
    p.register_kernel("conformance_k", high, priority=5)
    assert p.get_kernel("conformance_k") is high
    err = _expect(KernelNotFoundError, lambda: p.get_kernel("no_such_kernel_xyz"), "missing kernel")
    assert isinstance(err, KeyError) and "Kernel 'no_such_kernel_xyz' not found" in str(err)


def _pool(p: BackendProvider, n: int = 8, bs: int = 4) -> Any:
    try:
        return p.create_kv_pool(n, block_size=bs, dtype=_dtype(p))
    except UnsupportedOperationError as exc:
        raise CheckSkipped(f"needs create_kv_pool; provider says: {exc}") from None


@check
@_closing
def check_pool_allocation_and_refcounts(p: BackendProvider) -> None:
    """Pool: atomic batch allocation, ResourceExhausted with nothing taken, fork, free, stats."""
    pool = _pool(p, 8)
    ids = pool.allocate(6)
    assert len(set(ids)) == 6 and all(0 <= i < 8 for i in ids)
    err = _expect(ResourceExhaustedError, lambda: pool.allocate(3), "allocate past capacity")
    assert isinstance(err, MemoryError)
    assert pool.stats().free_blocks == 2, "a failed batch took blocks"
    pool.fork(ids[:2])
    assert pool.refcount(ids[0]) == 2 and pool.refcount(ids[5]) == 1
    pool.free(ids)
    st = pool.stats()
    assert st.used_blocks == 2 and st.shared_blocks == 0 and st.peak_used_blocks == 6
    _expect(BlockFreedError, lambda: pool.free([ids[5]]), "pool double free")
    pool.free(ids[:2])
    assert pool.stats().used_blocks == 0
    pool.close()


@check
@_closing
def check_pool_copy_and_cow(p: BackendProvider) -> None:
    """Pool: copy_blocks and copy-on-write are bit-exact on random data; poison fully overwritten."""
    pool = _pool(p, 12)
    ids = pool.allocate(9)
    data = {i: os.urandom(pool.block_nbytes) for i in ids}
    for i, d in data.items():
        pool.write_block(i, d)
    src, dst = ids[:4], ids[4:8]
    for i in dst:
        pool.write_block(i, b"\xee" * pool.block_nbytes)
    pool.copy_blocks(src, dst)
    _sync(p)
    for s, d in zip(src, dst):
        assert pool.read_block(d) == data[s], f"block {d} != block {s}"
    _expect(InvalidArgumentError, lambda: pool.copy_blocks([ids[0]], [ids[0]]), "overlapping copy")
    shared = pool.fork([ids[8]])
    new = pool.make_writable([ids[0], shared[0]])
    _sync(p)
    assert new[0] == ids[0] and new[1] != ids[8]
    assert pool.read_block(new[1]) == data[ids[8]] and pool.refcount(ids[8]) == 1
    pool.close()


@check
@_closing
def check_pool_swap_roundtrip(p: BackendProvider) -> None:
    """Pool: swap_out to host and swap_in back are bit-exact."""
    pool = _pool(p, 10)
    ids = pool.allocate(5)
    data = [os.urandom(pool.block_nbytes) for _ in ids]
    for i, d in zip(ids, data):
        pool.write_block(i, d)
    swapped = pool.swap_out(ids)
    swapped.wait()
    _sync(p)
    pool.free(ids)
    back = pool.swap_in(swapped)
    _sync(p)
    assert [pool.read_block(i) for i in back] == data
    pool.close()


@check
@_closing
def check_pool_block_view(p: BackendProvider) -> None:
    """pool.block(id) is a KVBlock on the pool's memory that holds one reference."""
    read, _ = _rw(p)
    pool = _pool(p, 4)
    (i,) = pool.allocate(1)
    payload = os.urandom(pool.block_nbytes)
    pool.write_block(i, payload)
    view = pool.block(i)
    assert pool.refcount(i) == 2 and read(view) == payload
    other = p.kv_block_alloc(pool.block_size, pool.dtype)
    p.kv_block_copy(view, other)
    _sync(p)
    assert read(other) == payload
    p.kv_block_free(view)
    assert pool.refcount(i) == 1
    p.kv_block_free(other)
    pool.close()


def _array(p: BackendProvider, values: list[float]) -> Any:
    if getattr(p, "dist_backend", None) == "mock":
        import numpy as np

        return np.asarray(values, dtype=np.float32)
    import torch

    return torch.tensor(values, dtype=torch.float32, device=p.device)


@check
@_closing
def check_collectives_world_of_one(p: BackendProvider) -> None:
    """Without peers, collectives are the documented identity; bad ops raise typed errors."""
    if not p.capability().has_collective:
        raise CheckSkipped("needs has_collective=True; provider reports False")
    if getattr(p, "world_size", 1) != 1:
        raise CheckSkipped("needs a provider outside any multi-rank group")
    t = _array(p, [1.0, 2.0, 3.0])
    out = p.all_reduce(t, "sum")
    assert out is t and [float(x) for x in out.tolist()] == [1.0, 2.0, 3.0]
    g = p.all_gather(t)
    assert tuple(g.shape) == (1, 3)
    _expect(InvalidArgumentError, lambda: p.all_reduce(t, "median"), "unknown reduce op")
    _expect(InvalidArgumentTypeError, lambda: p.all_reduce([1.0, 2.0], "sum"), "list instead of tensor")


@check
@_closing
def check_graph_capture(p: BackendProvider) -> None:
    """Graph capture replays captured copies where has_graph_exec; elsewhere raises not_implemented."""
    if not p.capability().has_graph_exec:
        _expect(UnsupportedOperationError, lambda: p.capture_graph().__enter__(), "capture without graphs")
        return
    read, write = _rw(p)
    src, data = _random_block(p, 8)
    dst = p.kv_block_alloc(8, src.dtype)
    write(dst, b"\x66" * dst.nbytes)
    _sync(p)
    with p.capture_graph() as graph:
        p.kv_block_copy(src, dst)
    _sync(p)
    assert read(dst) == b"\x66" * dst.nbytes, "captured work ran during capture"
    graph.replay()
    _sync(p)
    assert read(dst) == data
    newer = os.urandom(src.nbytes)
    write(src, newer)
    graph.replay()
    _sync(p)
    assert read(dst) == newer, "replay did not re-run the copy"


@check
def check_close_idempotent(make: Factory) -> None:
    """close() can be called twice; a closed provider refuses new allocations with a typed error."""
    p = make()
    dt = _dtype(p)
    p.close()
    p.close()
    _expect(InvalidArgumentError, lambda: p.kv_block_alloc(1, dt), "alloc after close")


def run_check(c: Check, make: Factory) -> tuple[str, str, float]:
    """Run one check.

    Args:
        c: The check.
        make: Provider factory.

    Returns:
        ``(status, detail, seconds)`` with status ``pass``, ``fail`` or ``skip``.
    """
    t0 = time.perf_counter()
    try:
        c.fn(make)
    except CheckSkipped as exc:
        return "skip", str(exc), time.perf_counter() - t0
    except Exception as exc:
        return "fail", f"{type(exc).__name__}: {exc}", time.perf_counter() - t0
    return "pass", "", time.perf_counter() - t0
