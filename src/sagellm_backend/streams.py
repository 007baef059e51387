"""Host streams and events: real ordered queues on worker threads (CPU and Mock providers).

Each :class:`HostStream` owns one worker thread that runs submitted work in order, off the
caller's thread. Copies through torch or numpy release the GIL, so work on a stream overlaps with
work on the calling thread. :class:`HostEvent` marks a point in a stream; the worker stamps it with
``time.perf_counter_ns()`` when it reaches it, so ``elapsed_ms`` times real intervals.

Error semantics follow CUDA's "sticky until reported": when a submitted task raises, later tasks
on that stream are skipped (events still complete, so nothing waiting on them hangs) and the next
:meth:`HostStream.synchronize` re-raises the error and clears it.
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
from .errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["HostEvent", "HostStream"]

_stream_ids = itertools.count(1)


class _Marker:
    """An event record travelling through a stream's queue."""

    __slots__ = ("done", "stamp_ns")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.stamp_ns: int | None = None


class _WaitFor:
    __slots__ = ("marker",)

    def __init__(self, marker: _Marker) -> None:
        self.marker = marker


class _State:
    """What the worker thread shares with its stream (the worker never holds the stream)."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.cond = threading.Condition()
        self.submitted = 0
        self.finished = 0
        self.error: BaseException | None = None
        self.thread_id = 0


def _worker(state: _State) -> None:
    state.thread_id = threading.get_ident()
    while True:
        item = state.queue.get()
        if item is None:
            return
        try:
            if isinstance(item, _Marker):
                item.stamp_ns = time.perf_counter_ns()
                item.done.set()
            elif isinstance(item, _WaitFor):
                item.marker.done.wait()
            elif state.error is None:
                fn, args, kwargs = item
                fn(*args, **kwargs)
        except BaseException as exc:  # kept and re-raised by synchronize(); never lost
            with state.cond:
                if state.error is None:
                    state.error = exc
        finally:
            with state.cond:
                state.finished += 1
                state.cond.notify_all()


def _stop(state: _State) -> None:
    state.queue.put(None)


class HostEvent(Event):
    """A timing event on a host stream (or on the host itself when recorded with no stream)."""

    def __init__(self, owner_id: int, device: str = "cpu") -> None:
        self._owner_id = owner_id
        self._device = device
        self._marker: _Marker | None = None

    @property
    def device(self) -> str:
        return self._device

    @property
    def is_recorded(self) -> bool:
        """True once :meth:`record` has been called."""
        return self._marker is not None

    def record(self, stream: Stream | None = None) -> None:
        """Record after the work submitted so far to ``stream`` (or the current stream).

        With no stream given and none current, the event completes at once, stamped now.

        Args:
            stream: A :class:`HostStream` of the same provider, or ``None``.
        """
        stream = stream if stream is not None else current_stream(self._owner_id)
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
        self._marker = marker
        stream._put(marker)

    def synchronize(self) -> None:
        marker = self._marker
        if marker is not None:
            marker.done.wait()

    def query(self) -> bool:
        marker = self._marker
        return marker is None or marker.done.is_set()

    def elapsed_ms(self, start: Event) -> float:
        if not isinstance(start, HostEvent):
            raise InvalidArgumentTypeError(
                f"elapsed_ms needs a start event of the same kind (HostEvent); got {type(start).__name__}."
            )
        if start._marker is None or self._marker is None:
            which = "start" if start._marker is None else "end"
            raise InvalidArgumentError(
                f"the {which} event was never recorded, so there is no interval to time. "
                "Call event.record(stream) (or stream.record_event()) on both events first."
            )
        start.synchronize()
        self.synchronize()
        assert start._marker.stamp_ns is not None and self._marker.stamp_ns is not None
        return (self._marker.stamp_ns - start._marker.stamp_ns) / 1e6

    def _wait_marker(self) -> _Marker | None:
        return self._marker

    def __repr__(self) -> str:
        state = "unrecorded" if self._marker is None else ("done" if self.query() else "pending")
        return f"HostEvent(device={self._device!r}, {state})"


class HostStream(Stream):
    """An ordered work queue served by one worker thread."""

    def __init__(self, owner_id: int, device: str = "cpu") -> None:
        super().__init__(owner_id)
        self._device = device
        self._state = _State()
        self._id = next(_stream_ids)
        self._thread = threading.Thread(
            target=_worker, args=(self._state,), name=f"sagellm-{device}-stream-{self._id}", daemon=True
        )
        self._thread.start()
        self._finalizer = weakref.finalize(self, _stop, self._state)

    @property
    def device(self) -> str:
        return self._device

    @property
    def handle(self) -> int:
        return self._id

    def _put(self, item: Any) -> None:
        if not self._finalizer.alive:
            raise InvalidArgumentError(
                f"stream {self._id} on {self._device} was closed; create a new one with create_stream()."
            )
        with self._state.cond:
            self._state.submitted += 1
        self._state.queue.put(item)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        if not callable(fn):
            raise InvalidArgumentTypeError(f"submit() needs a callable; got {type(fn).__name__}.")
        self._put((fn, args, kwargs))

    def synchronize(self) -> None:
        state = self._state
        with state.cond:
            target = state.submitted
            while state.finished < target:
                state.cond.wait()
            error, state.error = state.error, None
        if error is not None:
            raise error

    def query(self) -> bool:
        with self._state.cond:
            return self._state.finished >= self._state.submitted

    def record_event(self, event: Event | None = None) -> Event:
        ev = event if event is not None else HostEvent(self.owner_id, self._device)
        ev.record(self)
        return ev

    def wait_event(self, event: Event) -> None:
        if not isinstance(event, HostEvent):
            raise InvalidArgumentTypeError(f"a host stream can only wait on a HostEvent; got {type(event).__name__}.")
        marker = event._wait_marker()
        if marker is None or marker.done.is_set():
            return  # like CUDA: waiting on an unrecorded or completed event is a no-op
        self._put(_WaitFor(marker))

    def close(self) -> None:
        """Finish the queued work, then stop the worker thread. Idempotent."""
        if self._finalizer.alive:
            self._finalizer()
            self._thread.join(timeout=30)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return not self._finalizer.alive
