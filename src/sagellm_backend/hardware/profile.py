"""Hardware profiles: how far up the stack one kind of hardware works on this machine.

Levels, lowest first (each needs the ones below it):

``unavailable`` < ``physical`` (devices present) < ``driver`` (kernel driver loaded) <
``framework`` (torch build / vendor extension installed) < ``runtime_env`` (environment set up,
nothing hides the devices) < ``functional`` (torch saw the devices; only when asked for).

A profile is *usable* from ``framework`` up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from ..core.validate import check_count
from ..errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["PROFILE_FORMAT_VERSION", "DetectionLevel", "HardwareProfile", "LayerResult", "utc_timestamp"]

PROFILE_FORMAT_VERSION = "1.0"
"""Format version of profiles and of the cache file."""


def utc_timestamp() -> str:
    """Now in UTC as ISO 8601 with a ``Z`` suffix, e.g. ``2026-05-01T12:00:00Z``.

    Returns:
        The timestamp.
    """
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class DetectionLevel(Enum):
    """How far detection got. Ordered: ``DetectionLevel.DRIVER < DetectionLevel.FRAMEWORK``."""

    UNAVAILABLE = "unavailable"
    PHYSICAL = "physical"
    DRIVER = "driver"
    FRAMEWORK = "framework"
    RUNTIME_ENV = "runtime_env"
    FUNCTIONAL = "functional"

    @property
    def rank(self) -> int:
        """Position in the order, 0 for ``unavailable``."""
        return _RANKS[self]

    @classmethod
    def parse(cls, value: object) -> DetectionLevel:
        """Accept a level or its string value (case-insensitive).

        Args:
            value: A :class:`DetectionLevel` or one of its values.

        Returns:
            The level.

        Raises:
            InvalidArgumentTypeError: Neither a level nor a string.
            InvalidArgumentError: An unknown string.
        """
        if isinstance(value, DetectionLevel):
            return value
        if not isinstance(value, str):
            raise InvalidArgumentTypeError(f"a detection level must be a string; got {type(value).__name__}.")
        try:
            return cls(value.strip().lower())
        except ValueError:
            known = ", ".join(level.value for level in cls)
            raise InvalidArgumentError(f"unknown detection level {value!r}; expected one of: {known}.") from None

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, DetectionLevel):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, DetectionLevel):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, DetectionLevel):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, DetectionLevel):
            return NotImplemented
        return self.rank >= other.rank


_RANKS = {level: i for i, level in enumerate(DetectionLevel)}


def _opt_str(owner: str, key: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidArgumentTypeError(f"{owner}.{key} must be a string or null; got {type(value).__name__}.")


@dataclass
class LayerResult:
    """Outcome of one detection layer.

    Attributes:
        available: Whether the layer's check passed.
        message: What was found (or not), in one line.
        details: JSON-ready facts (paths, versions, counts).
        suggestions: What to do next, most useful first.
    """

    available: bool
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    suggestions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict.

        Returns:
            ``{"available", "message", "details", "suggestions"}``.
        """
        return {
            "available": self.available,
            "message": self.message,
            "details": dict(self.details),
            "suggestions": list(self.suggestions),
        }

    @classmethod
    def from_dict(cls, data: object, *, name: str = "LayerResult") -> LayerResult:
        """Build from :meth:`to_dict` output; missing keys get defaults, unknown keys are ignored.

        Args:
            data: The mapping.
            name: Field name for messages.

        Returns:
            The layer result.

        Raises:
            InvalidArgumentTypeError: ``data`` or one of its values has the wrong type.
        """
        if not isinstance(data, Mapping):
            raise InvalidArgumentTypeError(f"{name} must be a mapping; got {type(data).__name__}.")
        available = data.get("available", False)
        message = data.get("message", "")
        details = data.get("details", {})
        suggestions = data.get("suggestions", [])
        if not isinstance(available, bool):
            raise InvalidArgumentTypeError(f"{name}.available must be a bool; got {type(available).__name__}.")
        if not isinstance(message, str):
            raise InvalidArgumentTypeError(f"{name}.message must be a string; got {type(message).__name__}.")
        if not isinstance(details, Mapping):
            raise InvalidArgumentTypeError(f"{name}.details must be a mapping; got {type(details).__name__}.")
        if not isinstance(suggestions, list) or not all(isinstance(s, str) for s in suggestions):
            raise InvalidArgumentTypeError(f"{name}.suggestions must be a list of strings; got {suggestions!r}.")
        return cls(available, message, dict(details), list(suggestions))


_REQUIRED_LAYERS = ("l0_physical", "l1_driver", "l2_framework")
_OPTIONAL_LAYERS = ("l1_5_management_tools", "l2_5_runtime_env", "l3_functional")


@dataclass
class HardwareProfile:
    """What one inspector found for one kind of hardware.

    Attributes:
        hardware_type: ``cpu``, ``cuda``, ``rocm``, ``ascend``, ``kunlun`` or ``musa``.
        max_level: Highest level whose layer and all layers below it passed.
        l0_physical: Devices present (device nodes, PCI functions).
        l1_driver: Kernel driver / driver package present.
        l2_framework: torch build and vendor extension installed.
        l1_5_management_tools: Management tools found (``nvidia-smi``, ``npu-smi`` ...); informational.
        l2_5_runtime_env: Toolkit environment and device-visibility variables; ``None`` when not checked.
        l3_functional: torch's own view of the devices; ``None`` unless functional checks were asked for.
        detected_at: UTC timestamp (``...Z``).
        version: Profile format version.
        device_count: Devices found (torch's count when the functional check ran).
        device_names: Their names, when known.
        driver_version: Kernel driver version, when known.
        framework_version: E.g. ``"torch 2.5.1+cu124"``, when known.
    """

    hardware_type: str
    max_level: DetectionLevel
    l0_physical: LayerResult
    l1_driver: LayerResult
    l2_framework: LayerResult
    l1_5_management_tools: LayerResult | None = None
    l2_5_runtime_env: LayerResult | None = None
    l3_functional: LayerResult | None = None
    detected_at: str = field(default_factory=utc_timestamp)
    version: str = PROFILE_FORMAT_VERSION
    device_count: int = 0
    device_names: list[str] = field(default_factory=list)
    driver_version: str | None = None
    framework_version: str | None = None

    def is_usable(self) -> bool:
        """Whether the engine can run on this hardware (``framework`` level or higher).

        Returns:
            True from ``framework`` up.
        """
        return self.max_level >= DetectionLevel.FRAMEWORK

    @classmethod
    def unavailable(cls, hardware_type: str, message: str, suggestions: list[str] | None = None) -> HardwareProfile:
        """A profile for hardware that could not be inspected at all.

        Args:
            hardware_type: The hardware name.
            message: Why.
            suggestions: What to do.

        Returns:
            A profile at ``unavailable`` whose three layers carry ``message``.
        """

        def layer() -> LayerResult:
            return LayerResult(False, message, {}, list(suggestions or []))

        return cls(hardware_type, DetectionLevel.UNAVAILABLE, layer(), layer(), layer())

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (``max_level`` as its string value).

        Returns:
            The profile as a dict.
        """
        out: dict[str, Any] = {"hardware_type": self.hardware_type, "max_level": self.max_level.value}
        for key in _REQUIRED_LAYERS + _OPTIONAL_LAYERS:
            layer: LayerResult | None = getattr(self, key)
            out[key] = None if layer is None else layer.to_dict()
        out.update(
            detected_at=self.detected_at,
            version=self.version,
            device_count=self.device_count,
            device_names=list(self.device_names),
            driver_version=self.driver_version,
            framework_version=self.framework_version,
        )
        return out

    @classmethod
    def from_dict(cls, data: object) -> HardwareProfile:
        """Build from :meth:`to_dict` output.

        Tolerant: unknown keys are ignored; a missing layer becomes an unavailable "not recorded"
        layer; missing counts, names and versions get their defaults. Validating: present values of
        the wrong type or an unknown ``max_level`` raise.

        Args:
            data: The mapping.

        Returns:
            The profile.

        Raises:
            InvalidArgumentTypeError: A value has the wrong type.
            InvalidArgumentError: ``hardware_type`` is empty, ``max_level`` unknown, or
                ``device_count`` negative.
        """
        if not isinstance(data, Mapping):
            raise InvalidArgumentTypeError(f"a hardware profile must be a mapping; got {type(data).__name__}.")
        hw = data.get("hardware_type")
        if not isinstance(hw, str) or not hw.strip():
            raise InvalidArgumentError(f"HardwareProfile.hardware_type must be a non-empty string; got {hw!r}.")
        level = DetectionLevel.parse(data.get("max_level", DetectionLevel.UNAVAILABLE.value))
        layers: dict[str, LayerResult | None] = {}
        for key in _REQUIRED_LAYERS:
            raw = data.get(key)
            layers[key] = LayerResult(False, "not recorded") if raw is None else LayerResult.from_dict(raw, name=key)
        for key in _OPTIONAL_LAYERS:
            raw = data.get(key)
            layers[key] = None if raw is None else LayerResult.from_dict(raw, name=key)
        count = check_count("HardwareProfile.device_count", data.get("device_count", 0), minimum=0)
        names = data.get("device_names", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidArgumentTypeError(f"HardwareProfile.device_names must be a list of strings; got {names!r}.")
        detected_at = _opt_str("HardwareProfile", "detected_at", data.get("detected_at")) or ""
        version = _opt_str("HardwareProfile", "version", data.get("version")) or PROFILE_FORMAT_VERSION
        l0, l1, l2 = (layers[k] for k in _REQUIRED_LAYERS)
        assert l0 is not None and l1 is not None and l2 is not None  # filled above
        return cls(
            hardware_type=hw.strip(),
            max_level=level,
            l0_physical=l0,
            l1_driver=l1,
            l2_framework=l2,
            l1_5_management_tools=layers["l1_5_management_tools"],
            l2_5_runtime_env=layers["l2_5_runtime_env"],
            l3_functional=layers["l3_functional"],
            detected_at=detected_at,
            version=version,
            device_count=count,
            device_names=list(names),
            driver_version=_opt_str("HardwareProfile", "driver_version", data.get("driver_version")),
            framework_version=_opt_str("HardwareProfile", "framework_version", data.get("framework_version")),
        )
