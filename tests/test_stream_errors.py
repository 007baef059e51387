"""Stream error model and bounded waits: a failure reaches every waiter on work enqueued after it;
nothing waits without bound; every Stream/Event implementation has the contract's signatures."""

from __future__ import annotations

import inspect
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sagellm_backend import DType, MockBackendProvider
from sagellm_backend import errors as E
from sagellm_backend.api.streams import Event, Stream
from sagellm_backend.mock.graphs import CaptureStream
from sagellm_backend.storage.device_streams import DeviceEvent, DeviceStream
from sagellm_backend.streams import HostEvent, HostStream

SMALL = {"num_layers": 2, "num_kv_heads": 2, "head_dim": 8}


class Boom(Exception):
    """The failure a task raises in these tests."""


def raiser(exc: BaseException) -> Callable[[], None]:
    def fail() -> None:
        raise exc

    return fail


def expect_stream_error(fn: Callable[[], object], cause: BaseException) -> E.BackendError:
    """``fn()`` raises the typed stream error (a KVTransferError) chained from ``cause``."""
    with pytest.raises(E.KVTransferError) as info:
        fn()
    err = info.value
    assert isinstance(err, E.StreamError), type(err)
    assert err.__cause__ is cause
    assert type(cause).__name__ in str(err) and str(cause) in str(err)
    return err


@pytest.fixture
def streams() -> Iterator[list[HostStream]]:
    made = [HostStream(-1) for _ in range(3)]
    yield made
    for s in made:
        s.close()


@pytest.fixture(params=["mock", "cpu"])
def provider(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "cpu":
        pytest.importorskip("torch")
        from sagellm_backend import CPUBackendProvider

        p: Any = CPUBackendProvider(kv_geometry=SMALL)
    else:
        p = MockBackendProvider(kv_geometry=SMALL)
    yield p
    p.close()


# --------------------------------------------------------------------------- class 1: failures reach waiters
@pytest.mark.timeout(20)
def test_event_after_failed_and_skipped_tasks_carries_the_failure(streams: list[HostStream]) -> None:
    s = streams[0]
    ran: list[int] = []
    boom = Boom("task 1 failed")
    start = s.record_event()
    s.submit(raiser(boom))
    after_fail = s.record_event()
    s.submit(ran.append, 1)  # skipped
    after_skip = s.record_event()
    for ev in (after_fail, after_skip):
        expect_stream_error(lambda ev=ev: ev.synchronize(), boom)
        expect_stream_error(lambda ev=ev: ev.synchronize(timeout=5.0), boom)
        assert ev.query()  # finished (with a failure): pollers stop polling
    expect_stream_error(lambda: after_skip.elapsed_ms(start), boom)
    start.synchronize()  # recorded before the failure: fine
    assert ran == []


@pytest.mark.timeout(20)
def test_synchronize_reports_once_and_clears_events_keep_it(streams: list[HostStream]) -> None:
    s = streams[0]
    ran: list[int] = []
    boom = Boom("x")
    s.submit(raiser(boom))
    s.submit(ran.append, 1)
    before = s.record_event()
    expect_stream_error(s.synchronize, boom)
    s.synchronize()  # cleared: reported once
    s.submit(ran.append, 2)
    after = s.record_event()
    s.synchronize()
    after.synchronize()
    assert ran == [2]
    expect_stream_error(before.synchronize, boom)  # recorded before the clear: still failed
    expect_stream_error(lambda: after.elapsed_ms(before), boom)


@pytest.mark.timeout(20)
def test_synchronize_on_idle_stream_with_error_reports_it(streams: list[HostStream]) -> None:
    s = streams[0]
    boom = Boom("idle")
    s.submit(raiser(boom))
    while not s.query():
        time.sleep(0.001)
    expect_stream_error(lambda: s.synchronize(timeout=5.0), boom)
    s.synchronize(timeout=5.0)


@pytest.mark.timeout(20)
def test_wait_event_propagates_the_failure_to_the_waiting_stream(streams: list[HostStream]) -> None:
    s1, s2, s3 = streams
    ran: list[str] = []
    gate = threading.Event()
    boom = Boom("upstream")
    s1.submit(gate.wait)
    s1.submit(raiser(boom))
    ev = s1.record_event()
    s2.wait_event(ev)  # pending when enqueued
    s2.submit(ran.append, "s2")
    ev2 = s2.record_event()
    s3.wait_event(ev2)  # transitively
    s3.submit(ran.append, "s3")
    gate.set()
    expect_stream_error(ev2.synchronize, boom)
    expect_stream_error(s3.synchronize, boom)
    expect_stream_error(s2.synchronize, boom)
    expect_stream_error(s1.synchronize, boom)
    assert ran == []
    # the event already completed with its failure: waiting on it still propagates
    s2.wait_event(ev)
    s2.submit(ran.append, "late")
    expect_stream_error(s2.synchronize, boom)
    assert ran == []
    # and a stream waiting on an event recorded after the clear runs normally
    s2.wait_event(s1.record_event())
    s2.submit(ran.append, "ok")
    s2.synchronize()
    assert ran == ["ok"]


@pytest.mark.timeout(30)
def test_swap_out_behind_a_failure_is_reported_not_silently_stale(provider: Any) -> None:
    pool = provider.create_kv_pool(16, block_size=4, dtype=DType.FP16)
    ids = pool.allocate(3)
    data = [os.urandom(pool.block_nbytes) for _ in ids]
    for i, d in zip(ids, data):
        pool.write_block(i, d)
    s, s2 = provider.create_stream(), provider.create_stream()
    boom = Boom("earlier copy failed")
    s.submit(raiser(boom))
    swapped = pool.swap_out(ids, stream=s)  # skipped behind the failure
    err = expect_stream_error(swapped.wait, boom)
    assert "swap" in str(err)
    expect_stream_error(lambda: swapped.wait(timeout=5.0), boom)
    # swap_in without a stream waits first: it raises and keeps no blocks
    free = pool.stats().free_blocks
    expect_stream_error(lambda: pool.swap_in(swapped), boom)
    assert pool.stats().free_blocks == free
    # swap_in on another stream: that stream inherits the failure, the scatter does not run
    dst = pool.allocate(3)
    marks = [b"\x5a" * pool.block_nbytes] * 3
    for i, d in zip(dst, marks):
        pool.write_block(i, d)
    pool.swap_in(swapped, dst, stream=s2)
    done = s2.record_event()
    expect_stream_error(done.synchronize, boom)
    expect_stream_error(s2.synchronize, boom)
    assert [pool.read_block(i) for i in dst] == marks
    expect_stream_error(s.synchronize, boom)
    # after the report the same sequence works and is bit-exact
    ok = pool.swap_out(ids, stream=s)
    ok.wait(timeout=10.0)
    back = pool.swap_in(ok, dst, stream=s2)
    s2.synchronize(timeout=10.0)
    assert [pool.read_block(i) for i in back] == data
    swapped.release()  # a failed swap still returns its buffer
    assert swapped.data is None


# --------------------------------------------------------------------------- class 3: no hang
@pytest.mark.timeout(10)
def test_event_recorded_on_closed_stream_raises_now_and_on_every_wait() -> None:
    s, other = HostStream(-1), HostStream(-1)
    start = s.record_event()
    s.close()
    ev = HostEvent(-1)
    with pytest.raises(E.InvalidArgumentError, match="closed"):
        ev.record(s)
    with pytest.raises(E.InvalidArgumentError, match="closed"):
        s.record_event()
    assert ev.query()  # nothing pending
    with pytest.raises(E.KVTransferError, match="closed") as info:
        ev.synchronize()  # raises at once: it marks no work
    assert isinstance(info.value.__cause__, E.InvalidArgumentError)
    with pytest.raises(E.KVTransferError, match="closed"):
        ev.elapsed_ms(start)
    with pytest.raises(E.KVTransferError, match="closed"):
        ev.synchronize(timeout=1.0)
    other.wait_event(ev)
    with pytest.raises(E.KVTransferError, match="closed"):
        other.synchronize()
    s.synchronize()  # a closed, drained stream reports nothing pending
    other.close()


@pytest.mark.timeout(10)
def test_events_after_provider_close_do_not_hang(provider: Any) -> None:
    s = provider.create_stream()
    provider.close()
    ev = provider.create_event()
    with pytest.raises(E.InvalidArgumentError, match="closed"):
        ev.record(s)
    with pytest.raises(E.KVTransferError, match="closed"):
        ev.synchronize()
    ev2 = provider.create_event()
    with s, pytest.raises(E.InvalidArgumentError, match="closed"):
        ev2.record()  # the current stream is closed
    with pytest.raises(E.KVTransferError, match="closed"):
        ev2.elapsed_ms(ev)


@pytest.mark.timeout(10)
def test_a_task_synchronizing_its_own_stream_raises_instead_of_hanging(streams: list[HostStream]) -> None:
    s = streams[0]
    seen: list[BaseException] = []
    later = HostEvent(-1)

    def task() -> None:
        for wait in (s.synchronize, later.synchronize):
            try:
                wait()
            except E.BackendError as exc:
                seen.append(exc)

    gate = threading.Event()
    s.submit(gate.wait)
    s.submit(task)
    later.record(s)  # behind the task: the task would wait for itself
    gate.set()
    s.synchronize(timeout=5.0)
    assert len(seen) == 2 and all(isinstance(e, E.InvalidArgumentError) for e in seen), seen


BAD_TIMEOUTS: list[tuple[object, type[Exception]]] = [
    (math.nan, E.InvalidArgumentError),
    (math.inf, E.InvalidArgumentError),
    (-math.inf, E.InvalidArgumentError),
    (0, E.InvalidArgumentError),
    (-1.0, E.InvalidArgumentError),
    (True, E.InvalidArgumentTypeError),
    ("1", E.InvalidArgumentTypeError),
    ([1], E.InvalidArgumentTypeError),
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("bad", "exc"), BAD_TIMEOUTS, ids=[repr(b) for b, _ in BAD_TIMEOUTS])
def test_bad_timeouts_are_typed_errors_on_every_wait(provider: Any, bad: object, exc: type[Exception]) -> None:
    pool = provider.create_kv_pool(4, block_size=2)
    s = provider.create_stream()
    start, end, unrecorded = s.record_event(), s.record_event(), provider.create_event()
    waits: list[Callable[[Any], object]] = [
        lambda t: s.synchronize(timeout=t),
        lambda t: end.synchronize(timeout=t),
        lambda t: unrecorded.synchronize(timeout=t),
        lambda t: end.elapsed_ms(start, timeout=t),
        lambda t: pool.swap_out(pool.allocate(1), stream=s).wait(timeout=t),
        lambda t: pool.swap_out(pool.allocate(1)).wait(timeout=t),
    ]
    for wait in waits:
        with pytest.raises(exc, match="timeout"):
            wait(bad)
        wait(2.5)  # a valid timeout is accepted


@pytest.mark.timeout(20)
def test_timeouts_expire_with_a_typed_error_and_lose_nothing(provider: Any) -> None:
    pool = provider.create_kv_pool(8, block_size=2)
    ids = pool.allocate(2)
    s = provider.create_stream()
    gate = threading.Event()
    start = s.record_event()
    s.submit(gate.wait)
    swapped = pool.swap_out(ids, stream=s)
    end = s.record_event()
    boom = Boom("behind the gate")
    s.submit(raiser(boom))
    waits: list[Callable[[], object]] = [
        lambda: s.synchronize(timeout=0.05),
        lambda: end.synchronize(timeout=0.05),
        lambda: end.elapsed_ms(start, timeout=0.05),
        lambda: swapped.wait(timeout=0.05),
    ]
    for wait in waits:
        t0 = time.perf_counter()
        with pytest.raises(E.BackendError) as info:
            wait()
        took = time.perf_counter() - t0
        assert isinstance(info.value, E.StreamTimeoutError) and isinstance(info.value, TimeoutError)
        assert info.value.code.value == "deadline_exceeded" and "0.05" in str(info.value)
        assert 0.04 <= took < 2.0, took
    assert not end.query()
    gate.set()
    swapped.wait(timeout=10.0)
    assert end.elapsed_ms(start, timeout=10.0) >= 0.0
    expect_stream_error(lambda: s.synchronize(timeout=10.0), boom)  # the timed-out synchronize cleared nothing
    s.synchronize(timeout=10.0)


class _PendingNative:
    """A native event/stream whose work never finishes (query() stays False)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.done = False

    def record(self, stream: object = None) -> None:
        """Nothing to do."""

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        """Would block forever on real hardware; the tests only use timeouts."""
        raise AssertionError("unbounded native wait")

    def elapsed_time(self, end: object) -> float:
        return 1.5

    def wait_event(self, event: object) -> None:
        """Nothing to do."""


class _PendingModule:
    Event = _PendingNative


@pytest.mark.timeout(10)
def test_device_streams_take_the_same_timeouts() -> None:
    mod = _PendingModule()
    stream = DeviceStream(-1, "npu:0", mod, _PendingNative())
    start, end = DeviceEvent(-1, "npu:0", mod), DeviceEvent(-1, "npu:0", mod)
    start.record(stream)
    end.record(stream)
    waits: list[Callable[[Any], object]] = [
        lambda t: stream.synchronize(timeout=t),
        lambda t: end.synchronize(timeout=t),
        lambda t: end.elapsed_ms(start, timeout=t),
    ]
    for wait in waits:
        for bad, exc in BAD_TIMEOUTS:
            with pytest.raises(exc):
                wait(bad)
        with pytest.raises(E.BackendError) as info:
            wait(0.03)
        assert isinstance(info.value, E.StreamTimeoutError)
    stream.native.done = start.native.done = end.native.done = True
    stream.synchronize(timeout=1.0)
    end.synchronize(timeout=1.0)
    assert end.elapsed_ms(start, timeout=1.0) == 1.5


@pytest.mark.timeout(10)
def test_capture_stream_validates_timeouts_then_refuses() -> None:
    cs = CaptureStream(-1, "mock:0")
    with pytest.raises(E.InvalidArgumentError):
        cs.synchronize(timeout=math.nan)
    with pytest.raises(E.UnsupportedOperationError):
        cs.synchronize(timeout=1.0)


def _implementations(base: type) -> list[type]:
    found: list[type] = []
    todo = list(base.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in found if c.__module__.startswith("sagellm_backend")]


@pytest.mark.parametrize("contract", [Stream, Event], ids=["Stream", "Event"])
def test_every_stream_and_event_has_the_contract_signatures(contract: type) -> None:
    impls = _implementations(contract)
    expected = {Stream: {HostStream, DeviceStream, CaptureStream}, Event: {HostEvent, DeviceEvent}}[contract]
    assert expected <= set(impls)
    public = [n for n, v in vars(contract).items() if not n.startswith("_") and callable(v)]
    assert "synchronize" in public
    for cls in impls:
        for name in public:
            got, want = inspect.signature(getattr(cls, name)), inspect.signature(getattr(contract, name))
            assert got == want, f"{cls.__name__}.{name}{got} != contract {want}"
    for name in ("synchronize", *(["elapsed_ms"] if contract is Event else [])):
        timeout = inspect.signature(getattr(contract, name)).parameters["timeout"]
        assert timeout.kind is inspect.Parameter.KEYWORD_ONLY and timeout.default is None


# --------------------------------------------------------------------------- properties and threads
_OPS = st.one_of(
    st.tuples(st.just("ok"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("fail"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("record"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("wait"), st.integers(0, 2), st.integers(0, 63)),
    st.tuples(st.just("sync"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("check"), st.just(0), st.integers(0, 63)),
)


def _check_event(ev: Event, expected: BaseException | None) -> None:
    if expected is None:
        ev.synchronize(timeout=10.0)
    else:
        expect_stream_error(lambda: ev.synchronize(timeout=10.0), expected)


def _check_sync(s: HostStream, expected: BaseException | None) -> None:
    if expected is None:
        s.synchronize(timeout=10.0)
    else:
        expect_stream_error(lambda: s.synchronize(timeout=10.0), expected)


@pytest.mark.timeout(120)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 3), ops=st.lists(_OPS, max_size=40))
def test_error_model_matches_a_reference(n: int, ops: list[tuple[str, int, int]]) -> None:
    """Random submit(ok)/submit(fail)/record/wait_event/synchronize across streams against a model:
    per stream the pending failure (first one wins), events snapshot it, waits propagate it,
    synchronize reports and clears it."""
    streams = [HostStream(-1) for _ in range(n)]
    pending: list[BaseException | None] = [None] * n
    events: list[tuple[Event, BaseException | None]] = []
    ran: list[int] = []
    should_run: list[int] = []
    try:
        for k, (kind, idx, ref) in enumerate(ops):
            i = idx % n
            s = streams[i]
            if kind == "ok":
                s.submit(ran.append, k)
                if pending[i] is None:
                    should_run.append(k)
            elif kind == "fail":
                boom = Boom(f"op {k}")
                s.submit(raiser(boom))
                pending[i] = pending[i] or boom
            elif kind == "record":
                events.append((s.record_event(), pending[i]))
            elif kind == "wait" and events:
                ev, failure = events[ref % len(events)]
                s.wait_event(ev)
                pending[i] = pending[i] or failure
            elif kind == "sync":
                _check_sync(s, pending[i])
                pending[i] = None
            elif kind == "check" and events:
                _check_event(*events[ref % len(events)])
        for i, s in enumerate(streams):
            _check_sync(s, pending[i])
        for ev, failure in events:
            _check_event(ev, failure)
        assert sorted(ran) == should_run
    finally:
        for s in streams:
            s.close()


@pytest.mark.timeout(60)
def test_threads_submitting_and_synchronizing_concurrently_do_not_deadlock() -> None:
    streams = [HostStream(-1) for _ in range(3)]
    events: list[Event] = [streams[0].record_event()]
    problems: list[BaseException] = []
    reported = [0]

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(300):
            s = rng.choice(streams)
            r = rng.random()
            try:
                if r < 0.35:
                    s.submit(time.sleep, 0)
                elif r < 0.4:
                    s.submit(raiser(Boom(f"thread {seed}")))
                elif r < 0.6:
                    events.append(s.record_event())
                elif r < 0.75:
                    rng.choice(streams).wait_event(s.record_event())
                elif r < 0.9:
                    s.synchronize(timeout=20.0)
                else:
                    rng.choice(events).synchronize(timeout=20.0)
            except E.BackendError as exc:
                if not isinstance(exc, E.StreamError) or not isinstance(exc.__cause__, Boom):
                    problems.append(exc)
                reported[0] += 1
            except BaseException as exc:  # anything else is a bug
                problems.append(exc)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=45)
    assert not any(t.is_alive() for t in threads), "deadlock: worker threads still running"
    assert not problems, problems[:3]
    assert reported[0] > 0  # failures were delivered
    for s in streams:
        try:
            s.synchronize(timeout=10.0)
        except E.KVTransferError as exc:
            assert isinstance(exc.__cause__, Boom)
        s.synchronize(timeout=10.0)  # reported once, then clean
        assert s.query()
        s.close()
