"""What entry-point factories receive, and how they describe themselves to the registry.

The engine layer calls a factory with ONE positional argument: a config object with attributes
``kind``, ``device`` and ``device_ids`` (a pydantic model). Factories must also work with no
argument, with ``None``, and with a plain dict of the same keys. :class:`ProviderConfig`
normalises all of these; keys other than the three become constructor options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from ..device import normalize_device
from ..errors import InvalidArgumentError, InvalidArgumentTypeError
from .validate import exact_int

__all__ = ["Availability", "ProviderConfig", "ProviderFactory", "provider_factory"]


@dataclass(frozen=True)
class Availability:
    """Whether a provider can run here, and why (not).

    Attributes:
        available: True when the provider can be created.
        reason: One line: what was found ("torch.cuda.is_available() is False").
        device_count: Devices found, when known.
    """

    available: bool
    reason: str
    device_count: int | None = None

    @classmethod
    def coerce(cls, value: object) -> Availability:
        """Accept an :class:`Availability`, a ``(bool, reason)`` pair, or a bool.

        Args:
            value: What a detection hook returned.

        Returns:
            An :class:`Availability`.
        """
        if isinstance(value, Availability):
            return value
        if isinstance(value, tuple) and len(value) == 2:
            return cls(bool(value[0]), str(value[1]))
        if isinstance(value, bool):
            return cls(value, "available" if value else "unavailable (no reason given)")
        raise InvalidArgumentTypeError(
            f"a detect() hook must return Availability, (bool, reason) or bool; got {value!r}."
        )


class ProviderFactory(Protocol):
    """A callable building a provider, optionally carrying ``detect`` and ``priority``."""

    def __call__(self, config: object = None, /, **options: Any) -> Any: ...


_F = TypeVar("_F", bound=Callable[..., Any])


def provider_factory(*, detect: Callable[[], object] | None = None, priority: int | None = None) -> Callable[[_F], _F]:
    """Mark a factory with a side-effect-free detection hook and an ``auto`` priority.

    Args:
        detect: Returns :class:`Availability` (or ``(bool, reason)``); must not initialise devices.
        priority: Rank for ``get_provider("auto")`` (higher first); ``None`` keeps it out of auto.

    Returns:
        A decorator that sets ``factory.detect`` and ``factory.priority``.
    """

    def mark(fn: _F) -> _F:
        target = cast(Any, fn)
        target.detect = detect
        target.priority = priority
        return fn

    return mark


@dataclass
class ProviderConfig:
    """Normalised factory configuration.

    Attributes:
        kind: Provider name the caller asked for (informational).
        device: Device string, ``torch.device`` or ordinal, if given.
        device_ids: Device ordinals, if given.
        options: Every other key, passed to the provider's constructor.
    """

    kind: str | None = None
    device: object = None
    device_ids: list[int] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_any(cls, config: object = None, **options: Any) -> ProviderConfig:
        """Build from ``None``, a mapping, or an object with ``kind``/``device``/``device_ids``.

        A mapping's other keys become constructor options; an object's other attributes are
        ignored (they belong to the engine).

        Args:
            config: The engine's config object (or nothing).
            **options: Keyword options; they win over the config's extra keys.

        Returns:
            The normalised config.

        Raises:
            InvalidArgumentTypeError: ``config`` is of an unusable type (e.g. a str or int).
        """
        if config is None:
            raw: dict[str, Any] = {}
        elif isinstance(config, Mapping):
            raw = dict(config)
        elif any(hasattr(config, a) for a in ("kind", "device", "device_ids")):
            # A config object (the engine's pydantic model): read the three attributes only;
            # its other fields belong to the engine, not to the provider.
            raw = {a: getattr(config, a) for a in ("kind", "device", "device_ids") if hasattr(config, a)}
        else:
            raise InvalidArgumentTypeError(
                f"provider config must be None, a dict, or an object with kind/device/device_ids; "
                f"got {type(config).__name__} {config!r}."
            )
        kind = raw.pop("kind", None)
        device = raw.pop("device", None)
        device_ids = raw.pop("device_ids", None)
        raw.update(options)
        if device_ids is not None:
            if isinstance(device_ids, (str, bytes)) or not hasattr(device_ids, "__iter__"):
                raise InvalidArgumentTypeError(f"device_ids must be a list of ints; got {device_ids!r}.")
            given = list(device_ids)
            ids = [exact_int(i) for i in given]
            if any(i is None or i < 0 for i in ids):
                raise InvalidArgumentError(f"device_ids must be non-negative ints; got {given!r}.")
            device_ids = ids
        return cls(kind=None if kind is None else str(kind), device=device, device_ids=device_ids, options=raw)

    def device_index(self, device_type: str) -> int | None:
        """The ordinal for a provider of ``device_type``: from ``device`` or ``device_ids[0]``.

        Args:
            device_type: The provider's device type.

        Returns:
            The ordinal, or ``None`` when neither was given.

        Raises:
            InvalidArgumentError: ``device`` names another device type.
        """
        if self.device is not None:
            dev = normalize_device(self.device, default_type=device_type)
            if dev.type != device_type:
                raise InvalidArgumentError(
                    f"this provider runs on {device_type} devices but the config asks for "
                    f"device {self.device!r}; pass a {device_type} device or pick the provider "
                    f"for {dev.type}.",
                )
            if dev.index is not None:
                return dev.index
        if self.device_ids:
            return self.device_ids[0]
        return None
