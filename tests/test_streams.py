"""Host streams: ordered worker threads, real timing, real overlap, sticky errors."""

from __future__ import annotations

import os
import threading
import time

import pytest

from sagellm_backend import DType, InvalidArgumentError, MockBackendProvider, StreamError
from sagellm_backend.streams import HostEvent, HostStream


def test_work_runs_in_order_off_the_callers_thread() -> None:
    s = HostStream(owner_id=-1)
    order: list[int] = []
    threads: set[int] = set()
    for i in range(50):
        s.submit(lambda i=i: (order.append(i), threads.add(threading.get_ident())))
    s.synchronize()
    assert order == list(range(50))
    assert threads == {s._state.thread_id} and threading.get_ident() not in threads
    s.close()
    with pytest.raises(InvalidArgumentError, match="closed"):
        s.submit(print)


def test_events_time_real_intervals() -> None:
    s = HostStream(owner_id=-1)
    start = s.record_event()
    s.submit(time.sleep, 0.05)
    end = s.record_event()
    assert not end.query() or True  # may already be done on a fast machine
    ms = end.elapsed_ms(start)
    assert 45.0 <= ms < 1000.0, ms
    assert end.query() and s.query()


def test_wait_event_orders_streams() -> None:
    s1, s2 = HostStream(-1), HostStream(-1)
    log: list[str] = []
    s1.submit(time.sleep, 0.05)
    s1.submit(log.append, "s1")
    ev = s1.record_event()
    s2.wait_event(ev)
    s2.submit(log.append, "s2")
    s2.synchronize()
    assert log == ["s1", "s2"]


def test_wait_on_unrecorded_event_is_noop() -> None:
    s = HostStream(-1)
    s.wait_event(HostEvent(-1))
    s.synchronize()


def test_errors_are_sticky_until_synchronize() -> None:
    s = HostStream(-1)
    ran: list[int] = []
    s.submit(lambda: 1 / 0)
    s.submit(ran.append, 1)  # skipped: the stream is in error
    ev = s.record_event()  # completes, carrying the failure: nobody hangs, nobody is told "done"
    with pytest.raises(StreamError, match="ZeroDivisionError") as info:
        ev.synchronize()
    assert isinstance(info.value.__cause__, ZeroDivisionError) and ev.query()
    with pytest.raises(StreamError) as info:
        s.synchronize()
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert ran == []
    s.submit(ran.append, 2)
    s.synchronize()
    assert ran == [2]


def test_stream_copy_overlaps_with_caller_work() -> None:
    """A large copy submitted to a stream runs while the calling thread computes."""
    torch = pytest.importorskip("torch")
    from sagellm_backend import CPUBackendProvider

    p = CPUBackendProvider(kv_geometry={"num_layers": 32, "num_kv_heads": 8, "head_dim": 128})
    src = p.kv_block_alloc(4096, DType.FP16)  # 512 MiB
    dst = p.kv_block_alloc(4096, DType.FP16)
    src.data.random_(0, 1000)
    s = p.create_stream()
    for _ in range(2):  # warm up page faults
        p.kv_block_copy(src, dst, stream=s)
    s.synchronize()
    start = s.record_event()
    t_submit = time.perf_counter_ns()
    p.kv_block_copy(src, dst, stream=s)
    end = s.record_event()
    t_return = time.perf_counter_ns()
    busy_start = time.perf_counter_ns()
    x = torch.ones(256, 256)
    while not end.query():
        x = x @ x.clamp(-1, 1)  # caller-thread work while the copy runs
    busy_end = time.perf_counter_ns()
    s.synchronize()
    copy_start, copy_end = start._marker.stamp_ns, end._marker.stamp_ns
    assert t_return - t_submit < (copy_end - copy_start), "submit must return before the copy finishes"
    overlap = min(copy_end, busy_end) - max(copy_start, busy_start)
    assert overlap > 0.5 * (copy_end - copy_start), (overlap, copy_end - copy_start)
    assert torch.equal(src.data, dst.data)


def test_provider_streams_are_real_on_mock() -> None:
    p = MockBackendProvider(kv_geometry={"num_layers": 2, "num_kv_heads": 2, "head_dim": 8})
    a, b = p.kv_block_alloc(64, DType.FP32), p.kv_block_alloc(64, DType.FP32)
    data = os.urandom(a.nbytes)
    p.kv_block_write(a, data)
    s = p.create_stream()
    gate = threading.Event()
    s.submit(gate.wait)
    p.kv_block_copy(a, b, stream=s)
    assert not s.query()  # queued behind the gate: the call returned without copying
    assert p.kv_block_read(b) != data
    gate.set()
    s.synchronize()
    assert p.kv_block_read(b) == data
    assert repr(s).startswith("HostStream(device='mock:0', handle=")
    p.close()
    assert s.closed
