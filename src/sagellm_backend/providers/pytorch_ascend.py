"""The seed release's module path of the Ascend provider, with its names (see :mod:`sagellm_backend.compat`)."""

from ..compat import PyTorchAscendBackendProvider, create_pytorch_ascend_backend
from ..vendors.ascend import AscendBackendProvider, create_ascend_backend

__all__ = [
    "AscendBackendProvider",
    "PyTorchAscendBackendProvider",
    "create_ascend_backend",
    "create_pytorch_ascend_backend",
]
