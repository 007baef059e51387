"""Checks and packing behind :meth:`PagedAttentionWrapper.plan`: one decode step's lengths, block tables and
slots, validated once and laid out as the wrapper's persistent buffers.

Inputs held on the host (lists, numpy arrays, CPU tensors) are validated on the host, with no device sync;
inputs already on the device are validated there with one sync (:func:`check_on_device`).

Imported lazily (it imports torch).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from ..errors import InvalidArgumentError, InvalidArgumentTypeError, InvalidBlockError

__all__ = ["StepInputs", "check_on_device", "check_static", "index_tensor", "pack_host"]


def index_tensor(name: str, value: object, ndim: int) -> torch.Tensor:
    """An integer tensor of rank ``ndim`` from a tensor, numpy array or (nested) list; tensors keep their device.

    Args:
        name: Argument name for the messages.
        value: The input.
        ndim: Required rank (1 or 2).

    Returns:
        The tensor (int32 and int64 keep their dtype; lists and other integer arrays and tensors become int64).

    Raises:
        InvalidArgumentTypeError: Not integers (floats, bools, strings ...).
        InvalidArgumentError: Wrong rank, or a ragged 2-D list.
    """
    import numpy as np

    if isinstance(value, torch.Tensor):
        t = value
    elif isinstance(value, (list, tuple, np.ndarray)):
        try:
            arr = np.asarray(value)
        except ValueError:  # ragged nesting
            raise InvalidArgumentError(f"{name} rows have different lengths; pad them to one width.") from None
        if arr.dtype.kind not in ("i", "u") and not (arr.size == 0 and arr.dtype.kind == "f"):
            raise InvalidArgumentTypeError(f"{name} must hold integers; got {arr.dtype} values: {value!r:.80}.")
        if arr.size == 0:
            arr = arr.reshape((0,) * ndim) if arr.ndim < ndim else arr
        if arr.dtype not in (np.int32, np.int64):
            arr = arr.astype(np.int64)
        elif not arr.flags.writeable or any(st < 0 or st % arr.itemsize for st in arr.strides):
            arr = np.array(arr, order="C")  # torch.from_numpy refuses such strides (a record field), warns on read-only
        t = torch.from_numpy(arr)
    else:
        raise InvalidArgumentTypeError(
            f"{name} must be an integer tensor, numpy array or list; got {type(value).__name__}."
        )
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise InvalidArgumentTypeError(f"{name} must be an integer tensor; got dtype {t.dtype}.")
    if t.dim() != ndim:
        raise InvalidArgumentError(f"{name} must be {ndim}-D; got shape {tuple(t.shape)}.")
    if t.dtype not in (torch.int32, torch.int64):  # narrow or unsigned ints would wrap in the checks' arithmetic
        t = t.to(torch.int64)
    return t


class StepInputs(NamedTuple):
    """One step's inputs as tensors, shapes checked: ``ctx [n]``, ``table [n, w]``, ``slots [n]``."""

    ctx: torch.Tensor
    table: torch.Tensor
    slots: torch.Tensor
    batch_size: int


def check_static(
    context_lens: object, block_tables: object, slot_mapping: object, batch_size: object, max_batch: int,
    max_blocks: int,
) -> StepInputs:  # fmt: skip
    """Types, ranks and shapes of a decode step (no value of a device tensor is read).

    Args:
        context_lens: ``[n]`` tokens cached per sequence.
        block_tables: ``[n, w]`` block ids, ``w <= max_blocks``.
        slot_mapping: ``[n]`` slot of each new token (negative = do not store).
        batch_size: Padded batch (``n <= batch_size <= max_batch``) or None for ``n``.
        max_batch: The wrapper's largest batch.
        max_blocks: The wrapper's block-table width.

    Returns:
        The inputs as tensors and the batch size.

    Raises:
        InvalidArgumentTypeError: Wrong types.
        InvalidArgumentError: Shapes or the batch size do not fit.
    """
    ctx = index_tensor("context_lens", context_lens, 1)
    table = index_tensor("block_tables", block_tables, 2)
    slots = index_tensor("slot_mapping", slot_mapping, 1)
    n = int(ctx.shape[0])
    if n > max_batch:
        raise InvalidArgumentError(f"{n} sequences exceed the wrapper's max_batch={max_batch}; build it larger.")
    if int(table.shape[0]) != n or int(slots.shape[0]) != n:
        raise InvalidArgumentError(
            f"context_lens has {n} entries, block_tables {int(table.shape[0])} rows and slot_mapping "
            f"{int(slots.shape[0])} entries; give one per sequence."
        )
    if int(table.shape[1]) > max_blocks:
        raise InvalidBlockError(
            f"block_tables has {int(table.shape[1])} columns but the wrapper holds max_blocks_per_seq={max_blocks}."
        )
    if batch_size is None:
        bsz = n
    elif isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise InvalidArgumentTypeError(f"batch_size must be an int or None; got {type(batch_size).__name__}.")
    else:
        bsz = batch_size
    if not n <= bsz <= max_batch:
        raise InvalidArgumentError(f"batch_size must be in [{n}, {max_batch}] (sequences .. max_batch); got {bsz}.")
    if len({ctx.device, table.device, slots.device}) > 1:
        raise InvalidArgumentError(
            f"context_lens, block_tables and slot_mapping are on {ctx.device}, {table.device} and {slots.device}; "
            "put them on one device (host lists count as CPU)."
        )
    return StepInputs(ctx, table, slots, bsz)


def check_on_device(step: StepInputs, block_size: int, num_blocks: int | None) -> int:
    """Value checks of a step, on whatever device its tensors are (one host sync when that is a GPU).

    Every used block-table entry (columns below ``ceil((ctx + 1) / block_size)``) is a block id
    (``>= 0``, ``< num_blocks`` when known); the table covers position ``ctx``; each slot is negative
    (skipped) or the slot of position ``ctx`` by the table.

    Args:
        step: The inputs.
        block_size: Tokens per block.
        num_blocks: Blocks of the cache, or None when not yet known.

    Returns:
        The largest used block id (-1 when nothing is used; host inputs with ``num_blocks`` known may give -1 too:
        the id only matters while the cache size is unknown).

    Raises:
        InvalidArgumentError: A negative length, or a slot other than its position's.
        InvalidBlockError: A table too narrow for its sequence, or a used entry that is not a block id.
    """
    ctx, table, slots, _ = step
    n, w = int(table.shape[0]), int(table.shape[1])
    if n == 0:
        return -1
    if ctx.device.type == "cpu":
        found = _first_error_host(ctx.numpy(), table.numpy(), slots.numpy(), block_size, num_blocks)
        if found[0] < 0:
            return found[1]
    c = ctx.to(torch.int64)
    s = slots.to(torch.int64)
    t = table.to(torch.int64)
    bad_len = (c < 0) | (c + 1 > w * block_size)
    col = (c // block_size).clamp(0, max(w - 1, 0))
    used = torch.arange(w, device=t.device)[None, :] <= col[:, None]
    bad_ids = used & ((t < 0) | (t >= (num_blocks if num_blocks is not None else 2**62)))
    expected = (t.gather(1, col[:, None])[:, 0] * block_size + c % block_size) if w else c
    bad_slot = (s >= 0) & (s != expected)
    top = torch.where(used, t, -1).amax() if w else c.new_tensor(-1)
    if ctx.device.type == "cpu":
        flags = [found[0] == 0, found[0] == 1, found[0] == 2, -1]
    else:
        summary = torch.stack([bad_len.any(), bad_ids.any(), bad_slot.any()]).to(torch.int64)
        flags = torch.cat([summary, top.reshape(1)]).tolist()  # the one sync
    if flags[0]:
        i = int(bad_len.nonzero()[0, 0])
        raise InvalidBlockError(
            f"context_lens[{i}] = {int(c[i])}: the new token at that position needs {int(c[i]) // block_size + 1} "
            f"blocks of {block_size}, but block_tables has {w} columns (and lengths must be >= 0)."
        )
    if flags[1]:
        i, j = (int(x) for x in bad_ids.nonzero()[0])
        limit = "" if num_blocks is None else f" (0..{num_blocks - 1})"
        raise InvalidBlockError(
            f"block_tables[{i}][{j}] = {int(t[i, j])} is used (sequence {i} has {int(c[i]) + 1} positions) but is "
            f"not a block id of the cache{limit}."
        )
    if flags[2]:
        i = int(bad_slot.nonzero()[0, 0])
        raise InvalidArgumentError(
            f"slot_mapping[{i}] = {int(s[i])} but the token at position {int(c[i])} of sequence {i} lives in slot "
            f"{int(expected[i])} by block_tables; use a negative slot only to skip the store."
        )
    return int(flags[3])


def _first_error_host(
    c: Any, t: Any, s: Any, block_size: int, num_blocks: int | None
) -> tuple[int, int]:  # numpy arrays: cheaper than torch ops on a few thousand ints; few calls, each costs ~1 us
    """``(-1, largest used block id)`` if the host arrays pass :func:`check_on_device`'s checks, else
    ``(k, 0)`` with ``k`` the first failing check (0 lengths, 1 block ids, 2 slots). With ``num_blocks`` given the
    largest id may be returned as -1 (the caller only keeps it while the cache size is unknown)."""
    import numpy as np

    n, w = t.shape
    hi = _max_below(c, w * block_size)
    if hi is None:
        return 0, 0
    col, rem = np.divmod(c, np.int64(block_size))  # an int64 divisor: any block size, with int32 lengths too
    used = t[:, : hi // block_size + 1]  # no row uses a column past the longest's
    # With the cache size known, a rectangle of valid ids holds valid used entries (no mask, no copy).
    if num_blocks is not None and (not used.size or _max_below(used, num_blocks) is not None):
        top = -1
    else:
        ids = used[np.arange(used.shape[1])[None, :] <= col[:, None]]  # every used entry (each row uses 0..col)
        top = int(ids.max()) if ids.size else -1
        if (ids.size and int(ids.min()) < 0) or (num_blocks is not None and top >= num_blocks):
            return 1, 0
    expected = np.multiply(t[np.arange(n), col], block_size, dtype=np.int64)
    expected += rem
    differ = s != expected
    if np.count_nonzero(differ) and np.count_nonzero(s[differ] >= 0):  # a negative slot means "do not store"
        return 2, 0
    return -1, top


def _max_below(values: Any, limit: int) -> int | None:
    """The largest entry of the non-empty int32/int64 numpy array ``values`` (:func:`index_tensor` makes every
    index tensor one) if every entry is in ``[0, limit)``, else None. Seen as unsigned, a negative entry is
    >= 2**31 >= ``limit``: one reduction checks both bounds."""
    if limit <= 2**31:
        top = int(values.view(f"u{values.dtype.itemsize}").max())
        return top if top < limit else None
    top = int(values.max())
    return top if int(values.min()) >= 0 and top < limit else None


def pack_host(step: StepInputs, views: tuple[Any, ...], block_size: int, num_blocks: int | None, trusted: bool) -> None:
    """Write one step's host inputs into a buffer's numpy views: real rows first, padding after. Every element is
    written (no stale value of an earlier step survives); padding rows get zeros and slot -1.

    Args:
        step: The inputs (checked by :func:`check_on_device` unless ``trusted``).
        views: ``(block_tables [mb, width], key_lens [mb], slot_mapping [mb], positions [mb])`` of the buffer.
        block_size: Tokens per block.
        num_blocks: Blocks of the cache, or None when not yet known.
        trusted: Unchecked inputs: block ids clamped into the cache, slots outside it skipped, key lengths clamped
            into the row.
    """
    import numpy as np

    tables, kl, sl, pos = views
    mb, width = tables.shape
    ctx, table, slots = step.ctx.numpy(), step.table.numpy(), step.slots.numpy()
    n, w = table.shape
    if trusted:
        np.clip(table, 0, None if num_blocks is None else num_blocks - 1, out=tables[:n, :w], casting="unsafe")
        if num_blocks is not None:
            slots = np.where(slots < num_blocks * block_size, slots, -1)
        kl[:n] = np.clip(ctx.astype(np.int64) + 1, 0, width * block_size)
    else:
        tables[:n, :w] = table
        np.add(ctx, 1, out=kl[:n], casting="unsafe")  # checked: 1 <= ctx + 1 <= w * block_size
    if w < width:
        tables[:n, w:] = 0
    sl[:n] = slots
    pos[:n] = ctx
    if n < mb:
        tables[n:] = 0
        kl[n:] = 0
        sl[n:] = -1
        pos[n:] = 0
