"""FP8 KV caches: the ``kv_cache_dtype`` names (vLLM's), their torch dtypes, scale checks and the torch quantiser.

A cache of ``kv_cache_dtype="fp8_e4m3"`` (``"fp8"``) holds ``torch.float8_e4m3fn`` elements, ``"fp8_e5m2"``
``torch.float8_e5m2`` (``torch.uint8`` caches are read as those bits). The stored value of ``x`` is
``clamp(x / scale, -max, max)`` rounded to the format (saturating: no inf, no NaN from finite inputs); the
ops read ``stored * scale``. Scales are float32 device tensors of one element (per tensor) or ``[Hkv]``
(per KV head), so a call reads no value on the host and stays graph-capturable; their values are not checked
(a host sync): they must be finite and > 0.

Reads are exact dequantisations: against the float64 reference over the dequantised cache, results are within
the query dtype's usual tolerance. The gap to an unquantised cache is the format's rounding: with N(0, 1) keys
and values and per-tensor scales ``amax / max``, outputs differ by at most 0.25 (mean 0.01) for ``fp8_e4m3``
and 0.5 (mean 0.02) for ``fp8_e5m2`` (``tests/test_attention_fp8.py``; measured 0.14 / 0.005 and 0.26 / 0.009).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InvalidArgumentError, InvalidArgumentTypeError, InvalidDeviceError, UnsupportedDTypeError

if TYPE_CHECKING:
    import torch

__all__ = [
    "FP8_FORMATS",
    "KV_CACHE_DTYPE_ALIASES",
    "canonical_kv_cache_dtype",
    "check_scale",
    "check_scales",
    "fp8_dtype",
    "quantize",
]

#: Canonical fp8 ``kv_cache_dtype`` names -> (torch dtype attribute, largest finite value).
FP8_FORMATS: dict[str, tuple[str, float]] = {
    "fp8_e4m3": ("float8_e4m3fn", 448.0),
    "fp8_e5m2": ("float8_e5m2", 57344.0),
}
#: Other accepted spellings (vLLM's).
KV_CACHE_DTYPE_ALIASES: dict[str, str] = {"fp8": "fp8_e4m3"}


def canonical_kv_cache_dtype(value: object) -> str:
    """``"auto"`` or a key of :data:`FP8_FORMATS`.

    Args:
        value: ``"auto"``, ``"fp8"``, ``"fp8_e4m3"`` or ``"fp8_e5m2"`` (case-insensitive).

    Returns:
        The canonical name.

    Raises:
        InvalidArgumentTypeError: Not a str.
        InvalidArgumentError: Another name.
    """
    if not isinstance(value, str):
        raise InvalidArgumentTypeError(f"kv_cache_dtype must be a str; got {type(value).__name__}.")
    key = value.strip().lower()
    key = KV_CACHE_DTYPE_ALIASES.get(key, key)
    if key != "auto" and key not in FP8_FORMATS:
        raise InvalidArgumentError(
            f"kv_cache_dtype must be one of ['auto', 'fp8', {', '.join(repr(k) for k in FP8_FORMATS)}]; got {value!r}."
        )
    return key


def fp8_dtype(kv_cache_dtype: str) -> torch.dtype:
    """The torch dtype of a canonical fp8 ``kv_cache_dtype``.

    Args:
        kv_cache_dtype: A key of :data:`FP8_FORMATS`.

    Returns:
        ``torch.float8_e4m3fn`` or ``torch.float8_e5m2``.
    """
    import torch

    dtype: torch.dtype = getattr(torch, FP8_FORMATS[kv_cache_dtype][0])
    return dtype


def check_scale(name: str, value: object, num_kv_heads: int, device: torch.device) -> torch.Tensor:
    """Check a ``k_scale``/``v_scale``: a float32 tensor of 1 or ``num_kv_heads`` elements on ``device``.

    Args:
        name: ``"k_scale"`` or ``"v_scale"``.
        value: The scale.
        num_kv_heads: KV heads of the call.
        device: The query's device.

    Returns:
        The scale as a flat view.

    Raises:
        InvalidArgumentTypeError: Not a tensor.
        UnsupportedDTypeError: Not float32.
        InvalidArgumentError: Another element count.
        InvalidDeviceError: On another device.
    """
    import torch

    if not isinstance(value, torch.Tensor):
        raise InvalidArgumentTypeError(
            f"{name} must be a float32 device tensor of 1 or {num_kv_heads} elements; got {type(value).__name__}."
        )
    if value.dtype != torch.float32:
        raise UnsupportedDTypeError(f"{name} must be float32; got {value.dtype}.")
    if value.numel() not in (1, num_kv_heads):
        raise InvalidArgumentError(
            f"{name} has {value.numel()} elements; give 1 (per tensor) or {num_kv_heads} (per KV head)."
        )
    if value.device != device:
        raise InvalidDeviceError(f"{name} is on {value.device} but the query is on {device}.")
    return value if value.dim() == 1 else value.reshape(-1)


def check_scales(
    kv_cache_dtype: str, k_scale: object, v_scale: object, num_kv_heads: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """The ops' scale arguments for a cache of ``kv_cache_dtype``: both scales (checked) for fp8, none for auto.

    Args:
        kv_cache_dtype: A canonical ``kv_cache_dtype``.
        k_scale: The call's ``k_scale`` (None when not given).
        v_scale: The call's ``v_scale``.
        num_kv_heads: KV heads of the call.
        device: The query's device.

    Returns:
        ``{"k_scale": ..., "v_scale": ...}`` for fp8 caches, ``{}`` for ``"auto"``.

    Raises:
        InvalidArgumentTypeError: Scales given for an ``"auto"`` cache, or not both given for an fp8 one.
        UnsupportedDTypeError: A scale that is not float32.
        InvalidArgumentError: A scale of another element count.
        InvalidDeviceError: A scale on another device.
    """
    given = [n for n, v in (("k_scale", k_scale), ("v_scale", v_scale)) if v is not None]
    if kv_cache_dtype == "auto":
        if given:
            raise InvalidArgumentTypeError(
                f"{given} apply to fp8 KV caches; this one has kv_cache_dtype='auto' (build it with "
                "kv_cache_dtype='fp8_e4m3' or 'fp8_e5m2')."
            )
        return {}
    if len(given) != 2:
        raise InvalidArgumentTypeError(
            f"kv_cache_dtype={kv_cache_dtype!r} needs k_scale and v_scale (float32 device tensors of 1 or "
            f"num_kv_heads elements); got {given or 'neither'}."
        )
    return {
        "k_scale": check_scale("k_scale", k_scale, num_kv_heads, device),
        "v_scale": check_scale("v_scale", v_scale, num_kv_heads, device),
    }


def quantize(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``clamp(x / scale, -max, max)`` in ``dtype`` (an fp8 dtype); ``x`` is ``[T, Hkv, D]``.

    Args:
        x: Values.
        scale: 1 or ``Hkv`` float32 scales.
        dtype: ``torch.float8_e4m3fn`` or ``torch.float8_e5m2``.

    Returns:
        The quantised tensor.
    """
    import torch

    limit = float(torch.finfo(dtype).max)
    return (x.float() / scale.view(1, -1, 1)).clamp_(-limit, limit).to(dtype)
