"""Memory accounting per device: what a provider holds, its peak, and its limit."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..device import Device, normalize_device
from ..errors import ResourceExhaustedError
from .validate import fmt_bytes

__all__ = ["MemoryLedger"]


class MemoryLedger:
    """Bytes reserved per device string, with peaks and limits. Thread-safe.

    Args:
        limit_for: Bytes allowed on a device (``None``: no limit).
    """

    def __init__(self, limit_for: Callable[[Device], int | None]) -> None:
        self._limit_for = limit_for
        self._lock = threading.Lock()
        self._allocated: dict[str, int] = {}
        self._peak: dict[str, int] = {}

    def reserve(self, device: str, nbytes: int, what: str) -> int:
        """Account ``nbytes`` on ``device`` or raise.

        Args:
            device: Device string.
            nbytes: Bytes.
            what: What is allocated, for the message.

        Returns:
            The peak before, for :meth:`unreserve` rollback.

        Raises:
            ResourceExhaustedError: over the device's limit; nothing reserved.
        """
        limit = self._limit_for(normalize_device(device))
        with self._lock:
            peak_before = self._peak.get(device, 0)
            used = self._allocated.get(device, 0)
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

    def unreserve(self, device: str, nbytes: int, peak_before: int | None = None) -> None:
        """Return ``nbytes``; with ``peak_before``, undo a reservation that never took effect.

        Args:
            device: Device string.
            nbytes: Bytes.
            peak_before: From :meth:`reserve`, to roll the peak back too.
        """
        with self._lock:
            self._allocated[device] = self._allocated.get(device, 0) - nbytes
            if peak_before is not None:
                self._peak[device] = peak_before

    def allocated(self, device: str) -> int:
        """Bytes held on ``device``.

        Args:
            device: Device string.

        Returns:
            Bytes.
        """
        with self._lock:
            return self._allocated.get(device, 0)

    def reset_peak(self) -> None:
        """Set every peak figure to the current allocation."""
        with self._lock:
            self._peak = dict(self._allocated)

    def stats(self, own: str) -> dict[str, int]:
        """``kv_allocated_bytes`` and ``kv_peak_allocated_bytes`` on ``own``, and
        ``<device>_kv_allocated_bytes`` for other devices holding bytes (``host_`` for cpu).

        Args:
            own: The provider's device.

        Returns:
            The figures.
        """
        with self._lock:
            stats = {
                "kv_allocated_bytes": self._allocated.get(own, 0),
                "kv_peak_allocated_bytes": self._peak.get(own, 0),
            }
            for dev, used in sorted(self._allocated.items()):
                if dev != own and used:
                    key = "host" if dev == "cpu" else dev.replace(":", "_")
                    stats[f"{key}_kv_allocated_bytes"] = used
        return stats
