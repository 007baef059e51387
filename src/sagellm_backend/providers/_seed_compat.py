"""The seed release's accelerator provider classes: the same providers, also constructible with
``device="cuda:0"`` as the seed-era engine (isagellm-core 0.2.x) calls them."""

from __future__ import annotations

from typing import Any

from ..device import normalize_device
from ..errors import InvalidArgumentError


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
