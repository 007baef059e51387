"""The Mock provider: a hardware-free backend that behaves like a real one.

Blocks hold real bytes (numpy arrays), so copies and migrations can be checked byte for byte;
``max_memory_mb`` is enforced; ``memory_stats()`` returns to baseline after frees; handles are
deterministic (1, 2, 3 ... per instance); streams are real worker threads; faults can be injected;
and :func:`create_mock_world` gives N providers in one process whose collectives (one thread per
rank) compute real results. Needs numpy and the standard library only.

Storage dtypes: fp32/fp16/int8 use numpy's; bf16 is stored as raw ``uint16`` bits, fp8 as raw
``uint8`` bits (numpy has neither type); int4 is packed two per byte in ``uint8``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..contract import Event, Graph, Stream
from ..device import Device
from ..errors import (
    CollectiveError,
    CommGroupError,
    CommTimeoutError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidDeviceError,
    KVTransferError,
    ResourceExhaustedError,
    UnsupportedOperationError,
)
from ..kernels.engine import register_engine_kernels  # engine kernels
from ..kv.hostcopy import copy_rows
from ..kv.pool import ArenaOps, KVCachePool
from ..protocol import (
    CapabilityDescriptor,
    CollectiveOp,
    DType,
    KernelKind,
    ReduceOp,
    coerce_dtype,
    coerce_enum,
)
from ..streams import HostEvent, HostStream
from ._core import ProviderCore, check_count
from .config import ProviderConfig, provider_factory

__all__ = ["MockBackendProvider", "MockFaults", "MockWorld", "create_mock_backend", "create_mock_world"]

_NP_DTYPES: dict[DType, Any] = {
    DType.FP32: np.float32,
    DType.FP16: np.float16,
    DType.BF16: np.uint16,
    DType.FP8: np.uint8,
    DType.INT8: np.int8,
    DType.INT4: np.uint8,
}

_NP_REDUCE: dict[ReduceOp, Callable[..., Any]] = {
    ReduceOp.SUM: np.add,
    ReduceOp.PROD: np.multiply,
    ReduceOp.MAX: np.maximum,
    ReduceOp.MIN: np.minimum,
    ReduceOp.BAND: np.bitwise_and,
    ReduceOp.BOR: np.bitwise_or,
    ReduceOp.BXOR: np.bitwise_xor,
}


def _as_bytes(arr: np.ndarray) -> np.ndarray:
    return arr.reshape(-1).view(np.uint8)


class MockFaults:
    """Fault injection for the Mock provider (thread-safe).

    Allocations are counted per block: ``kv_block_alloc`` counts one, ``pool.allocate(n)`` counts
    ``n``; when the n-th from now is reached the whole call fails with
    :class:`ResourceExhaustedError` and changes nothing. Transfers are copies, migrations,
    swaps and batched block copies; an injected failure raises :class:`KVTransferError` before any
    byte moves, so the source is intact.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._alloc_countdown: int | None = None
        self._transfer_failures = 0
        self.injected = 0

    def fail_allocation(self, nth: int = 1) -> None:
        """Make the ``nth`` block allocation from now fail.

        Args:
            nth: 1 fails the very next allocated block.
        """
        check_count("nth", nth)
        with self._lock:
            self._alloc_countdown = nth

    def fail_transfers(self, count: int = 1) -> None:
        """Make the next ``count`` transfers fail.

        Args:
            count: How many.
        """
        check_count("count", count)
        with self._lock:
            self._transfer_failures = count

    def clear(self) -> None:
        """Remove every pending fault."""
        with self._lock:
            self._alloc_countdown = None
            self._transfer_failures = 0

    def _take_allocations(self, n: int) -> None:
        if self._alloc_countdown is None:  # disarmed: the hot path takes no lock
            return
        with self._lock:
            if self._alloc_countdown is None:
                return
            if self._alloc_countdown <= n:
                nth = self._alloc_countdown
                self._alloc_countdown = None
                self.injected += 1
                raise ResourceExhaustedError(
                    f"injected fault: allocation {nth} of this batch of {n} failed "
                    "(MockFaults.fail_allocation). Nothing was allocated.",
                    injected=True,
                )
            self._alloc_countdown -= n

    def _take_transfer(self, what: str) -> None:
        with self._lock:
            if self._transfer_failures <= 0:
                return
            self._transfer_failures -= 1
            self.injected += 1
        raise KVTransferError(
            f"injected fault: the {what} failed (MockFaults.fail_transfers). The source is intact.",
            injected=True,
        )


class MockWorld:
    """N mock ranks in one process, meeting at a barrier for each collective.

    Args:
        world_size: Number of ranks.
        timeout: Seconds a rank waits for the others before :class:`CommTimeoutError`.
    """

    def __init__(self, world_size: int, timeout: float = 30.0) -> None:
        self.world_size = check_count("world_size", world_size)
        self.timeout = float(timeout)
        self._barrier = threading.Barrier(world_size)
        self._slots: list[Any] = [None] * world_size
        self._mail: dict[tuple[int, int, int], list[np.ndarray]] = {}
        self._mail_cond = threading.Condition()

    def reset(self) -> None:
        """Repair the world after a timeout (every rank must have stopped waiting)."""
        self._barrier.reset()
        self._slots = [None] * self.world_size

    def _wait(self, rank: int, what: str) -> None:
        try:
            self._barrier.wait(self.timeout)
        except threading.BrokenBarrierError:
            raise CommTimeoutError(
                f"rank {rank}: {what} timed out after {self.timeout:.1f}s: not every one of the "
                f"{self.world_size} ranks arrived (a rank exited, hung, or skipped the call). "
                "Check that every rank calls the same collectives in the same order; "
                "call MockWorld.reset() before reusing the world.",
                rank=rank,
                timeout_s=self.timeout,
            ) from None

    def exchange(self, rank: int, payload: Any, what: str) -> list[Any]:
        """Deposit ``payload``, wait for every rank, and return all payloads by rank.

        Args:
            rank: The caller's rank.
            payload: What to share.
            what: Operation name for messages.

        Returns:
            Payloads of ranks 0..N-1.
        """
        self._slots[rank] = payload
        self._wait(rank, what)
        everyone = list(self._slots)
        self._wait(rank, what)
        return everyone

    def post(self, src: int, dst: int, tag: int, data: np.ndarray) -> None:
        """Deliver a point-to-point message."""
        with self._mail_cond:
            self._mail.setdefault((src, dst, tag), []).append(data)
            self._mail_cond.notify_all()

    def take(self, src: int, dst: int, tag: int) -> np.ndarray:
        """Wait for and remove the oldest message from ``src`` to ``dst`` with ``tag``."""
        key = (src, dst, tag)
        with self._mail_cond:
            ok = self._mail_cond.wait_for(lambda: bool(self._mail.get(key)), self.timeout)
            if not ok:
                raise CommTimeoutError(
                    f"rank {dst}: recv from rank {src} (tag {tag}) timed out after "
                    f"{self.timeout:.1f}s; the sender never sent. Match every recv with a send.",
                )
            return self._mail[key].pop(0)


class _CaptureStream(Stream):
    """Records work submitted during graph capture instead of running it."""

    def __init__(self, owner_id: int, device: str) -> None:
        super().__init__(owner_id)
        self._device = device
        self.work: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []

    @property
    def device(self) -> str:
        return self._device

    @property
    def handle(self) -> int:
        return id(self)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        self.work.append((fn, args, kwargs))

    def synchronize(self) -> None:
        raise UnsupportedOperationError("cannot synchronize a stream while it is being captured.")

    def record_event(self, event: Event | None = None) -> Event:
        raise UnsupportedOperationError("events cannot be recorded inside a mock graph capture.")

    def wait_event(self, event: Event) -> None:
        raise UnsupportedOperationError("events cannot be waited on inside a mock graph capture.")

    def query(self) -> bool:
        return True


class MockGraph(Graph):
    """Work captured on the Mock provider; :meth:`replay` runs it again, in order."""

    def __init__(self) -> None:
        self._work: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] | None = None

    @property
    def num_ops(self) -> int:
        """Captured operations."""
        return len(self._work or [])

    def replay(self) -> None:
        if self._work is None:
            raise InvalidArgumentError("this graph has nothing captured; capture it first or it was reset.")
        for fn, args, kwargs in self._work:
            fn(*args, **kwargs)

    def reset(self) -> None:
        self._work = None


class _MockArenaOps(ArenaOps):
    def view(self, arena: Any, block_id: int) -> Any:
        return arena[block_id]

    @staticmethod
    def _run(stream: Stream | None, fn: Callable[[], None]) -> None:
        # fn is a closure: it keeps the arrays alive until the stream has run it
        if stream is None:
            fn()
        else:
            stream.submit(fn)

    def copy_blocks(self, arena: Any, src: list[int], dst: list[int], stream: Stream | None) -> None:
        row = arena[0].nbytes
        self._run(stream, lambda: copy_rows(arena.ctypes.data, src, arena.ctypes.data, dst, len(src), row))

    def gather(self, arena: Any, ids: list[int], device: Device, stream: Stream | None, out: Any = None) -> Any:
        if out is None:
            out = np.empty((len(ids), *arena.shape[1:]), dtype=arena.dtype)
        row = arena[0].nbytes
        self._run(stream, lambda: copy_rows(arena.ctypes.data, ids, out.ctypes.data, None, len(ids), row))
        return out

    def scatter(self, arena: Any, ids: list[int], rows: Any, stream: Stream | None) -> None:
        src = np.ascontiguousarray(rows)
        row = arena[0].nbytes
        self._run(stream, lambda: copy_rows(src.ctypes.data, None, arena.ctypes.data, ids, len(ids), row))


class MockBackendProvider(ProviderCore):
    """Hardware-free provider with real memory, streams, faults and collectives.

    Args:
        supported_dtypes: Dtypes to advertise and accept (default: all six).
        supported_kernels: Kernel kinds to advertise (default: all five).
        has_collective: Whether collectives work (they need :func:`create_mock_world` for N > 1).
        has_graph_exec: Whether :meth:`capture_graph` works.
        max_memory_mb: Memory limit per mock device, enforced.
        num_devices: Mock devices ``mock:0 .. mock:N-1`` (plus ``cpu``) to migrate between.
        device_id: This provider's own mock device.
        kv_geometry: :class:`~sagellm_backend.kv.geometry.KVGeometry` or dict (default TinyLlama).
        world: A :class:`MockWorld` to join (set by :func:`create_mock_world`).
        rank: This provider's rank in ``world``.
    """

    name = "mock"
    device_type = "mock"
    dist_backend = "mock"

    def __init__(
        self,
        supported_dtypes: list[DType] | None = None,
        supported_kernels: list[KernelKind] | None = None,
        has_collective: bool = True,
        has_graph_exec: bool = False,
        max_memory_mb: int = 16384,
        *,
        num_devices: int = 1,
        device_id: int = 0,
        kv_geometry: object = None,
        world: MockWorld | None = None,
        rank: int = 0,
    ) -> None:
        check_count("max_memory_mb", max_memory_mb)
        super().__init__(kv_geometry=kv_geometry, max_memory_bytes=max_memory_mb << 20)
        self._dtypes = list(DType) if supported_dtypes is None else [coerce_dtype(d) for d in supported_dtypes]
        self._kernels_adv = (
            list(KernelKind)
            if supported_kernels is None
            else [coerce_enum(KernelKind, k, what="kernel kind") for k in supported_kernels]
        )
        self._has_collective = bool(has_collective)
        self._has_graph_exec = bool(has_graph_exec)
        self.max_memory_mb = max_memory_mb
        self.num_devices = check_count("num_devices", num_devices)
        check_count("device_id", device_id, minimum=0)
        if device_id >= num_devices:
            raise InvalidDeviceError(
                f"device_id {device_id} does not exist: the mock has {num_devices} device(s). "
                "Raise num_devices or use a smaller device_id."
            )
        self.device_id = device_id
        self.faults = MockFaults()
        if world is not None:
            check_count("rank", rank, minimum=0)
            if rank >= world.world_size:
                raise InvalidArgumentError(f"rank {rank} is outside a world of {world.world_size}.")
        self.world = world
        self.rank = rank if world is not None else 0
        # --- engine kernels (sagellm_backend.kernels.engine): numpy implementations for the mock ---
        register_engine_kernels(self.device_type, "numpy")
        # --- end engine kernels ---

    # ------------------------------------------------------------- identity
    @property
    def device(self) -> str:
        return f"mock:{self.device_id}"

    @property
    def world_size(self) -> int:
        """Ranks in this provider's world (1 when it is alone)."""
        return self.world.world_size if self.world is not None else 1

    def reachable_devices(self) -> list[str]:
        others = [f"mock:{i}" for i in range(self.num_devices) if i != self.device_id]
        return [self.device, *others, "cpu"]

    def _resolve_device(self, device: Device) -> Device:
        if device.type == "mock":
            dev = device.with_index(self.device_id)
            if dev.index is not None and dev.index >= self.num_devices:
                raise InvalidDeviceError(
                    f"{dev} does not exist: this mock has devices mock:0..mock:{self.num_devices - 1}. "
                    "Raise num_devices to add more.",
                    device=str(dev),
                )
            return dev
        if device.type == "cpu":
            return device
        raise self._unreachable(device, self.reachable_devices())

    def _dtypes_on(self, device: Device) -> list[DType]:
        return self._dtypes if device.type == "mock" else list(DType)

    def _device_limit(self, device: Device) -> int | None:
        return self._max_memory_bytes if device.type == "mock" else super()._device_limit(device)

    # ------------------------------------------------------------ capability
    def capability(self) -> CapabilityDescriptor:
        """Describe the mock device (its limits are the constructor's).

        Returns:
            The descriptor.
        """
        total = self.max_memory_mb << 20
        collectives = [op.value for op in CollectiveOp] if self._has_collective else []
        return CapabilityDescriptor(
            device_name="Mock Accelerator (sagellm-backend)",
            device_type="mock",
            compute_capability=None,
            total_memory_bytes=total,
            available_memory_bytes=total - self._allocated.get(self.device, 0),
            supported_dtypes=list(self._dtypes),
            supported_kernels=list(self._kernels_adv),
            has_stream=True,
            has_event=True,
            has_collective=self._has_collective,
            has_graph_exec=self._has_graph_exec,
            supported_collectives=collectives,
            has_kv_block_copy=True,
            has_kv_block_migrate=True,
            max_memory_mb=self.max_memory_mb,
        )

    # ---------------------------------------------------------------- streams
    def create_stream(self) -> Stream:
        """A real ordered stream on a worker thread.

        Returns:
            A :class:`HostStream`.
        """
        self._check_open()
        return self._register_stream(HostStream(self._uid, self.device))

    def create_event(self) -> Event:
        """A timing event.

        Returns:
            A :class:`HostEvent`.
        """
        return HostEvent(self._uid, self.device)

    @contextmanager
    def capture_graph(self, stream: Stream | None = None) -> Iterator[Graph]:
        """Capture the work provider calls enqueue inside the block; replay it later.

        Like a CUDA graph, captured work does not run during capture.

        Args:
            stream: Ignored (the mock captures on its own capture stream).

        Yields:
            The :class:`MockGraph`, filled when the block exits.
        """
        if not self._has_graph_exec:
            raise UnsupportedOperationError(
                "graph capture is off for this mock (has_graph_exec=False); construct "
                "MockBackendProvider(has_graph_exec=True) to test graph code paths."
            )
        graph = MockGraph()
        cap = _CaptureStream(self._uid, self.device)
        with cap:
            yield graph
        graph._work = cap.work

    # ---------------------------------------------------------------- storage
    def _storage_alloc(self, device: Device, dtype: DType, shape: tuple[int, ...]) -> Any:
        return np.empty(shape, dtype=_NP_DTYPES[dtype])

    @staticmethod
    def _submit(stream: Stream | None, fn: Callable[..., Any], *args: Any) -> None:
        if stream is None:
            fn(*args)
        else:
            stream.submit(fn, *args)

    def _storage_copy(self, src: Any, dst: Any, stream: Stream | None) -> None:
        self._submit(stream, np.copyto, dst, src)

    def _storage_transfer(self, data: Any, device: Device, stream: Stream | None) -> Any:
        new = np.empty_like(data)
        self._submit(stream, np.copyto, new, data)
        return new

    def _storage_read(self, data: Any) -> bytes:
        return bytes(_as_bytes(np.ascontiguousarray(data)).data)

    def _storage_write(self, data: Any, buf: memoryview) -> None:
        _as_bytes(data)[:] = np.frombuffer(buf, dtype=np.uint8)

    def _arena_ops(self) -> ArenaOps:
        return _MockArenaOps()

    def _fault_check(self, what: str) -> None:
        if what == "alloc":
            self.faults._take_allocations(1)
        elif what == "transfer":
            self.faults._take_transfer("transfer")

    def create_kv_pool(
        self,
        num_blocks: int | None = None,
        *,
        block_size: int = 16,
        dtype: DType = DType.FP16,
        memory_fraction: float | None = None,
        device: str | None = None,
    ) -> KVCachePool:
        pool = super().create_kv_pool(
            num_blocks, block_size=block_size, dtype=dtype, memory_fraction=memory_fraction, device=device
        )
        pool.allocation_hook = lambda ids: self.faults._take_allocations(len(ids))
        return pool

    # ----------------------------------------------------------------- memory
    def memory_stats(self) -> dict[str, int]:
        """Exact accounting of the mock's memory.

        Returns:
            ``allocated_bytes``, ``reserved_bytes`` (= allocated: the mock caches nothing),
            ``peak_allocated_bytes``, ``num_blocks``, ``total``, ``available``, ``used``.
        """
        stats = self._base_memory_stats()
        total = self.max_memory_mb << 20
        own = stats["kv_allocated_bytes"]
        stats.update(
            allocated_bytes=own,
            reserved_bytes=own,
            peak_allocated_bytes=stats["kv_peak_allocated_bytes"],
            total=total,
            used=own,
            available=total - own,
        )
        return stats

    def clear_cache(self) -> None:
        """Drop the pools' recycled host swap buffers (the mock keeps no other cache)."""
        self._clear_pool_caches()

    # ------------------------------------------------------------ collectives
    def _check_collective(self, tensor: object, what: str) -> np.ndarray:
        if not self._has_collective:
            raise UnsupportedOperationError(f"{what}: collectives are off for this mock (has_collective=False).")
        if not isinstance(tensor, np.ndarray):
            raise InvalidArgumentTypeError(
                f"{what} on the mock provider takes a numpy array; got {type(tensor).__name__}. "
                "Wrap data with numpy.asarray()."
            )
        return tensor

    def _gather_checked(self, tensor: np.ndarray, what: str, extra: Any = None) -> list[np.ndarray]:
        assert self.world is not None
        payloads = self.world.exchange(self.rank, (tensor.shape, tensor.dtype, extra, tensor.copy()), what)
        sig = [(p[0], p[1], p[2]) for p in payloads]
        if any(s != sig[0] for s in sig):
            detail = "; ".join(
                f"rank {r}: shape {s[0]} {s[1]}" + (f" {s[2]}" if s[2] else "") for r, s in enumerate(sig)
            )
            raise CollectiveError(
                f"{what}: ranks passed mismatched arguments ({detail}). Every rank must pass the "
                "same shape, dtype and op.",
            )
        return [p[3] for p in payloads]

    def all_reduce(self, tensor: Any, op: Any = "sum") -> Any:
        """Reduce a numpy array across the world's ranks, in place.

        Args:
            tensor: numpy array (same shape and dtype on every rank).
            op: :class:`ReduceOp` or name; ``avg`` needs a float dtype.

        Returns:
            ``tensor``.
        """
        arr = self._check_collective(tensor, "all_reduce")
        rop = coerce_enum(ReduceOp, op, what="reduce op")
        if rop is ReduceOp.AVG and not np.issubdtype(arr.dtype, np.floating):
            raise InvalidArgumentError(f"all_reduce avg needs a float array; got {arr.dtype}.")
        if rop in (ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR) and not np.issubdtype(arr.dtype, np.integer):
            raise InvalidArgumentError(f"all_reduce {rop.value} needs an integer array; got {arr.dtype}.")
        if self.world is None:
            return arr
        parts = self._gather_checked(arr, "all_reduce", rop.value)
        if rop is ReduceOp.AVG:
            acc = parts[0].astype(np.float64)
            for p in parts[1:]:
                acc += p
            arr[...] = acc / len(parts)
        else:
            fn = _NP_REDUCE[rop]
            acc = parts[0].copy()
            for p in parts[1:]:
                fn(acc, p, out=acc)
            arr[...] = acc
        return arr

    def all_gather(self, tensor: Any, *, out: Any = None) -> Any:
        """Gather a numpy array from every rank.

        Args:
            tensor: This rank's array.
            out: Optional ``(world_size, *tensor.shape)`` array to fill.

        Returns:
            Array of shape ``(world_size, *tensor.shape)``, rank order (``out`` when given).
        """
        arr = self._check_collective(tensor, "all_gather")
        parts = [arr.copy()] if self.world is None else self._gather_checked(arr, "all_gather")
        if out is None:
            return np.stack(parts)
        if not isinstance(out, np.ndarray) or out.shape != (len(parts), *arr.shape) or out.dtype != arr.dtype:
            raise InvalidArgumentError(
                f"out must be a {(len(parts), *arr.shape)} {arr.dtype} numpy array; got "
                f"{getattr(out, 'shape', type(out).__name__)}."
            )
        np.stack(parts, out=out)
        return out

    def reduce_scatter(self, tensor: Any, op: Any = "sum") -> Any:
        """Reduce across ranks, then keep this rank's slice of dim 0.

        Args:
            tensor: Array whose first dim is divisible by world size.
            op: Reduce op.

        Returns:
            New array: rows ``[rank*n/ws, (rank+1)*n/ws)`` of the reduction.
        """
        arr = self._check_collective(tensor, "reduce_scatter")
        ws = self.world_size
        if arr.ndim == 0 or arr.shape[0] % ws:
            raise InvalidArgumentError(
                f"reduce_scatter needs dim 0 divisible by the world size {ws}; got shape {arr.shape}."
            )
        reduced = self.all_reduce(arr.copy(), op)
        n = arr.shape[0] // ws
        return reduced[self.rank * n : (self.rank + 1) * n].copy()

    def broadcast(self, tensor: Any, src: int = 0) -> Any:
        """Copy rank ``src``'s array into every rank's, in place.

        Args:
            tensor: numpy array.
            src: Source rank.

        Returns:
            ``tensor``.
        """
        arr = self._check_collective(tensor, "broadcast")
        self._check_rank(src, "src")
        if self.world is None:
            return arr
        parts = self._gather_checked(arr, "broadcast", ("src", src))
        arr[...] = parts[src]
        return arr

    def barrier(self) -> None:
        """Wait until every rank arrives."""
        if self.world is not None:
            self.world.exchange(self.rank, None, "barrier")

    def send(self, tensor: Any, dst: int, *, tag: int = 0) -> None:
        """Send a copy of ``tensor`` to rank ``dst``.

        Args:
            tensor: numpy array.
            dst: Destination rank.
            tag: Message tag.
        """
        arr = self._check_collective(tensor, "send")
        self._check_rank(dst, "dst", peer=True)
        assert self.world is not None
        self.world.post(self.rank, dst, tag, arr.copy())

    def recv(self, tensor: Any, src: int, *, tag: int = 0) -> Any:
        """Receive from rank ``src`` into ``tensor``.

        Args:
            tensor: numpy array of the sent shape and dtype.
            src: Source rank.
            tag: Message tag.

        Returns:
            ``tensor``.
        """
        arr = self._check_collective(tensor, "recv")
        self._check_rank(src, "src", peer=True)
        assert self.world is not None
        data = self.world.take(src, self.rank, tag)
        if data.shape != arr.shape or data.dtype != arr.dtype:
            raise CollectiveError(
                f"recv from rank {src}: got shape {data.shape} {data.dtype}, expected "
                f"{arr.shape} {arr.dtype}. Match the receive buffer to what the peer sends."
            )
        arr[...] = data
        return arr

    def _check_rank(self, rank: object, what: str, *, peer: bool = False) -> int:
        r = check_count(what, rank, minimum=0)
        if r >= self.world_size:
            raise CommGroupError(f"{what} rank {r} is outside the world of {self.world_size}.")
        if peer and (self.world is None or r == self.rank):
            raise CommGroupError(
                f"{what} rank {r} is this rank: point-to-point needs another rank "
                "(use create_mock_world(n) with n >= 2)."
            )
        return r


@provider_factory(detect=lambda: (True, "always available (no hardware needed)"), priority=None)
def create_mock_backend(config: object = None, **options: Any) -> MockBackendProvider:
    """Entry-point factory for ``mock``.

    Args:
        config: ``None``, a dict, or an object with ``kind``/``device``/``device_ids``.
        **options: Constructor keywords (``max_memory_mb``, ``supported_dtypes`` ...).

    Returns:
        A :class:`MockBackendProvider`.
    """
    cfg = ProviderConfig.from_any(config, **options)
    kwargs = dict(cfg.options)
    index = cfg.device_index("mock")
    if index is not None:
        kwargs.setdefault("device_id", index)
        kwargs.setdefault("num_devices", max(index + 1, len(cfg.device_ids or ())))
    return MockBackendProvider(**kwargs)


def create_mock_world(world_size: int, *, timeout: float = 30.0, **options: Any) -> list[MockBackendProvider]:
    """N Mock providers in one process whose collectives compute real results.

    Run each rank on its own thread (a collective waits for every rank)::

        ranks = create_mock_world(4)
        with ThreadPoolExecutor(4) as ex:
            outs = list(ex.map(lambda p: p.all_reduce(np.ones(3) * p.rank), ranks))

    Args:
        world_size: Number of ranks.
        timeout: Seconds before a rank that waits alone raises :class:`CommTimeoutError`.
        **options: Passed to each :class:`MockBackendProvider`.

    Returns:
        Providers for ranks 0..N-1 (device ``mock:<rank>``).
    """
    world = MockWorld(world_size, timeout)
    options.setdefault("num_devices", world_size)
    return [MockBackendProvider(world=world, rank=r, device_id=r, **options) for r in range(world_size)]
