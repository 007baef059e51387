"""Block ids with reference counts, as pure bookkeeping (no memory is touched here)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from ..errors import BlockFreedError, InvalidArgumentError, InvalidArgumentTypeError, ResourceExhaustedError

__all__ = ["BlockAllocator"]


class BlockAllocator:
    """Block-id allocator with reference counts. Not thread-safe by itself (the pool locks).

    State: a LIFO free list, the set of ids referenced exactly once (``_single``), and a map of
    shared ids to their reference count (``_shared``, counts >= 2). An id is in exactly one of
    the three. Allocating and freeing unshared blocks, the hot path, are a few C-level list and
    set operations per batch; only fork / shared frees touch ids one by one.

    References held by ``KVBlock`` views (``_pinned``, part of the counts) can only be dropped by
    :meth:`unpin`: :meth:`free` refuses to take them, so a view never points at a free block.

    Args:
        num_blocks: Ids ``0 .. num_blocks-1`` are managed.
    """

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))
        self._single: set[int] = set()
        self._shared: dict[int, int] = {}
        self._pinned: dict[int, int] = {}
        self.peak_used = 0

    @property
    def num_free(self) -> int:
        """Blocks not referenced by anyone."""
        return len(self._free)

    @property
    def num_shared(self) -> int:
        """Blocks with a reference count of two or more."""
        return len(self._shared)

    def allocate(self, n: int) -> list[int]:
        """Take ``n`` free blocks (reference count 1 each), all or nothing.

        Args:
            n: Number of blocks (>= 0).

        Returns:
            The ids, lowest first on a fresh allocator.

        Raises:
            ResourceExhaustedError: fewer than ``n`` free; nothing taken.
        """
        free = self._free
        if n > len(free):
            raise ResourceExhaustedError(
                f"cannot allocate {n} KV blocks: only {len(free)} of {self.num_blocks} are free. "
                "Free or swap out blocks, or create a larger pool.",
                requested=n,
                free=len(free),
            )
        if n == 0:
            return []
        ids = free[-n:]
        del free[-n:]
        ids.reverse()
        self._single.update(ids)
        used = self.num_blocks - len(free)
        if used > self.peak_used:
            self.peak_used = used
        return ids

    def undo_allocate(self, ids: list[int], peak_before: int) -> None:
        """Return freshly allocated ``ids`` exactly as they were taken (for rollback).

        Args:
            ids: What :meth:`allocate` returned.
            peak_before: ``peak_used`` before that call.
        """
        self._single.difference_update(ids)
        self._free.extend(reversed(ids))
        self.peak_used = max(peak_before, self.num_blocks - len(self._free))  # others may have raised it since

    def free(self, ids: list[int]) -> list[int]:
        """Drop one reference per occurrence of each id; ids reaching zero become free.

        Args:
            ids: Block ids (duplicates drop several references).

        Returns:
            The ids that became free, in order.

        Raises:
            InvalidArgumentError / BlockFreedError: an id out of range, not allocated, or freed
                more times than it is referenced; nothing changed.
        """
        # Fast path, no temporary set: every id referenced once, no duplicates (a duplicate
        # makes difference_update remove fewer ids than listed; we then undo and go slow).
        single = self._single
        if self._pinned and not self._pinned.keys().isdisjoint(ids):
            return self._free_slow(ids)
        if single.issuperset(ids):
            before = len(single)
            single.difference_update(ids)
            if before - len(single) == len(ids):
                self._free.extend(ids)
                return ids
            single.update(ids)
        return self._free_slow(ids)

    def check_ids(self, ids: Iterable[object]) -> None:
        """Check that every id is an int in range (allocated or not).

        Args:
            ids: Block ids.

        Raises:
            InvalidArgumentTypeError: an id is not an int.
            InvalidArgumentError: an id is out of range.
        """
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int):
                raise InvalidArgumentTypeError(f"block ids must be ints; got {type(i).__name__} {i!r}.")
            if not 0 <= i < self.num_blocks:
                raise InvalidArgumentError(
                    f"block id {i} is out of range: this pool has ids 0..{self.num_blocks - 1}.",
                    block_id=i,
                )

    def _free_slow(self, ids: list[int]) -> list[int]:
        counts = Counter(ids)
        self.check_ids(counts)
        for i, c in counts.items():
            rc = self.refcount(i)
            views = self._pinned.get(i, 0)
            if c > rc - views:
                raise BlockFreedError(
                    f"block {i} is freed {c} time(s) but holds {rc} reference(s)"
                    + (" (it is already free)" if rc == 0 else "")
                    + (
                        f", {views} of them held by KVBlock views (drop those with kv_block_free(view))"
                        if views
                        else ""
                    )
                    + ". Free each reference once; nothing was freed.",
                    block_id=i,
                )
        released: list[int] = []
        for i, c in counts.items():
            self._set_refcount(i, self.refcount(i) - c)
            if i not in self._single and i not in self._shared:
                released.append(i)
        self._free.extend(released)
        return released

    def _set_refcount(self, i: int, rc: int) -> None:
        """Move ``i`` to the container its new count belongs in (0: caller frees it)."""
        self._single.discard(i)
        self._shared.pop(i, None)
        if rc == 1:
            self._single.add(i)
        elif rc >= 2:
            self._shared[i] = rc

    def fork(self, ids: list[int]) -> None:
        """Add one reference to each id (prefix sharing); an id listed twice gains two.

        Args:
            ids: Live block ids.

        Raises:
            BlockFreedError: an id is not allocated; nothing changed.
        """
        self.require_live(ids, "fork ids")
        single, shared = self._single, self._shared
        for i in ids:
            if i in single:
                single.remove(i)
                shared[i] = 2
            else:
                shared[i] += 1

    def pin(self, block_id: int) -> None:
        """Add a reference held by a ``KVBlock`` view (only :meth:`unpin` drops it).

        Args:
            block_id: A live block id.
        """
        self.fork([block_id])
        self._pinned[block_id] = self._pinned.get(block_id, 0) + 1

    def unpin(self, block_id: int) -> None:
        """Drop a reference taken by :meth:`pin` (the view was freed or migrated).

        Args:
            block_id: The view's block id.
        """
        left = self._pinned[block_id] - 1
        if left:
            self._pinned[block_id] = left
        else:
            del self._pinned[block_id]
        self._free_slow([block_id])

    def require_droppable(self, ids: list[int], what: str) -> None:
        """Raise unless each id holds a reference besides those of views (a caller's to drop).

        Args:
            ids: Live block ids.
            what: The operation, for the message.

        Raises:
            BlockFreedError: an id's references are all held by views; nothing changed.
        """
        for i in ids:
            if self._pinned.get(i, 0) >= self.refcount(i):
                raise BlockFreedError(
                    f"{what}: every reference to block {i} is held by a KVBlock view, so there is none of "
                    "yours to drop. Use the view, or free it with kv_block_free(view); nothing changed.",
                    block_id=i,
                )

    def refcount(self, block_id: int) -> int:
        """References held on ``block_id`` (0 when free).

        Args:
            block_id: A block id.

        Returns:
            The reference count.
        """
        if block_id in self._single:
            return 1
        return self._shared.get(block_id, 0)

    def require_live(self, ids: Iterable[int], what: str) -> None:
        """Raise unless every id is allocated.

        Args:
            ids: Block ids.
            what: Argument name for the message.

        Raises:
            BlockFreedError / InvalidArgumentError / InvalidArgumentTypeError.
        """
        if self._single.issuperset(ids):
            return
        st = ids if isinstance(ids, (set, frozenset)) else set(ids)
        rest = st.difference(self._single)
        if rest <= self._shared.keys():
            return
        self.check_ids(rest)
        dead = sorted(i for i in rest if i not in self._shared)
        raise BlockFreedError(
            f"{what} names blocks that are not allocated: {dead[:8]}"
            f"{' ...' if len(dead) > 8 else ''}. Allocate them first.",
            block_ids=dead,
        )
