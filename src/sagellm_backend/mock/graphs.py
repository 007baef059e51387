"""Recorded graphs for the Mock provider: work submitted during capture is recorded, not run,
and :meth:`MockGraph.replay` runs it again in order (as a CUDA graph does)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..api.streams import Event, Graph, Stream
from ..core.validate import Deadline
from ..errors import InvalidArgumentError, UnsupportedOperationError

__all__ = ["CaptureStream", "MockGraph"]


class CaptureStream(Stream):
    """Records work submitted during graph capture instead of running it."""

    def __init__(self, owner_id: int, device: str) -> None:
        super().__init__(owner_id, device)
        self.work: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []

    @property
    def handle(self) -> int:
        return id(self)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        self.work.append((fn, args, kwargs))

    def synchronize(self, *, timeout: float | None = None) -> None:
        Deadline(timeout)  # a bad timeout is reported as such, as on every stream
        raise UnsupportedOperationError("cannot synchronize a stream while it is being captured.")

    def record_event(self, event: Event | None = None) -> Event:
        raise UnsupportedOperationError("events cannot be recorded inside a mock graph capture.")

    def wait_event(self, event: Event) -> None:
        raise UnsupportedOperationError("events cannot be waited on inside a mock graph capture.")

    def query(self) -> bool:
        return True


class MockGraph(Graph):
    """Work captured on the Mock provider; :meth:`replay` runs it again, in order."""

    def __init__(self) -> None:
        self._work: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] | None = None

    def install(self, work: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]) -> None:
        """Take the work a capture recorded (the storage calls it when the capture ends).

        Args:
            work: ``(fn, args, kwargs)`` in capture order.
        """
        self._work = work

    @property
    def num_ops(self) -> int:
        """Captured operations."""
        return len(self._work or [])

    def replay(self) -> None:
        if self._work is None:
            raise InvalidArgumentError("this graph has nothing captured; capture it first or it was reset.")
        for fn, args, kwargs in self._work:
            fn(*args, **kwargs)

    def reset(self) -> None:
        self._work = None
