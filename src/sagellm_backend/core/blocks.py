"""The table of a provider's live blocks: handles, ownership and use-after-free checks."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from ..api.blocks import KVBlock
from ..errors import BlockFreedError, ForeignBlockError
from .validate import check_instance

__all__ = ["BlockTable"]


class BlockTable:
    """Live blocks of one provider instance, by handle (1, 2, 3 ...; never reused).

    Args:
        owner: The provider's process-unique id.
    """

    def __init__(self, owner: int) -> None:
        self.owner = owner
        self.lock = threading.RLock()
        self._blocks: dict[int, KVBlock] = {}
        self._releases: dict[int, Callable[[int, bool], None]] = {}
        self._handles = itertools.count(1)

    def add(self, make: Any, release: Callable[[int, bool], None] | None = None) -> KVBlock:
        """Register a new block built by ``make(handle)``.

        Args:
            make: Callable taking the new handle, returning the block.
            release: For a view of a pool block: ``release(block_id, quiet)`` drops the reference
                the view holds (the pool hands it over; only this table keeps it).

        Returns:
            The block.
        """
        with self.lock:
            block: KVBlock = make(next(self._handles))
            self._blocks[block.handle] = block
            if release is not None:
                self._releases[block.handle] = release
            return block

    def view_release(self, block: KVBlock) -> Callable[[int, bool], None] | None:
        """How to drop the pool reference of a checked block that is a view, else ``None``.

        Args:
            block: A block that passed :meth:`check`.

        Returns:
            ``release(block_id, quiet)``, or ``None``.
        """
        return self._releases.get(block.handle)

    def rehome(self, block: KVBlock, data: Any, device: str) -> tuple[Any, str, bool]:
        """Point a checked block at migrated memory (see :meth:`KVBlock.rehome`); it is no view any more.

        Args:
            block: A block that passed :meth:`check`, its lock held.
            data: The migrated memory.
            device: Where it lives.

        Returns:
            ``(old data, old device, whether it was a pool view)``.
        """
        with self.lock:
            self._releases.pop(block.handle, None)
            return block.rehome(data, device)

    def check(self, block: object, role: str = "block") -> KVBlock:
        """The block, if it is a live block of this provider.

        Args:
            block: What the caller passed.
            role: Its name in messages.

        Returns:
            The block.

        Raises:
            InvalidArgumentTypeError: not a KVBlock.
            ForeignBlockError: another provider's block.
            BlockFreedError: freed already.
        """
        block = check_instance(role, block, KVBlock, "kv_block_alloc")
        if block.owner_id != self.owner:
            raise ForeignBlockError(
                f"{role} {block!r} belongs to another provider instance "
                f"(owner id {block.owner_id}, this provider {self.owner}). "
                "Use blocks only with the provider that allocated them; to move data between "
                "providers, read it with kv_block_read() and write it with kv_block_write().",
                handle=block.handle,
            )
        if block.is_freed or self._blocks.get(block.handle) is not block:
            raise BlockFreedError(
                f"{role} (handle {block.handle}) was already freed; it cannot be used or freed "
                "again. Allocate a new block with kv_block_alloc().",
                handle=block.handle,
            )
        return block

    @contextmanager
    def held(self, *blocks: tuple[object, str]) -> Iterator[list[KVBlock]]:
        """Check blocks, then hold their locks (in handle order, so two threads never deadlock)
        and check them again inside: an operation on a block is atomic with respect to every
        other operation on it (free, copy, migrate, read, write).

        Args:
            *blocks: ``(block, role)`` pairs.

        Yields:
            The checked blocks, in the order given.
        """
        checked = [self.check(b, role) for b, role in blocks]
        ordered = sorted({id(b): b for b in checked}.values(), key=lambda b: b.handle)
        with ExitStack() as stack:
            for b in ordered:
                stack.enter_context(b.lock)
            for b, (_, role) in zip(checked, blocks):
                self.check(b, role)
            yield checked

    def remove(self, block: KVBlock) -> Any:
        """Drop a checked block from the table and retire it (hold :attr:`lock`).

        Args:
            block: A block that passed :meth:`check` under the same lock.

        Returns:
            The memory the block referenced, for the caller to release.
        """
        del self._blocks[block.handle]
        self._releases.pop(block.handle, None)
        return block.retire()

    def retire(self, match: Callable[[KVBlock], bool]) -> int:
        """Free every live block ``match`` selects, each under its own lock (an operation in
        progress on it finishes first); their memory references are dropped.

        Args:
            match: Selects the blocks.

        Returns:
            How many were retired.
        """
        with self.lock:
            found = [b for b in self._blocks.values() if match(b)]
        retired = 0
        for b in found:
            with b.lock, self.lock:
                if self._blocks.get(b.handle) is b and match(b):
                    self.remove(b)
                    retired += 1
        return retired

    def live(self) -> list[KVBlock]:
        """Live blocks by handle.

        Returns:
            The blocks.
        """
        with self.lock:
            return [self._blocks[h] for h in sorted(self._blocks)]

    def __len__(self) -> int:
        return len(self._blocks)
