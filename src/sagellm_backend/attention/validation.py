"""Argument checks shared by the attention backends. Each raises a typed error naming what was wrong."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

from ..errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidDeviceError,
    UnsupportedDTypeError,
)
from .base import AttentionMetadata

if TYPE_CHECKING:
    import torch

__all__ = [
    "QKVShape", "check_kv_cache", "check_mask", "check_metadata", "check_output", "check_page_layout", "check_qkv",
    "page_layout", "resolve_scale",
]  # fmt: skip

#: Element dtypes attention computes in (float64 runs on the torch ops only).
FLOAT_DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")


class QKVShape(NamedTuple):
    """Dimensions read from ``query [T,Hq,D]`` and ``key/value [T,Hkv,D]``."""

    tokens: int
    num_heads: int
    num_kv_heads: int
    head_dim: int


def _tensor(name: str, value: object) -> torch.Tensor:
    import torch

    if not isinstance(value, torch.Tensor):
        raise InvalidArgumentTypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}.")
    return value


def check_metadata(md: object) -> AttentionMetadata:
    """Return ``md`` if it is an :class:`AttentionMetadata`.

    Args:
        md: The metadata argument.

    Returns:
        The metadata.

    Raises:
        InvalidArgumentTypeError: Anything else.
    """
    if not isinstance(md, AttentionMetadata):
        raise InvalidArgumentTypeError(
            f"attn_metadata must be an AttentionMetadata (use AttentionMetadata.for_prefill/for_decode); "
            f"got {type(md).__name__}."
        )
    return md


def check_qkv(query: object, key: object, value: object) -> QKVShape:
    """Check ``query [T,Hq,D]``, ``key``/``value [T,Hkv,D]``: one float dtype, one device, ``Hq % Hkv == 0``.

    Args:
        query: Query tensor.
        key: Key tensor.
        value: Value tensor.

    Returns:
        The dimensions.

    Raises:
        InvalidArgumentTypeError: Not tensors.
        InvalidArgumentError: Wrong ranks or mismatched dims.
        UnsupportedDTypeError: Mixed or non-float dtypes.
        InvalidDeviceError: Tensors on different devices.
    """
    q, k, v = _tensor("query", query), _tensor("key", key), _tensor("value", value)
    for name, t in (("query", q), ("key", k), ("value", v)):
        if t.dim() != 3:
            raise InvalidArgumentError(f"{name} must be 3-D [tokens, heads, head_dim]; got shape {tuple(t.shape)}.")
    if tuple(k.shape) != tuple(v.shape):
        raise InvalidArgumentError(f"key and value shapes differ: {tuple(k.shape)} vs {tuple(v.shape)}.")
    t_, hq, d = q.shape
    if k.shape[0] != t_ or k.shape[2] != d:
        raise InvalidArgumentError(
            f"key/value {tuple(k.shape)} must have the query's token count and head_dim (query {tuple(q.shape)})."
        )
    hkv = k.shape[1]
    if hkv == 0 or d == 0 or hq % hkv:
        raise InvalidArgumentError(
            f"query heads ({hq}) must be a positive multiple of KV heads ({hkv}), with head_dim > 0 (got {d})."
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise UnsupportedDTypeError(f"query/key/value dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}; cast to one.")
    if str(q.dtype).removeprefix("torch.") not in FLOAT_DTYPES:
        raise UnsupportedDTypeError(f"attention needs one of {FLOAT_DTYPES}; got {q.dtype}.")
    if not (q.device == k.device == v.device):
        raise InvalidDeviceError(f"query/key/value are on different devices: {q.device}, {k.device}, {v.device}.")
    return QKVShape(int(t_), int(hq), int(hkv), int(d))


def check_output(
    output: object, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kv_cache: object,
    others: tuple[object, ...] = (),
) -> torch.Tensor:  # fmt: skip
    """A ``forward`` call's ``output`` buffer (vLLM's ``output``), or a typed error saying what it must be.

    Args:
        output: The caller's buffer.
        query: The checked query ``[T, Hq, D]``: ``output`` must be contiguous, of its shape, dtype and device.
        key: The checked keys, which ``output`` must not share memory with (nor the query, value or caches).
        value: The checked values.
        kv_cache: The call's ``(K, V)`` pair or None (tensors in it are checked for overlap; the rest of it is
            checked by the backend).
        others: More of the call's arguments the kernels read (the metadata's block tables and slots, the mask,
            fp8 scales): the tensors among them are checked for overlap too.

    Returns:
        ``output``.

    Raises:
        InvalidArgumentTypeError: Not a torch tensor.
        InvalidArgumentError: Another shape, not contiguous, not writable in place (requires grad, or an
            inference tensor outside inference mode), or sharing memory with an input, a cache or ``others``.
        UnsupportedDTypeError: Another dtype.
        InvalidDeviceError: Another device.
    """
    import torch

    from ..kernels.torch_outputs import check_out

    pair = tuple(kv_cache) if isinstance(kv_cache, (tuple, list)) else ()
    inputs = tuple(t for t in (query, key, value, *pair, *others) if isinstance(t, torch.Tensor))
    return check_out("forward", output, query.shape, query.dtype, query.device, inputs)


def resolve_scale(scale: object, head_dim: int) -> float:
    """The softmax scale: ``scale`` if given (finite, > 0), else ``head_dim ** -0.5``.

    Args:
        scale: ``None`` or a number.
        head_dim: Head dimension.

    Returns:
        The scale as a float.

    Raises:
        InvalidArgumentTypeError: Not a number.
        InvalidArgumentError: Not finite or not positive.
    """
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise InvalidArgumentTypeError(f"scale must be a float or None; got {type(scale).__name__}.")
    if not math.isfinite(scale) or scale <= 0:
        raise InvalidArgumentError(f"scale must be a finite number > 0; got {scale}.")
    return float(scale)


def check_mask(mask: object, query: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Check an HF-style mask ``[B, 1|Hq, q, kv]``: bool (True = attend) or float (additive), on the query's device.

    Args:
        mask: The mask.
        query: The query (for device and dtype).
        num_heads: Query heads.

    Returns:
        The mask.

    Raises:
        InvalidArgumentTypeError: Not a tensor, or an integer tensor.
        InvalidArgumentError: Wrong rank or head dimension.
        InvalidDeviceError: On another device.
    """
    import torch

    m = _tensor("attn_mask", mask)
    if m.dtype != torch.bool and not m.dtype.is_floating_point:
        raise InvalidArgumentTypeError(f"attn_mask must be bool (True = attend) or float (additive); got {m.dtype}.")
    if m.dim() != 4 or m.shape[1] not in (1, num_heads):
        raise InvalidArgumentError(f"attn_mask must be [B, 1 or {num_heads}, q, kv]; got shape {tuple(m.shape)}.")
    if m.device != query.device:
        raise InvalidDeviceError(f"attn_mask is on {m.device} but query is on {query.device}.")
    return m


def check_kv_cache(
    kv_cache: object, key: torch.Tensor, cache_dtypes: tuple[torch.dtype, ...] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a ``(K, V)`` pair of ``[num_blocks, block_size, Hkv, D]`` caches matching ``key``.

    Both must have one of ``cache_dtypes`` (default: the key's dtype), the key's device, Hkv and D, and pages of
    one of the layouts :func:`page_layout` names.

    Args:
        kv_cache: The pair.
        key: The new keys ``[T, Hkv, D]``.
        cache_dtypes: Accepted cache dtypes (an fp8 cache: its fp8 dtype and ``torch.uint8``).

    Returns:
        ``(K, V)``.

    Raises:
        InvalidArgumentTypeError: Not a pair of tensors.
        InvalidArgumentError: Wrong shapes or layouts.
        UnsupportedDTypeError: A dtype other than the key's.
        InvalidDeviceError: A device other than the key's.
    """
    if not isinstance(kv_cache, (tuple, list)) or len(kv_cache) != 2:
        raise InvalidArgumentTypeError(
            f"kv_cache must be a (key_cache, value_cache) pair; got {type(kv_cache).__name__}"
            + (f" of length {len(kv_cache)}." if isinstance(kv_cache, (tuple, list)) else ".")
        )
    kc, vc = _tensor("kv_cache[0]", kv_cache[0]), _tensor("kv_cache[1]", kv_cache[1])
    _, hkv, d = key.shape
    for name, c in (("key cache", kc), ("value cache", vc)):
        if c.dim() != 4 or c.shape[2] != hkv or c.shape[3] != d or c.shape[0] == 0 or c.shape[1] == 0:
            raise InvalidArgumentError(
                f"{name} must be [num_blocks>0, block_size>0, {hkv}, {d}] (get_kv_cache_shape); got {tuple(c.shape)}."
            )
        if c.dtype not in (cache_dtypes or (key.dtype,)):
            want = f"one of {list(cache_dtypes)}" if cache_dtypes else f"the key/query dtype {key.dtype}"
            raise UnsupportedDTypeError(f"{name} dtype is {c.dtype}; it must be {want}.")
        if c.device != key.device:
            raise InvalidDeviceError(f"{name} is on {c.device} but key/query are on {key.device}.")
        check_page_layout(name, c)
    if tuple(kc.shape) != tuple(vc.shape):
        raise InvalidArgumentError(f"key and value caches differ in shape: {tuple(kc.shape)} vs {tuple(vc.shape)}.")
    return kc, vc


def page_layout(cache: torch.Tensor) -> str | None:
    """The layout of a ``[num_blocks, block_size, Hkv, D]`` cache's pages, as the kernels read them (any strides,
    D innermost): ``"NHD"`` when each page is stored ``[block_size, Hkv, D]`` (token-major, contiguous: the shape
    :meth:`get_kv_cache_shape` gives), ``"HND"`` when stored ``[Hkv, block_size, D]`` (head-major, FlashInfer's
    HND: one head's page is one contiguous run; pass ``hnd.permute(0, 2, 1, 3)``), None for anything else, including
    blocks closer together than a page (they would share memory). A dimension of size 1 may have any stride.

    Args:
        cache: A 4-D tensor.

    Returns:
        ``"NHD"``, ``"HND"`` or None.
    """
    nb, bs, hkv, d = cache.shape
    st = cache.stride()
    if nb > 1 and st[0] < bs * hkv * d:
        return None
    for name, inner in (("NHD", (hkv * d, d, 1)), ("HND", (d, bs * d, 1))):
        if all(st[i] == want or cache.shape[i] == 1 for i, want in zip((1, 2, 3), inner)):
            return name
    return None


def check_page_layout(name: str, cache: torch.Tensor) -> str:
    """The :func:`page_layout` of a cache, or a typed error saying which layouts would work.

    Args:
        name: What the cache is called in the message.
        cache: The cache.

    Returns:
        ``"NHD"`` or ``"HND"``.

    Raises:
        InvalidArgumentError: Any other layout.
    """
    found = page_layout(cache)
    if found is not None:
        return found
    _, bs, hkv, d = cache.shape
    raise InvalidArgumentError(
        f"{name} has strides {tuple(cache.stride())}; its [block_size, Hkv, D] pages must be stored token-major "
        f"(strides ({hkv * d}, {d}, 1) for dims 1-3, a contiguous cache) or head-major (FlashInfer's HND: "
        f"({d}, {bs * d}, 1), a [num_blocks, Hkv, block_size, D] tensor passed as .permute(0, 2, 1, 3)), with blocks "
        f"at least a page ({bs * hkv * d} elements) apart."
    )
