"""float8_e4m3fn and float8_e5m2 in torch, on any device: the same codes as the numpy functions in :mod:`.fp8`.

torch is imported inside the functions. Decoding looks the codes up in a 256-entry float32 table
kept once per device and format (an int32 ``index_select``: no float8 support needed on the device).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..errors import InvalidArgumentTypeError
from ._checks import scale_of
from .fp8 import E4M3, E5M2, FP8Format, fp8_decode_table, fp8_format

if TYPE_CHECKING:
    import torch

__all__ = [
    "_decode_fp8_e4m3_torch",
    "clear_decode_tables",
    "decode_fp8_e4m3_torch",
    "decode_fp8_e5m2_torch",
    "quantize_to_fp8_torch",
]

_TABLES: dict[tuple[str, str, int | None], torch.Tensor] = {}
_TABLES_LOCK = threading.Lock()


def _require_tensor(name: str, value: object) -> torch.Tensor:
    import torch

    if not isinstance(value, torch.Tensor):
        raise InvalidArgumentTypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}.")
    return value


def _table_for(device: torch.device, fmt: FP8Format = E4M3) -> torch.Tensor:
    key = (fmt.name, device.type, device.index)
    table = _TABLES.get(key)
    if table is None:
        import torch

        with _TABLES_LOCK:
            table = _TABLES.get(key)
            if table is None:
                table = torch.from_numpy(fp8_decode_table(fmt.name).copy()).to(device)
                _TABLES[key] = table
    return table


def clear_decode_tables() -> None:
    """Drop the cached per-device decode tables (e.g. before releasing a device)."""
    with _TABLES_LOCK:
        _TABLES.clear()


def _decode(t: torch.Tensor, fmt: FP8Format) -> torch.Tensor:
    import torch

    t = _require_tensor("t", t)
    if t.dtype != torch.uint8:
        raise InvalidArgumentTypeError(
            f"t must be a uint8 tensor of raw {fmt.name} bits; got dtype {t.dtype}. "
            f"A {fmt.name} tensor can be passed as t.view(torch.uint8)."
        )
    table = _table_for(t.device, fmt)
    return table.index_select(0, t.reshape(-1).to(torch.int32)).view(t.shape)


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
    return _decode(t, E4M3)


decode_fp8_e4m3_torch = _decode_fp8_e4m3_torch


def decode_fp8_e5m2_torch(t: torch.Tensor) -> torch.Tensor:
    """float32 values of raw float8_e5m2 bits, on ``t``'s device.

    Args:
        t: uint8 tensor of any shape and device.

    Returns:
        float32 tensor of the same shape on the same device (±inf for ``0x7C``/``0xFC``, NaN for
        ``0x7D``..``0x7F`` and ``0xFD``..``0xFF``).

    Raises:
        InvalidArgumentTypeError: ``t`` is not a uint8 tensor.
    """
    return _decode(t, E5M2)


def quantize_to_fp8_torch(t: torch.Tensor, params_or_scale: object) -> torch.Tensor:
    """Encode ``t / scale`` as raw FP8 bits in ``params.dtype`` (float8_e4m3fn for a bare scale), on ``t``'s device.

    The division is done in float32 and the rules are those of
    :func:`~sagellm_backend.dtype_conversion.quantize_to_fp8_numpy` (round to nearest even,
    saturation to the largest finite value, NaN kept with its sign, -0.0 -> ``0x80``), which gives
    identical codes.

    Args:
        t: Floating-point tensor of any shape and device.
        params_or_scale: :class:`~sagellm_backend.dtype_conversion.FP8QuantizationParams` (or
            anything with a ``scale`` and optionally a ``dtype``), or the scale itself.

    Returns:
        uint8 tensor of the same shape on the same device.

    Raises:
        InvalidArgumentTypeError: ``t`` is not a floating-point tensor, or there is no scale.
        InvalidArgumentError: The scale is not a positive finite float32, or the dtype is no FP8 format.
    """
    import torch

    t = _require_tensor("t", t)
    if not t.is_floating_point():
        raise InvalidArgumentTypeError(
            f"t must be a floating-point tensor; got dtype {t.dtype}. Convert it first, e.g. t.float()."
        )
    scale = scale_of(params_or_scale)
    fmt = fp8_format(getattr(params_or_scale, "dtype", E4M3.name))
    x = t.to(torch.float32) / torch.tensor(scale, dtype=torch.float32, device=t.device)
    bits = x.contiguous().view(torch.int32)
    sign = (bits >> 24) & 0x80
    mag = torch.clamp(bits & 0x7FFFFFFF, max=fmt.f32_max)  # saturate above the maximum (inf included)
    is_nan = (bits & 0x7FFFFFFF) > 0x7F800000
    # Subnormals: adding the magic number in float32 rounds (ties to even) to a multiple of the smallest one.
    magic = 2.0 ** (24 - fmt.bias - fmt.man_bits)  # float32 bits fmt.f32_sub_magic
    sub = (mag.view(torch.float32) + magic).view(torch.int32) - fmt.f32_sub_magic
    # Normals: round the mantissa to man_bits, ties to even; a carry bumps the exponent.
    drop = 23 - fmt.man_bits
    norm = ((mag + ((1 << (drop - 1)) - 1) + ((mag >> drop) & 1)) >> drop) - fmt.rebias
    code = torch.where(mag < fmt.f32_min_normal, sub, norm).masked_fill(is_nan, 0x7F) | sign
    return code.to(torch.uint8)
