"""Streams, events and graphs: the asynchronous-work part of the contract.

Which calls block the host: ``Stream.synchronize``, ``Event.synchronize`` and ``Event.elapsed_ms``
(waits for the end event). ``record``/``record_event``/``wait_event``/``submit`` only enqueue.

Failures. When work on a stream fails, the stream holds the failure: the work enqueued after it
on that stream is skipped, every event recorded after it carries it, and a stream that
``wait_event``-s such an event takes it over (and skips its own later work). Every wait on work
enqueued after the failure raises :class:`~sagellm_backend.errors.StreamError` chained ``from``
the original exception. ``Stream.synchronize`` reports the stream's failure once and clears it:
work enqueued after that ``synchronize`` runs again, while events recorded before it keep
reporting the failure. (Native device streams report device faults as the framework raises them.)

Waits. Every blocking call takes ``timeout`` (seconds, finite and > 0; ``None`` waits as long as
the queued work takes) and raises :class:`~sagellm_backend.errors.StreamTimeoutError` when it
expires, leaving the work queued and the failure state untouched. A wait on something that can
never finish (an event whose ``record`` failed, a task waiting for its own stream) raises at once.
"""

from __future__ import annotations

import itertools
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from ..errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["Event", "Graph", "Stream", "current_stream"]

_tls = threading.local()
_event_ids = itertools.count(1)


def _stream_stack() -> list[Stream]:
    stack: list[Stream] | None = getattr(_tls, "streams", None)
    if stack is None:
        stack = []
        _tls.streams = stack
    return stack


def current_stream(owner_id: int) -> Stream | None:
    """The innermost stream entered with ``with stream:`` in this thread for that provider.

    Args:
        owner_id: ``id()`` of the provider whose streams to look at.

    Returns:
        The stream, or ``None`` when none is active.
    """
    for stream in reversed(_stream_stack()):
        if stream.owner_id == owner_id:
            return stream
    return None


class _OnDevice:
    """What streams and events know of where they belong.

    Attributes:
        owner_id: The ``owner_id`` of the provider that created it.
    """

    def __init__(self, owner_id: int, device: str) -> None:
        self.owner_id = owner_id
        self._device = device

    @property
    def device(self) -> str:
        """The device string of the provider that created it (where a stream runs)."""
        return self._device


class Event(_OnDevice, ABC):
    """A marker in a stream's work. Real on every provider; timing is on by default.

    ``record`` and ``query`` never block; ``synchronize`` and ``elapsed_ms`` do.
    """

    @property
    def event_id(self) -> int:
        """Process-unique id of this event (the seed release's ``event_id``)."""
        found = self.__dict__.get("_event_id")
        if found is None:
            found = self.__dict__.setdefault("_event_id", next(_event_ids))
        return int(found)

    @property
    def timestamp(self) -> float | None:
        """Host wall-clock time (``time.time()``) of the last :meth:`record` call, or ``None``."""
        stamp = self.__dict__.get("_recorded_at")
        return None if stamp is None else float(stamp)

    @abstractmethod
    def record(self, stream: Stream | None = None) -> None:
        """Mark the point after all work submitted so far to ``stream`` (default: current stream).

        Args:
            stream: The stream to record on; ``None`` records on the provider's current stream.

        Raises:
            InvalidArgumentError: The stream was closed. The event then marks no work: its waits
                raise ``StreamError`` at once instead of waiting for ever.
        """

    @abstractmethod
    def synchronize(self, *, timeout: float | None = None) -> None:
        """Block the calling thread until the recorded work has finished (no-op if never recorded).

        Args:
            timeout: Seconds to wait at most (finite, > 0); ``None`` waits until the work finishes.

        Raises:
            StreamError: Work enqueued before this event failed or was skipped, or its ``record``
                failed (closed stream); chained from the original exception.
            StreamTimeoutError: The work did not finish within ``timeout``.
            InvalidArgumentError: ``timeout`` is not finite and positive (``InvalidArgumentTypeError``
                when it is not a number).
        """

    @abstractmethod
    def query(self) -> bool:
        """Return True when the recorded work has finished, failed included (never blocks)."""

    @abstractmethod
    def elapsed_ms(self, start: Event, *, timeout: float | None = None) -> float:
        """Milliseconds from ``start`` to this event. Blocks until both events complete.

        Args:
            start: An event recorded before this one on the same provider.
            timeout: Seconds to wait at most for both (finite, > 0); ``None`` waits as long as needed.

        Returns:
            Elapsed time in milliseconds.

        Raises:
            InvalidArgumentError: An event was never recorded, or ``timeout`` is invalid.
            StreamError: Either event carries a failure (see :meth:`synchronize`).
            StreamTimeoutError: The events did not complete within ``timeout``.
        """

    def __enter__(self) -> Event:
        return self

    def __exit__(self, *exc: object) -> None:
        self.synchronize()


class Stream(_OnDevice, ABC):
    """An ordered queue of work on one device.

    ``with stream:`` makes it the current stream of its provider in this thread: provider
    operations called without ``stream=`` inside the block are enqueued on it.
    ``synchronize`` blocks; ``record_event``, ``wait_event``, ``submit`` and ``query`` do not.
    """

    @property
    @abstractmethod
    def handle(self) -> int:
        """An integer identifying the native stream (worker thread id, cudaStream_t ...)."""

    @property
    def stream_id(self) -> int:
        """The seed release's name of :attr:`handle`."""
        return self.handle

    @abstractmethod
    def synchronize(self, *, timeout: float | None = None) -> None:
        """Block until all work submitted to this stream has finished; report its failure once.

        A failure reported here is cleared: work enqueued afterwards runs. Events recorded before
        this call keep reporting it. When the wait times out nothing is cleared.

        Args:
            timeout: Seconds to wait at most (finite, > 0); ``None`` waits until the work finishes.

        Raises:
            StreamError: Work on this stream failed (or a failure reached it through
                :meth:`wait_event`) since the last ``synchronize``; chained from the original exception.
            StreamTimeoutError: The work did not finish within ``timeout``.
            InvalidArgumentError: ``timeout`` is not finite and positive (``InvalidArgumentTypeError``
                when it is not a number).
        """

    @abstractmethod
    def record_event(self, event: Event | None = None) -> Event:
        """Record ``event`` (a new one if ``None``) after the work submitted so far.

        Args:
            event: The event to record, or ``None`` to create one.

        Returns:
            The recorded event.

        Raises:
            InvalidArgumentError: The stream was closed (see :meth:`Event.record`).
        """

    @abstractmethod
    def wait_event(self, event: Event) -> None:
        """Make later work on this stream wait until ``event`` completes (host does not block).

        If ``event`` carries a failure, this stream takes it over when it reaches the wait: its
        later work is skipped and its waits raise ``StreamError`` until it is synchronized.

        Args:
            event: An event of the same provider.
        """

    @abstractmethod
    def query(self) -> bool:
        """Return True when all submitted work has finished (never blocks)."""

    @abstractmethod
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        """Run ``fn(*args, **kwargs)`` in this stream's order.

        On host streams the function runs on the stream's worker thread. On device streams it is
        called at once on the calling thread with this stream current, so the device work it
        launches is ordered on this stream.

        Args:
            fn: The callable.
            *args: Positional arguments for ``fn``.
            **kwargs: Keyword arguments for ``fn``.
        """

    @property
    def closed(self) -> bool:
        """True once the stream was closed (host streams can be): nothing can be enqueued on it."""
        return False

    def wait_stream(self, other: Stream) -> None:
        """Make later work on this stream wait for the work submitted so far to ``other``.

        Args:
            other: Another stream of the same provider.

        Raises:
            InvalidArgumentTypeError: ``other`` is not a stream.
            InvalidArgumentError: ``other`` belongs to another provider instance.
        """
        if not isinstance(other, Stream):
            raise InvalidArgumentTypeError(
                f"wait_stream takes a Stream from create_stream(); got {type(other).__name__}."
            )
        if other.owner_id != self.owner_id:
            raise InvalidArgumentError(
                f"{other!r} belongs to another provider instance; wait only on streams of this stream's provider."
            )
        self.wait_event(other.record_event())

    @staticmethod
    def _event_arg(event: object) -> Event | None:
        """The ``event`` argument of :meth:`record_event`: an :class:`Event` or ``None``."""
        if event is not None and not isinstance(event, Event):
            raise InvalidArgumentTypeError(
                f"record_event takes an Event from create_event() (or None); got {type(event).__name__}."
            )
        return event

    def _on_enter(self) -> None:
        """Hook for device streams (enter the framework's stream context)."""

    def _on_exit(self) -> None:
        """Hook for device streams."""

    def __enter__(self) -> Stream:
        _stream_stack().append(self)
        self._on_enter()
        return self

    def __exit__(self, *exc: object) -> None:
        stack = _stream_stack()
        self._on_exit()
        if stack and stack[-1] is self:
            stack.pop()
        else:  # exited out of order: remove the innermost occurrence
            for i in range(len(stack) - 1, -1, -1):
                if stack[i] is self:
                    del stack[i]
                    break

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r}, handle={self.handle:#x})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Stream):
            return NotImplemented
        return type(self) is type(other) and self.handle == other.handle and self.device == other.device

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.device, self.handle))


class Graph(ABC):
    """A captured sequence of device work that can be replayed (CUDA/NPU graphs)."""

    @abstractmethod
    def replay(self) -> None:
        """Launch the captured work again, on the stream it was captured on."""

    @abstractmethod
    def reset(self) -> None:
        """Release the captured graph."""
