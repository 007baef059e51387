"""Argument checks shared by the numpy and torch converters."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["float32_array", "raw_bits_array", "scale_of"]


def _as_array(name: str, value: object, wanted: str) -> np.ndarray[Any, Any]:
    """``np.asarray(value)``, with a typed error naming ``wanted`` when numpy cannot convert it."""
    try:
        return np.asarray(value)
    except Exception as exc:  # ragged nested lists and foreign objects raise many types
        raise InvalidArgumentTypeError(
            f"{name} must be {wanted}; could not convert {type(value).__name__}: {exc}."
        ) from exc


def float32_array(name: str, value: object) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Return ``value`` as a float32 numpy array (a view when it already is one).

    Args:
        name: The argument's name, for messages.
        value: A numpy array (or nested sequence) of floating-point numbers.

    Returns:
        The values as float32. float16 widens exactly; float64 rounds to nearest float32 first.

    Raises:
        InvalidArgumentTypeError: ``value`` is not a floating-point array (ints, bools, complex,
            strings and objects are refused rather than guessed at).
    """
    arr = _as_array(name, value, "a floating-point numpy array")
    if arr.dtype.kind != "f":
        raise InvalidArgumentTypeError(
            f"{name} must be a floating-point array (float16/float32/float64); got dtype {arr.dtype}. "
            f"Convert it first, e.g. w.astype(np.float32)."
        )
    return arr.astype(np.float32, copy=False)


def raw_bits_array(
    name: str, value: object, dtype: type[np.unsignedinteger[Any]], fmt: str, hint: str
) -> np.ndarray[Any, Any]:
    """Return ``value`` as an array of raw ``fmt`` bit patterns of unsigned ``dtype`` (a view when it already is one).

    Args:
        name: The argument's name, for messages.
        value: An integer numpy array (or nested sequence) of bit patterns.
        dtype: The unsigned storage type of one pattern (``np.uint16``, ``np.uint8``).
        fmt: The format the patterns encode (``"bfloat16"``), for messages.
        hint: What to call instead for floats, for messages.

    Returns:
        The patterns as ``dtype``.

    Raises:
        InvalidArgumentTypeError: ``value`` is not an integer array.
        InvalidArgumentError: An integer array of another dtype holds values outside ``dtype``'s range.
    """
    kind = np.dtype(dtype).name
    arr = _as_array(name, value, f"a {kind} array")
    if arr.dtype.kind not in "ui":
        raise InvalidArgumentTypeError(
            f"{name} must be a {kind} array of raw {fmt} bits; got dtype {arr.dtype}. {hint}"
        )
    if arr.dtype == dtype:
        return arr
    top = int(np.iinfo(dtype).max)
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > top):
        raise InvalidArgumentError(
            f"{name} must lie in 0..{top}; got values from {int(arr.min())} to {int(arr.max())}."
        )
    return arr.astype(dtype)


def scale_of(params_or_scale: object) -> float:
    """Extract and check a per-tensor scale.

    Args:
        params_or_scale: An object with a ``scale`` attribute (e.g.
            :class:`~sagellm_backend.dtype_conversion.FP8QuantizationParams`) or a real number.

    Returns:
        The scale as a Python float; positive, finite and non-zero in float32.

    Raises:
        InvalidArgumentTypeError: Neither a number nor an object with a numeric ``scale``.
        InvalidArgumentError: The scale is not finite, not positive, or rounds to 0 or inf in float32.
    """
    raw = getattr(params_or_scale, "scale", params_or_scale)
    if isinstance(raw, bool) or not isinstance(raw, (Real, np.floating, np.integer)):
        raise InvalidArgumentTypeError(
            f"params must be FP8QuantizationParams (or a positive float scale); got {type(params_or_scale).__name__}."
        )
    scale = float(raw)
    with np.errstate(over="ignore"):
        as_f32 = float(np.float32(scale))
    if not (math.isfinite(scale) and scale > 0.0 and 0.0 < as_f32 < math.inf):
        raise InvalidArgumentError(
            f"the FP8 scale must be a positive finite number representable in float32; got {scale!r}. "
            f"Use compute_fp8_quantization_params_numpy(w) to derive it."
        )
    return scale
