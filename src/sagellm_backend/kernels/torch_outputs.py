"""Checks of caller-owned results: ``out=`` of the torch and Triton engine kernels ``rmsnorm`` and ``silu_mul`` and
``output=`` of the attention backends' ``forward``; ``inplace=True`` of ``add_rmsnorm`` (vLLM's
``rms_norm(out, ...)``, ``silu_and_mul(out, ...)``, in-place ``fused_add_rms_norm`` and ``AttentionImpl.forward``'s
``output``). Address ranges come from :mod:`.overlap`.

An output buffer is a torch tensor of exactly the shape, dtype and device the kernel would return, contiguous, and
sharing no byte range with any input (checked on address ranges, so interleaved views of one buffer count as
sharing). In place, ``x`` and ``residual`` are distinct tensors of one shape, dtype and device, sharing no byte range,
in the dtype the norm returns. Every check runs before anything is written, so a rejected call changes nothing.

Imported lazily (it imports torch).
"""

from __future__ import annotations

import torch

from ..errors import InvalidArgumentError, InvalidArgumentTypeError, InvalidDeviceError, UnsupportedDTypeError
from .overlap import shares_memory, strides_overlap

__all__ = ["check_inplace", "check_out", "check_writable", "plain_out", "refuse_overlap"]


def check_out(
    op: str, out: object, shape: torch.Size, dtype: torch.dtype, device: torch.device, inputs: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """``out`` as the result buffer of ``op``, or a typed error saying what it must be.

    Args:
        op: The kernel's name, for messages.
        out: The caller's buffer.
        shape: The result's shape.
        dtype: The result's dtype.
        device: The result's device.
        inputs: The call's tensors, which ``out`` must not share memory with.

    Returns:
        ``out``.

    Raises:
        InvalidArgumentTypeError: ``out`` is not a torch tensor.
        InvalidArgumentError: Another shape, not contiguous, not writable in place (:func:`check_writable`), or
            sharing memory with an input.
        UnsupportedDTypeError: Another dtype.
        InvalidDeviceError: Another device.
    """
    if not isinstance(out, torch.Tensor):
        raise InvalidArgumentTypeError(f"{op}: out must be a torch tensor or None; got {type(out).__name__}.")
    want = f"{op}: out must be a contiguous tensor of shape {tuple(shape)}, dtype {dtype} on {device}"
    if out.shape != shape:
        raise InvalidArgumentError(f"{want}; got shape {tuple(out.shape)}.")
    if out.dtype != dtype:
        raise UnsupportedDTypeError(f"{want}; got dtype {out.dtype}.")
    if out.device != device:
        raise InvalidDeviceError(f"{want}; got a tensor on {out.device}.")
    if not out.is_contiguous():
        raise InvalidArgumentError(f"{want}; got strides {out.stride()}. Pass a contiguous buffer.")
    check_writable(op, "out", out)
    if any(shares_memory(out, t) for t in inputs):
        raise InvalidArgumentError(f"{want}, sharing no memory with the inputs; it overlaps one. Pass another.")
    return out


def plain_out(out: object) -> bool:
    """Whether ``out`` is a contiguous torch tensor the kernels may write in place (:func:`check_writable`), checked
    in a few attribute reads; when False, :func:`check_out` says what is wrong (or accepts an inference tensor under
    ``torch.inference_mode``).

    Args:
        out: A caller's result buffer.

    Returns:
        True for a plain buffer.
    """
    return isinstance(out, torch.Tensor) and out.is_contiguous() and not out.requires_grad and not out.is_inference()


def check_writable(op: str, name: str, t: torch.Tensor) -> None:
    """Raise unless the kernels may write ``t`` in place: it requires no grad (the kernels record no autograd, so a
    write would leave gradients wrong) and is not an inference tensor outside inference mode (torch forbids writing
    one there; a Triton launch would not notice).

    Args:
        op: The call's name, for the message.
        name: The argument's name.
        t: The tensor.

    Raises:
        InvalidArgumentError: It requires grad, or is an inference tensor outside ``torch.inference_mode``.
    """
    if t.requires_grad:
        raise InvalidArgumentError(
            f"{op}: {name} must be writable in place; it requires grad, and the kernels record no autograd. Pass a "
            "tensor that does not (detach it)."
        )
    if t.is_inference() and not torch.is_inference_mode_enabled():
        raise InvalidArgumentError(
            f"{op}: {name} must be writable in place; it is an inference tensor, which may be written only under "
            "torch.inference_mode(). Call there or pass a normal tensor."
        )


def check_inplace(x: object, residual: object, w: torch.Tensor) -> None:
    """The checks of ``add_rmsnorm(x, residual, w, eps, inplace=True)`` beyond those of the out-of-place call.

    Args:
        x: The input, overwritten with the normalised sum.
        residual: The residual, overwritten with the sum.
        w: The weight.

    Raises:
        InvalidArgumentTypeError: ``x`` or ``residual`` is not a torch tensor.
        InvalidArgumentError: Different shapes, the two (or the weight and either) share memory, or elements of one
            do.
        UnsupportedDTypeError: Different dtypes, or a weight whose dtype would promote the result past ``x``'s.
        InvalidDeviceError: Different devices.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(residual, torch.Tensor):
        raise InvalidArgumentTypeError(
            f"add_rmsnorm(inplace=True) writes into x and residual, which must be torch tensors; got "
            f"{type(x).__name__} and {type(residual).__name__}."
        )
    pre = "add_rmsnorm(inplace=True) writes the norm into x and the sum into residual"
    if x.shape != residual.shape:
        got = f"{tuple(x.shape)} and {tuple(residual.shape)}"
        raise InvalidArgumentError(f"{pre}: they must have one shape; got {got}.")
    promoted = torch.promote_types(w.dtype, x.dtype) if isinstance(w, torch.Tensor) else x.dtype
    if residual.dtype != x.dtype or promoted != x.dtype:
        raise UnsupportedDTypeError(
            f"{pre}: x, residual and the result must share one dtype; got x {x.dtype}, residual {residual.dtype} and "
            f"a result in {promoted} (the weight's dtype promotes it). Use inplace=False, or a weight in {x.dtype}."
        )
    if x.device != residual.device:
        raise InvalidDeviceError(f"{pre}: they must be on one device; got {x.device} and {residual.device}.")
    for name, t in (("x", x), ("residual", residual)):
        check_writable("add_rmsnorm(inplace=True)", name, t)
        if strides_overlap(t.shape, t.stride()):
            raise InvalidArgumentError(
                f"{pre}: each element needs its own memory; {name} (shape {tuple(t.shape)}, strides {t.stride()}) "
                "has elements that share it (an expanded or overlapping view). Pass a materialised tensor."
            )
    if shares_memory(x, residual):
        raise InvalidArgumentError(f"{pre}: they must not share memory; they overlap. Pass separate tensors.")
    if isinstance(w, torch.Tensor) and (shares_memory(w, x) or shares_memory(w, residual)):
        raise InvalidArgumentError(f"{pre}: the weight must not share memory with them; it overlaps. Pass a copy.")


def refuse_overlap(op: str, out: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> None:
    """Raise unless ``out`` shares no byte with any of ``inputs`` (same device).

    Args:
        op: The call's name, for the message.
        out: Its output buffer.
        inputs: The tensors it reads or writes besides (query, key, value, caches).

    Raises:
        InvalidArgumentError: ``out`` overlaps one of them.
    """
    for i, t in enumerate(inputs):
        if shares_memory(out, t):
            raise InvalidArgumentError(
                f"{op}: out must share no memory with its inputs; it overlaps input {i} (shape {tuple(t.shape)}). "
                "Pass a separate buffer."
            )
