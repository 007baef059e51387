"""Timing device work with the device's own events (no project imports, so any benchmark may use it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["event_trials"]


def event_trials(fn: Callable[[], Any], event_class: Any, reps: int, trials: int) -> list[float]:
    """Seconds per call of ``trials`` loops of ``reps`` calls, each loop timed by two device events.

    Args:
        fn: The operation (already warmed up).
        event_class: The device module's ``Event`` (``torch.cuda.Event`` ...).
        reps: Calls per loop.
        trials: Loops.

    Returns:
        One figure per loop, in order.
    """
    start, end = event_class(enable_timing=True), event_class(enable_timing=True)
    times = []
    for _ in range(trials):
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / reps)
    return times
