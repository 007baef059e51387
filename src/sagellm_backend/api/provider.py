"""The provider contract: every public method and property a provider offers, with the exact
signatures the built-in providers implement (a test compares them with ``inspect.signature``).

The thirteen methods of the seed release keep their names; what they gained since (``device=``,
``stream=``) is keyword-only. Collectives delegate to :attr:`BackendProvider.communicator`
(:mod:`sagellm_backend.api.comm`), kernels (in the implementation) to the kernel registry. A provider that cannot do
something raises :class:`~sagellm_backend.errors.UnsupportedOperationError` naming what would
work instead; nothing is silently skipped.

Which calls block the host: ``synchronize``, ``kv_block_read``, and, without a ``stream``,
``kv_block_copy`` / ``kv_block_migrate`` on host providers. Calls given a ``stream`` enqueue.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import wraps
from typing import TYPE_CHECKING, Any, ClassVar, Concatenate, ParamSpec, TypeVar

from ..protocol import CapabilityDescriptor, DType
from .blocks import KVBlock
from .comm import Communicator
from .kernels import KernelCandidate
from .streams import Event, Graph, Stream

if TYPE_CHECKING:
    from ..core.config import Availability
    from ..kv.geometry import KVGeometry
    from ..kv.pool import KVCachePool

__all__ = ["BackendProvider"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _to_communicator(
    method: Callable[Concatenate[Communicator, _P], _R],
) -> Callable[Concatenate[BackendProvider, _P], _R]:
    """A provider method that calls the method of that name on :attr:`BackendProvider.communicator`.

    Args:
        method: The :class:`Communicator` method; its signature and docstring become the provider's.

    Returns:
        The provider method.
    """
    name = method.__name__

    @wraps(method, updated=())  # not its __dict__: the contract's abstract marker stays there
    def delegate(self: BackendProvider, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        bound: Callable[_P, _R] = getattr(self.communicator, name)
        return bound(*args, **kwargs)

    return delegate


class BackendProvider(ABC):
    """One backend: a device and what can be done on it (static facts here, the rest from :meth:`capability`)."""

    #: Registry name of the provider (``"cpu"``, ``"cuda"`` ...).
    name: ClassVar[str] = "base"
    #: torch / protocol device type the provider's memory lives on.
    device_type: ClassVar[str] = "unknown"
    #: torch.distributed backend used for collectives, or ``None`` when it has none.
    dist_backend: ClassVar[str | None] = None

    # ------------------------------------------------------------------ identity
    @classmethod
    def is_available(cls) -> bool:
        """Whether this provider can be created here (side-effect free): ``detect().available``.

        Returns:
            True when its hardware and software are present.
        """
        return bool(cls.detect().available)

    @classmethod
    @abstractmethod
    def detect(cls) -> Availability:
        """Whether this provider can be created here, and why not (side-effect free).

        Returns:
            The availability with its reason.
        """

    @property
    @abstractmethod
    def device(self) -> str:
        """The provider's own device (``"cpu"``, ``"cuda:0"`` ...)."""

    @property
    @abstractmethod
    def kv_geometry(self) -> KVGeometry:
        """The KV geometry blocks are sized with."""

    @property
    @abstractmethod
    def owner_id(self) -> int:
        """Process-unique id of this instance (its blocks and streams carry it)."""

    @abstractmethod
    def reachable_devices(self) -> list[str]:
        """Devices this provider can allocate on and migrate blocks to.

        Returns:
            Device strings, the provider's own device first.
        """

    @abstractmethod
    def capability(self) -> CapabilityDescriptor:
        """Describe the device, read from the hardware.

        Returns:
            A protocol :class:`CapabilityDescriptor`.
        """

    @abstractmethod
    def kv_storage_dtypes(self) -> list[DType]:
        """Dtypes a KV block can be stored in here (hosts also store types they do not compute in).

        Returns:
            Protocol dtypes.
        """

    # ------------------------------------------------------------ engine hooks
    @abstractmethod
    def get_torch_device(self) -> Any:
        """The ``torch.device`` of the provider's device (imports torch).

        Returns:
            The torch device.
        """

    @abstractmethod
    def to_device(self, tensor: Any) -> Any:
        """Move a tensor to the provider's device.

        Args:
            tensor: A torch tensor (or a numpy array on the Mock provider).

        Returns:
            The tensor on the device.
        """

    @abstractmethod
    def gpu_utilization(self) -> float | None:
        """Device utilisation in percent where the device reports it.

        Returns:
            0-100, or ``None`` when unknown.
        """

    @abstractmethod
    def get_attention_backend(self, name: str | None = None) -> Any:
        """An attention backend for this device (:mod:`sagellm_backend.attention`).

        Args:
            name: Backend name (default: the provider's default).

        Returns:
            An ``AttentionBackend``.
        """

    @abstractmethod
    def get_supported_attention_backends(self) -> list[str]:
        """Names :meth:`get_attention_backend` accepts here.

        Returns:
            Backend names, the default first.
        """

    # ---------------------------------------------------------------- streams
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

    @abstractmethod
    def synchronize(self) -> None:
        """Block until all work the provider launched on its device has finished."""

    @abstractmethod
    def capture_graph(self, stream: Stream | None = None) -> AbstractContextManager[Graph]:
        """Capture device work into a replayable graph: ``with provider.capture_graph() as g:``.

        Args:
            stream: Stream to capture on (default: a side stream).

        Returns:
            A context manager yielding the :class:`Graph`.
        """

    # ----------------------------------------------------------------- blocks
    @abstractmethod
    def kv_block_alloc(self, num_tokens: int, dtype: DType, *, device: object = None) -> KVBlock:
        """Allocate a KV block of ``num_tokens`` tokens.

        Args:
            num_tokens: Positive token count.
            dtype: Element type (protocol enums of any package accepted).
            device: Where (default: the provider's device); one of :meth:`reachable_devices`.

        Returns:
            A new block owning ``num_tokens * bytes_per_token`` bytes; its memory is uninitialised.

        Raises:
            InvalidArgumentTypeError / InvalidArgumentError: bad count, dtype or device.
            UnsupportedDTypeError: the device cannot hold ``dtype`` (the message says why).
            ResourceExhaustedError: over the memory limit or out of device memory.
        """

    @abstractmethod
    def kv_block_free(self, block: KVBlock) -> None:
        """Free a block; its handle becomes invalid.

        Args:
            block: A live block of this provider.

        Raises:
            BlockFreedError: already freed.
            ForeignBlockError: another provider instance's block.
        """

    @abstractmethod
    def kv_block_copy(self, src: KVBlock, dst: KVBlock, *, stream: Stream | None = None) -> None:
        """Copy the bytes of ``src`` into ``dst`` (same ``num_tokens``, dtype and geometry).

        Args:
            src: Source block.
            dst: Destination block.
            stream: Enqueue on this stream (default: the current stream, else synchronous).

        Raises:
            InvalidBlockError: sizes, dtypes or geometries differ.
            KVTransferError: the copy failed; ``src`` is intact.
        """

    @abstractmethod
    def kv_block_migrate(self, block: KVBlock, target_device: object, *, stream: Stream | None = None) -> KVBlock:
        """Move a block's data to ``target_device``; the block keeps its handle.

        Args:
            block: A live block of this provider.
            target_device: A device from :meth:`reachable_devices`.
            stream: Enqueue on this stream.

        Returns:
            The same block object, now on ``target_device`` (a pool block becomes standalone).

        Raises:
            InvalidDeviceError / DeviceUnreachableError: bad target.
            ResourceExhaustedError / KVTransferError: no room or a failed copy; the block is unchanged.
        """

    @abstractmethod
    def kv_block_read(self, block: KVBlock) -> bytes:
        """Return a copy of the block's bytes.

        Args:
            block: A live block.

        Returns:
            ``block.nbytes`` bytes.
        """

    @abstractmethod
    def kv_block_write(self, block: KVBlock, data: bytes | bytearray | memoryview) -> None:
        """Overwrite the block's bytes with ``data`` (exactly ``block.nbytes`` long).

        Args:
            block: A live block.
            data: The new contents.
        """

    @abstractmethod
    def live_blocks(self) -> list[KVBlock]:
        """Blocks allocated and not yet freed, by handle.

        Returns:
            The live blocks.
        """

    @abstractmethod
    def create_kv_pool(
        self,
        num_blocks: int | None = None,
        *,
        block_size: int = 16,
        dtype: DType | str = DType.FP16,
        memory_fraction: float | None = None,
        device: str | None = None,
    ) -> KVCachePool:
        """Preallocate a paged KV-cache pool (see :mod:`sagellm_backend.kv.pool`).

        Args:
            num_blocks: Blocks in the pool; or give ``memory_fraction`` instead.
            block_size: Tokens per block.
            dtype: Element type: a :class:`DType` (or its value; ``fp8`` is E4M3), or ``"fp8_e4m3"`` /
                ``"fp8_e5m2"`` (see :mod:`sagellm_backend.kv.cache_dtype`).
            memory_fraction: Fraction of the device's free memory to use.
            device: Device for the arena (default: the provider's device).

        Returns:
            The pool.
        """

    # ----------------------------------------------------------------- memory
    @abstractmethod
    def memory_stats(self) -> dict[str, int]:
        """Memory figures in bytes.

        Returns:
            ``allocated_bytes``, ``reserved_bytes``, ``peak_allocated_bytes``, ``total``, ``available``,
            ``kv_allocated_bytes`` at least.
        """

    @abstractmethod
    def reset_peak_memory_stats(self) -> None:
        """Set every peak figure to the current allocation."""

    @abstractmethod
    def clear_cache(self) -> None:
        """Release memory the provider caches but does not use."""

    # ---------------------------------------------------------------- kernels
    @abstractmethod
    def register_kernel(self, name: str, impl: Callable[..., Any], *, priority: int = 0, kind: Any = None) -> None:
        """Register a kernel for this provider instance.

        Args:
            name: Kernel name.
            impl: The callable.
            priority: Higher wins over other registrations of the same name.
            kind: Optional :class:`KernelKind` (reported in ``capability().supported_kernels``).
        """

    @abstractmethod
    def get_kernel(self, name: str) -> Callable[..., Any]:
        """Return the best kernel registered under ``name`` for this provider.

        Looks at this instance's registrations, then the global registry for this provider's
        name, its device type, and ``"*"`` (any provider), highest priority first.

        Args:
            name: Kernel name.

        Returns:
            The callable.

        Raises:
            KernelNotFoundError: nothing is registered (a ``KeyError``).
        """

    @abstractmethod
    def kernel_candidates(self, name: str) -> list[KernelCandidate]:
        """Every registration that could serve ``name`` here, best first.

        Args:
            name: Kernel name.

        Returns:
            Kernel entries in resolution order.
        """

    # ------------------------------------------------------------ collectives
    # Each is its communicator's method: the same arguments, result and docstring.
    @property
    @abstractmethod
    def communicator(self) -> Communicator:
        """The provider's :class:`Communicator` (torch.distributed, the Mock world, or none)."""

    @property
    def rank(self) -> int:
        """Global rank (0 without a process group)."""
        return self.communicator.rank

    @property
    def world_size(self) -> int:
        """World size (1 without a process group)."""
        return self.communicator.world_size

    init_process_group = _to_communicator(Communicator.init_process_group)
    destroy_process_group = _to_communicator(Communicator.destroy_process_group)
    new_group = _to_communicator(Communicator.new_group)
    all_reduce = _to_communicator(Communicator.all_reduce)
    all_gather = _to_communicator(Communicator.all_gather)
    reduce_scatter = _to_communicator(Communicator.reduce_scatter)
    broadcast = _to_communicator(Communicator.broadcast)
    barrier = _to_communicator(Communicator.barrier)
    send = _to_communicator(Communicator.send)
    recv = _to_communicator(Communicator.recv)

    # -------------------------------------------------------------- lifecycle
    @abstractmethod
    def close(self) -> None:
        """Stop stream workers, close pools, release cached memory. Idempotent."""

    def __enter__(self) -> BackendProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r})"
