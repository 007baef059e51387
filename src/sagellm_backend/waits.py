"""Bounded waits for streams and events: the ``timeout`` argument, deadlines, polling, the error."""

from __future__ import annotations

import time
from collections.abc import Callable

from .core.validate import check_timeout
from .errors import StreamTimeoutError

__all__ = ["Deadline", "poll_until"]

_FIRST_SLEEP_S = 50e-6
_MAX_SLEEP_S = 1e-3


class Deadline:
    """A validated ``timeout`` and the moment it expires.

    Args:
        timeout: Seconds (finite, > 0), or ``None`` for no limit.

    Raises:
        InvalidArgumentTypeError: ``timeout`` is not a number (``bool`` and ``str`` included).
        InvalidArgumentError: ``timeout`` is nan, infinite, zero or negative.
    """

    __slots__ = ("end", "timeout")

    def __init__(self, timeout: object) -> None:
        self.timeout: float | None = None if timeout is None else check_timeout("timeout", timeout)
        self.end: float | None = None if self.timeout is None else time.monotonic() + self.timeout

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` without a limit."""
        return None if self.end is None else max(0.0, self.end - time.monotonic())

    def expired(self, what: str) -> StreamTimeoutError:
        """The error for a wait on ``what`` that ran out of time.

        Args:
            what: The thing waited for ("stream 3 on cpu", "event" ...).

        Returns:
            The error to raise.
        """
        return StreamTimeoutError(
            f"{what} did not finish within timeout={self.timeout:g}s; the work is still queued. "
            "Wait again (with a longer timeout) or find what the stream is blocked on.",
            timeout=self.timeout,
        )


def poll_until(done: Callable[[], bool], deadline: Deadline, what: str) -> None:
    """Poll ``done()`` with short sleeps (50 us growing to 1 ms) until it is true or time runs out.

    Args:
        done: A non-blocking completion check (``native.query``).
        deadline: The deadline (must have a limit).
        what: For the timeout message.

    Raises:
        StreamTimeoutError: ``done()`` stayed false until the deadline.
    """
    sleep = _FIRST_SLEEP_S
    while not done():
        left = deadline.remaining()
        if left is not None and left <= 0.0:
            raise deadline.expired(what)
        time.sleep(sleep if left is None else min(sleep, left))
        sleep = min(2 * sleep, _MAX_SLEEP_S)
