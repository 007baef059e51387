"""The KV block handle every provider hands out."""

from __future__ import annotations

import threading
from typing import Any, Protocol

from ..errors import BlockFreedError, UnsupportedOperationError
from ..kv.geometry import DEFAULT_KV_GEOMETRY, KVGeometry
from ..protocol import DType, coerce_dtype

__all__ = ["BlockSource", "KVBlock"]


class BlockSource(Protocol):
    """The pool a :class:`KVBlock` view belongs to (a :class:`~sagellm_backend.kv.pool.KVCachePool`)."""

    device: str
    dtype: DType
    block_size: int
    geometry: KVGeometry

    @property
    def closed(self) -> bool:
        """True once the pool released its arena."""


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
        "_lock",
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
        pool: BlockSource | None = None,
        pool_block_id: int | None = None,
    ) -> None:
        self.handle = handle
        self.num_tokens = num_tokens
        self.dtype = coerce_dtype(dtype)
        self.device = device
        self.geometry = geometry
        self._data = data
        self._owner_id = owner_id
        self._freed = False
        self._pool = pool
        self._pool_id = pool_block_id
        self._lock = threading.RLock()

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
        """The block id in its pool (a :class:`BlockSource`), or ``None``."""
        return self._pool_id

    @property
    def pool(self) -> BlockSource | None:
        """The pool this block is a view of, or ``None``."""
        return self._pool

    @property
    def owner_id(self) -> int | None:
        """Id of the provider instance that allocated the block (``None`` for a hand-built one)."""
        return self._owner_id

    @property
    def lock(self) -> threading.RLock:
        """The lock every provider operation on this block holds (reentrant)."""
        return self._lock

    def retire(self) -> Any:
        """Mark the block freed and drop its memory reference (its provider calls it, holding
        :attr:`lock`, when the block is freed).

        Returns:
            The memory it referenced (``None`` for a hand-built block), for the provider to release.
        """
        data, self._data = self._data, None
        self._freed = True
        return data

    def rehome(self, data: Any, device: str) -> tuple[Any, str, bool]:
        """Point the block at ``data`` on ``device`` (its provider calls it, holding :attr:`lock`,
        when the block migrated); the block is then no view of a pool.

        Args:
            data: The migrated memory.
            device: Where it lives.

        Returns:
            ``(old data, old device, whether it was a pool view)``.
        """
        old = (self._data, self.device, self._pool is not None)
        self._data, self.device, self._pool, self._pool_id = data, device, None, None
        return old

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
