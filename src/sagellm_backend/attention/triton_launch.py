"""Repeat launches of a Triton kernel without its dispatcher: the compiled kernel is called directly.

``kernel[grid](*args, **kw)`` binds and specialises every argument, hashes a cache key and checks globals
on each call: tens of microseconds of host time, paid per layer per step. :func:`launch` does that once
per *exact* argument signature (every int and float value, every tensor's dtype, device and 16-byte
alignment, every keyword), keeps the compiled kernel Triton returned, and later calls its launcher with
the same arguments. Two calls with one signature specialise identically, so the compiled kernel is the
one Triton itself would pick. Off CUDA (the interpreter) and while launch hooks are installed every call
goes through Triton's dispatcher. ``SAGELLM_TRITON_DIRECT_LAUNCH=0`` (read at import) turns this off;
``TRITON_INTERPRET=1`` does too.

Imported lazily (it imports torch and triton).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import torch
import triton
from triton.runtime import driver

__all__ = ["DIRECT", "launch"]

#: Whether direct launches are on for this process.
DIRECT = os.environ.get("SAGELLM_TRITON_DIRECT_LAUNCH", "1") != "0" and os.environ.get("TRITON_INTERPRET", "0") in (
    "",
    "0",
)
_LOCK = threading.Lock()
_COMPILED: dict[tuple[Any, ...], tuple[Any, tuple[str, ...]]] = {}
_MAX_ENTRIES = 4096


def _hooks() -> tuple[Any, Any, bool]:
    knobs = getattr(triton, "knobs", None)
    if knobs is None:
        return None, None, True
    enter, leave = knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook
    busy = bool(getattr(enter, "calls", enter)) or bool(getattr(leave, "calls", leave))
    return enter, leave, busy


def _part(a: Any) -> Any:
    """What of one argument the compiled kernel is specialised on; None for a tensor off CUDA."""
    if isinstance(a, torch.Tensor):
        return (a.dtype, a.get_device(), a.data_ptr() % 16 == 0) if a.is_cuda else None
    return (type(a), a)


def _signature(fn: Any, device: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> tuple[Any, ...] | None:
    parts: list[Any] = [fn, device]
    for a in (*args, *kw.values()):
        p = _part(a)
        if p is None:
            return None
        parts.append(p)
    parts.extend(kw)  # the keywords' names and order
    return tuple(parts)


def launch(fn: Any, grid: tuple[int, ...]) -> Callable[..., None]:
    """``fn[grid]`` for a ``@triton.jit`` kernel, called as ``launch(fn, grid)(*args, **constexprs_and_options)``.

    Positional arguments must be the kernel's leading parameters and keywords its remaining (constexpr)
    parameters plus launch options (``num_warps``, ``num_stages``).

    Args:
        fn: The JIT kernel.
        grid: 1 to 3 program counts.

    Returns:
        The launcher.
    """

    def run(*args: Any, **kw: Any) -> None:
        if not DIRECT:
            fn[grid](*args, **kw)
            return
        dev = driver.active.get_current_device()
        key = _signature(fn, dev, args, kw)
        found = None if key is None else _COMPILED.get(key)
        enter, leave, busy = _hooks() if found is not None else (None, None, True)
        if found is None or busy:
            kernel = fn[grid](*args, **kw)
            if key is not None and found is None and hasattr(kernel, "run") and hasattr(kernel, "packed_metadata"):
                with _LOCK:
                    if len(_COMPILED) >= _MAX_ENTRIES:
                        _COMPILED.clear()
                    _COMPILED[key] = (kernel, tuple(fn.arg_names[len(args) :]))
            return
        kernel, names = found
        tail = tuple(kw[name] for name in names)  # this call's values: tensors in keywords are runtime pointers
        stream = driver.active.get_current_stream(dev)
        g = (*grid, 1, 1)
        kernel.run(g[0], g[1], g[2], stream, kernel.function, kernel.packed_metadata, None, enter, leave, *args, *tail)

    return run
