"""torch.distributed plumbing shared by the torch communicator: the lazily imported module, the
reduce-op table, error mapping, dtype codes, and fingerprints for consistency checks."""

from __future__ import annotations

from typing import Any

from ..errors import BackendError, CollectiveError, CommTimeoutError, UnavailableError
from ..protocol import ReduceOp, coerce_enum

__all__ = [
    "check_consistency",
    "code_name",
    "dist",
    "dtype_code",
    "dtype_from_code",
    "gather_single",
    "map_error",
    "native_op",
    "reduce_op",
]

_TIMEOUT_MARKERS = ("timed out", "timeout", "deadline")
_PEER_LOST_MARKERS = (
    "connection closed",
    "connection reset",
    "broken pipe",
    "econnreset",
    "connection refused",
    "socket closed",
    "remote worker crash",
    "peer",
)
_DTYPE_CODES: dict[str, int] = {}
_CODE_NAMES: dict[int, str] = {}
# op (member or its string value) -> member: a dict hit instead of an enum look-up per call
_REDUCE_LOOKUP: dict[object, ReduceOp] = {**{m: m for m in ReduceOp}, **{m.value: m for m in ReduceOp}}
_NATIVE_OPS: dict[ReduceOp, Any] = {}


def gather_single() -> Any:
    """``dist.all_gather_single`` (torch >= 2.13), else ``all_gather_into_tensor`` (its old name,
    deprecated in 2.13)."""
    d = dist()
    return getattr(d, "all_gather_single", None) or d.all_gather_into_tensor


def native_op(rop: ReduceOp) -> Any:
    if not _NATIVE_OPS:
        d = dist()
        _NATIVE_OPS.update(
            {
                ReduceOp.SUM: d.ReduceOp.SUM,
                ReduceOp.PROD: d.ReduceOp.PRODUCT,
                ReduceOp.MAX: d.ReduceOp.MAX,
                ReduceOp.MIN: d.ReduceOp.MIN,
                ReduceOp.BAND: d.ReduceOp.BAND,
                ReduceOp.BOR: d.ReduceOp.BOR,
                ReduceOp.BXOR: d.ReduceOp.BXOR,
                ReduceOp.AVG: d.ReduceOp.AVG,
            }
        )
    return _NATIVE_OPS[rop]


def reduce_op(op: object) -> ReduceOp:
    # only exact str / ReduceOp are hashed: a user object's __hash__ may raise anything
    found = _REDUCE_LOOKUP.get(op) if type(op) is str or type(op) is ReduceOp else None
    return found if found is not None else coerce_enum(ReduceOp, op, what="reduce op")


_DIST: Any = None


def dist() -> Any:
    global _DIST
    if _DIST is None:
        import torch.distributed as dist

        if not dist.is_available():
            raise UnavailableError(
                "torch.distributed is not available in this torch build; install a torch with "
                "distributed support (the default PyPI builds have it)."
            )
        _DIST = dist
    return _DIST


def dtype_code(dtype: Any) -> int:
    """A stable number for a name (dtype or operation), the same on every rank.

    Args:
        dtype: A dtype or a string.

    Returns:
        The code; :func:`code_name` maps it back.
    """
    key = str(dtype)
    if key not in _DTYPE_CODES:
        code = sum(ord(c) * 31**i for i, c in enumerate(key)) % (1 << 31)
        _DTYPE_CODES[key] = code
        _CODE_NAMES[code] = key
    return _DTYPE_CODES[key]


_CODE_DTYPES: dict[int, Any] = {}
_COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "barrier", "send", "recv")


def _known_names() -> None:
    """Register every torch dtype and collective name once, so that codes another rank sends
    (for a dtype this rank never used) still print as names."""
    if _CODE_DTYPES:
        return
    import torch

    for value in vars(torch).values():
        if isinstance(value, torch.dtype):
            _CODE_DTYPES[dtype_code(value)] = value
    for name in _COLLECTIVES:
        dtype_code(name)


def code_name(code: int) -> str:
    """The name behind a :func:`dtype_code`: every torch dtype and collective is known.

    Args:
        code: The code.

    Returns:
        The name (``torch.float32``, ``all_reduce`` ...), or ``#code`` for a name this torch lacks.
    """
    _known_names()
    return _CODE_NAMES.get(code, f"#{code}")


def dtype_from_code(code: int) -> Any:
    """The torch dtype behind a :func:`dtype_code`, or ``None`` when this torch has none.

    Args:
        code: The code.

    Returns:
        The dtype.
    """
    _known_names()
    return _CODE_DTYPES.get(code)


def _extra_text(what: str, extra: int) -> str:
    if what in ("all_reduce", "reduce_scatter"):
        ops = list(ReduceOp)
        return f" op {ops[extra].value}" if 0 <= extra < len(ops) else f" op #{extra}"
    if what == "broadcast":
        return f" src {extra}"
    return ""


def map_error(exc: BaseException, what: str, timeout: float | None) -> BackendError:
    """The typed error for a torch.distributed failure: timeouts and lost peers become
    :class:`CommTimeoutError`, anything else :class:`CollectiveError`.

    Args:
        exc: What torch raised.
        what: The operation.
        timeout: Its timeout in seconds.

    Returns:
        The error to raise.
    """
    if isinstance(exc, BackendError):
        return exc
    text = str(exc)
    low = text.lower()
    limit = f"{timeout:.1f}s" if timeout else "the group timeout"
    if any(m in low for m in _TIMEOUT_MARKERS):
        return CommTimeoutError(
            f"{what} timed out after {limit}: not every rank arrived. Check that all ranks run "
            f"the same collectives in the same order and that none has hung. ({text.strip()[:300]})",
            op=what,
        )
    if any(m in low for m in _PEER_LOST_MARKERS):
        return CommTimeoutError(
            f"{what} failed: a peer rank left (its connection closed) before the collective "
            f"finished. Check the logs of the other ranks. ({text.strip()[:300]})",
            op=what,
        )
    return CollectiveError(f"{what} failed: {text.strip()[:500]}", op=what)


def check_consistency(run: Any, what: str, tensor: Any, extra: int, handle: Any, size: int) -> None:
    """Exchange a fingerprint (op, dtype, shape) and raise :class:`CollectiveError` naming every
    rank's arguments when they differ.

    Args:
        run: The communicator's error-mapping runner.
        what: The collective.
        tensor: This rank's tensor.
        extra: An op code.
        handle: The group handle.
        size: Group size.
    """
    import torch

    shape = list(tensor.shape)[:12]
    fp = [dtype_code(what), dtype_code(tensor.dtype), extra, tensor.dim(), *shape]
    fp += [0] * (16 - len(fp))
    mine = torch.tensor(fp, dtype=torch.int64, device=tensor.device)
    everyone = torch.empty(size * 16, dtype=torch.int64, device=tensor.device)
    run(what, gather_single(), everyone, mine, group=handle)
    rows = everyone.view(size, 16).tolist()
    if any(r != rows[0] for r in rows):
        parts = []
        for r, row in enumerate(rows):
            nd = row[3]
            dims = tuple(row[4 : 4 + min(nd, 12)])
            shape_text = str(dims) if nd <= 12 else f"{str(dims)[:-1]}, ...)"
            op = code_name(row[0])
            parts.append(f"rank {r}: shape {shape_text} dtype {code_name(row[1])}{_extra_text(op, row[2])} in {op}")
        raise CollectiveError(
            f"{what}: ranks passed mismatched arguments ({'; '.join(parts)}); this rank has "
            f"shape {tuple(tensor.shape)} {tensor.dtype}. Every rank must pass the same shape, "
            "dtype and op.",
            op=what,
        )
