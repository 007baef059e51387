"""bfloat16 as raw uint16 bits, in numpy and torch.

float32 -> bfloat16 keeps the top 16 bits after rounding the low 16 to nearest, ties to even;
values that round past the largest bfloat16 become ±inf (as in torch). NaN stays NaN: its sign and
top 7 payload bits are kept and the quiet bit (``0x0040``) is set, so a NaN never turns into inf.
(torch itself writes one canonical NaN pattern; only the NaN-ness is comparable.)
bfloat16 -> float32 is exact: the bits are shifted into the high half.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidArgumentTypeError
from ._checks import float32_array, raw_bits_array

if TYPE_CHECKING:
    import torch

__all__ = [
    "bfloat16_bits_to_float32_numpy",
    "bfloat16_bits_to_float32_torch",
    "float32_to_bfloat16_bits_numpy",
    "float32_to_bfloat16_bits_torch",
]

_F32_INF = 0x7F800000
_BF16_QUIET = 0x0040


def float32_to_bfloat16_bits_numpy(x: object) -> np.ndarray[Any, np.dtype[np.uint16]]:
    """Raw bfloat16 bits (uint16) of ``x``, rounded to nearest even;
    arrays as in :mod:`sagellm_backend.dtype_conversion`."""
    bits = float32_array("x", x).view(np.uint32)
    is_nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(_F32_INF)
    safe = np.where(is_nan, np.uint32(0), bits)  # keeps the rounding add below from wrapping
    rounded = (safe + np.uint32(0x7FFF) + ((safe >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    quiet_nan = (bits >> np.uint32(16)) | np.uint32(_BF16_QUIET)
    out: np.ndarray[Any, np.dtype[np.uint16]] = np.asarray(np.where(is_nan, quiet_nan, rounded).astype(np.uint16))
    return out


def bfloat16_bits_to_float32_numpy(bits: object) -> np.ndarray[Any, np.dtype[np.float32]]:
    """float32 values of raw bfloat16 bits (codes 0..65535), exact;
    arrays as in :mod:`sagellm_backend.dtype_conversion`."""
    arr = raw_bits_array("bits", bits, np.uint16, "bfloat16", "To convert floats use float32_to_bfloat16_bits_numpy.")
    wide = arr.astype(np.uint32) << np.uint32(16)
    out: np.ndarray[Any, np.dtype[np.float32]] = np.asarray(wide).view(np.float32)
    return out


def _tensor(name: str, value: object) -> torch.Tensor:
    import torch

    if not isinstance(value, torch.Tensor):
        raise InvalidArgumentTypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}.")
    return value


def float32_to_bfloat16_bits_torch(t: torch.Tensor) -> torch.Tensor:
    """Raw bfloat16 bits of ``t`` on its device; same rules and bits as the numpy version.

    Args:
        t: Floating-point tensor of any shape and device.

    Returns:
        uint16 tensor of the same shape on the same device.

    Raises:
        InvalidArgumentTypeError: ``t`` is not a floating-point tensor.
    """
    import torch

    t = _tensor("t", t)
    if not t.is_floating_point():
        raise InvalidArgumentTypeError(f"t must be a floating-point tensor; got dtype {t.dtype}.")
    bits = t.to(torch.float32).contiguous().view(torch.int32)
    is_nan = (bits & 0x7FFFFFFF) > _F32_INF
    safe = bits.masked_fill(is_nan, 0)  # non-NaN patterns cannot overflow int32 below
    rounded = ((safe + 0x7FFF + ((safe >> 16) & 1)) >> 16) & 0xFFFF
    quiet_nan = ((bits >> 16) & 0xFFFF) | _BF16_QUIET
    return torch.where(is_nan, quiet_nan, rounded).to(torch.uint16)


def bfloat16_bits_to_float32_torch(bits: torch.Tensor) -> torch.Tensor:
    """float32 values of raw bfloat16 bits held in a uint16 or int16 tensor (exact).

    Args:
        bits: uint16 or int16 tensor of any shape and device.

    Returns:
        float32 tensor of the same shape on the same device.

    Raises:
        InvalidArgumentTypeError: ``bits`` is not a 16-bit integer tensor.
    """
    import torch

    bits = _tensor("bits", bits)
    if bits.dtype not in (torch.uint16, torch.int16):
        raise InvalidArgumentTypeError(f"bits must be a uint16 or int16 tensor; got dtype {bits.dtype}.")
    wide = (bits.to(torch.int32) & 0xFFFF) << 16
    return wide.view(torch.float32)
