"""float8_e4m3fn and float8_e5m2 in numpy: per-tensor scale, encoding to raw bits, decoding.

Formats (OCP FP8, as ``torch.float8_e4m3fn`` and ``torch.float8_e5m2``), 1 sign bit each:

* E4M3 ("fn"): 4 exponent bits with bias 7, 3 mantissa bits. No infinity; ``0x7F`` and ``0xFF`` are
  NaN; largest finite value ±448 (``0x7E``/``0xFE``); smallest normal 2**-6; subnormals are multiples
  of 2**-9.
* E5M2: 5 exponent bits with bias 15, 2 mantissa bits (the top byte of an IEEE float16). ``0x7C``/``0xFC``
  are ±inf, ``0x7D``..``0x7F`` and ``0xFD``..``0xFF`` NaN; largest finite value ±57344 (``0x7B``/``0xFB``);
  smallest normal 2**-14; subnormals are multiples of 2**-16.

Encoding rules (:func:`quantize_to_fp8_numpy`), the same for both formats:

* round to nearest, ties to even, subnormals included (E4M3: 1.0625 -> 1.0, 1.1875 -> 1.25; 2**-10, half
  the smallest subnormal, -> 0; 3 * 2**-10 -> 2 * 2**-9);
* finite values beyond the largest finite value and ±inf saturate to it (E4M3 ``0x7E``/``0xFE``, E5M2
  ``0x7B``/``0xFB``): E5M2's infinity codes are never produced;
* NaN -> ``0x7F``, or ``0xFF`` when its sign bit is set (the sign bit is always kept);
* -0.0 -> ``0x80`` (negative zero, as torch encodes it).

The input is divided by the scale in float32 and the quotient is encoded exactly, so the codes equal
``(t / scale).to(torch.float8_e4m3fn).view(torch.uint8)`` (or ``float8_e5m2``) wherever torch rounds in range.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..errors import InvalidArgumentError
from ._checks import float32_array, raw_bits_array, scale_of

__all__ = [
    "FP8_E4M3_MAX",
    "FP8_E5M2_MAX",
    "FP8_FORMATS",
    "FP8_MIN_SCALE",
    "FP8Format",
    "FP8QuantizationParams",
    "compute_fp8_quantization_params_numpy",
    "decode_fp8_e4m3_numpy",
    "decode_fp8_e5m2_numpy",
    "encode_fp8_e4m3_numpy",
    "encode_fp8_e5m2_numpy",
    "fp8_decode_table",
    "fp8_e4m3_decode_table",
    "fp8_format",
    "quantize_to_fp8_numpy",
]

FP8_E4M3_MAX = 448.0
"""Largest finite float8_e4m3fn magnitude."""

FP8_E5M2_MAX = 57344.0
"""Largest finite float8_e5m2 magnitude."""

FP8_MIN_SCALE = 1e-12
"""Scale used when a tensor has no non-zero finite value (and the floor for tiny tensors)."""

_F32_INF = 0x7F800000


class FP8Format(NamedTuple):
    """One FP8 format: its torch name and the float32 constants its encoder uses.

    Attributes:
        name: torch's name (``"float8_e4m3fn"``, ``"float8_e5m2"``).
        exp_bits: Exponent bits.
        man_bits: Mantissa bits.
        bias: Exponent bias.
        max_value: Largest finite magnitude.
        f32_max: float32 bits of ``max_value`` (saturation bound).
        f32_min_normal: float32 bits of the smallest normal magnitude.
        f32_sub_magic: float32 bits of ``2 ** (23 - subnormal exponent)``: adding it rounds (ties to even)
            to a multiple of the smallest subnormal.
        has_inf: Whether the all-ones exponent with mantissa 0 is infinity (E5M2) rather than a number.
    """

    name: str
    exp_bits: int
    man_bits: int
    bias: int
    max_value: float
    f32_max: int
    f32_min_normal: int
    f32_sub_magic: int
    has_inf: bool

    @property
    def rebias(self) -> int:
        """float32 exponent bias minus this format's, in units of its mantissa."""
        return (127 - self.bias) << self.man_bits


E4M3 = FP8Format("float8_e4m3fn", 4, 3, 7, FP8_E4M3_MAX, 0x43E00000, 0x3C800000, 0x46800000, False)
E5M2 = FP8Format("float8_e5m2", 5, 2, 15, FP8_E5M2_MAX, 0x47600000, 0x38800000, 0x43000000, True)

#: The formats by torch name.
FP8_FORMATS: dict[str, FP8Format] = {f.name: f for f in (E4M3, E5M2)}


def fp8_format(name: object) -> FP8Format:
    """The FP8 format of a torch name (``"float8_e4m3fn"`` or ``"float8_e5m2"``).

    Args:
        name: The name.

    Returns:
        The format.

    Raises:
        InvalidArgumentError: Another name.
    """
    fmt = FP8_FORMATS.get(name) if isinstance(name, str) else None
    if fmt is None:
        raise InvalidArgumentError(f"unknown FP8 format {name!r}; use one of {sorted(FP8_FORMATS)}.")
    return fmt


@dataclass(frozen=True)
class FP8QuantizationParams:
    """Per-tensor FP8 quantization parameters.

    ``decoded_code * scale`` approximates the original value.

    Attributes:
        scale: Positive multiplier from FP8 values back to the original range (``amax / fp8_max``).
        amax: Largest finite magnitude in the tensor the scale was computed from.
        fp8_max: Largest FP8 magnitude the scale maps ``amax`` to (448 for e4m3fn, 57344 for e5m2).
        dtype: The FP8 format's torch name (``"float8_e4m3fn"`` or ``"float8_e5m2"``); the quantizers
            encode in it.

    Raises:
        InvalidArgumentError: A bad scale or amax, an unknown ``dtype``, or ``fp8_max`` other than its maximum.
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
        fmt = fp8_format(self.dtype)
        if self.fp8_max != fmt.max_value:
            raise InvalidArgumentError(
                f"FP8QuantizationParams.fp8_max is {self.fp8_max!r} but {fmt.name} saturates at {fmt.max_value}; "
                "leave fp8_max at its default for the dtype (compute_fp8_quantization_params_numpy sets both)."
            )


def compute_fp8_quantization_params_numpy(w: object, *, dtype: str = "float8_e4m3fn") -> FP8QuantizationParams:
    """Per-tensor scale ``amax(|w|) / fp8_max`` (448 for float8_e4m3fn, 57344 for float8_e5m2).

    Non-finite values (NaN, ±inf) are left out of ``amax``: one bad weight must not flatten every
    other weight to zero. They are still encoded later (inf saturates, NaN stays NaN). A tensor with
    no non-zero finite value gets ``scale = 1e-12``; the scale is also floored at 1e-12 so that it
    stays a normal float32 (this only affects tensors whose ``amax`` is below 4.48e-10).

    Args:
        w: Floating-point array of any shape (the engine passes a float32 ``[out, in]`` weight).
            float64 input is rounded to float32 first, as the encoder works in float32.
        dtype: The FP8 format's torch name.

    Returns:
        The parameters; ``float(params.scale)`` is the scale.

    Raises:
        InvalidArgumentTypeError: ``w`` is not a floating-point array.
        InvalidArgumentError: ``w`` is empty, or ``dtype`` is not an FP8 format.
    """
    fmt = fp8_format(dtype)
    arr = float32_array("w", w)
    if arr.size == 0:
        raise InvalidArgumentError(
            f"cannot compute an FP8 scale for an empty array (shape {arr.shape}); pass the weight tensor itself."
        )
    mags = np.abs(arr)
    finite = np.isfinite(mags)
    amax = float(mags.max()) if finite.all() else float(mags.max(initial=0.0, where=finite))
    scale = max(amax / fmt.max_value, FP8_MIN_SCALE)
    return FP8QuantizationParams(scale=scale, amax=amax, fp8_max=fmt.max_value, dtype=fmt.name)


def _encode(arr: np.ndarray[Any, np.dtype[np.float32]], fmt: FP8Format) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Raw ``fmt`` bits of float32 ``arr`` by the module's rules."""
    bits = arr.view(np.uint32)
    sign = ((bits >> np.uint32(24)) & np.uint32(0x80)).astype(np.uint8)
    mag = bits & np.uint32(0x7FFFFFFF)
    is_nan = mag > np.uint32(_F32_INF)
    mag = np.minimum(mag, np.uint32(fmt.f32_max))  # saturate: everything above the maximum, inf included
    # Subnormal range: one float32 addition rounds (ties to even) to a multiple of the smallest subnormal.
    shifted = mag.view(np.float32) + np.uint32(fmt.f32_sub_magic).view(np.float32)
    sub = shifted.view(np.uint32) - np.uint32(fmt.f32_sub_magic)
    # Normal range: round the 23-bit mantissa to man_bits (ties to even); a carry bumps the exponent.
    drop = np.uint32(23 - fmt.man_bits)
    lsb = (mag >> drop) & np.uint32(1)
    norm = ((mag + np.uint32((1 << (22 - fmt.man_bits)) - 1) + lsb) >> drop) - np.uint32(fmt.rebias)
    code = np.where(mag < np.uint32(fmt.f32_min_normal), sub, norm).astype(np.uint8)
    code[is_nan] = 0x7F
    out: np.ndarray[Any, np.dtype[np.uint8]] = np.bitwise_or(code, sign, out=code)  # out= keeps 0-d arrays arrays
    return out


def encode_fp8_e4m3_numpy(x: object) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Raw float8_e4m3fn bits (uint8) of ``x``, no scaling; the rounding rules are in the module docstring, the
    arrays as in :mod:`sagellm_backend.dtype_conversion`."""
    return _encode(float32_array("x", x), E4M3)


def encode_fp8_e5m2_numpy(x: object) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Raw float8_e5m2 bits (uint8) of ``x``, no scaling; the rounding rules are in the module docstring, the
    arrays as in :mod:`sagellm_backend.dtype_conversion`."""
    return _encode(float32_array("x", x), E5M2)


def quantize_to_fp8_numpy(w: object, params: object) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Encode ``w / scale`` as raw FP8 bits, in ``params.dtype`` (float8_e4m3fn for a bare scale).

    Args:
        w: Floating-point array of any shape.
        params: :class:`FP8QuantizationParams` (or anything with a ``scale``, or the scale itself).

    Returns:
        uint8 array of ``w``'s shape; ``decode_fp8_e4m3_numpy(codes) * scale`` (or e5m2) approximates ``w``.

    Raises:
        InvalidArgumentTypeError: ``w`` is not a floating-point array, or ``params`` has no scale.
        InvalidArgumentError: The scale is not a positive finite float32, or ``params.dtype`` is no FP8 format.
    """
    arr = float32_array("w", w)
    scale = scale_of(params)
    fmt = fp8_format(getattr(params, "dtype", E4M3.name))
    with np.errstate(over="ignore"):  # overflow to inf saturates anyway
        return _encode(arr / np.float32(scale), fmt)


@functools.lru_cache(maxsize=2)
def fp8_decode_table(dtype: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The float32 value of each of the 256 codes of an FP8 format (read-only).

    Args:
        dtype: The format's torch name (``"float8_e4m3fn"`` or ``"float8_e5m2"``).

    Returns:
        Array of 256 float32: ``table[code]``; NaN and inf codes as in the module docstring, ``0x80`` is -0.0.

    Raises:
        InvalidArgumentError: ``dtype`` is not an FP8 format.
    """
    fmt = fp8_format(dtype)
    codes = np.arange(256, dtype=np.int64)
    top = (1 << fmt.exp_bits) - 1
    exponent = (codes >> fmt.man_bits) & top
    man_mask = (1 << fmt.man_bits) - 1
    mantissa = (codes & man_mask).astype(np.float64)
    magnitude = np.where(
        exponent == 0,
        np.ldexp(mantissa, 1 - fmt.bias - fmt.man_bits),
        np.ldexp(1.0 + mantissa / (1 << fmt.man_bits), (exponent - fmt.bias).astype(np.int32)),
    )
    if fmt.has_inf:
        magnitude[exponent == top] = np.where((codes & man_mask) == 0, np.inf, np.nan)[exponent == top]
    else:
        magnitude[(exponent == top) & ((codes & man_mask) == man_mask)] = np.nan
    table = np.where(codes >= 0x80, -magnitude, magnitude).astype(np.float32)
    table.setflags(write=False)
    return table


def fp8_e4m3_decode_table() -> np.ndarray[Any, np.dtype[np.float32]]:
    """The float32 value of each of the 256 float8_e4m3fn codes (read-only).

    Returns:
        Array of 256 float32: ``table[code]``. ``0x7F``/``0xFF`` are NaN, ``0x80`` is -0.0.
    """
    return fp8_decode_table(E4M3.name)


def _decode(codes: object, fmt: FP8Format) -> np.ndarray[Any, np.dtype[np.float32]]:
    arr = raw_bits_array("codes", codes, np.uint8, fmt.name, "To encode floats use quantize_to_fp8_numpy.")
    out: np.ndarray[Any, np.dtype[np.float32]] = fp8_decode_table(fmt.name)[arr.reshape(-1)].reshape(arr.shape)
    return out


def decode_fp8_e4m3_numpy(codes: object) -> np.ndarray[Any, np.dtype[np.float32]]:
    """float32 values of raw float8_e4m3fn bits (codes 0..255);
    arrays as in :mod:`sagellm_backend.dtype_conversion`."""
    return _decode(codes, E4M3)


def decode_fp8_e5m2_numpy(codes: object) -> np.ndarray[Any, np.dtype[np.float32]]:
    """float32 values of raw float8_e5m2 bits (codes 0..255; ``0x7C``/``0xFC`` are ±inf);
    arrays as in :mod:`sagellm_backend.dtype_conversion`."""
    return _decode(codes, E5M2)
