"""Hardware profiles for engine auto-detection: which accelerators this machine has, and how far up
the stack (device, driver, framework, environment, working) each one works.

::

    from sagellm_backend.hardware import ProfileCache, get_inspector, list_supported_hardware

    cache = ProfileCache()                        # ~/.sagellm/hardware_profile.json
    for hw in list_supported_hardware():          # cpu, cuda, rocm, ascend, kunlun, musa
        cache.update(hw, get_inspector(hw).get_profile(include_functional=False))
    profiles = cache.load()                       # stored names, plus the umbrella CLI's (haiguang -> rocm)
    usable = sorted({p.hardware_type for p in profiles.values() if p.is_usable()})

Inspection without ``include_functional`` imports neither torch nor a vendor SDK and never raises.
"""

from __future__ import annotations

from .cache import UMBRELLA_NAMES, ProfileCache, default_cache_path
from .inspectors import ALIASES, HardwareInspector, detect_profiles, get_inspector, list_supported_hardware
from .profile import DetectionLevel, HardwareProfile, LayerResult
from .system import SystemView, TorchBuild

__all__ = [
    "ALIASES",
    "UMBRELLA_NAMES",
    "DetectionLevel",
    "HardwareInspector",
    "HardwareProfile",
    "LayerResult",
    "ProfileCache",
    "SystemView",
    "TorchBuild",
    "default_cache_path",
    "detect_profiles",
    "get_inspector",
    "list_supported_hardware",
]
