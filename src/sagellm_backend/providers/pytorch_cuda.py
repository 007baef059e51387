"""The seed release's module path of the CUDA provider, with its names."""

from __future__ import annotations

from typing import Any

from ..vendors.cuda import CUDABackendProvider, create_cuda_backend
from ._seed_compat import seed_kwargs

__all__ = ["CUDABackendProvider", "PyTorchCUDABackendProvider", "create_cuda_backend", "create_pytorch_cuda_backend"]


class PyTorchCUDABackendProvider(CUDABackendProvider):
    """:class:`CUDABackendProvider` under its seed name; also takes ``device="cuda:N"``.

    Args:
        device_id: GPU ordinal.
        device: Or the device (``"cuda:1"``, a ``torch.device``).
        **options: ``kv_geometry``, ``max_memory_bytes``.
    """

    def __init__(self, device_id: int | None = None, *, device: object = None, **options: Any) -> None:
        super().__init__(**seed_kwargs("cuda", device_id, device, options))


create_pytorch_cuda_backend = create_cuda_backend
