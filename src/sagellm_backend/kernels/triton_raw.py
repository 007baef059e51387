"""Triton's C kernel launch called directly (:func:`raw_launch`), past the Python of its CUDA launcher, where that
launcher's source is one reviewed here (:data:`RAW_LAUNCH_SOURCES`).

Imported lazily (:mod:`.triton_launch` imports it; it imports no torch).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import types
from collections.abc import Callable
from typing import Any

__all__ = ["RAW", "RAW_LAUNCH_SOURCES", "launcher_source_digest", "raw_launch"]

#: SHA-256 of reviewed ``CudaLauncher.__call__`` sources (whitespace collapsed: :func:`launcher_source_digest`) ->
#: how each passes its arguments to the C ``launch`` (the Triton it comes from). For a kernel without scratch memory
#: or sanitizer each does nothing else per call. tests/test_triton_raw_launch.py checks :func:`raw_launch` against
#: the installed launcher and against the reviewed 3.6 source (tests/data).
RAW_LAUNCH_SOURCES: dict[str, str] = {
    "6ac1fdd62dbc8cde7cfe80c8f4dc6c99b74ed49362901ba8f2f2977de33e8650": "3.9",
    "b5e4d84a36af22efc4017e23f5873393dc885ae5ca6077a545182aa971d8d324": "3.6",
}
#: Whether bound and direct launches call the C launch themselves where :func:`raw_launch` allows
#: (``SAGELLM_TRITON_RAW_LAUNCH=0``, read at import, turns it off).
RAW = os.environ.get("SAGELLM_TRITON_RAW_LAUNCH", "1") != "0"


def launcher_source_digest(cls: type) -> str:
    """SHA-256 of ``cls.__call__``'s source with its whitespace collapsed ("" where there is no source), computed
    once per function (a ``__call__`` patched later is a new function, digested anew).

    Args:
        cls: A launcher class.

    Returns:
        The hex digest.
    """
    return _function_digest(cls.__call__)


@functools.lru_cache(maxsize=64)
def _function_digest(fn: Any) -> str:
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        return ""
    return hashlib.sha256(" ".join(src.split()).encode()).hexdigest()


def raw_launch(kernel: Any) -> Callable[..., None] | None:
    """The C launch under a compiled kernel's CUDA launcher, with what that launcher's Python adds fixed, for a
    kernel whose launcher adds nothing per call (no global or profile scratch memory, no sanitizer, no tensor
    descriptors: its ``launch`` is not wrapped in Python) and whose code is one of :data:`RAW_LAUNCH_SOURCES`. That
    Python (scratch allocators asked for nothing, a closure made per call, the arguments repacked) costs host time
    on every launch. Decided when a launch is first compiled or bound: a launcher patched afterwards (a profiler
    wrapping ``CudaLauncher.__call__``) is not called by the launches decided before.

    Args:
        kernel: What ``fn[grid](...)`` returned.

    Returns:
        ``go(grid_x, grid_y, grid_z, stream, enter_hook, exit_hook, args)`` (``args`` a tuple of every kernel
        argument, as ``kernel.run`` takes them after its first nine), or None where the launcher must be called.
    """
    run: Any = getattr(kernel, "run", None)
    cls: type = type(run)
    layout = RAW_LAUNCH_SOURCES.get(launcher_source_digest(cls)) if cls.__name__ == "CudaLauncher" else None
    if not RAW or layout is None or getattr(run, "gsan_enabled", False):
        return None
    if getattr(run, "global_scratch_size", 1) or getattr(run, "profile_scratch_size", 1):
        return None
    c_launch = getattr(run, "launch", None)
    if c_launch is None or isinstance(c_launch, types.FunctionType):  # Python wraps it: tensor descriptors
        return None
    fn, meta = kernel.function, kernel.packed_metadata
    coop, pdl = run.launch_cooperative_grid, run.launch_pdl
    if layout == "3.6":

        def go(gx: int, gy: int, gz: int, stream: int, enter: Any, leave: Any, args: tuple[Any, ...]) -> None:
            # No global or profile scratch (None, as the launcher passes for size 0), no launch metadata.
            c_launch(gx, gy, gz, stream, fn, coop, pdl, None, None, meta, None, enter, leave, *args)

        return go
    if layout != "3.9":
        return None
    annotations, signature = run.arg_annotations, run.kernel_signature

    def go39(gx: int, gy: int, gz: int, stream: int, enter: Any, leave: Any, args: tuple[Any, ...]) -> None:
        c_launch(gx, gy, gz, stream, fn, coop, pdl, meta, None, enter, leave, None, None, annotations, signature, args)

    return go39
