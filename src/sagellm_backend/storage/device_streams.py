"""Native device streams, events and graphs over any ``torch.<accelerator>`` module of the
``torch.cuda`` shape (``torch.cuda``, ``torch.npu``, ``torch.musa``, Kunlun's XPyTorch).

Waits without a ``timeout`` use the native blocking call; with one they poll the native
``query()`` until the deadline (device faults are raised by the framework as it reports them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..api.streams import Event, Graph, Stream, current_stream
from ..api.streams import _tls as _stream_tls
from ..core.validate import Deadline, poll_until
from ..errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["DeviceEvent", "DeviceStream", "TorchGraph"]


class DeviceEvent(Event):
    """A ``torch.<accelerator>.Event`` with timing enabled."""

    def __init__(self, owner_id: int, device: str, module: Any) -> None:
        super().__init__(owner_id, device)
        self._mod = module
        self.native = module.Event(enable_timing=True)
        self._recorded = False

    def record(self, stream: Stream | None = None) -> None:
        self._recorded_at = time.time()
        if stream is None and not getattr(_stream_tls, "streams", None):
            self.native.record()  # fast path: no HAL stream entered in this thread
            self._recorded = True
            return
        s = stream if stream is not None else current_stream(self.owner_id)
        if s is None:
            self.native.record()
        elif isinstance(s, DeviceStream):
            self.native.record(s.native)
        else:
            raise InvalidArgumentTypeError(
                f"a device event can only be recorded on a DeviceStream; got {type(s).__name__}."
            )
        self._recorded = True

    def synchronize(self, *, timeout: float | None = None) -> None:
        deadline = Deadline(timeout)
        if not self._recorded:
            return
        if deadline.end is None:
            self.native.synchronize()
        else:
            poll_until(self.native.query, deadline, f"the work before this event on {self._device}")

    def query(self) -> bool:
        return bool(self.native.query())

    def elapsed_ms(self, start: Event, *, timeout: float | None = None) -> float:
        if timeout is None and type(start) is DeviceEvent and start.recorded and self.recorded:  # fast path
            self.native.synchronize()
            return float(start.native.elapsed_time(self.native))
        if not isinstance(start, DeviceEvent):
            raise InvalidArgumentTypeError(f"elapsed_ms needs a start DeviceEvent; got {type(start).__name__}.")
        deadline = Deadline(timeout)
        if not (start.recorded and self.recorded):
            which = "start" if not start.recorded else "end"
            raise InvalidArgumentError(
                f"the {which} event was never recorded, so there is no interval to time. Record both events first."
            )
        if deadline.end is None:
            self.native.synchronize()
        else:
            what = f"the events timed on {self._device}"
            poll_until(lambda: bool(start.native.query()) and bool(self.native.query()), deadline, what)
        return float(start.native.elapsed_time(self.native))

    @property
    def recorded(self) -> bool:
        """Whether :meth:`record` has run (the event then marks work to wait for and time)."""
        return self._recorded

    def __repr__(self) -> str:
        return f"DeviceEvent(device={self._device!r}, recorded={self._recorded})"


class DeviceStream(Stream):
    """A ``torch.<accelerator>.Stream``."""

    def __init__(self, owner_id: int, device: str, module: Any, native: Any) -> None:
        super().__init__(owner_id, device)
        self._mod = module
        self.native = native
        self._contexts: list[Any] = []

    @property
    def handle(self) -> int:
        for attr in ("cuda_stream", "npu_stream", "stream_id"):
            value = getattr(self.native, attr, None)
            if isinstance(value, int):
                return value
        return id(self.native)

    def synchronize(self, *, timeout: float | None = None) -> None:
        deadline = Deadline(timeout)
        if deadline.end is None:
            self.native.synchronize()
        else:
            poll_until(self.native.query, deadline, f"stream {self.handle:#x} on {self._device}")

    def record_event(self, event: Event | None = None) -> Event:
        given = self._event_arg(event)
        ev = given if given is not None else DeviceEvent(self.owner_id, self._device, self._mod)
        ev.record(self)
        return ev

    def wait_event(self, event: Event) -> None:
        if not isinstance(event, DeviceEvent):
            raise InvalidArgumentTypeError(
                f"a device stream can only wait on a DeviceEvent; got {type(event).__name__}."
            )
        if event.recorded:
            self.native.wait_event(event.native)

    def query(self) -> bool:
        return bool(self.native.query())

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        with self._mod.stream(self.native):
            fn(*args, **kwargs)

    def _on_enter(self) -> None:
        ctx = self._mod.stream(self.native)
        ctx.__enter__()
        self._contexts.append(ctx)

    def _on_exit(self) -> None:
        if self._contexts:
            self._contexts.pop().__exit__(None, None, None)


class TorchGraph(Graph):
    """A captured accelerator graph (``torch.cuda.CUDAGraph``, ``torch_npu.npu.NPUGraph``)."""

    def __init__(self, native: Any) -> None:
        self.native = native

    def replay(self) -> None:
        self.native.replay()

    def reset(self) -> None:
        self.native.reset()
