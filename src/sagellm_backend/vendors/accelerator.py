"""The constructor of a provider served through a ``torch.<accelerator>`` module, written once:
detection, the device ordinal check, and the storage, communicator and torch kernels it is built from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.config import Availability
from ..core.validate import check_count
from ..errors import InvalidDeviceError, UnavailableError
from .base import VendorSpec

__all__ = ["accelerator_init", "accelerator_parts"]


def accelerator_parts(
    spec: VendorSpec, device_id: object, availability: Availability | None, storage_class: Any = None
) -> dict[str, Any]:
    """Detect (unless a detection result is passed on), validate ``device_id``, and build the
    storage and communicator of an accelerator provider.

    Args:
        spec: The vendor.
        device_id: Device ordinal.
        availability: A :meth:`VendorSpec.detect` result already computed by the caller.
        storage_class: Storage class (default :class:`TorchDeviceStorage`; stand-ins pass a
            host-backed one).

    Returns:
        ``storage`` and ``communicator`` keyword arguments for the provider's base constructor.

    Raises:
        UnavailableError: the vendor's devices are not usable here.
        InvalidDeviceError: no such device.
    """
    found = availability if availability is not None else spec.detect()
    if not found.available:
        raise UnavailableError(
            f"the {spec.name!r} provider is not available here: {found.reason}. Install {spec.install_hint}.",
            provider=spec.name,
        )
    index = check_count("device_id", device_id, minimum=0)
    count = found.device_count or 0
    if index >= count:
        raise InvalidDeviceError(
            f"{spec.device_type}:{index} does not exist: {count} device(s) are visible "
            f"({spec.device_type}:0..{spec.device_type}:{count - 1}). Pick one of those.",
            device=index,
        )
    import torch

    from ..comm.torch_dist import TorchCommunicator
    from ..kernels.torch_builtin import register_torch_kernels
    from ..storage.torch_device import TorchDeviceStorage

    module = getattr(torch, spec.torch_module or "")
    register_torch_kernels(spec.device_type, triton=spec.fast_copy)
    return {
        "storage": (storage_class or TorchDeviceStorage)(spec, module, index, count),
        "communicator": TorchCommunicator(spec.device_type, index, spec.dist_backend or "gloo"),
    }


def accelerator_init(spec: VendorSpec, base_init: Callable[..., None]) -> Callable[..., None]:
    """The constructor of an accelerator vendor's provider class, written once.

    Args:
        spec: The vendor.
        base_init: The base class's constructor (``Provider.__init__``), called with the parts and
            the keywords below.

    Returns:
        The ``__init__``.
    """

    def __init__(
        self: Any,
        device_id: int = 0,
        *,
        kv_geometry: object = None,
        max_memory_bytes: int | None = None,
        availability: Availability | None = None,
    ) -> None:
        """Detect the vendor's devices (unless ``availability`` is given) and build the provider of one.

        Args:
            device_id: Device ordinal.
            kv_geometry: :class:`~sagellm_backend.kv.geometry.KVGeometry` or dict.
            max_memory_bytes: Optional cap on what this provider allocates on its device.
            availability: A :meth:`VendorSpec.detect` result already computed (skips detection).

        Raises:
            UnavailableError: the vendor's devices are not usable here.
            InvalidDeviceError: no such device.
        """
        parts = accelerator_parts(spec, device_id, availability)
        base_init(self, kv_geometry=kv_geometry, max_memory_bytes=max_memory_bytes, **parts)

    return __init__
