"""Hardware inspectors: one per kind of hardware, looked up by name (aliases accepted).

``get_inspector(hw).get_profile(include_functional=False)`` never raises, whatever the machine.
"""

from __future__ import annotations

from collections.abc import Callable

from ...errors import InvalidArgumentTypeError, ProviderNotFoundError
from ...vendors import BUILTIN_VENDORS, load_vendor
from ..profile import HardwareProfile
from ..system import SystemView
from .base import AcceleratorInspector, HardwareInspector
from .cpu import CpuInspector
from .vendors import ASCEND, CUDA, KUNLUN, MUSA, ROCM, CudaInspector, RocmInspector

__all__ = [
    "ALIASES",
    "HardwareInspector",
    "detect_profiles",
    "get_inspector",
    "list_supported_hardware",
    "resolve_hardware_name",
]

_INSPECTORS: dict[str, Callable[[SystemView | None], HardwareInspector]] = {
    "cpu": CpuInspector,
    "cuda": lambda system: CudaInspector(CUDA, system),
    "rocm": lambda system: RocmInspector(ROCM, system),
    "ascend": lambda system: AcceleratorInspector(ASCEND, system),
    "kunlun": lambda system: AcceleratorInspector(KUNLUN, system),
    "musa": lambda system: AcceleratorInspector(MUSA, system),
}

#: The vendors of :data:`~sagellm_backend.vendors.BUILTIN_VENDORS` with hardware to inspect, the host first.
_FACTORIES = {n: _INSPECTORS[n] for n in ("cpu", *BUILTIN_VENDORS) if n in _INSPECTORS}


def _vendor_aliases() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in _FACTORIES:
        spec = load_vendor(name)
        for alias in (*spec.aliases, *spec.hardware_aliases):
            out[alias] = name
    return out


ALIASES: dict[str, str] = _vendor_aliases()
"""Other names accepted by :func:`get_inspector`: each vendor spec's ``aliases`` and
``hardware_aliases``. ``muxi`` (MetaX) is a different vendor: not an alias."""


def list_supported_hardware() -> list[str]:
    """Canonical names of the hardware that has an inspector.

    Returns:
        ``["cpu", "cuda", "rocm", "ascend", "kunlun", "musa"]``.
    """
    return list(_FACTORIES)


def resolve_hardware_name(hw: object) -> str:
    """Canonical name for ``hw`` (case and surrounding spaces ignored, aliases resolved).

    Args:
        hw: A canonical name or an alias.

    Returns:
        The canonical name.

    Raises:
        InvalidArgumentTypeError: ``hw`` is not a string.
        ProviderNotFoundError: Unknown name (the message lists the known ones).
    """
    if not isinstance(hw, str):
        raise InvalidArgumentTypeError(f"hardware name must be a string; got {type(hw).__name__} {hw!r}.")
    key = hw.strip().lower()
    key = ALIASES.get(key, key)
    if key not in _FACTORIES:
        aliases = ", ".join(f"{a}->{c}" for a, c in sorted(ALIASES.items()))
        raise ProviderNotFoundError(
            f"no hardware inspector for {hw!r}; known: {', '.join(_FACTORIES)} (aliases: {aliases}).",
            requested=hw,
        )
    return key


def get_inspector(hw: str, *, system: SystemView | None = None) -> HardwareInspector:
    """The inspector for one kind of hardware.

    Args:
        hw: ``cpu``, ``cuda``, ``rocm``, ``ascend``, ``kunlun``, ``musa`` or an alias from :data:`ALIASES`.
        system: Machine view (tests pass a fake one); the real machine by default.

    Returns:
        A new inspector.

    Raises:
        InvalidArgumentTypeError: ``hw`` is not a string.
        ProviderNotFoundError: Unknown name.
    """
    return _FACTORIES[resolve_hardware_name(hw)](system)


def detect_profiles(
    include_functional: bool = False, *, system: SystemView | None = None
) -> dict[str, HardwareProfile]:
    """Profiles of every supported kind of hardware; never raises.

    Args:
        include_functional: Also run the functional checks (imports torch and vendor extensions).
        system: Machine view; the real machine by default.

    Returns:
        ``{name: profile}`` in :func:`list_supported_hardware` order. An inspector that raised
        yields an ``unavailable`` profile whose messages carry the error.
    """
    profiles: dict[str, HardwareProfile] = {}
    for hw in list_supported_hardware():
        try:
            profiles[hw] = get_inspector(hw, system=system).get_profile(include_functional=include_functional)
        except Exception as exc:  # one broken inspector must not hide the others
            profiles[hw] = HardwareProfile.unavailable(
                hw, f"inspection failed: {type(exc).__name__}: {exc}", ["Report this error."]
            )
    return profiles
