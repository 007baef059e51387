"""Checks of what a provider is and offers: capability, dtypes, availability, torch device,
kernels, and its lifecycle."""

from __future__ import annotations

from dataclasses import fields
from enum import Enum
from functools import partial
from typing import Any

from ...api import BackendProvider
from ...errors import BackendError, KernelNotFoundError, UnsupportedDTypeError, UnsupportedOperationError
from ...protocol import CapabilityDescriptor, DType
from .base import CheckSkipped, Factory, check, expect, provider_check
from .support import as_floats, storage_dtype, torch_device_or_none

__all__: list[str] = []


@provider_check
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


@provider_check
def check_storage_dtypes(p: BackendProvider) -> None:
    """kv_storage_dtypes() holds every capability().supported_dtypes entry; each allocates, others refuse."""
    storable = p.kv_storage_dtypes()
    assert storable and all(isinstance(d, DType) for d in storable), storable
    assert len(set(storable)) == len(storable), f"duplicates in kv_storage_dtypes(): {storable}"
    missing = [d for d in p.capability().supported_dtypes if d not in storable]
    assert not missing, f"capability().supported_dtypes has {missing} that kv_storage_dtypes() lacks"
    for d in storable:
        blk = p.kv_block_alloc(1, d)
        assert blk.dtype is d, (blk.dtype, d)
        p.kv_block_free(blk)
    for d in DType:
        if d not in storable:
            expect(UnsupportedDTypeError, partial(p.kv_block_alloc, 1, d), f"alloc in unstorable {d.value}")


@provider_check
def check_foreign_str_enum_dtype(p: BackendProvider) -> None:
    """A foreign str-enum DType (like sagellm_protocol.DType) works wherever DType does."""
    dt = storage_dtype(p)
    foreign: Any = Enum("DType", {m.name: m.value for m in DType}, type=str)  # type: ignore[misc]  # a functional Enum with a str mixin, built on purpose
    f: Any = foreign[dt.name]
    assert f == dt and hash(f) == hash(dt)
    blk = p.kv_block_alloc(2, f)
    assert blk.dtype is dt
    cap = p.capability()
    for d in cap.supported_dtypes:
        member: Any = foreign[d.name]
        assert member in cap.supported_dtypes
    p.kv_block_free(blk)


@provider_check
def check_availability(p: BackendProvider) -> None:
    """is_available() is True for a constructed provider and detect() agrees, with a reason."""
    cls = type(p)
    assert cls.is_available() is True, f"{cls.__name__}.is_available() is not True for a provider that exists"
    found = cls.detect()
    assert found.available is True, f"{cls.__name__}.detect() says unavailable: {found.reason}"
    assert isinstance(found.reason, str) and found.reason, "detect() gave no reason"
    index = p.device.rpartition(":")[2]
    if found.device_count is not None and index.isdigit():
        assert int(index) < found.device_count, (p.device, found.device_count)


@provider_check
def check_torch_device(p: BackendProvider) -> None:
    """get_torch_device() is the torch.device the provider's blocks live on."""
    if torch_device_or_none(p) is None:
        err = expect(UnsupportedOperationError, p.get_torch_device, "get_torch_device without a torch device")
        raise CheckSkipped(f"needs a torch device; the provider has none and says so: {err}")
    import torch

    dev = p.get_torch_device()
    assert isinstance(dev, torch.device), type(dev)
    blk = p.kv_block_alloc(1, storage_dtype(p))
    try:
        assert blk.data.device == dev, f"a block lives on {blk.data.device}, get_torch_device() says {dev}"
    finally:
        p.kv_block_free(blk)


@provider_check
def check_to_device(p: BackendProvider) -> None:
    """to_device() moves a host tensor (numpy on providers without torch) to the device, values intact."""
    values = [1.0, -2.5, 3.25, 0.125]
    dev = torch_device_or_none(p)
    host: Any
    if dev is None:
        import numpy as np

        host = np.asarray(values, dtype=np.float32)
    else:
        import torch

        host = torch.tensor(values, dtype=torch.float32)
    out = p.to_device(host)
    if dev is not None:
        assert out.device == dev, f"to_device() left the tensor on {out.device}, not {dev}"
    assert as_floats(out) == values, (as_floats(out), values)


@provider_check
def check_kernel_registry(p: BackendProvider) -> None:
    """register_kernel/get_kernel with priorities; a missing name is KeyError "Kernel 'x' not found"."""

    def low(x: int) -> int:
        return x

    def high(x: int) -> int:
        return x + 1

    p.register_kernel("conformance_k", low, priority=1)
    p.register_kernel("conformance_k", high, priority=5)
    assert p.get_kernel("conformance_k") is high
    assert [e.impl for e in p.kernel_candidates("conformance_k")][:2] == [high, low]
    err = expect(KernelNotFoundError, lambda: p.get_kernel("no_such_kernel_xyz"), "missing kernel")
    assert isinstance(err, KeyError) and "Kernel 'no_such_kernel_xyz' not found" in str(err)


@check
def check_close_idempotent(make: Factory) -> None:
    """close() can be called twice (also after `with`); a closed provider refuses allocations with a BackendError."""
    p = make()
    dt = storage_dtype(p)
    with p as entered:
        assert entered is p, "__enter__ must return the provider"
    p.close()
    p.close()
    expect(BackendError, lambda: p.kv_block_alloc(1, dt), "alloc after close")
