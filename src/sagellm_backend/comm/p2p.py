"""Point-to-point messages that cannot crash the receiver: a fixed-size header before every payload.

torch.distributed's ``recv`` trusts the caller's buffer: on gloo, a message larger than the buffer
aborts the receiving process (``SIGABRT`` from a failed ``gloo::EnforceNotMet``), and a smaller one
silently fills only part of it. So :func:`send` first sends a header of ``HEADER_LEN`` int64 words
on the same tag::

    [MAGIC, dtype code, itemsize, numel, ndim, dim 0, dim 1, ... dim 10]

and :func:`recv` reads it before posting the payload's receive. The header travels in a frame of
``FRAME_BYTES`` (the same on both ends, so no backend sees a size mismatch); a payload of up to
``INLINE_BYTES`` rides in the same frame, so a small send is one message. When the header does not
match the buffer (shape or dtype), the receiver takes a separate payload into a scratch tensor of
the sender's size and dtype, drops it, and raises :class:`CollectiveError` naming both sides. So:

* the receiver never crashes and never sees partial data;
* the sender's ``send`` completes normally (its payload was received); it is not told of the
  mismatch (that would need a reply message on every send), so only the receiving rank raises;
* the pair's channel stays in step: the next ``send``/``recv`` between them works.

Both ends must use this protocol (a :class:`~sagellm_backend.comm.torch_dist.TorchCommunicator`
on each). A raw ``torch.distributed.send`` arriving here is outside it: one of exactly
``FRAME_BYTES`` fails the header check (:class:`CollectiveError`), one of another size is what
torch.distributed does with it (gloo may still abort). The cost: a small send pads its
payload to one ``FRAME_BYTES`` message; a larger one sends one extra ``FRAME_BYTES`` message before
the payload (docs/PERFORMANCE.md has the figures).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from ..errors import CollectiveError
from . import dist_util as du

if TYPE_CHECKING:
    import torch

__all__ = ["FRAME_BYTES", "HEADER_LEN", "INLINE_BYTES", "MAGIC", "describe_header", "header_of", "recv", "send"]

HEADER_LEN = 16
"""int64 words of the header."""
INLINE_BYTES = 4096
"""Payloads up to this size travel inside the header message (one message per send)."""
FRAME_BYTES = HEADER_LEN * 8 + INLINE_BYTES
"""Size of the first message of every send, whatever the payload (so both ends always agree)."""
MAGIC = 0x53474C4D  # "SGLM"
_MAX_DIMS = HEADER_LEN - 5
_H = HEADER_LEN * 8
_PACK = struct.Struct(f"<{HEADER_LEN}q")


def header_of(t: torch.Tensor) -> list[int]:
    """The header describing ``t``.

    Args:
        t: The tensor.

    Returns:
        ``HEADER_LEN`` ints (dims beyond the 11th are covered by numel only).
    """
    dims = list(t.shape)[:_MAX_DIMS]
    row = [MAGIC, du.dtype_code(t.dtype), t.element_size(), t.numel(), t.dim(), *dims]
    return row + [0] * (HEADER_LEN - len(row))


def describe_header(h: list[int]) -> str:
    """``"(8,) torch.float32"`` for a header.

    Args:
        h: A header.

    Returns:
        Shape and dtype.
    """
    nd = h[4]
    dims = tuple(h[5 : 5 + min(nd, _MAX_DIMS)])
    shape = str(dims) if nd <= _MAX_DIMS else f"{str(dims)[:-1]}, ... ({h[3]} elements))"
    return f"{shape} {du.code_name(h[1])}"


def _bytes_of(t: torch.Tensor) -> torch.Tensor:
    """A flat uint8 view of a contiguous tensor (writes go to ``t``)."""
    import torch

    return t.detach().reshape(-1).view(torch.uint8)


def _frame_for(t: torch.Tensor) -> torch.Tensor:
    """The first message of a send of ``t``: header, then the payload when it fits."""
    import torch

    head = _PACK.pack(*header_of(t))
    nbytes = t.numel() * t.element_size()
    frame = torch.zeros(FRAME_BYTES, dtype=torch.uint8, device=t.device)
    if t.is_cpu:  # numpy slice assignment: a fraction of a torch op's dispatch cost
        view = frame.numpy()
        view[:_H] = memoryview(head)
        if nbytes <= INLINE_BYTES:
            view[_H : _H + nbytes] = _bytes_of(t).numpy()
    else:
        frame[:_H].copy_(torch.frombuffer(bytearray(head), dtype=torch.uint8))
        if nbytes <= INLINE_BYTES:
            frame[_H : _H + nbytes].copy_(_bytes_of(t))
    return frame


def send(run: Any, t: torch.Tensor, dst: int, tag: int, handle: Any) -> None:
    """Send the frame (header, and the payload when it fits), then the payload if it did not.

    Args:
        run: The communicator's error-mapping runner.
        t: A contiguous tensor on the communicator's device.
        dst: Global destination rank.
        tag: Message tag.
        handle: Group handle.
    """
    dist = du.dist()
    run("send", dist.send, _frame_for(t), dst=dst, group=handle, tag=tag)
    if t.numel() * t.element_size() > INLINE_BYTES:
        run("send", dist.send, t, dst=dst, group=handle, tag=tag)


def recv(run: Any, t: torch.Tensor, src: int, tag: int, handle: Any) -> torch.Tensor:
    """Receive the frame, check its header against ``t``, then take the payload into ``t``.

    Args:
        run: The communicator's error-mapping runner.
        t: The receive buffer.
        src: Global source rank.
        tag: Message tag.
        handle: Group handle.

    Returns:
        ``t``.

    Raises:
        CollectiveError: the message's shape or dtype differs from ``t``'s (the payload was
            drained and dropped; ``t`` is unchanged), or the message has no valid header.
    """
    import torch

    dist = du.dist()
    frame = torch.empty(FRAME_BYTES, dtype=torch.uint8, device=t.device)
    run("recv", dist.recv, frame, src=src, group=handle, tag=tag)
    head = frame[:_H] if frame.is_cpu else frame[:_H].cpu()
    got = list(_PACK.unpack(head.numpy().tobytes()))
    where = f"recv from rank {src} (tag {tag})"
    if got[0] != MAGIC or got[2] <= 0 or got[3] < 0 or got[4] < 0:
        raise CollectiveError(
            f"{where}: the message has no valid header, so it was not sent by this package's send(); "
            "both ranks must use provider.send/recv. The channel between the two ranks is now out of step.",
            src=src,
            tag=tag,
        )
    mine = header_of(t)
    sent_bytes = got[2] * got[3]
    if got[1:] != mine[1:]:
        if sent_bytes > INLINE_BYTES:
            _drain(run, got, t.device, src, tag, handle, where)
        raise CollectiveError(
            f"{where}: the message is {describe_header(got)}, the receive buffer {describe_header(mine)}. "
            "Pass a buffer of the sent shape and dtype; the message was received into scratch memory and "
            "dropped (the buffer is unchanged, the sender's send completed, the next message is unaffected).",
            src=src,
            tag=tag,
        )
    if sent_bytes <= INLINE_BYTES:
        if t.is_cpu:
            _bytes_of(t).numpy()[:] = frame.numpy()[_H : _H + sent_bytes]
        else:
            _bytes_of(t).copy_(frame[_H : _H + sent_bytes])
    else:
        run("recv", dist.recv, t, src=src, group=handle, tag=tag)
    return t


def _drain(run: Any, got: list[int], device: Any, src: int, tag: int, handle: Any, where: str) -> None:
    """Receive the mismatched payload into scratch memory of the sender's size and dtype."""
    import torch

    dtype = du.dtype_from_code(got[1])
    try:
        if dtype is not None and torch.empty((), dtype=dtype).element_size() == got[2]:
            scratch = torch.empty(got[3], dtype=dtype, device=device)
        else:  # a dtype this torch lacks: the same bytes
            scratch = torch.empty(got[2] * got[3], dtype=torch.uint8, device=device)
    except (RuntimeError, MemoryError) as exc:
        raise CollectiveError(
            f"{where}: the message ({describe_header(got)}) does not fit the buffer, and no scratch memory "
            f"could hold it ({exc}); the channel between the two ranks is now out of step.",
            src=src,
            tag=tag,
        ) from exc
    run("recv", du.dist().recv, scratch, src=src, group=handle, tag=tag)
