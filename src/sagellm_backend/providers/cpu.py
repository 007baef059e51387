"""The CPU provider (defined in :mod:`sagellm_backend.vendors.cpu`), at the seed release's path.

``CPUStream`` and ``CPUEvent`` are the seed's names of the host stream and event classes.
"""

from ..streams import HostEvent as CPUEvent
from ..streams import HostStream as CPUStream
from ..vendors.cpu import CPUBackendProvider, cpu_flags, cpu_model_name, create_cpu_backend, detect_cpu

__all__ = [
    "CPUBackendProvider",
    "CPUEvent",
    "CPUStream",
    "cpu_flags",
    "cpu_model_name",
    "create_cpu_backend",
    "detect_cpu",
]
