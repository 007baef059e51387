"""Bookkeeping every built-in provider shares, written once over a handful of storage hooks.

:class:`ProviderCore` validates every argument, keeps the table of live blocks, accounts memory
per device, enforces memory limits, and turns storage failures into typed errors. Subclasses
supply the storage (numpy for Mock, torch tensors for the torch providers) through the
``_storage_*`` hooks and the arena operations of :mod:`sagellm_backend.kv.pool`.

Every public method validates fully before it changes anything, so a call that raises leaves the
provider exactly as it was.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from abc import abstractmethod
from typing import TYPE_CHECKING, Any

from ..contract import BackendProvider, KVBlock, Stream, current_stream
from ..device import Device, normalize_device
from ..errors import (
    BackendError,
    BlockFreedError,
    DeviceUnreachableError,
    ForeignBlockError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidBlockError,
    KVTransferError,
    ResourceExhaustedError,
    UnsupportedDTypeError,
)
from ..kv.geometry import KVGeometry
from ..protocol import DType, coerce_dtype

if TYPE_CHECKING:
    from ..kv.pool import ArenaOps, KVCachePool

__all__ = ["ProviderCore", "check_count", "fmt_bytes", "host_memory_total"]

_uids = itertools.count(1)


def fmt_bytes(n: int) -> str:
    """Human-readable byte count (``"2.75 MiB"``).

    Args:
        n: Bytes.

    Returns:
        The formatted size.
    """
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} GiB"


def host_memory_total() -> int:
    """Physical memory of this machine in bytes (no psutil needed).

    Returns:
        Bytes of RAM.
    """
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # non-POSIX
        import psutil

        return int(psutil.virtual_memory().total)


def check_count(name: str, value: object, *, minimum: int = 1) -> int:
    """Validate a count argument (an ``int``, not a ``bool``, at least ``minimum``).

    Args:
        name: Argument name for the message.
        value: What the caller passed.
        minimum: Smallest allowed value.

    Returns:
        The value.

    Raises:
        InvalidArgumentTypeError: not an int.
        InvalidArgumentError: below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        if hasattr(value, "__index__") and not isinstance(value, bool):
            return check_count(name, value.__index__(), minimum=minimum)  # numpy ints
        raise InvalidArgumentTypeError(
            f"{name} must be an int; got {type(value).__name__} {value!r}. Pass a whole number."
        )
    if value < minimum:
        raise InvalidArgumentError(
            f"{name} must be >= {minimum}; got {value}. Pass a positive count.", argument=name, value=value
        )
    return value


class ProviderCore(BackendProvider):
    """Shared implementation of the block API. Not registered itself."""

    def __init__(self, *, kv_geometry: object = None, max_memory_bytes: int | None = None) -> None:
        self._uid = next(_uids)
        self._geometry = KVGeometry.coerce(kv_geometry)
        if max_memory_bytes is not None:
            check_count("max_memory_bytes", max_memory_bytes)
        self._max_memory_bytes = max_memory_bytes
        self._lock = threading.RLock()
        self._blocks: dict[int, KVBlock] = {}
        self._handles = itertools.count(1)
        self._allocated: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        self._pools: weakref.WeakSet[KVCachePool] = weakref.WeakSet()
        self._streams: weakref.WeakSet[Stream] = weakref.WeakSet()
        self._closed = False

    # ------------------------------------------------------------------ facts
    @property
    def kv_geometry(self) -> KVGeometry:
        """The KV geometry blocks are sized with."""
        return self._geometry

    @property
    def owner_id(self) -> int:
        """Process-unique id of this provider instance (blocks and streams carry it)."""
        return self._uid

    # ------------------------------------------------------------ storage hooks
    @abstractmethod
    def _resolve_device(self, device: Device) -> Device:
        """Fill in the index and check the device exists and is reachable.

        Raises:
            InvalidDeviceError / DeviceUnreachableError.
        """

    @abstractmethod
    def _dtypes_on(self, device: Device) -> list[DType]:
        """Dtypes that can be stored on ``device``."""

    @abstractmethod
    def _storage_alloc(self, device: Device, dtype: DType, shape: tuple[int, ...]) -> Any:
        """Allocate uninitialised storage of ``shape`` (storage shape, int4 packed)."""

    @abstractmethod
    def _storage_copy(self, src: Any, dst: Any, stream: Stream | None) -> None:
        """Copy ``src`` into ``dst`` (same shape and dtype); enqueue on ``stream`` if given."""

    @abstractmethod
    def _storage_transfer(self, data: Any, device: Device, stream: Stream | None) -> Any:
        """Return new storage on ``device`` holding ``data``'s bytes (enqueued on ``stream``)."""

    @abstractmethod
    def _storage_read(self, data: Any) -> bytes:
        """Return the bytes of ``data``."""

    @abstractmethod
    def _storage_write(self, data: Any, buf: memoryview) -> None:
        """Overwrite ``data`` with ``buf`` (exactly as many bytes)."""

    def _storage_release(self, data: Any, stream: Stream | None) -> None:
        """Release storage no block uses any more (default: drop the reference)."""

    def _arena_ops(self) -> ArenaOps:
        """Batched block operations over this provider's arenas (see kv.pool)."""
        raise NotImplementedError

    def _device_limit(self, device: Device) -> int | None:
        """Bytes this provider may hold on ``device``: the configured limit, and never more than
        the host's physical memory for host allocations (Linux overcommit would otherwise let an
        absurd request "succeed" lazily and fail later, far from the cause)."""
        if device.type == "cpu":
            host = host_memory_total()
            return host if self._max_memory_bytes is None else min(host, self._max_memory_bytes)
        return self._max_memory_bytes

    def _fault_check(self, what: str) -> None:
        """Fault-injection hook (Mock): raise a typed error to simulate a failure."""

    # ---------------------------------------------------------------- helpers
    def _stream_for(self, stream: Stream | None) -> Stream | None:
        if stream is None:
            return current_stream(self._uid)
        if not isinstance(stream, Stream):
            raise InvalidArgumentTypeError(
                f"stream must be a Stream from create_stream(); got {type(stream).__name__}."
            )
        if stream.owner_id != self._uid:
            raise InvalidArgumentError(
                f"{stream!r} belongs to another provider instance; use a stream from this provider's create_stream()."
            )
        return stream

    def _target_device(self, device: object) -> Device:
        if device is None:
            return normalize_device(self.device)
        dev = normalize_device(device, default_type=self.device_type)
        return self._resolve_device(dev)

    def _check_dtype(self, dtype: object, device: Device) -> DType:
        dt = coerce_dtype(dtype)
        supported = self._dtypes_on(device)
        if dt not in supported:
            raise UnsupportedDTypeError(
                f"dtype {dt.value} is not supported on {device} by the {self.name!r} provider; "
                f"supported: {[d.value for d in supported]}. Use one of those.",
                dtype=dt.value,
                device=str(device),
            )
        return dt

    def _check_block(self, block: object, role: str = "block") -> KVBlock:
        if not isinstance(block, KVBlock):
            raise InvalidArgumentTypeError(
                f"{role} must be a KVBlock from kv_block_alloc(); got {type(block).__name__}."
            )
        if block._owner_id != self._uid:
            raise ForeignBlockError(
                f"{role} {block!r} belongs to another provider instance "
                f"(owner id {block._owner_id}, this provider {self._uid}). "
                "Use blocks only with the provider that allocated them; to move data between "
                "providers, read it with kv_block_read() and write it with kv_block_write().",
                handle=block.handle,
            )
        if block._freed or self._blocks.get(block.handle) is not block:
            raise BlockFreedError(
                f"{role} (handle {block.handle}) was already freed; it cannot be used or freed "
                "again. Allocate a new block with kv_block_alloc().",
                handle=block.handle,
            )
        return block

    def _reserve(self, device: str, nbytes: int, what: str) -> int:
        """Account ``nbytes`` on ``device`` or raise; returns the peak before, for rollback."""
        dev = normalize_device(device)
        with self._lock:
            peak_before = self._peak.get(device, 0)
            used = self._allocated.get(device, 0)
            limit = self._device_limit(dev)
            if limit is not None and used + nbytes > limit:
                raise ResourceExhaustedError(
                    f"cannot allocate {what} of {fmt_bytes(nbytes)} on {device}: "
                    f"{fmt_bytes(used)} of the {fmt_bytes(limit)} limit is in use, "
                    f"{fmt_bytes(limit - used)} free. Free blocks, use fewer tokens, or raise "
                    "the provider's memory limit.",
                    requested=nbytes,
                    in_use=used,
                    limit=limit,
                )
            used += nbytes
            self._allocated[device] = used
            if used > peak_before:
                self._peak[device] = used
            return peak_before

    def _unreserve(self, device: str, nbytes: int, peak_before: int | None = None) -> None:
        """Return ``nbytes``; with ``peak_before``, undo a reservation that never took effect."""
        with self._lock:
            self._allocated[device] = self._allocated.get(device, 0) - nbytes
            if peak_before is not None:
                self._peak[device] = peak_before

    def _alloc_or_raise(self, device: Device, dtype: DType, shape: tuple[int, ...], nbytes: int, what: str) -> Any:
        """Reserve accounting, allocate, and roll the reservation back on failure."""
        peak = self._reserve(str(device), nbytes, what)
        try:
            self._fault_check("alloc")
            return self._storage_alloc(device, dtype, shape)
        except BackendError:
            self._unreserve(str(device), nbytes, peak)
            raise
        except (MemoryError, RuntimeError) as exc:  # torch OOM is a RuntimeError subclass
            self._unreserve(str(device), nbytes, peak)
            raise ResourceExhaustedError(
                f"the device ran out of memory allocating {what} of {fmt_bytes(nbytes)} on "
                f"{device}: {exc}. Free blocks or call clear_cache(), or allocate fewer tokens.",
                requested=nbytes,
            ) from exc

    # ------------------------------------------------------------- block API
    def kv_block_alloc(self, num_tokens: int, dtype: DType, *, device: object = None) -> KVBlock:
        """Allocate a KV block that owns ``num_tokens * bytes_per_token`` bytes.

        Args:
            num_tokens: Positive number of tokens.
            dtype: Element type (any protocol ``DType`` spelling).
            device: Where to allocate (default: the provider's device); any of
                :meth:`reachable_devices`.

        Returns:
            The new block. Its memory is uninitialised.

        Raises:
            InvalidArgumentTypeError: ``num_tokens`` not an int, ``dtype`` not a dtype.
            InvalidArgumentError: ``num_tokens`` < 1, unknown dtype or device.
            UnsupportedDTypeError: the device cannot hold ``dtype``.
            ResourceExhaustedError: over the memory limit or out of device memory.
        """
        self._check_open()
        n = check_count("num_tokens", num_tokens)
        dev = self._target_device(device)
        dt = self._check_dtype(dtype, dev)
        nbytes = n * self._geometry.bytes_per_token(dt)
        shape = self._geometry.storage_shape(n, dt)
        data = self._alloc_or_raise(dev, dt, shape, nbytes, f"a KV block of {n} tokens")
        with self._lock:
            handle = next(self._handles)
            block = KVBlock(handle, n, dt, str(dev), geometry=self._geometry, data=data, owner_id=self._uid)
            self._blocks[handle] = block
        return block

    def kv_block_free(self, block: KVBlock) -> None:
        """Free ``block``; its memory returns to the provider (or its pool) and the handle dies.

        Args:
            block: A live block of this provider.

        Raises:
            BlockFreedError: already freed.
            ForeignBlockError: allocated by another provider instance.
        """
        with self._lock:
            self._check_block(block)
            del self._blocks[block.handle]
            block._freed = True
            data, block._data = block._data, None
            pool, pool_id = block._pool, block._pool_id
        if pool is not None and pool_id is not None:
            pool.free([pool_id])
        else:
            self._unreserve(block.device, block.nbytes)
            self._storage_release(data, None)

    def kv_block_copy(self, src: KVBlock, dst: KVBlock, *, stream: Stream | None = None) -> None:
        """Copy the bytes of ``src`` into ``dst``, bit for bit.

        Args:
            src: Source block.
            dst: Destination block: same ``num_tokens``, dtype and geometry; any reachable device.
            stream: Enqueue on this stream (returns at once); default: the current stream,
                else synchronous.

        Raises:
            InvalidBlockError: sizes, dtypes or geometries differ.
            BlockFreedError / ForeignBlockError: see :meth:`kv_block_free`.
            KVTransferError: the copy failed; ``dst`` may be partly written, ``src`` is intact.
        """
        self._check_block(src, "src")
        self._check_block(dst, "dst")
        if src is dst:
            return
        if (src.num_tokens, src.dtype, src.geometry) != (dst.num_tokens, dst.dtype, dst.geometry):
            raise InvalidBlockError(
                f"cannot copy {src!r} into {dst!r}: blocks must match in num_tokens, dtype and "
                f"geometry (src {src.num_tokens} x {src.dtype.value}, dst {dst.num_tokens} x "
                f"{dst.dtype.value}). Allocate dst with kv_block_alloc({src.num_tokens}, "
                f"DType.{src.dtype.name}).",
                src_tokens=src.num_tokens,
                dst_tokens=dst.num_tokens,
            )
        s = self._stream_for(stream)
        self._fault_check("transfer")
        try:
            self._storage_copy(src.data, dst.data, s)
        except BackendError:
            raise
        except Exception as exc:
            raise KVTransferError(
                f"copying block {src.handle} ({src.device}) into block {dst.handle} "
                f"({dst.device}) failed: {exc}. The source block is intact.",
            ) from exc

    def kv_block_migrate(self, block: KVBlock, target_device: object, *, stream: Stream | None = None) -> KVBlock:
        """Move a block's data to ``target_device``; the block keeps its handle.

        A pool block migrated off its pool becomes a standalone block and its pool slot is freed.

        Args:
            block: A live block of this provider.
            target_device: Any of :meth:`reachable_devices` (``"cpu"``, ``"cuda:1"`` ...).
            stream: Enqueue the copy on this stream; the block's new memory is valid once the
                stream reaches this point. Default: the current stream, else synchronous.

        Returns:
            ``block``, now on ``target_device``.

        Raises:
            InvalidDeviceError: malformed or unknown device.
            DeviceUnreachableError: a real device this provider cannot reach.
            ResourceExhaustedError: no room on the target; the block is unchanged.
            KVTransferError: the transfer failed; the block is unchanged.
        """
        self._check_block(block)
        if target_device is None:
            raise InvalidArgumentTypeError(
                f"target_device is None; pass the device to migrate to, one of {self.reachable_devices()}."
            )
        dev = self._target_device(target_device)
        if str(dev) == block.device:
            return block
        self._check_dtype(block.dtype, dev)
        s = self._stream_for(stream)
        nbytes = block.nbytes
        peak = self._reserve(str(dev), nbytes, f"a migrated KV block of {block.num_tokens} tokens")
        try:
            self._fault_check("transfer")
            new_data = self._storage_transfer(block.data, dev, s)
        except BaseException as exc:
            self._unreserve(str(dev), nbytes, peak)
            if isinstance(exc, BackendError) or not isinstance(exc, Exception):
                raise
            if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
                raise ResourceExhaustedError(
                    f"no memory on {dev} to migrate block {block.handle} "
                    f"({fmt_bytes(nbytes)}): {exc}. The block stays on {block.device}.",
                ) from exc
            raise KVTransferError(
                f"migrating block {block.handle} from {block.device} to {dev} failed: {exc}. "
                f"The block stays on {block.device}, intact.",
            ) from exc
        with self._lock:
            old_data, old_device = block._data, block.device
            pool, pool_id = block._pool, block._pool_id
            block._data = new_data
            block.device = str(dev)
            block._pool = None
            block._pool_id = None
        if pool is not None and pool_id is not None:
            pool.free([pool_id])
        else:
            self._unreserve(old_device, nbytes)
            self._storage_release(old_data, s)
        return block

    def kv_block_read(self, block: KVBlock) -> bytes:
        """Return a copy of the block's bytes.

        Work enqueued on side streams is not waited for: synchronize them first.

        Args:
            block: A live block.

        Returns:
            ``block.nbytes`` bytes.
        """
        self._check_block(block)
        return self._storage_read(block.data)

    def kv_block_write(self, block: KVBlock, data: bytes | bytearray | memoryview) -> None:
        """Overwrite the block with ``data``.

        Args:
            block: A live block.
            data: Exactly ``block.nbytes`` bytes (any buffer-protocol object).

        Raises:
            InvalidArgumentError: wrong length.
            InvalidArgumentTypeError: not a bytes-like object.
        """
        self._check_block(block)
        try:
            buf = memoryview(data).cast("B")
        except TypeError as exc:
            raise InvalidArgumentTypeError(
                f"data must be bytes-like (bytes, bytearray, memoryview, numpy array); got {type(data).__name__}."
            ) from exc
        if buf.nbytes != block.nbytes:
            raise InvalidArgumentError(
                f"data has {buf.nbytes} bytes but block {block.handle} holds {block.nbytes}; "
                "pass exactly block.nbytes bytes.",
            )
        self._storage_write(block.data, buf)

    def live_blocks(self) -> list[KVBlock]:
        """Blocks allocated and not yet freed, by handle.

        Returns:
            The live blocks.
        """
        with self._lock:
            return [self._blocks[h] for h in sorted(self._blocks)]

    # ---------------------------------------------------------------- pools
    def create_kv_pool(
        self,
        num_blocks: int | None = None,
        *,
        block_size: int = 16,
        dtype: DType = DType.FP16,
        memory_fraction: float | None = None,
        device: str | None = None,
    ) -> KVCachePool:
        """Preallocate a paged KV-cache pool: one arena, O(1) block ids, reference counts.

        Args:
            num_blocks: Number of blocks; exactly one of this and ``memory_fraction``.
            block_size: Tokens per block.
            dtype: Element type.
            memory_fraction: Size the pool as this fraction (0, 1] of the device's available memory.
            device: Device for the arena (default: the provider's device).

        Returns:
            The pool. Its arena counts in :meth:`memory_stats` until ``pool.close()``.

        Raises:
            InvalidArgumentError: both or neither of ``num_blocks`` / ``memory_fraction``.
            ResourceExhaustedError: the arena does not fit.
        """
        from ..kv.pool import KVCachePool

        self._check_open()
        bs = check_count("block_size", block_size)
        dev = self._target_device(device)
        dt = self._check_dtype(dtype, dev)
        block_bytes = bs * self._geometry.bytes_per_token(dt)
        if (num_blocks is None) == (memory_fraction is None):
            raise InvalidArgumentError(
                "create_kv_pool needs exactly one of num_blocks or memory_fraction; got "
                f"num_blocks={num_blocks!r}, memory_fraction={memory_fraction!r}."
            )
        if memory_fraction is not None:
            if isinstance(memory_fraction, bool) or not isinstance(memory_fraction, (int, float)):
                raise InvalidArgumentTypeError(
                    f"memory_fraction must be a float; got {type(memory_fraction).__name__}."
                )
            if not 0.0 < float(memory_fraction) <= 1.0:
                raise InvalidArgumentError(f"memory_fraction must be in (0, 1]; got {memory_fraction}.")
            available = self._available_bytes(dev)
            n = int(available * float(memory_fraction)) // block_bytes
            if n < 1:
                raise ResourceExhaustedError(
                    f"{memory_fraction} of the {fmt_bytes(available)} available on {dev} holds no "
                    f"block of {fmt_bytes(block_bytes)}; use a larger fraction or smaller blocks."
                )
        else:
            n = check_count("num_blocks", num_blocks)
        shape = (n, *self._geometry.storage_shape(bs, dt))
        arena = self._alloc_or_raise(dev, dt, shape, n * block_bytes, f"a KV pool of {n} blocks")
        pool = KVCachePool(
            self,
            arena,
            device=str(dev),
            dtype=dt,
            block_size=bs,
            num_blocks=n,
            block_nbytes=block_bytes,
            ops=self._arena_ops(),
        )
        self._pools.add(pool)
        return pool

    def _available_bytes(self, device: Device) -> int:
        """Bytes still free for this provider on ``device`` (limit or hardware)."""
        limit = self._device_limit(device)
        if limit is None:
            raise InvalidArgumentError(
                f"memory_fraction needs a known memory size for {device}; pass num_blocks instead."
            )
        return limit - self._allocated.get(str(device), 0)

    def _pool_block(self, pool: KVCachePool, block_id: int, view: Any) -> KVBlock:
        """Register a KVBlock view of a pool block (used by ``pool.block()``)."""
        with self._lock:
            handle = next(self._handles)
            block = KVBlock(
                handle, pool.block_size, pool.dtype, pool.device, geometry=self._geometry, data=view, owner_id=self._uid
            )
            block._pool = pool
            block._pool_id = block_id
            self._blocks[handle] = block
        return block

    def _clear_pool_caches(self) -> None:
        for pool in list(self._pools):
            pool.clear_host_cache()

    def _pool_closed(self, pool: KVCachePool, nbytes: int) -> None:
        self.__dict__.pop("_word_views", None)  # cached views would keep the arena alive
        self._unreserve(pool.device, nbytes)

    # --------------------------------------------------------------- memory
    def _base_memory_stats(self) -> dict[str, int]:
        """The provider's own KV accounting: ``kv_allocated_bytes`` (blocks and pool arenas on
        its device), ``kv_peak_allocated_bytes``, ``num_blocks``, and
        ``<device>_kv_allocated_bytes`` for other devices holding bytes (``host_`` for cpu)."""
        with self._lock:
            own = self.device
            stats = {
                "kv_allocated_bytes": self._allocated.get(own, 0),
                "kv_peak_allocated_bytes": self._peak.get(own, 0),
                "num_blocks": len(self._blocks),
            }
            for dev, used in sorted(self._allocated.items()):
                if dev != own and used:
                    key = "host" if dev == "cpu" else dev.replace(":", "_")
                    stats[f"{key}_kv_allocated_bytes"] = used
        return stats

    def reset_peak_memory_stats(self) -> None:
        """Set every peak figure to the current allocation."""
        with self._lock:
            self._peak = dict(self._allocated)

    # --------------------------------------------------------------- lifecycle
    def _register_stream(self, stream: Stream) -> Stream:
        self._streams.add(stream)
        return stream

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgumentError(f"the {self.name!r} provider was closed; create a new one with get_provider().")

    def close(self) -> None:
        """Stop host stream workers and close pools. Blocks stay readable. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for stream in list(self._streams):
            closer = getattr(stream, "close", None)
            if closer is not None:
                closer()

    def _unreachable(self, device: Device, reachable: list[str]) -> DeviceUnreachableError:
        return DeviceUnreachableError(
            f"the {self.name!r} provider cannot reach {device}: it can allocate on and migrate "
            f"to {reachable} only. Use a provider for {device.type} "
            f"(get_provider({device.type!r})) and move bytes with kv_block_read/kv_block_write.",
            device=str(device),
        )
