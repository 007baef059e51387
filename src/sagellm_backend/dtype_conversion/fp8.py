"""float8_e4m3fn in numpy: per-tensor scale, encoding to raw bits, decoding.

Format (OCP FP8 E4M3, "fn" variant as in ``torch.float8_e4m3fn``): 1 sign bit, 4 exponent bits with
bias 7, 3 mantissa bits. No infinity; ``0x7F`` and ``0xFF`` are NaN; largest finite value ±448
(``0x7E``/``0xFE``); smallest normal 2**-6; subnormals are multiples of 2**-9.

Encoding rules (:func:`quantize_to_fp8_numpy`):

* round to nearest, ties to even, subnormals included (1.0625 -> 1.0, 1.1875 -> 1.25; 2**-10, half
  the smallest subnormal, -> 0; 3 * 2**-10 -> 2 * 2**-9);
* finite values beyond ±448 and ±inf saturate to ±448 (``0x7E``/``0xFE``);
* NaN -> ``0x7F``, or ``0xFF`` when its sign bit is set (the sign bit is always kept);
* -0.0 -> ``0x80`` (negative zero, as torch encodes it).

The input is divided by the scale in float32 and the quotient is encoded exactly, so the codes equal
``(t / scale).to(torch.float8_e4m3fn).view(torch.uint8)`` wherever torch rounds in range.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from ._checks import float32_array, raw_bits_array, scale_of

__all__ = [
    "FP8_E4M3_MAX",
    "FP8_MIN_SCALE",
    "FP8QuantizationParams",
    "compute_fp8_quantization_params_numpy",
    "decode_fp8_e4m3_numpy",
    "encode_fp8_e4m3_numpy",
    "fp8_e4m3_decode_table",
    "quantize_to_fp8_numpy",
]

FP8_E4M3_MAX = 448.0
"""Largest finite float8_e4m3fn magnitude."""

FP8_MIN_SCALE = 1e-12
"""Scale used when a tensor has no non-zero finite value (and the floor for tiny tensors)."""

# float32 bit patterns used by the encoder.
_F32_448 = 0x43E00000  # 448.0
_F32_MIN_NORMAL_E4M3 = 0x3C800000  # 2**-6, the smallest normal float8_e4m3fn
_F32_SUBNORMAL_MAGIC = 0x46800000  # 2**14: adding it rounds to a multiple of 2**-9 (float32 ulp there)
_F32_INF = 0x7F800000
_REBIAS = (127 - 7) << 3  # float32 exponent bias minus e4m3 bias, in units of the 3-bit mantissa


@dataclass(frozen=True)
class FP8QuantizationParams:
    """Per-tensor float8_e4m3fn quantization parameters.

    ``decoded_code * scale`` approximates the original value.

    Attributes:
        scale: Positive multiplier from FP8 values back to the original range (``amax / 448``).
        amax: Largest finite magnitude in the tensor the scale was computed from.
        fp8_max: Largest FP8 magnitude the scale maps ``amax`` to (448 for e4m3fn).
        dtype: The FP8 format's torch name.
    """

    scale: float
    amax: float = 0.0
    fp8_max: float = FP8_E4M3_MAX
    dtype: str = "float8_e4m3fn"

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", scale_of(self.scale))
        if isinstance(self.amax, bool) or not isinstance(self.amax, (int, float)) or not math.isfinite(self.amax):
            raise InvalidArgumentError(f"FP8QuantizationParams.amax must be a finite number; got {self.amax!r}.")
        if self.amax < 0:
            raise InvalidArgumentError(f"FP8QuantizationParams.amax must be >= 0; got {self.amax!r}.")


def compute_fp8_quantization_params_numpy(w: object) -> FP8QuantizationParams:
    """Per-tensor scale ``amax(|w|) / 448`` for float8_e4m3fn.

    Non-finite values (NaN, ±inf) are left out of ``amax``: one bad weight must not flatten every
    other weight to zero. They are still encoded later (inf saturates, NaN stays NaN). A tensor with
    no non-zero finite value gets ``scale = 1e-12``; the scale is also floored at 1e-12 so that it
    stays a normal float32 (this only affects tensors whose ``amax`` is below 4.48e-10).

    Args:
        w: Floating-point array of any shape (the engine passes a float32 ``[out, in]`` weight).
            float64 input is rounded to float32 first, as the encoder works in float32.

    Returns:
        The parameters; ``float(params.scale)`` is the scale.

    Raises:
        InvalidArgumentTypeError: ``w`` is not a floating-point array.
        InvalidArgumentError: ``w`` is empty.
    """
    arr = float32_array("w", w)
    if arr.size == 0:
        raise InvalidArgumentError(
            f"cannot compute an FP8 scale for an empty array (shape {arr.shape}); pass the weight tensor itself."
        )
    mags = np.abs(arr)
    finite = np.isfinite(mags)
    amax = float(mags.max()) if finite.all() else float(mags.max(initial=0.0, where=finite))
    scale = max(amax / FP8_E4M3_MAX, FP8_MIN_SCALE)
    return FP8QuantizationParams(scale=scale, amax=amax)


def encode_fp8_e4m3_numpy(x: object) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Raw float8_e4m3fn bits of ``x`` (no scaling); the rules are in the module docstring.

    Args:
        x: Floating-point array of any shape; float64 is rounded to float32 first.

    Returns:
        uint8 array of the same shape.

    Raises:
        InvalidArgumentTypeError: ``x`` is not a floating-point array.
    """
    arr = float32_array("x", x)
    bits = arr.view(np.uint32)
    sign = ((bits >> np.uint32(24)) & np.uint32(0x80)).astype(np.uint8)
    mag = bits & np.uint32(0x7FFFFFFF)
    is_nan = mag > np.uint32(_F32_INF)
    mag = np.minimum(mag, np.uint32(_F32_448))  # saturate: everything above 448, inf included
    # Subnormal range: one float32 addition rounds (ties to even) to a multiple of 2**-9.
    shifted = mag.view(np.float32) + np.float32(2.0**14)
    sub = shifted.view(np.uint32) - np.uint32(_F32_SUBNORMAL_MAGIC)
    # Normal range: round the 23-bit mantissa to 3 bits (ties to even); a carry bumps the exponent.
    lsb = (mag >> np.uint32(20)) & np.uint32(1)
    norm = ((mag + np.uint32(0x7FFFF) + lsb) >> np.uint32(20)) - np.uint32(_REBIAS)
    code = np.where(mag < np.uint32(_F32_MIN_NORMAL_E4M3), sub, norm).astype(np.uint8)
    code[is_nan] = 0x7F
    out: np.ndarray[Any, np.dtype[np.uint8]] = np.bitwise_or(code, sign, out=code)  # out= keeps 0-d arrays arrays
    return out


def quantize_to_fp8_numpy(w: object, params: object) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Encode ``w / scale`` as raw float8_e4m3fn bits.

    Args:
        w: Floating-point array of any shape.
        params: :class:`FP8QuantizationParams` (or anything with a ``scale``, or the scale itself).

    Returns:
        uint8 array of ``w``'s shape; ``decode_fp8_e4m3_numpy(codes) * scale`` approximates ``w``.

    Raises:
        InvalidArgumentTypeError: ``w`` is not a floating-point array, or ``params`` has no scale.
        InvalidArgumentError: The scale is not a positive finite float32.
    """
    arr = float32_array("w", w)
    scale = scale_of(params)
    with np.errstate(over="ignore"):  # overflow to inf saturates to 448 anyway
        return encode_fp8_e4m3_numpy(arr / np.float32(scale))


@functools.lru_cache(maxsize=1)
def fp8_e4m3_decode_table() -> np.ndarray[Any, np.dtype[np.float32]]:
    """The float32 value of each of the 256 float8_e4m3fn codes (read-only).

    Returns:
        Array of 256 float32: ``table[code]``. ``0x7F``/``0xFF`` are NaN, ``0x80`` is -0.0.
    """
    codes = np.arange(256, dtype=np.int64)
    exponent = (codes >> 3) & 0xF
    mantissa = (codes & 0x7).astype(np.float64)
    magnitude = np.where(
        exponent == 0,
        np.ldexp(mantissa, -9),
        np.ldexp(1.0 + mantissa / 8.0, (exponent - 7).astype(np.int32)),
    )
    magnitude[(exponent == 0xF) & ((codes & 0x7) == 0x7)] = np.nan
    table = np.where(codes >= 0x80, -magnitude, magnitude).astype(np.float32)
    table.setflags(write=False)
    return table


def decode_fp8_e4m3_numpy(codes: object) -> np.ndarray[Any, np.dtype[np.float32]]:
    """float32 values of raw float8_e4m3fn bits.

    Args:
        codes: uint8 array (or any integer array with values in 0..255) of any shape.

    Returns:
        A new float32 array of the same shape.

    Raises:
        InvalidArgumentTypeError: ``codes`` is not an integer array.
        InvalidArgumentError: An integer array holds values outside 0..255.
    """
    arr = raw_bits_array("codes", codes, np.uint8, "float8_e4m3fn", "To encode floats use quantize_to_fp8_numpy.")
    out: np.ndarray[Any, np.dtype[np.float32]] = fp8_e4m3_decode_table()[arr.reshape(-1)].reshape(arr.shape)
    return out
