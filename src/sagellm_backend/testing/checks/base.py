"""The frame of the conformance kit: the registry of checks, how one runs, and how a check
expects a typed error (the helpers that act on a provider are in :mod:`.support`).

A check takes a zero-argument factory returning a fresh provider, exercises one behaviour of the
contract (:class:`~sagellm_backend.api.BackendProvider`), and raises ``AssertionError`` when the
provider misbehaves or :class:`CheckSkipped` (with what is required and what was found) when the
check does not apply. Data checks use random bytes, never zeros, and poison destinations first.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...api import BackendProvider
from ...errors import BackendError
from ...protocol import ErrorCode

__all__ = [
    "AREAS",
    "CHECKS",
    "Check",
    "CheckSkipped",
    "Factory",
    "check",
    "closing",
    "expect",
    "provider_check",
    "run_check",
]

Factory = Callable[[], BackendProvider]

#: The areas, in the order their checks run (each is a module of this package).
AREAS = ("identity", "blocks", "misuse", "streams", "pools", "comm")


class CheckSkipped(Exception):
    """The check does not apply to this provider; the message says what it needs and found."""


@dataclass(frozen=True)
class Check:
    """One conformance check.

    Attributes:
        name: Its name (the function's, without ``check_``).
        fn: The check.
        doc: First line of its docstring.
        area: The module of this package it lives in (one of :data:`AREAS`).
    """

    name: str
    fn: Callable[[Factory], None]
    doc: str
    area: str = ""


CHECKS: list[Check] = []


def check(fn: Callable[[Factory], None]) -> Callable[[Factory], None]:
    """Register a conformance check (the function's docstring is its description).

    Args:
        fn: The check.

    Returns:
        ``fn`` unchanged.
    """
    doc = (fn.__doc__ or "").strip().split("\n")[0]
    CHECKS.append(Check(fn.__name__.removeprefix("check_"), fn, doc, fn.__module__.rpartition(".")[2]))
    return fn


def closing(fn: Callable[[BackendProvider], None]) -> Callable[[Factory], None]:
    """Turn a check of one provider into a check of a factory that closes the provider after.

    Args:
        fn: Check taking a provider.

    Returns:
        Check taking a factory.
    """

    @functools.wraps(fn)
    def run(make: Factory) -> None:
        p = make()
        try:
            fn(p)
        finally:
            p.close()

    return run


def provider_check(fn: Callable[[BackendProvider], None]) -> Callable[[Factory], None]:
    """Register a check of one fresh provider, closed after it: :func:`check` of :func:`closing`.

    Args:
        fn: Check taking a provider.

    Returns:
        The registered check taking a factory.
    """
    return check(closing(fn))


def run_check(c: Check, make: Factory) -> tuple[str, str, float]:
    """Run one check.

    Args:
        c: The check.
        make: Provider factory.

    Returns:
        ``(status, detail, seconds)`` with status ``pass``, ``fail`` or ``skip``.
    """
    t0 = time.perf_counter()
    try:
        c.fn(make)
    except CheckSkipped as exc:
        return "skip", str(exc), time.perf_counter() - t0
    except Exception as exc:
        return "fail", f"{type(exc).__name__}: {exc}", time.perf_counter() - t0
    return "pass", "", time.perf_counter() - t0


def expect(
    exc_types: type[BaseException] | tuple[type[BaseException], ...], fn: Callable[[], Any], what: str
) -> BaseException:
    """Call ``fn`` and require one of ``exc_types``; a :class:`BackendError` must carry a protocol
    code and a message long enough to say what was wrong, what was found and how to fix it.

    Args:
        exc_types: Accepted exception types.
        fn: The call.
        what: Description for the failure message.

    Returns:
        The exception raised.

    Raises:
        AssertionError: nothing, or something else, was raised.
    """
    try:
        fn()
    except exc_types as exc:
        if isinstance(exc, BackendError):
            assert isinstance(exc.code, ErrorCode), f"{what}: error without a protocol code"
            assert len(str(exc)) > 20, f"{what}: message too short to say what/found/fix: {exc}"
        return exc
    except BaseException as exc:
        raise AssertionError(f"{what}: expected {exc_types}, got {type(exc).__name__}: {exc}") from exc
    raise AssertionError(f"{what}: expected {exc_types}, nothing was raised")
