"""The contract every backend implements: :class:`BackendProvider`, :class:`Stream`,
:class:`Event` and :class:`KVBlock`.

The thirteen methods of the seed release keep their names and signatures. Everything a provider
cannot do raises :class:`~sagellm_backend.errors.UnsupportedOperationError` (protocol code
``not_implemented``) naming what would work instead; nothing is silently skipped.

Misuse, for every provider (the conformance kit in :mod:`sagellm_backend.testing` checks it):

========================================  ==============================================  =========
misuse                                    error                                           state
========================================  ==============================================  =========
free a freed block                        :class:`BlockFreedError` (``ValueError``)       unchanged
use a freed block (copy/migrate/read)     :class:`BlockFreedError`                        unchanged
block of another provider instance        :class:`ForeignBlockError` (``ValueError``)     unchanged
copy between blocks of other size/dtype   :class:`InvalidBlockError` (``ValueError``)     unchanged
migrate to a malformed/unknown device     :class:`InvalidDeviceError` (``ValueError``)    unchanged
migrate to a device it cannot reach       :class:`DeviceUnreachableError` (``ValueError``) unchanged
non-positive / non-int token count        ``InvalidArgumentError`` / ``...TypeError``     unchanged
dtype the device cannot hold              :class:`UnsupportedDTypeError` (``ValueError``) unchanged
more memory than the limit                :class:`ResourceExhaustedError` (``MemoryError``) unchanged
========================================  ==============================================  =========

Which calls block the host: ``Stream.synchronize``, ``Event.synchronize``, ``Event.elapsed_ms``
(waits for the end event), ``kv_block_read`` and, without a ``stream``, ``kv_block_copy`` /
``kv_block_migrate`` on host providers. Calls given a ``stream`` only enqueue work.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import BlockFreedError, UnsupportedOperationError
from .kv.geometry import DEFAULT_KV_GEOMETRY, KVGeometry
from .protocol import CapabilityDescriptor, DType, coerce_dtype

if TYPE_CHECKING:
    from .kernels import KernelEntry, ProviderKernels
    from .kv.pool import KVCachePool

__all__ = ["BackendProvider", "Event", "Graph", "KVBlock", "Stream", "current_stream"]

_tls = threading.local()


def _stream_stack() -> list[Stream]:
    stack: list[Stream] | None = getattr(_tls, "streams", None)
    if stack is None:
        stack = []
        _tls.streams = stack
    return stack


def current_stream(owner_id: int) -> Stream | None:
    """The innermost stream entered with ``with stream:`` in this thread for that provider.

    Args:
        owner_id: ``id()`` of the provider whose streams to look at.

    Returns:
        The stream, or ``None`` when none is active.
    """
    for stream in reversed(_stream_stack()):
        if stream.owner_id == owner_id:
            return stream
    return None


class Event(ABC):
    """A marker in a stream's work. Real on every provider; timing is on by default.

    ``record`` and ``query`` never block; ``synchronize`` and ``elapsed_ms`` do.
    """

    @property
    @abstractmethod
    def device(self) -> str:
        """The device string of the provider that created this event."""

    @abstractmethod
    def record(self, stream: Stream | None = None) -> None:
        """Mark the point after all work submitted so far to ``stream`` (default: current stream).

        Args:
            stream: The stream to record on; ``None`` records on the provider's current stream.
        """

    @abstractmethod
    def synchronize(self) -> None:
        """Block the calling thread until the recorded work has finished."""

    @abstractmethod
    def query(self) -> bool:
        """Return True when the recorded work has finished (never blocks)."""

    @abstractmethod
    def elapsed_ms(self, start: Event) -> float:
        """Milliseconds from ``start`` to this event. Blocks until this event completes.

        Args:
            start: An event recorded before this one on the same provider.

        Returns:
            Elapsed time in milliseconds.
        """

    def __enter__(self) -> Event:
        return self

    def __exit__(self, *exc: object) -> None:
        self.synchronize()


class Stream(ABC):
    """An ordered queue of work on one device.

    ``with stream:`` makes it the current stream of its provider in this thread: provider
    operations called without ``stream=`` inside the block are enqueued on it.
    ``synchronize`` blocks; ``record_event``, ``wait_event``, ``submit`` and ``query`` do not.
    """

    def __init__(self, owner_id: int) -> None:
        self.owner_id = owner_id

    @property
    @abstractmethod
    def device(self) -> str:
        """The device string this stream runs on."""

    @property
    @abstractmethod
    def handle(self) -> int:
        """An integer identifying the native stream (worker thread id, cudaStream_t ...)."""

    @abstractmethod
    def synchronize(self) -> None:
        """Block until all work submitted to this stream has finished; re-raise its first error."""

    @abstractmethod
    def record_event(self, event: Event | None = None) -> Event:
        """Record ``event`` (a new one if ``None``) after the work submitted so far.

        Args:
            event: The event to record, or ``None`` to create one.

        Returns:
            The recorded event.
        """

    @abstractmethod
    def wait_event(self, event: Event) -> None:
        """Make later work on this stream wait until ``event`` completes (host does not block).

        Args:
            event: An event of the same provider.
        """

    @abstractmethod
    def query(self) -> bool:
        """Return True when all submitted work has finished (never blocks)."""

    @abstractmethod
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        """Run ``fn(*args, **kwargs)`` in this stream's order.

        On host streams the function runs on the stream's worker thread. On device streams it is
        called at once on the calling thread with this stream current, so the device work it
        launches is ordered on this stream.

        Args:
            fn: The callable.
            *args: Positional arguments for ``fn``.
            **kwargs: Keyword arguments for ``fn``.
        """

    def wait_stream(self, other: Stream) -> None:
        """Make later work on this stream wait for the work submitted so far to ``other``.

        Args:
            other: Another stream of the same provider.
        """
        self.wait_event(other.record_event())

    def _on_enter(self) -> None:  # noqa: B027 (optional hook)
        """Hook for device streams (enter the framework's stream context)."""

    def _on_exit(self) -> None:  # noqa: B027 (optional hook)
        """Hook for device streams."""

    def __enter__(self) -> Stream:
        _stream_stack().append(self)
        self._on_enter()
        return self

    def __exit__(self, *exc: object) -> None:
        stack = _stream_stack()
        self._on_exit()
        if stack and stack[-1] is self:
            stack.pop()
        else:  # exited out of order: remove the innermost occurrence
            for i in range(len(stack) - 1, -1, -1):
                if stack[i] is self:
                    del stack[i]
                    break

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r}, handle={self.handle:#x})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Stream):
            return NotImplemented
        return type(self) is type(other) and self.handle == other.handle and self.device == other.device

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.device, self.handle))


class Graph(ABC):
    """A captured sequence of device work that can be replayed (CUDA/NPU graphs)."""

    @abstractmethod
    def replay(self) -> None:
        """Launch the captured work again, on the stream it was captured on."""

    @abstractmethod
    def reset(self) -> None:
        """Release the captured graph."""


class KVBlock:
    """A KV-cache block that owns real memory.

    The four seed fields are ``handle``, ``num_tokens``, ``dtype`` and ``device``. The block's
    memory is an array of shape ``geometry.storage_shape(num_tokens, dtype)``: a numpy array on the
    Mock provider, a torch tensor on torch providers; read it with :attr:`data`.

    Attributes:
        handle: Provider-unique, deterministic id (1, 2, 3 ... per provider instance).
        num_tokens: Tokens the block holds.
        dtype: Element type.
        device: Device string where the memory lives (changes on migrate).
        geometry: The KV geometry the block was sized for.
    """

    __slots__ = (
        "__weakref__",
        "_data",
        "_freed",
        "_owner_id",
        "_pool",
        "_pool_id",
        "device",
        "dtype",
        "geometry",
        "handle",
        "num_tokens",
    )

    def __init__(
        self,
        handle: int,
        num_tokens: int,
        dtype: DType | str,
        device: str,
        *,
        geometry: KVGeometry = DEFAULT_KV_GEOMETRY,
        data: Any = None,
        owner_id: int | None = None,
    ) -> None:
        self.handle = handle
        self.num_tokens = num_tokens
        self.dtype = coerce_dtype(dtype)
        self.device = device
        self.geometry = geometry
        self._data = data
        self._owner_id = owner_id
        self._freed = False
        self._pool: KVCachePool | None = None
        self._pool_id: int | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of KV data this block holds (``num_tokens * geometry.bytes_per_token(dtype)``)."""
        return self.num_tokens * self.geometry.bytes_per_token(self.dtype)

    @property
    def is_freed(self) -> bool:
        """True once the block has been freed (its memory returned to the provider)."""
        return self._freed

    @property
    def pool_block_id(self) -> int | None:
        """The block id in its :class:`~sagellm_backend.kv.pool.KVCachePool`, or ``None``."""
        return self._pool_id

    @property
    def data(self) -> Any:
        """The block's memory (numpy array or torch tensor, shape ``geometry.storage_shape``).

        Raises:
            BlockFreedError: the block was freed.
            UnsupportedOperationError: the block was constructed by hand and holds no memory.
        """
        if self._freed:
            raise BlockFreedError(
                f"KV block {self.handle} was freed; its memory is gone. Allocate a new block with kv_block_alloc()."
            )
        if self._data is None:
            raise UnsupportedOperationError(
                f"KV block {self.handle} holds no memory: it was not allocated by a provider. "
                "Use provider.kv_block_alloc()."
            )
        return self._data

    def __repr__(self) -> str:
        state = ", freed" if self._freed else ""
        pool = f", pool_block={self._pool_id}" if self._pool_id is not None else ""
        return (
            f"KVBlock(handle={self.handle}, num_tokens={self.num_tokens}, dtype={self.dtype.value}, "
            f"device={self.device!r}, nbytes={self.nbytes}{pool}{state})"
        )


def _unsupported(provider: BackendProvider, what: str, instead: str) -> UnsupportedOperationError:
    return UnsupportedOperationError(
        f"{what} is not supported by the {provider.name!r} provider ({type(provider).__name__}). {instead}",
        provider=provider.name,
    )


class BackendProvider(ABC):
    """One backend: a device and what can be done on it.

    Class attributes are static facts (``name``, ``device_type``, ``dist_backend``); instance
    facts come from :meth:`capability`, read from the hardware.
    """

    #: Registry name of the provider (``"cpu"``, ``"cuda"`` ...).
    name: ClassVar[str] = "base"
    #: torch / protocol device type the provider's memory lives on.
    device_type: ClassVar[str] = "unknown"
    #: torch.distributed backend used for collectives, or ``None`` when it has none.
    dist_backend: ClassVar[str | None] = None

    # ----------------------------------------------------------------- identity
    @property
    def device(self) -> str:
        """The provider's own device as a string (``"cpu"``, ``"cuda:0"`` ...)."""
        return self.device_type

    def reachable_devices(self) -> list[str]:
        """Devices this provider can allocate on and migrate blocks to.

        Returns:
            Device strings, the provider's own device first.
        """
        return [self.device]

    # ------------------------------------------------------- the seed's 13 methods
    @abstractmethod
    def capability(self) -> CapabilityDescriptor:
        """Describe the device, read from the hardware.

        Returns:
            A protocol :class:`CapabilityDescriptor`.
        """

    @abstractmethod
    def create_stream(self) -> Stream:
        """Create a new stream on the provider's device.

        Returns:
            A new :class:`Stream`.
        """

    @abstractmethod
    def create_event(self) -> Event:
        """Create a new timing event on the provider's device.

        Returns:
            A new, unrecorded :class:`Event`.
        """

    def all_reduce(self, tensor: Any, op: Any = "sum") -> Any:
        """Reduce ``tensor`` across ranks in place.

        Args:
            tensor: The tensor to reduce.
            op: A :class:`ReduceOp` or its name.

        Returns:
            ``tensor``, now holding the reduced values.
        """
        raise _unsupported(self, "all_reduce", "Use a provider with collectives (cpu/gloo, cuda/nccl).")

    def all_gather(self, tensor: Any) -> Any:
        """Gather ``tensor`` from every rank.

        Args:
            tensor: This rank's contribution.

        Returns:
            A new tensor of shape ``(world_size, *tensor.shape)``.
        """
        raise _unsupported(self, "all_gather", "Use a provider with collectives (cpu/gloo, cuda/nccl).")

    @abstractmethod
    def kv_block_alloc(self, num_tokens: int, dtype: DType) -> KVBlock:
        """Allocate a KV block of ``num_tokens`` tokens.

        Args:
            num_tokens: Positive token count.
            dtype: Element type (protocol enums of any package accepted).

        Returns:
            A new block owning ``num_tokens * bytes_per_token`` bytes.
        """

    @abstractmethod
    def kv_block_free(self, block: KVBlock) -> None:
        """Free a block; its handle becomes invalid.

        Args:
            block: A live block of this provider.
        """

    @abstractmethod
    def kv_block_copy(self, src: KVBlock, dst: KVBlock) -> None:
        """Copy the bytes of ``src`` into ``dst`` (same ``num_tokens``, dtype and geometry).

        Args:
            src: Source block.
            dst: Destination block.
        """

    @abstractmethod
    def kv_block_migrate(self, block: KVBlock, target_device: str) -> KVBlock:
        """Move a block's data to ``target_device``; the block keeps its handle.

        Args:
            block: A live block of this provider.
            target_device: A device from :meth:`reachable_devices`.

        Returns:
            The same block object, now on ``target_device``.
        """

    @abstractmethod
    def memory_stats(self) -> dict[str, int]:
        """Memory figures in bytes.

        Returns:
            At least ``allocated_bytes``, ``reserved_bytes``, ``peak_allocated_bytes``,
            ``total`` and ``available``.
        """

    @abstractmethod
    def clear_cache(self) -> None:
        """Release memory the provider caches but does not use."""

    def register_kernel(self, name: str, impl: Callable[..., Any], *, priority: int = 0, kind: Any = None) -> None:
        """Register a kernel for this provider instance.

        Args:
            name: Kernel name.
            impl: The callable.
            priority: Higher wins over other registrations of the same name.
            kind: Optional :class:`KernelKind` (reported in ``capability().supported_kernels``).
        """
        self._kernel_view().register(name, impl, priority=priority, kind=kind)

    def get_kernel(self, name: str) -> Callable[..., Any]:
        """Return the best kernel registered under ``name`` for this provider.

        Looks at this instance's registrations, then the global registry for this provider's
        name, its device type, and ``"*"`` (any provider), highest priority first.

        Args:
            name: Kernel name.

        Returns:
            The callable.

        Raises:
            KernelNotFoundError: nothing is registered (a ``KeyError``: "Kernel 'x' not found").
        """
        return self._kernel_view().get(name)

    def kernel_candidates(self, name: str) -> list[KernelEntry]:
        """Every registration that could serve ``name`` here, best first.

        Args:
            name: Kernel name.

        Returns:
            Kernel entries in resolution order.
        """
        return self._kernel_view().candidates(name)

    def _kernel_view(self) -> ProviderKernels:
        view: ProviderKernels | None = self.__dict__.get("_kernels")
        if view is None:
            from .kernels import ProviderKernels

            view = ProviderKernels(search_order=(self.name, self.device_type, "*"))
            self.__dict__["_kernels"] = view
        return view

    # ------------------------------------------------------------- extensions
    def kv_block_read(self, block: KVBlock) -> bytes:
        """Return a copy of the block's bytes (blocks until pending writes finish).

        Args:
            block: A live block.

        Returns:
            ``block.nbytes`` bytes.
        """
        raise _unsupported(self, "kv_block_read", "Read block.data directly.")

    def kv_block_write(self, block: KVBlock, data: bytes | bytearray | memoryview) -> None:
        """Overwrite the block's bytes with ``data`` (exactly ``block.nbytes`` long).

        Args:
            block: A live block.
            data: The new contents.
        """
        raise _unsupported(self, "kv_block_write", "Write block.data directly.")

    def create_kv_pool(
        self,
        num_blocks: int | None = None,
        *,
        block_size: int = 16,
        dtype: DType = DType.FP16,
        memory_fraction: float | None = None,
        device: str | None = None,
    ) -> KVCachePool:
        """Preallocate a paged KV-cache pool (see :mod:`sagellm_backend.kv.pool`).

        Args:
            num_blocks: Blocks in the pool; or give ``memory_fraction`` instead.
            block_size: Tokens per block.
            dtype: Element type.
            memory_fraction: Fraction of the device's free memory to use.
            device: Device for the arena (default: the provider's device).

        Returns:
            The pool.
        """
        raise _unsupported(self, "create_kv_pool", "Use the mock, cpu or cuda provider.")

    def capture_graph(self, stream: Stream | None = None) -> AbstractContextManager[Graph]:
        """Capture device work into a replayable graph: ``with provider.capture_graph() as g:``.

        Args:
            stream: Stream to capture on (default: a side stream).

        Returns:
            A context manager yielding the :class:`Graph`.
        """
        raise _unsupported(self, "graph capture", "capability().has_graph_exec tells where it works.")

    def synchronize(self) -> None:  # noqa: B027 (host providers have nothing to wait for)
        """Block until all work the provider launched on its device has finished."""

    def close(self) -> None:  # noqa: B027 (nothing to release by default)
        """Release streams, worker threads and cached memory. Idempotent."""

    def __enter__(self) -> BackendProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r})"
