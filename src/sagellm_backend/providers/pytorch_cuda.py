"""The seed release's module path of the CUDA provider, with its names (see :mod:`sagellm_backend.compat`)."""

from ..compat import PyTorchCUDABackendProvider, create_pytorch_cuda_backend
from ..vendors.cuda import CUDABackendProvider, create_cuda_backend

__all__ = ["CUDABackendProvider", "PyTorchCUDABackendProvider", "create_cuda_backend", "create_pytorch_cuda_backend"]
