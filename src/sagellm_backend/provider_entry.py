"""One registered provider (:class:`ProviderEntry`), and reading the ``sagellm.backends`` entry
points without trusting them.

A third-party plugin is foreign code: its module may raise anything at import, its entry point may
be malformed, the entry point object itself may raise, its distribution's ``entry_points.txt`` may
not parse. None of that may break listing or ``auto`` for everyone else: each problem becomes an
entry that is listed as unavailable, with the error type and message as its reason.

What is caught is ``Exception`` and ``SystemExit`` (a plugin calling ``sys.exit()`` at import is a
plugin bug, not a request to stop this process). ``KeyboardInterrupt`` and the other
``BaseException`` subclasses always propagate.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from .core.config import Availability
from .core.validate import exact_int
from .errors import InvalidArgumentError, InvalidArgumentTypeError, UnavailableError

__all__ = [
    "PLUGIN_ERRORS",
    "ProviderEntry",
    "RawEntryPoint",
    "check_provider_name",
    "describe",
    "parse_target",
    "read_entry_points",
]

PLUGIN_ERRORS: tuple[type[BaseException], ...] = (Exception, SystemExit)
"""What foreign plugin code may raise and be reported for (never ``KeyboardInterrupt``)."""

_EXTRAS = re.compile(r"\s*\[[^\]]*\]\s*$")


def describe(exc: BaseException, limit: int = 300) -> str:
    """``"Type: message"`` on one line, shortened to ``limit`` characters.

    Args:
        exc: The exception.
        limit: Longest message kept.

    Returns:
        The description.
    """
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_provider_name(what: str, value: object) -> str:
    """Normalise a provider name or alias: a non-empty string other than ``auto``, lower case.

    Args:
        what: Argument name for the message.
        value: What the caller passed.

    Returns:
        The stripped, lower-case name.

    Raises:
        InvalidArgumentTypeError: not a string.
        InvalidArgumentError: empty, or ``"auto"``.
    """
    if not isinstance(value, str):
        raise InvalidArgumentTypeError(
            f"{what} must be a string; got {type(value).__name__} {value!r}. Pass a name such as 'my-board'."
        )
    key = value.strip().lower()
    if not key:
        raise InvalidArgumentError(f"{what} must be a non-empty string; got {value!r}.")
    if key == "auto":
        raise InvalidArgumentError(f"{what} cannot be 'auto': it is reserved for automatic selection.")
    return key


def parse_target(value: object) -> tuple[str, str]:
    """Split a ``"pkg.module:attr.path"`` factory target (trailing ``[extras]`` are ignored).

    Args:
        value: The target.

    Returns:
        ``(module, attribute path)``.

    Raises:
        InvalidArgumentTypeError: not a string.
        InvalidArgumentError: not of the form ``module:attribute`` with dotted identifiers.
    """
    if not isinstance(value, str):
        raise InvalidArgumentTypeError(f"a factory target must be a 'module:attribute' string; got {value!r}.")
    module, colon, attr = _EXTRAS.sub("", value).partition(":")
    module, attr = module.strip(), attr.strip()
    ok = bool(colon) and all(p.isidentifier() for part in (module, attr) for p in part.split("."))
    if not ok:
        raise InvalidArgumentError(
            f"{value!r} is not a 'module:attribute' factory path (dotted identifiers on both sides of "
            "one ':', e.g. 'acme_backend.provider:create')."
        )
    return module, attr


@dataclass
class ProviderEntry:
    """One registered provider.

    Attributes:
        name: Canonical name (lower case).
        target: ``"module:attribute"`` of the factory, or ``None`` for an object registered at run time.
        source: ``"builtin"``, the distribution that declared the entry point, or ``"runtime"``.
        install_hint: What to install when it is unavailable.
        aliases: Other names resolving to this entry (lower case).
        notes: Problems found while registering (e.g. an ignored conflicting entry point).
        problem: Why the entry cannot be used at all (a malformed entry point), or ``None``.
    """

    name: str
    target: str | None
    source: str
    install_hint: str = ""
    aliases: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problem: str | None = None
    _factory: Callable[..., Any] | None = field(default=None, repr=False)
    _failure: str | None = field(default=None, repr=False)

    def _unavailable(self, reason: str) -> UnavailableError:
        return UnavailableError(reason, provider=self.name, source=self.source)

    def load(self) -> Callable[..., Any]:
        """Import and return the factory. The result, or the failure, is kept until
        :func:`~sagellm_backend.registry.refresh_providers`.

        Returns:
            The factory callable.

        Raises:
            UnavailableError: the entry is malformed, its module cannot be imported (whatever it
                raised), or the target is missing or not callable.
        """
        if self._factory is not None:
            return self._factory
        if self.problem is not None:
            raise self._unavailable(self.problem)
        if self._failure is None:
            try:
                self._factory = self._import()
                return self._factory
            except UnavailableError as exc:
                self._failure = str(exc)
        raise self._unavailable(self._failure)

    def _import(self) -> Callable[..., Any]:
        assert self.target is not None
        where = f"provider {self.name!r} ({self.target}, from {self.source})"
        try:
            module_name, attr = parse_target(self.target)
        except (InvalidArgumentError, InvalidArgumentTypeError) as exc:
            raise self._unavailable(f"{where} is malformed: {exc}") from None
        try:
            factory: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise self._unavailable(
                f"{where} cannot be imported: {describe(exc)}. "
                f"Install {self.install_hint or 'the distribution that provides it, with its dependencies'}."
            ) from None
        except PLUGIN_ERRORS as exc:
            raise self._unavailable(
                f"{where} failed while importing {module_name}: {describe(exc)}. Fix or uninstall {self.source}."
            ) from None
        for part in attr.split("."):
            try:
                factory = getattr(factory, part)
            except PLUGIN_ERRORS as exc:
                raise self._unavailable(f"{where}: reading {part!r} raised {describe(exc)}.") from None
        if not callable(factory):
            raise self._unavailable(
                f"{where}: {self.target} is not callable (it is {type(factory).__name__}); "
                "an entry point must name a factory function."
            )
        return factory  # type: ignore[no-any-return]  # checked callable just above

    @property
    def priority(self) -> int | None:
        """Rank in ``auto`` (``None``: never picked automatically, or not loadable)."""
        try:
            value = getattr(self.load(), "priority", None)
        except UnavailableError:
            return None
        except PLUGIN_ERRORS:  # a property of a foreign factory object
            return None
        return exact_int(value)

    def detect(self) -> Availability:
        """Run the factory's detection hook (no hook: assumed available).

        Returns:
            The availability and why; a broken entry or hook is unavailable, with the error.
        """
        try:
            factory = self.load()
        except UnavailableError as exc:
            return Availability(False, str(exc))
        try:
            hook = getattr(factory, "detect", None)
            if hook is None:
                return Availability(True, "no detection hook; assumed available")
            return Availability.coerce(hook())
        except PLUGIN_ERRORS as exc:  # a broken third-party hook must not break listing
            return Availability(False, f"detection raised {describe(exc)}")


@dataclass(frozen=True)
class RawEntryPoint:
    """What was read of one entry point: its name and value, or why they could not be read."""

    name: str
    value: str
    dist: str
    problem: str | None = None


def _dist_name(dist: Any) -> str:
    try:
        name = getattr(dist, "name", None) if dist is not None else None
    except PLUGIN_ERRORS:
        name = None
    return name if isinstance(name, str) and name else "unknown distribution"


def _read_one(ep: Any, index: int) -> RawEntryPoint:
    try:
        dist = _dist_name(getattr(ep, "dist", None))
    except PLUGIN_ERRORS:
        dist = "unknown distribution"
    try:
        name = ep.name
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgumentError(f"the entry point name {name!r} is not a non-empty string")
    except PLUGIN_ERRORS as exc:
        return RawEntryPoint(f"<unnamed entry point {index} of {dist}>", "", dist, describe(exc))
    try:
        value = ep.value
        if not isinstance(value, str):
            raise InvalidArgumentTypeError(f"the entry point value {value!r} is not a string")
    except PLUGIN_ERRORS as exc:
        return RawEntryPoint(name, "", dist, f"entry point {name!r} of {dist} is unreadable: {describe(exc)}")
    return RawEntryPoint(name, value, dist)


def _per_distribution(group: str) -> Iterator[Any]:
    """Entry points of ``group``, one distribution at a time, so one unparseable
    ``entry_points.txt`` costs only its own distribution (it yields a :class:`RawEntryPoint`)."""
    seen: set[str] = set()
    for dist in metadata.distributions():
        name = _dist_name(dist)
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:  # the first on sys.path wins, as in importlib.metadata.entry_points()
            continue
        seen.add(key)
        try:
            eps = [ep for ep in dist.entry_points if ep.group == group]
        except PLUGIN_ERRORS as exc:
            yield RawEntryPoint(
                f"<{name} entry points>",
                "",
                name,
                f"the entry_points.txt of {name} cannot be read: {describe(exc)}. Reinstall or uninstall {name}.",
            )
            continue
        yield from eps


def read_entry_points(group: str) -> list[RawEntryPoint]:
    """Every entry point of ``group``, read defensively.

    Args:
        group: The entry-point group.

    Returns:
        One :class:`RawEntryPoint` per entry point; those that could not be read carry a problem.
    """
    try:
        found: list[Any] = list(metadata.entry_points(group=group))
    except PLUGIN_ERRORS:
        try:
            found = list(_per_distribution(group))
        except PLUGIN_ERRORS as exc:
            found = [RawEntryPoint("<installed distributions>", "", "importlib.metadata", describe(exc))]
    return [ep if isinstance(ep, RawEntryPoint) else _read_one(ep, i) for i, ep in enumerate(found)]
