"""The ROCm provider (defined in :mod:`sagellm_backend.vendors.rocm`)."""

from ..vendors.rocm import ROCM, RocmBackendProvider, create_rocm_backend, detect_rocm

__all__ = ["ROCM", "RocmBackendProvider", "create_rocm_backend", "detect_rocm"]
