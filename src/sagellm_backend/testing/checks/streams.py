"""Checks of streams, events and graph capture: work enqueued where it is asked to be, ordered
by events, and replayed by graphs."""

from __future__ import annotations

import os

from ...api import BackendProvider
from ...errors import InvalidArgumentError, UnsupportedOperationError
from .base import expect, provider_check
from .support import poisoned_block, random_block

__all__: list[str] = []


@provider_check
def check_stream_async_copy_and_events(p: BackendProvider) -> None:
    """A copy enqueued on a stream completes by synchronize(); events time it (>= 0 ms)."""
    src, data = random_block(p, 64)
    dst = poisoned_block(p, 64, src.dtype, 0x11)
    s = p.create_stream()
    start = s.record_event()
    p.kv_block_copy(src, dst, stream=s)
    end = s.record_event()
    s.synchronize()
    assert s.query() and end.query()
    ms = end.elapsed_ms(start)
    assert ms >= 0.0, ms
    assert p.kv_block_read(dst) == data
    assert repr(s) and s == s and hash(s) == hash(s)
    for b in (src, dst):
        p.kv_block_free(b)


@provider_check
def check_stream_wait_event(p: BackendProvider) -> None:
    """wait_event orders a second stream after the first: A->B on s1, then B->C on s2."""
    a, data = random_block(p, 64)
    b = poisoned_block(p, 64, a.dtype, 0x22)
    c = poisoned_block(p, 64, a.dtype, 0x33)
    s1, s2 = p.create_stream(), p.create_stream()
    assert s1 != s2
    p.kv_block_copy(a, b, stream=s1)
    ev = s1.record_event()
    s2.wait_event(ev)
    p.kv_block_copy(b, c, stream=s2)
    s2.synchronize()
    assert p.kv_block_read(c) == data, "s2 ran before s1's copy completed"
    for blk in (a, b, c):
        p.kv_block_free(blk)


@provider_check
def check_stream_context_manager(p: BackendProvider) -> None:
    """Inside `with stream:` provider copies are enqueued on that stream."""
    a, data = random_block(p, 16)
    b = poisoned_block(p, 16, a.dtype, 0x44)
    s = p.create_stream()
    with s:
        p.kv_block_copy(a, b)
        end = s.record_event()
    end.synchronize()
    s.synchronize()
    assert p.kv_block_read(b) == data
    for blk in (a, b):
        p.kv_block_free(blk)


@provider_check
def check_event_misuse(p: BackendProvider) -> None:
    """elapsed_ms between unrecorded events raises InvalidArgumentError."""
    e1, e2 = p.create_event(), p.create_event()
    expect(InvalidArgumentError, lambda: e2.elapsed_ms(e1), "elapsed of unrecorded events")
    e1.record()
    e2.record()
    assert e2.elapsed_ms(e1) >= 0.0


@provider_check
def check_graph_capture(p: BackendProvider) -> None:
    """Graph capture replays captured copies where has_graph_exec; elsewhere raises not_implemented."""
    if not p.capability().has_graph_exec:
        expect(UnsupportedOperationError, lambda: p.capture_graph().__enter__(), "capture without graphs")
        return
    read, write = p.kv_block_read, p.kv_block_write
    src, data = random_block(p, 8)
    dst = poisoned_block(p, 8, src.dtype, 0x66)
    p.synchronize()
    with p.capture_graph() as graph:
        p.kv_block_copy(src, dst)
    p.synchronize()
    assert read(dst) == b"\x66" * dst.nbytes, "captured work ran during capture"
    graph.replay()
    p.synchronize()
    assert read(dst) == data
    newer = os.urandom(src.nbytes)
    write(src, newer)
    graph.replay()
    p.synchronize()
    assert read(dst) == newer, "replay did not re-run the copy"
