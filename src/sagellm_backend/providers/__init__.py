"""Built-in providers at their import paths (the classes live in :mod:`sagellm_backend.vendors`).
Importing any of them never imports torch or a vendor SDK."""

from __future__ import annotations

from .ascend import AscendBackendProvider, create_ascend_backend
from .config import Availability, ProviderConfig, provider_factory
from .cpu import CPUBackendProvider, create_cpu_backend
from .cuda import CUDABackendProvider, create_cuda_backend
from .kunlun import KunlunBackendProvider, create_kunlun_backend
from .mock import MockBackendProvider, create_mock_backend, create_mock_world
from .musa import MusaBackendProvider, create_musa_backend
from .rocm import RocmBackendProvider, create_rocm_backend

__all__ = [
    "AscendBackendProvider",
    "Availability",
    "CPUBackendProvider",
    "CUDABackendProvider",
    "KunlunBackendProvider",
    "MockBackendProvider",
    "MusaBackendProvider",
    "ProviderConfig",
    "RocmBackendProvider",
    "create_ascend_backend",
    "create_cpu_backend",
    "create_cuda_backend",
    "create_kunlun_backend",
    "create_mock_backend",
    "create_mock_world",
    "create_musa_backend",
    "create_rocm_backend",
    "provider_factory",
]
