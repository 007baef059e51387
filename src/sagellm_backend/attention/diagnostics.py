"""Process-wide counters of attention calls, per ``"<backend>:<path>"`` key, plus the latest call.

:func:`record_attention_call` never raises (it is called unguarded on the engine's hot path) and is
thread-safe. Keys of the paged backend's kernel paths start with ``"paged:implementation="``.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = [
    "COUNTER_NAMES",
    "count_attention_call",
    "get_attention_diagnostics",
    "record_attention_call",
    "reset_attention_diagnostics",
]

#: Integer counters kept per key.
COUNTER_NAMES: tuple[str, ...] = (
    "total_calls",
    "prefill_calls",
    "decode_calls",
    "block_table_calls",
    "context_lens_calls",
    "kv_cache_calls",
)

_LOCK = threading.Lock()
_COUNTERS: dict[str, dict[str, int]] = {}
_LATEST: dict[str, Any] | None = None


def _plain(value: Any) -> Any:
    """Shapes (torch.Size, lists) as tuples of ints; other values as given."""
    if isinstance(value, (tuple, list)) or type(value).__name__ == "Size":
        try:
            return tuple(int(x) for x in value)
        except (TypeError, ValueError):
            return tuple(value)
    return value


def record_attention_call(
    *,
    backend_name: Any = "unknown",
    path_name: Any = "unknown",
    is_prefill: Any = False,
    query_shape: Any = None,
    key_shape: Any = None,
    value_shape: Any = None,
    has_kv_cache: Any = False,
    has_block_tables: Any = False,
    has_context_lens: Any = False,
    num_seqs: Any = 0,
    query_tokens: Any = 0,
    max_context_len: Any = 0,
    max_blocks_per_seq: Any = 0,
    **extra: Any,
) -> dict[str, Any] | None:
    """Count one attention call under ``"<backend_name>:<path_name>"`` and remember it as the latest.

    Never raises: bad values are stored as given (or the call is dropped if even that fails).

    Args:
        backend_name: Backend name (e.g. ``"paged"``).
        path_name: Path taken (e.g. ``"implementation=triton"``).
        is_prefill: Prefill or decode.
        query_shape: Query shape (stored as a tuple).
        key_shape: Key shape.
        value_shape: Value shape.
        has_kv_cache: A KV cache was passed.
        has_block_tables: Block tables were present.
        has_context_lens: Context lengths were present.
        num_seqs: Sequences in the batch.
        query_tokens: Query tokens in the call.
        max_context_len: Longest context.
        max_blocks_per_seq: Block-table width.
        **extra: Further facts, kept in the latest-call record.

    Returns:
        The record counted (for :func:`count_attention_call`), or None if it was dropped.
    """
    try:
        call: dict[str, Any] = {
            "backend_name": str(backend_name),
            "path_name": str(path_name),
            "is_prefill": bool(is_prefill),
            "query_shape": _plain(query_shape),
            "key_shape": _plain(key_shape),
            "value_shape": _plain(value_shape),
            "has_kv_cache": bool(has_kv_cache),
            "has_block_tables": bool(has_block_tables),
            "has_context_lens": bool(has_context_lens),
            "num_seqs": num_seqs,
            "query_tokens": query_tokens,
            "max_context_len": max_context_len,
            "max_blocks_per_seq": max_blocks_per_seq,
            **extra,
        }
        count_attention_call(call)
    except Exception:  # diagnostics must never break an attention call: the call is dropped
        return None
    return call


def count_attention_call(call: dict[str, Any]) -> None:
    """Count a call record built by :func:`record_attention_call` again (the hot path of a call identical to
    an earlier one keeps its record and skips rebuilding it). The record must not be mutated afterwards.

    Args:
        call: The record (``backend_name``, ``path_name``, ``is_prefill`` and the ``has_*`` flags are read).
    """
    global _LATEST
    key = f"{call['backend_name']}:{call['path_name']}"
    with _LOCK:
        c = _COUNTERS.get(key)
        if c is None:
            c = _COUNTERS[key] = dict.fromkeys(COUNTER_NAMES, 0)
        c["total_calls"] += 1
        c["prefill_calls" if call["is_prefill"] else "decode_calls"] += 1
        c["block_table_calls"] += call["has_block_tables"]
        c["context_lens_calls"] += call["has_context_lens"]
        c["kv_cache_calls"] += call["has_kv_cache"]
        _LATEST = call


def get_attention_diagnostics() -> dict[str, Any]:
    """Snapshot of the counters.

    Returns:
        ``{"_meta": {"latest_call": dict | None}, "<backend>:<path>": {counter: int, ...}, ...}``; a copy.
    """
    with _LOCK:
        out: dict[str, Any] = {"_meta": {"latest_call": None if _LATEST is None else dict(_LATEST)}}
        out.update({k: dict(v) for k, v in _COUNTERS.items()})
    return out


def reset_attention_diagnostics() -> None:
    """Clear every counter and the latest call."""
    global _LATEST
    with _LOCK:
        _COUNTERS.clear()
        _LATEST = None
