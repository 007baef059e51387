"""Block-id validation for every pool path: exact integers only.

``True``, ``1.0``, numpy floats, 2-D arrays and unhashable objects are refused with a typed error;
numpy integers and integer tensors (any shape up to 1-D, 0-d included) are accepted and turned
into plain ``int``. The check of a plain list of ints is one C-level pass (``set(map(type, ids))``).
"""

from __future__ import annotations

from typing import Any

from ..core.validate import exact_int
from ..errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["as_block_id", "as_id_list", "check_trusted_ids", "copy_pairs"]


def _is_int_dtype(dtype: Any) -> bool:
    kind = getattr(dtype, "kind", None)  # numpy
    if kind is not None:
        return kind in ("i", "u")
    return str(dtype).startswith(("torch.int", "torch.uint"))


def _ndim(value: Any) -> int:
    ndim = getattr(value, "ndim", None)
    return int(ndim) if ndim is not None else int(value.dim())


def _bad(what: str, value: object) -> InvalidArgumentTypeError:
    return InvalidArgumentTypeError(
        f"{what} must hold integer block ids; got {type(value).__name__} {value!r}. "
        "Pass Python ints (or numpy integers / integer tensors).",
    )


def as_block_id(value: object, what: str = "block_id") -> int:
    """One block id as a plain int.

    Args:
        value: An int, numpy integer, or 0-d integer array/tensor.
        what: Argument name for messages.

    Returns:
        The id.

    Raises:
        InvalidArgumentTypeError: a bool, float, or anything that is not an integer.
    """
    if type(value) is int:
        return value
    found = exact_int(value)
    if found is None:
        raise _bad(what, value)
    return found


def as_id_list(ids: object, what: str) -> list[int]:
    """A sequence of block ids as a list of plain ints.

    Args:
        ids: List, tuple, range, 1-D numpy array or tensor of integers.
        what: Argument name for messages.

    Returns:
        The ids (the same list object when it already holds only ints).

    Raises:
        InvalidArgumentTypeError: not a sequence, or an element is not an integer.
    """
    if type(ids) is list:
        if list(map(type, ids)).count(int) == len(ids):  # one C-level pass; bool and float are not int
            return ids
        return [as_block_id(i, what) for i in ids]
    try:
        if isinstance(ids, (tuple, range)):
            return as_id_list(list(ids), what)
        dtype: Any = getattr(ids, "dtype", None)
        if dtype is not None and hasattr(ids, "tolist"):
            if not _is_int_dtype(dtype) or _ndim(ids) != 1:
                raise InvalidArgumentTypeError(
                    f"{what} must be a 1-D integer array or tensor; got dtype {dtype} with {_ndim(ids)} dimension(s)."
                )
            out = ids.tolist()
            return out if isinstance(out, list) else [out]
    except MemoryError as exc:  # range(2**62): more ids than memory could hold
        raise InvalidArgumentError(
            f"{what} holds more block ids than fit in memory ({type(ids).__name__}); no pool has that many."
        ) from exc
    if isinstance(ids, (str, bytes, dict, set, frozenset)) or not hasattr(ids, "__iter__"):
        raise InvalidArgumentTypeError(
            f"{what} must be a sequence of block ids (list, tuple, numpy array, tensor); got {type(ids).__name__}."
        )
    try:
        items = list(ids)  # any other iterable
    except Exception as exc:  # its __iter__ / __next__ raised: not a usable sequence
        raise InvalidArgumentTypeError(
            f"{what} could not be iterated ({type(exc).__name__}: {exc}); pass a list of block ids."
        ) from exc
    return [as_block_id(i, what) for i in items]


def check_trusted_ids(ids: object, num_blocks: int, what: str) -> Any:
    """The trusted path's one safety check: integers within ``[0, num_blocks)``, without set work.

    Host sequences, numpy arrays and CPU tensors become a list of ints checked with one C-level
    ``min``/``max``. Tensors on an accelerator are returned as they are (1-D integer only): the
    device kernel masks out-of-range pairs, so no host synchronisation is needed and nothing is
    ever written outside the arena.

    Args:
        ids: The ids.
        num_blocks: The pool's size.
        what: Argument name for messages.

    Returns:
        A list of ints, or the device tensor.

    Raises:
        InvalidArgumentTypeError: not integers.
        InvalidArgumentError: an id outside the pool (host ids).
    """
    device = getattr(ids, "device", None)
    if device is not None and getattr(device, "type", "cpu") != "cpu":
        dtype = getattr(ids, "dtype", None)
        if not _is_int_dtype(dtype) or _ndim(ids) != 1:
            raise InvalidArgumentTypeError(f"{what} must be a 1-D integer tensor; got {dtype} with {_ndim(ids)} dims.")
        return ids
    lst = as_id_list(ids, what)
    if lst and (min(lst) < 0 or max(lst) >= num_blocks):
        bad = min(lst) if min(lst) < 0 else max(lst)
        raise InvalidArgumentError(
            f"{what} holds block id {bad}, outside this pool's ids 0..{num_blocks - 1}; nothing was copied.",
            block_id=bad,
        )
    return lst


def copy_pairs(src_ids: object, dst_ids: object, *, validate: object, num_blocks: int) -> tuple[Any, Any]:
    """The ids of a ``copy_blocks`` batch, checked as far as ids alone allow (liveness is the pool's).

    Args:
        src_ids: Source ids.
        dst_ids: Destination ids.
        validate: ``True``: same length, distinct destinations, disjoint from the sources.
            ``False`` (trusted): integers in range and the same length only (:func:`check_trusted_ids`).
        num_blocks: The pool's size.

    Returns:
        ``(src, dst)``: lists of ints (device index tensors as they are, trusted only).

    Raises:
        InvalidArgumentTypeError: ``validate`` is not a bool, or ids are not integers.
        InvalidArgumentError: lengths differ, duplicate or overlapping destinations, ids out of range.
    """
    if validate is not True and validate is not False:  # never truth-test an array or an object
        raise InvalidArgumentTypeError(f"validate must be True or False; got {type(validate).__name__}.")
    if not validate:  # trusted: no set work, index tensors (even on the device) go to the kernel as they are
        src, dst = check_trusted_ids(src_ids, num_blocks, "src_ids"), check_trusted_ids(dst_ids, num_blocks, "dst_ids")
        if len(src) != len(dst):
            raise InvalidArgumentError(f"src_ids and dst_ids differ in length: {len(src)} vs {len(dst)}.")
        return src, dst
    src, dst = as_id_list(src_ids, "src_ids"), as_id_list(dst_ids, "dst_ids")
    if len(src) != len(dst):
        raise InvalidArgumentError(f"src_ids and dst_ids must have the same length; got {len(src)} and {len(dst)}.")
    dst_set = set(dst)
    if len(dst_set) != len(dst):
        raise InvalidArgumentError(
            "dst_ids contain duplicates: two copies would write one block. Pass each destination once."
        )
    if not dst_set.isdisjoint(src):
        raise InvalidArgumentError(
            "dst_ids and src_ids overlap: a block may not be read and written in one batch "
            f"(e.g. {sorted(dst_set.intersection(src))[:4]}). Split the batch."
        )
    return src, dst
