"""The one compatibility module: what the seed release (isagellm-backend 0.2.x) offered that the
reorganised package keeps for it.

* :data:`DEPRECATED`: seed names at the package top level (``sagellm_backend.PyTorchCUDABackendProvider``
  ...), each the current object, served with a ``FutureWarning`` by the package's ``__getattr__``.
* The seed's accelerator classes, constructible with ``device="cuda:0"`` as the seed-era engine
  (isagellm-core 0.2.x) calls them: :class:`PyTorchCUDABackendProvider`,
  :class:`PyTorchAscendBackendProvider`.

The seed's module paths (``sagellm_backend.providers.<name>``, ``contract``, ``base``, ``capability``)
stay files of imports only (``providers.cpu`` names the host stream and event ``CPUStream`` and
``CPUEvent`` as it imports them): Python finds a submodule through a file, or through an import hook or a
``sys.modules`` entry installed at import time, which this package does not do.
"""

from __future__ import annotations

from typing import Any

from .device import normalize_device
from .errors import InvalidArgumentError
from .vendors.ascend import AscendBackendProvider, create_ascend_backend
from .vendors.cuda import CUDABackendProvider, create_cuda_backend

__all__ = [
    "DEPRECATED",
    "PyTorchAscendBackendProvider",
    "PyTorchCUDABackendProvider",
    "create_pytorch_ascend_backend",
    "create_pytorch_cuda_backend",
    "device_index",
    "seed_kwargs",
]

#: The seed's top-level names: ``name -> (current object, current name)``.
DEPRECATED: dict[str, tuple[Any, str]] = {
    "PyTorchCUDABackendProvider": (CUDABackendProvider, "CUDABackendProvider"),
    "create_pytorch_cuda_backend": (create_cuda_backend, "create_cuda_backend"),
    "PyTorchAscendBackendProvider": (AscendBackendProvider, "AscendBackendProvider"),
    "create_pytorch_ascend_backend": (create_ascend_backend, "create_ascend_backend"),
}


def device_index(device_type: str, device_id: int | None, device: object) -> int:
    """The ordinal from ``device_id`` or a ``device`` string/torch.device/int, not both.

    Args:
        device_type: The provider's device type.
        device_id: Ordinal, or ``None``.
        device: Device, or ``None``.

    Returns:
        The ordinal (default 0).
    """
    if device is None:
        return 0 if device_id is None else device_id
    dev = normalize_device(device, default_type=device_type)
    if dev.type != device_type:
        raise InvalidArgumentError(f"this provider runs on {device_type} devices; got device={device!r}.")
    index = dev.index or 0
    if device_id is not None and device_id != index:
        raise InvalidArgumentError(f"device_id={device_id} and device={device!r} disagree; pass one of them.")
    return index


def seed_kwargs(device_type: str, device_id: int | None, device: object, options: dict[str, Any]) -> dict[str, Any]:
    """Constructor keywords for the composed provider.

    Args:
        device_type: The provider's device type.
        device_id: Ordinal or ``None``.
        device: Device or ``None``.
        options: Other keywords.

    Returns:
        ``device_id`` plus ``options``.
    """
    return {"device_id": device_index(device_type, device_id, device), **options}


class PyTorchCUDABackendProvider(CUDABackendProvider):
    """:class:`CUDABackendProvider` under its seed name; also takes ``device="cuda:N"``.

    Args:
        device_id: GPU ordinal.
        device: Or the device (``"cuda:1"``, a ``torch.device``).
        **options: ``kv_geometry``, ``max_memory_bytes``.
    """

    def __init__(self, device_id: int | None = None, *, device: object = None, **options: Any) -> None:
        super().__init__(**seed_kwargs("cuda", device_id, device, options))


class PyTorchAscendBackendProvider(AscendBackendProvider):
    """:class:`AscendBackendProvider` under its seed name; also takes ``device="npu:N"``.

    Args:
        device_id: NPU ordinal.
        device: Or the device (``"npu:1"``).
        **options: ``kv_geometry``, ``max_memory_bytes``.
    """

    def __init__(self, device_id: int | None = None, *, device: object = None, **options: Any) -> None:
        super().__init__(**seed_kwargs("npu", device_id, device, options))


create_pytorch_cuda_backend = create_cuda_backend
create_pytorch_ascend_backend = create_ascend_backend
