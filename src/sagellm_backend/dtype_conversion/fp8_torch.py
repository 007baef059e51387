"""float8_e4m3fn in torch, on any device: the same codes as the numpy functions in :mod:`.fp8`.

torch is imported inside the functions. Decoding looks the codes up in a 256-entry float32 table
kept once per device (an int32 ``index_select``: no float8 support needed on the device).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..errors import InvalidArgumentTypeError
from ._checks import scale_of
from .fp8 import fp8_e4m3_decode_table

if TYPE_CHECKING:
    import torch

__all__ = ["_decode_fp8_e4m3_torch", "clear_decode_tables", "decode_fp8_e4m3_torch", "quantize_to_fp8_torch"]

_TABLES: dict[tuple[str, int | None], torch.Tensor] = {}
_TABLES_LOCK = threading.Lock()


def _require_tensor(name: str, value: object) -> torch.Tensor:
    import torch

    if not isinstance(value, torch.Tensor):
        raise InvalidArgumentTypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}.")
    return value


def _table_for(device: torch.device) -> torch.Tensor:
    key = (device.type, device.index)
    table = _TABLES.get(key)
    if table is None:
        import torch

        with _TABLES_LOCK:
            table = _TABLES.get(key)
            if table is None:
                table = torch.from_numpy(fp8_e4m3_decode_table().copy()).to(device)
                _TABLES[key] = table
    return table


def clear_decode_tables() -> None:
    """Drop the cached per-device decode tables (e.g. before releasing a device)."""
    with _TABLES_LOCK:
        _TABLES.clear()


def _decode_fp8_e4m3_torch(t: torch.Tensor) -> torch.Tensor:
    """float32 values of raw float8_e4m3fn bits, on ``t``'s device.

    The engine calls this at every forward of an FP8 linear layer.

    Args:
        t: uint8 tensor of any shape and device.

    Returns:
        float32 tensor of the same shape on the same device (NaN for ``0x7F``/``0xFF``).

    Raises:
        InvalidArgumentTypeError: ``t`` is not a uint8 tensor.
    """
    import torch

    t = _require_tensor("t", t)
    if t.dtype != torch.uint8:
        raise InvalidArgumentTypeError(
            f"t must be a uint8 tensor of raw float8_e4m3fn bits; got dtype {t.dtype}. "
            f"A float8_e4m3fn tensor can be passed as t.view(torch.uint8)."
        )
    table = _table_for(t.device)
    return table.index_select(0, t.reshape(-1).to(torch.int32)).view(t.shape)


decode_fp8_e4m3_torch = _decode_fp8_e4m3_torch


def quantize_to_fp8_torch(t: torch.Tensor, params_or_scale: object) -> torch.Tensor:
    """Encode ``t / scale`` as raw float8_e4m3fn bits, on ``t``'s device.

    The division is done in float32 and the rules are those of
    :func:`~sagellm_backend.dtype_conversion.quantize_to_fp8_numpy` (round to nearest even,
    saturation to ±448, NaN kept with its sign, -0.0 -> ``0x80``), which gives identical codes.

    Args:
        t: Floating-point tensor of any shape and device.
        params_or_scale: :class:`~sagellm_backend.dtype_conversion.FP8QuantizationParams` (or
            anything with a ``scale``), or the scale itself.

    Returns:
        uint8 tensor of the same shape on the same device.

    Raises:
        InvalidArgumentTypeError: ``t`` is not a floating-point tensor, or there is no scale.
        InvalidArgumentError: The scale is not a positive finite float32.
    """
    import torch

    t = _require_tensor("t", t)
    if not t.is_floating_point():
        raise InvalidArgumentTypeError(
            f"t must be a floating-point tensor; got dtype {t.dtype}. Convert it first, e.g. t.float()."
        )
    scale = scale_of(params_or_scale)
    x = t.to(torch.float32) / torch.tensor(scale, dtype=torch.float32, device=t.device)
    bits = x.contiguous().view(torch.int32)
    sign = (bits >> 24) & 0x80
    mag = torch.clamp(bits & 0x7FFFFFFF, max=0x43E00000)  # saturate above 448 (inf included)
    is_nan = (bits & 0x7FFFFFFF) > 0x7F800000
    # Subnormals: adding 2**14 in float32 rounds (ties to even) to a multiple of 2**-9.
    sub = (mag.view(torch.float32) + 16384.0).view(torch.int32) - 0x46800000
    # Normals: round the mantissa to 3 bits, ties to even; a carry bumps the exponent.
    norm = ((mag + 0x7FFFF + ((mag >> 20) & 1)) >> 20) - ((127 - 7) << 3)
    code = torch.where(mag < 0x3C800000, sub, norm).masked_fill(is_nan, 0x7F) | sign
    return code.to(torch.uint8)
