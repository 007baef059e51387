"""The seed release's module path of the CUDA provider, with its names."""

from ..vendors.cuda import CUDABackendProvider, create_cuda_backend

PyTorchCUDABackendProvider = CUDABackendProvider
create_pytorch_cuda_backend = create_cuda_backend

__all__ = ["CUDABackendProvider", "PyTorchCUDABackendProvider", "create_cuda_backend", "create_pytorch_cuda_backend"]
