"""Host streams and events: real ordered queues on worker threads (CPU and Mock providers).

Each :class:`HostStream` owns one worker thread that runs submitted work in order, off the
caller's thread. Copies through torch or numpy release the GIL, so work on a stream overlaps with
work on the calling thread. :class:`HostEvent` marks a point in a stream; the worker stamps it with
``time.perf_counter_ns()`` when it reaches it, so ``elapsed_ms`` times real intervals.

Failures follow the contract (:mod:`.api.streams`), in queue order: the first task that raises
becomes the stream's failure and later tasks are skipped; an event marker takes the stream's
failure as it stands when the worker reaches it; a ``wait_event`` marker hands the awaited event's
failure to its stream; ``synchronize`` reports and clears the failure at its own place in the queue
(a sync marker, or directly when nothing is in flight), so no event recorded after a skipped task
can report success.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from .api.streams import Event, Stream, current_stream
from .core.validate import Deadline
from .errors import BackendError, InvalidArgumentError, InvalidArgumentTypeError, StreamError

__all__ = ["HostEvent", "HostStream"]

_stream_ids = itertools.count(1)


class _Failure:
    """The first failure of a stream: the original exception and where it happened."""

    __slots__ = ("exc", "recording", "where")

    def __init__(self, exc: BaseException, where: str, *, recording: bool = False) -> None:
        self.exc = exc
        self.where = where
        self.recording = recording  # True: the event's record() itself failed (closed stream)

    def error(self, context: str) -> StreamError:
        """The typed error for a waiter; raise it ``from self.exc``."""
        name = type(self.exc).__name__
        if self.recording:
            message = f"{context}: the event was never enqueued, so it marks no work ({name}: {self.exc})."
        else:
            message = (
                f"{context}: a task on {self.where} failed with {name}: {self.exc}. Work enqueued after it "
                "there (and on streams that waited for it) was skipped; synchronize() that stream to clear "
                "the failure, then enqueue the work again."
            )
        return StreamError(message, origin=name, stream=self.where)


class _Marker:
    """An event record travelling through a stream's queue."""

    __slots__ = ("done", "failure", "stamp_ns", "worker")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.stamp_ns: int | None = None
        self.failure: _Failure | None = None
        self.worker = 0  # thread id of the worker that will complete it


class _WaitFor:
    """``wait_event``: block the worker until the marker is done, then take over its failure."""

    __slots__ = ("marker",)

    def __init__(self, marker: _Marker) -> None:
        self.marker = marker


class _Sync:
    """A ``synchronize`` point: the worker hands over and clears the failure here, in order."""

    __slots__ = ("abandoned", "done", "failure", "lock")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.failure: _Failure | None = None
        self.abandoned = False  # the waiter timed out: clear nothing, the failure stays for later


class _State:
    """What the worker thread shares with its stream (the worker never holds the stream)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.cond = threading.Condition()
        self.submitted = 0
        self.finished = 0
        self.failure: _Failure | None = None
        self.closed = False
        self.thread_id = 0


def _handle(state: _State, item: Any) -> None:
    if isinstance(item, _Marker):
        with state.cond:
            item.failure = state.failure
        item.stamp_ns = time.perf_counter_ns()
        item.done.set()
    elif isinstance(item, _WaitFor):
        item.marker.done.wait()  # the marker sits on a live queue or is already done
        if item.marker.failure is not None:
            with state.cond:
                if state.failure is None:
                    state.failure = item.marker.failure
    elif isinstance(item, _Sync):
        with item.lock:
            if not item.abandoned:
                with state.cond:
                    item.failure, state.failure = state.failure, None
                item.done.set()
    elif state.failure is None:  # else skipped: the failure already covers it
        fn, args, kwargs = item
        try:
            fn(*args, **kwargs)
        except BaseException as exc:  # kept for every later waiter; never lost
            with state.cond:
                if state.failure is None:
                    state.failure = _Failure(exc, state.label)


def _worker(state: _State) -> None:
    state.thread_id = threading.get_ident()
    while True:
        item = state.queue.get()
        if item is None:
            return
        try:
            _handle(state, item)
        finally:
            item = None  # drop the task's arguments now, not at the next get()
            with state.cond:
                state.finished += 1
                state.cond.notify_all()


def _stop(state: _State) -> None:
    with state.cond:
        if not state.closed:
            state.closed = True
            state.queue.put(None)


def _await(marker: _Marker, deadline: Deadline) -> None:
    if marker.done.is_set():
        return
    if marker.worker == threading.get_ident():
        raise InvalidArgumentError(
            "a task waited for an event recorded after it on its own stream: it would wait for itself. "
            "Wait for the event from another thread, or record it on another stream."
        )
    if not marker.done.wait(deadline.remaining()):
        raise deadline.expired("the work before this event")


class HostEvent(Event):
    """A timing event on a host stream (or on the host itself when recorded with no stream)."""

    def __init__(self, owner_id: int, device: str = "cpu") -> None:
        super().__init__(owner_id, device)
        self._marker: _Marker | None = None

    @property
    def is_recorded(self) -> bool:
        """True once :meth:`record` has been called."""
        return self._marker is not None

    def record(self, stream: Stream | None = None) -> None:
        """Record after the work submitted so far to ``stream`` (or the current stream).

        With no stream given and none current, the event completes at once, stamped now.

        Args:
            stream: A :class:`HostStream` of the same provider, or ``None``.

        Raises:
            InvalidArgumentTypeError: ``stream`` is not a host stream (the event is unchanged).
            InvalidArgumentError: The stream was closed; the event then marks no work and its waits
                raise :class:`StreamError` at once.
        """
        self._recorded_at = time.time()
        stream = stream if stream is not None else current_stream(self.owner_id)
        marker = _Marker()
        if stream is None:
            marker.stamp_ns = time.perf_counter_ns()
            marker.done.set()
            self._marker = marker
            return
        if not isinstance(stream, HostStream):
            raise InvalidArgumentTypeError(
                f"a host event can only be recorded on a HostStream; got {type(stream).__name__}. "
                "Use an event created by the same provider as the stream."
            )
        try:
            stream.put_marker(marker)
        except BackendError:
            self._marker = marker
            raise
        self._marker = marker

    def synchronize(self, *, timeout: float | None = None) -> None:
        deadline = Deadline(timeout)
        marker = self._marker
        if marker is None:
            return
        _await(marker, deadline)
        if marker.failure is not None:
            raise marker.failure.error("the work before this event did not complete") from marker.failure.exc

    def query(self) -> bool:
        marker = self._marker
        return marker is None or marker.done.is_set()

    def elapsed_ms(self, start: Event, *, timeout: float | None = None) -> float:
        if not isinstance(start, HostEvent):
            raise InvalidArgumentTypeError(
                f"elapsed_ms needs a start event of the same kind (HostEvent); got {type(start).__name__}."
            )
        deadline = Deadline(timeout)
        first, last = start.wait_marker(), self._marker
        if first is None or last is None:
            which = "start" if first is None else "end"
            raise InvalidArgumentError(
                f"the {which} event was never recorded, so there is no interval to time. "
                "Call event.record(stream) (or stream.record_event()) on both events first."
            )
        _await(first, deadline)
        _await(last, deadline)
        for marker, which in ((last, "end"), (first, "start")):
            if marker.failure is not None:
                raise marker.failure.error(f"cannot time the interval: the {which} event failed") from (
                    marker.failure.exc
                )
        assert first.stamp_ns is not None and last.stamp_ns is not None  # done without failure: stamped
        return (last.stamp_ns - first.stamp_ns) / 1e6

    def wait_marker(self) -> _Marker | None:
        """The marker of the last :meth:`record` (what a stream's ``wait_event`` waits for), or ``None``."""
        return self._marker

    def __repr__(self) -> str:
        marker = self._marker
        if marker is None:
            state = "unrecorded"
        elif not marker.done.is_set():
            state = "pending"
        else:
            state = "failed" if marker.failure is not None else "done"
        return f"HostEvent(device={self._device!r}, {state})"


class HostStream(Stream):
    """An ordered work queue served by one worker thread."""

    def __init__(self, owner_id: int, device: str = "cpu") -> None:
        super().__init__(owner_id, device)
        self._id = next(_stream_ids)
        self._state = _State(f"stream {self._id} on {device}")
        self._thread = threading.Thread(
            target=_worker, args=(self._state,), name=f"sagellm-{device}-stream-{self._id}", daemon=True
        )
        self._thread.start()
        self._state.thread_id = self._thread.ident or 0  # known before any marker needs it
        self._finalizer = weakref.finalize(self, _stop, self._state)

    @property
    def handle(self) -> int:
        return self._id

    def put_marker(self, marker: _Marker) -> None:
        """Enqueue an event's marker (``HostEvent.record``); a refused marker carries the error.

        Args:
            marker: The event's new marker.

        Raises:
            BackendError: the stream refused it (closed); the marker is then done and failed.
        """
        marker.worker = self._state.thread_id
        try:
            self._put(marker)
        except BackendError as exc:
            marker.failure = _Failure(exc, self._state.label, recording=True)
            marker.done.set()
            raise

    def _put(self, item: Any) -> None:
        state = self._state
        with state.cond:  # checked and enqueued under the lock: close() cannot slip in between
            if state.closed:
                raise InvalidArgumentError(
                    f"stream {self._id} on {self._device} was closed; create a new one with create_stream()."
                )
            state.submitted += 1
            state.queue.put(item)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        if not callable(fn):
            raise InvalidArgumentTypeError(f"submit() needs a callable; got {type(fn).__name__}.")
        self._put((fn, args, kwargs))

    def synchronize(self, *, timeout: float | None = None) -> None:
        deadline = Deadline(timeout)
        state = self._state
        if threading.get_ident() == state.thread_id:
            raise InvalidArgumentError(
                f"synchronize() of {state.label} was called by a task running on it: it would wait for "
                "itself. Record an event and wait for it from another thread instead."
            )
        sync: _Sync | None = None
        with state.cond:
            if state.closed or state.finished >= state.submitted:
                # nothing in flight, or nothing can be enqueued behind us: clear in place
                while state.finished < state.submitted:
                    if not state.cond.wait(deadline.remaining()):
                        raise deadline.expired(state.label)
                failure, state.failure = state.failure, None
            else:
                sync = _Sync()
                state.submitted += 1
                state.queue.put(sync)
        if sync is not None:
            if not sync.done.wait(deadline.remaining()):
                with sync.lock:
                    if not sync.done.is_set():
                        sync.abandoned = True
                        raise deadline.expired(state.label)
            failure = sync.failure
        if failure is not None:
            raise failure.error(f"work on {state.label} did not complete") from failure.exc

    def query(self) -> bool:
        with self._state.cond:
            return self._state.finished >= self._state.submitted

    def record_event(self, event: Event | None = None) -> Event:
        given = self._event_arg(event)
        ev = given if given is not None else HostEvent(self.owner_id, self._device)
        ev.record(self)
        return ev

    def wait_event(self, event: Event) -> None:
        if not isinstance(event, HostEvent):
            raise InvalidArgumentTypeError(f"a host stream can only wait on a HostEvent; got {type(event).__name__}.")
        marker = event.wait_marker()
        if marker is None or (marker.done.is_set() and marker.failure is None):
            return  # like CUDA: waiting on an unrecorded or completed event is a no-op
        self._put(_WaitFor(marker))

    def close(self) -> None:
        """Finish the queued work, then stop the worker thread. Idempotent."""
        if self._finalizer.alive:
            self._finalizer()
            if threading.get_ident() != self._state.thread_id:  # a task closing its own stream
                self._thread.join(timeout=30)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._state.closed
