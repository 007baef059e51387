"""Checks of KV blocks misused: every wrong call raises its typed error and changes nothing."""

from __future__ import annotations

from functools import partial
from typing import Any

from ...api import BackendProvider
from ...errors import (
    BackendError,
    BlockFreedError,
    DeviceUnreachableError,
    ForeignBlockError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidBlockError,
    ResourceExhaustedError,
)
from ...protocol import DType
from .base import Factory, check, expect, provider_check
from .support import poisoned_block, random_block, stat, storage_dtype

__all__: list[str] = []


@provider_check
def check_copy_mismatch_rejected(p: BackendProvider) -> None:
    """Copies between blocks of other size or dtype raise InvalidBlockError; dst is untouched."""
    src, _ = random_block(p, 8)
    small = poisoned_block(p, 4, src.dtype, 0x5A)
    before = p.kv_block_read(small)
    err = expect(InvalidBlockError, lambda: p.kv_block_copy(src, small), "copy 8 -> 4 tokens")
    assert isinstance(err, ValueError)
    assert p.kv_block_read(small) == before
    others = [d for d in (DType.FP32, DType.INT8, DType.FP16) if d is not src.dtype]
    try:
        other = p.kv_block_alloc(8, others[0])
    except BackendError:
        other = None
    if other is not None:
        expect(InvalidBlockError, lambda: p.kv_block_copy(src, other), "copy between dtypes")
        p.kv_block_free(other)
    for b in (src, small):
        p.kv_block_free(b)


@provider_check
def check_double_free(p: BackendProvider) -> None:
    """Freeing a freed block raises BlockFreedError and changes nothing."""
    base = stat(p)
    blk = p.kv_block_alloc(4, storage_dtype(p))
    p.kv_block_free(blk)
    assert stat(p) == base
    err = expect(BlockFreedError, lambda: p.kv_block_free(blk), "double free")
    assert isinstance(err, ValueError)
    assert stat(p) == base, "a failed double free changed the accounting"
    assert blk.is_freed


@provider_check
def check_use_after_free(p: BackendProvider) -> None:
    """Copying from/to, migrating or reading a freed block raises BlockFreedError."""
    dt = storage_dtype(p)
    a = p.kv_block_alloc(4, dt)
    b = p.kv_block_alloc(4, dt)
    p.kv_block_free(a)
    expect(BlockFreedError, lambda: p.kv_block_copy(a, b), "copy from freed")
    expect(BlockFreedError, lambda: p.kv_block_copy(b, a), "copy into freed")
    expect(BlockFreedError, lambda: p.kv_block_migrate(a, p.reachable_devices()[-1]), "migrate freed")
    expect(BlockFreedError, lambda: p.kv_block_read(a), "read freed")
    expect(BlockFreedError, lambda: a.data, "data of freed")
    p.kv_block_free(b)


@check
def check_foreign_block(make: Factory) -> None:
    """A block of another provider instance raises ForeignBlockError; both stay intact."""
    p, q = make(), make()
    try:
        assert p.owner_id != q.owner_id, "two provider instances share an owner_id"
        dt = storage_dtype(p)
        mine = p.kv_block_alloc(4, dt)
        theirs = q.kv_block_alloc(4, dt)
        base_p, base_q = stat(p), stat(q)
        expect(ForeignBlockError, lambda: p.kv_block_free(theirs), "free foreign")
        expect(ForeignBlockError, lambda: p.kv_block_copy(theirs, mine), "copy from foreign")
        expect(ForeignBlockError, lambda: p.kv_block_migrate(theirs, p.device), "migrate foreign")
        assert (stat(p), stat(q)) == (base_p, base_q)
        assert not theirs.is_freed
        p.kv_block_free(mine)
        q.kv_block_free(theirs)
    finally:
        p.close()
        q.close()


@provider_check
def check_migrate_bad_device(p: BackendProvider) -> None:
    """Malformed, unknown or unreachable devices raise typed errors; the block stays put."""
    blk, data = random_block(p, 2)
    where = blk.device
    for bad in ("gpu", "", "cuda:x", "cpu:3"):
        expect(InvalidArgumentError, partial(p.kv_block_migrate, blk, bad), f"migrate to {bad!r}")
    expect(InvalidArgumentTypeError, lambda: p.kv_block_migrate(blk, None), "migrate to None")
    for far in ("cuda:99", "npu:99", "mock:99"):
        expect(InvalidArgumentError, partial(p.kv_block_migrate, blk, far), f"migrate to {far}")
    if p.device_type != "npu":
        expect(DeviceUnreachableError, lambda: p.kv_block_migrate(blk, "npu:0"), "migrate to npu:0")
    assert blk.device == where and p.kv_block_read(blk) == data
    p.kv_block_free(blk)


@provider_check
def check_bad_token_counts(p: BackendProvider) -> None:
    """Zero, negative, fractional, boolean and absurd token counts raise typed errors; no leak."""
    dt = storage_dtype(p)
    base = stat(p)
    for bad in (0, -1, -128):
        expect(InvalidArgumentError, partial(p.kv_block_alloc, bad, dt), f"num_tokens={bad}")
    not_ints: tuple[Any, ...] = (1.5, "128", None, True)  # wrong types on purpose
    for wrong in not_ints:
        expect(InvalidArgumentTypeError, partial(p.kv_block_alloc, wrong, dt), f"num_tokens={wrong!r}")
    err = expect(ResourceExhaustedError, lambda: p.kv_block_alloc(10**12, dt), "num_tokens=1e12")
    assert isinstance(err, MemoryError)
    assert stat(p) == base, "a failed allocation leaked accounting"


@provider_check
def check_bad_dtypes(p: BackendProvider) -> None:
    """Non-dtype objects raise TypeError-compatible errors, unknown names ValueError ones."""
    base = stat(p)
    not_dtypes: tuple[Any, ...] = (3.14, None, object())  # wrong types on purpose
    for bad in not_dtypes:
        expect(InvalidArgumentTypeError, partial(p.kv_block_alloc, 4, bad), f"dtype={bad!r}")
    unknown: tuple[Any, ...] = ("fp64", "float16", "")
    for bad in unknown:
        expect(InvalidArgumentError, partial(p.kv_block_alloc, 4, bad), f"dtype={bad!r}")
    assert stat(p) == base
