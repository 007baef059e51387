"""The CUDA provider (defined in :mod:`sagellm_backend.vendors.cuda`)."""

from ..vendors.cuda import CUDA, CUDABackendProvider, create_cuda_backend, detect_cuda

__all__ = ["CUDA", "CUDABackendProvider", "create_cuda_backend", "detect_cuda"]
