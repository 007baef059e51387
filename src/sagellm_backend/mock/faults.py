"""Fault injection for the Mock provider."""

from __future__ import annotations

import threading

from ..core.validate import check_count
from ..errors import KVTransferError, ResourceExhaustedError

__all__ = ["MockFaults"]


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

    @property
    def armed(self) -> bool:
        """Whether any fault is pending (hot paths skip the hook otherwise)."""
        return self._alloc_countdown is not None or self._transfer_failures > 0

    def check(self, what: str, count: int = 1) -> None:
        """Raise the injected failure of ``what`` (``"alloc"`` of ``count`` blocks, or ``"transfer"``).

        Args:
            what: ``"alloc"`` or ``"transfer"``.
            count: Blocks in the allocation.
        """
        if what == "alloc":
            self._take_allocations(count)
        elif what == "transfer":
            self._take_transfer("transfer")

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
