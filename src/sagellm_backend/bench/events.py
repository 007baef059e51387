"""Device event overhead: the HAL's event wrapper against the framework's own events."""

from __future__ import annotations

import statistics
import time

from ..api.provider import BackendProvider
from .harness import Result, is_device

__all__ = ["bench_events"]


def bench_events(provider: BackendProvider, *, quick: bool = False) -> Result | None:
    """Event record + record + elapsed through the HAL vs the raw framework event (host time).

    Args:
        provider: An accelerator provider (returns ``None`` on host providers).
        quick: Fewer iterations.

    Returns:
        Microseconds per (record, record, elapsed) round, ours vs raw (the ceiling), from 9
        interleaved trials in alternating order; the target is on the median paired ratio.
    """
    if not is_device(provider):
        return None
    import torch

    mod = torch.get_device_module(provider.get_torch_device())
    n = 2000 if quick else 20000

    def raw() -> float:
        a, b = mod.Event(enable_timing=True), mod.Event(enable_timing=True)
        t0 = time.perf_counter()
        for _ in range(n):
            a.record()
            b.record()
            b.synchronize()
            a.elapsed_time(b)
        return (time.perf_counter() - t0) / n * 1e6

    def ours() -> float:
        a, b = provider.create_event(), provider.create_event()
        t0 = time.perf_counter()
        for _ in range(n):
            a.record()
            b.record()
            b.elapsed_ms(a)
        return (time.perf_counter() - t0) / n * 1e6

    raw(), ours()
    raws, ourss, ratios = [], [], []
    for k in range(9):  # alternating order; paired ratios cancel clock drift
        if k % 2:
            o_t, r_t = ours(), raw()
        else:
            r_t, o_t = raw(), ours()
        raws.append(r_t)
        ourss.append(o_t)
        ratios.append(o_t / r_t)
    overhead = statistics.median(ratios)
    return Result(
        "events",
        "record + record + elapsed",
        "us/op",
        statistics.median(raws),
        None,
        statistics.median(ourss),
        {"paired_ours_over_raw": overhead},
        "<= 10% overhead (paired)",
        overhead <= 1.1,
        higher_is_better=False,
    )
