"""The seed release's module path of the Ascend provider, with its names."""

from __future__ import annotations

from typing import Any

from ..vendors.ascend import AscendBackendProvider, create_ascend_backend
from ._seed_compat import seed_kwargs

__all__ = [
    "AscendBackendProvider",
    "PyTorchAscendBackendProvider",
    "create_ascend_backend",
    "create_pytorch_ascend_backend",
]


class PyTorchAscendBackendProvider(AscendBackendProvider):
    """:class:`AscendBackendProvider` under its seed name; also takes ``device="npu:N"``.

    Args:
        device_id: NPU ordinal.
        device: Or the device (``"npu:1"``).
        **options: ``kv_geometry``, ``max_memory_bytes``.
    """

    def __init__(self, device_id: int | None = None, *, device: object = None, **options: Any) -> None:
        super().__init__(**seed_kwargs("npu", device_id, device, options))


create_pytorch_ascend_backend = create_ascend_backend
