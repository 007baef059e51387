"""Timing device work with the device's own events, eagerly or replayed from a CUDA graph (no project imports, so
any benchmark may use it)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

__all__ = ["device_time_per_call", "event_trials", "time_per_call"]


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


def time_per_call(fn: Callable[[], Any], *, quick: bool = False, budget_s: float = 0.004) -> float:
    """Seconds per call on the current CUDA stream: median over trials of events around a loop.

    Args:
        fn: The call.
        quick: Fewer trials.
        budget_s: Device time to aim for per trial (sets the loop length).

    Returns:
        Seconds.
    """
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    once = max(event_trials(fn, torch.cuda.Event, 5, 1)[0], 1e-6)
    reps = int(min(2000, max(10, budget_s / once)))
    return float(statistics.median(event_trials(fn, torch.cuda.Event, reps, 3 if quick else 9)))


def device_time_per_call(fn: Callable[[], Any], *, quick: bool = False, calls: int = 20) -> float | None:
    """Seconds of GPU work per call: ``calls`` calls captured in a CUDA graph, timed by replays.

    Args:
        fn: The call (warmed up before capture).
        quick: Fewer trials.
        calls: Calls per graph.

    Returns:
        Seconds, or ``None`` when the call cannot be captured.
    """
    import torch

    stream_cls: Any = torch.cuda.Stream
    side = stream_cls()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph: Any = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
    except RuntimeError:  # not capturable (torch refuses a host sync inside a capture): report no device time
        return None
    t = time_per_call(graph.replay, quick=quick, budget_s=0.01) / calls
    del graph
    return t
