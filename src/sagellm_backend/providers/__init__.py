"""Built-in providers at their import paths (the classes live in :mod:`sagellm_backend.vendors`).
Importing any of them never imports torch or a vendor SDK."""

from __future__ import annotations

from .ascend import AscendBackendProvider, create_ascend_backend
from .config import Availability, ProviderConfig, provider_factory
from .cpu import CPUBackendProvider, create_cpu_backend
from .cuda import CUDABackendProvider, create_cuda_backend
from .kunlun import KunlunBackendProvider, create_kunlun_backend
from .mock import MockBackendProvider, create_mock_backend, create_mock_world

__all__ = [
    "AscendBackendProvider",
    "Availability",
    "CPUBackendProvider",
    "CUDABackendProvider",
    "KunlunBackendProvider",
    "MockBackendProvider",
    "ProviderConfig",
    "create_ascend_backend",
    "create_cpu_backend",
    "create_cuda_backend",
    "create_kunlun_backend",
    "create_mock_backend",
    "create_mock_world",
    "provider_factory",
]
