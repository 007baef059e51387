"""Repeat launches of a Triton kernel without its dispatcher: the compiled kernel is called directly.

``kernel[grid](*args, **kw)`` binds and specialises every argument, hashes a cache key and checks globals
on each call: tens of microseconds of host time, paid per layer per step. :func:`launch` does that once
per *exact* argument signature (every int and float value, every tensor's dtype, device and 16-byte
alignment, every keyword), keeps the compiled kernel Triton returned, and later calls its launcher with
the same arguments. Two calls with one signature specialise identically, so the compiled kernel is the
one Triton itself would pick. Off CUDA (the interpreter) and while launch hooks are installed every call
goes through Triton's dispatcher. ``SAGELLM_TRITON_DIRECT_LAUNCH=0`` (read at import) turns this off;
``TRITON_INTERPRET=1`` does too.

:func:`bind` goes one step further for a caller that launches one kernel with the same arguments again and
again but for a few tensors (a layer's query, key, value, caches, output): it keeps the whole argument list and
a later call only puts the new tensors' data pointers (ints, which the launcher takes as they are) in place
before the compiled kernel's launcher. :class:`BoundCache` keeps such bindings for one kernel, keyed by what the
caller says its launches differ in.

Imported lazily (it imports torch and triton).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from math import gcd
from operator import itemgetter
from typing import Any

import torch
import triton
from triton.runtime import driver

from . import triton_raw
from .launch_math import cdiv, next_power_of_2

__all__ = [
    "DIRECT", "BoundCache", "BoundLaunch", "bind", "call_signature", "cdiv", "current_device_stream", "launch",
    "next_power_of_2",
]  # fmt: skip

#: Whether direct launches are on for this process.
DIRECT = os.environ.get("SAGELLM_TRITON_DIRECT_LAUNCH", "1") != "0" and os.environ.get("TRITON_INTERPRET", "0") in (
    "",
    "0",
)
_LOCK = threading.Lock()
_data_ptr = torch.Tensor.data_ptr
_COMPILED: dict[tuple[Any, ...], tuple[Any, tuple[str, ...], Callable[..., None] | None]] = {}
_MAX_ENTRIES = 4096


def current_device_stream() -> tuple[Any, int]:
    """The current device as Triton's driver names it, and the raw handle of its current stream as Triton's launcher
    reads it (C calls; ``torch.cuda.current_stream()`` costs several microseconds of Python): what a
    :class:`BoundLaunch` call takes as ``where``.

    Returns:
        ``(device, stream)``.
    """
    active = driver.active
    dev = active.get_current_device()
    return dev, int(active.get_current_stream(dev))


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
                    _COMPILED[key] = (kernel, tuple(fn.arg_names[len(args) :]), triton_raw.raw_launch(kernel))
            return
        kernel, names, raw = found
        tail = tuple(kw[name] for name in names)  # this call's values: tensors in keywords are runtime pointers
        stream = driver.active.get_current_stream(dev)
        g = (*grid, 1, 1)
        if raw is not None:
            raw(g[0], g[1], g[2], stream, enter, leave, (*args, *tail))
            return
        kernel.run(g[0], g[1], g[2], stream, kernel.function, kernel.packed_metadata, None, enter, leave, *args, *tail)

    return run


class BoundLaunch:
    """A compiled kernel's launch with every argument fixed but the ``live`` tensors (:func:`bind`).

    Calling it with new tensors (in ``live``'s order) and their data pointers launches on the current stream. The caller
    guarantees that they match the bound ones in dtype, device and 16-byte alignment of the data pointer and, where the
    bound ones repeated a tensor, repeat it the same way (a binding made from distinct tensors puts each position's own
    pointer in place, so it serves any repetition); every other argument keeps its bound value. The compiled kernel's
    launcher gets every pointer as an int (its fast path: no ``data_ptr()`` call and no driver pointer query per tensor
    argument). Under launch hooks or on another current device the launch goes through Triton's dispatcher, with the
    tensors.
    """

    def __init__(self, fn: Any, grid: tuple[int, ...], kernel: Any, full: list[Any], positional: int,
                 names: tuple[str, ...], options: dict[str, Any], live: tuple[tuple[int, ...], ...],
                 device: Any) -> None:  # fmt: skip
        self._fn = fn
        self._grid = (*grid, 1, 1)[:3]
        self._kernel = kernel
        self._raw = triton_raw.raw_launch(kernel)
        self._full = full  # holds the bound tensors (and so their memory) while the binding lives
        self._ptrs = [a.data_ptr() if isinstance(a, torch.Tensor) else a for a in full]
        # The launch's arguments are picked, in C, from the bound values followed by the live pointers (or, for
        # Triton's dispatcher, the live tensors).
        where = {i: len(full) + j for j, group in enumerate(live) for i in group}
        idx = [where.get(i, i) for i in range(len(full))]
        self._pick: Callable[[list[Any]], tuple[Any, ...]] = (
            itemgetter(*idx) if len(idx) > 1 else (lambda values: (values[idx[0]],))
        )
        self._positional = positional
        self._names = names
        self._options = options
        self._device = device
        #: What the binding's owner keeps with it (the fused decode: the byte spans of its tensors' layout).
        self.extra: Any = None

    def __call__(self, tensors: tuple[Any, ...], ptrs: list[int], where: tuple[Any, int] | None = None) -> None:
        """Launch with ``tensors`` in place of the live ones.

        Args:
            tensors: One per live tensor, in order.
            ptrs: Their ``data_ptr()`` values, in the same order (a list).
            where: :func:`current_device_stream`, where the caller has just read it (else read here).
        """
        dev, stream = current_device_stream() if where is None else where
        enter, leave, busy = _hooks()
        if busy or dev != self._device:
            a = self._pick([*self._full, *tensors])
            n = self._positional
            self._fn[self._grid](*a[:n], **dict(zip(self._names, a[n:])), **self._options)
            return
        g = self._grid
        if self._raw is not None:
            self._raw(g[0], g[1], g[2], stream, enter, leave, self._pick(self._ptrs + ptrs))
            return
        k = self._kernel
        k.run(g[0], g[1], g[2], stream, k.function, k.packed_metadata, None, enter, leave,
              *self._pick(self._ptrs + ptrs))  # fmt: skip


def bind(
    fn: Any, grid: tuple[int, ...], args: tuple[Any, ...], kw: dict[str, Any], live: tuple[Any, ...]
) -> BoundLaunch | None:
    """The launch ``launch(fn, grid)(*args, **kw)`` (called before, so compiled) with the tensors ``live`` to be
    replaced at every call; each live tensor stands for every argument that *is* it.

    Args:
        fn: The JIT kernel.
        grid: 1 to 3 program counts.
        args: The positional arguments of that launch.
        kw: Its keywords (constexprs and launch options).
        live: Tensors among ``args``/``kw`` that change between calls.

    Returns:
        The bound launch, or None when direct launches are off or the kernel was not kept (not yet launched,
        launched under hooks, tensors off CUDA).
    """
    if not DIRECT:
        return None
    dev = driver.active.get_current_device()
    key = _signature(fn, dev, args, kw)
    found = None if key is None else _COMPILED.get(key)
    if found is None:
        return None
    kernel, names, _ = found
    full = [*args, *(kw[name] for name in names)]
    where = tuple(tuple(i for i, x in enumerate(full) if x is t) for t in live)
    for i in (i for group in where for i in group):
        full[i] = None  # every call puts its own tensors there; the binding keeps none of these alive
    options = {k: v for k, v in kw.items() if k not in names}
    return BoundLaunch(fn, grid, kernel, full, len(args), names, options, where, dev)


#: The first item of the token of a binding made from live tensors that repeat one (``(_ALIASED, key, pattern)``):
#: no caller's key starts with it, so such a token never equals a caller's key.
_ALIASED = object()


class BoundCache:
    """Bound launches of one kernel, found by a key the caller builds.

    :meth:`find` looks a binding up by the caller's key, which must hold everything the launch depends on but the
    live tensors' data (every non-tensor argument, keyword and grid value, the live tensors' dtypes, every fact of a
    tensor that is not live); the cache adds which live tensors are one tensor, and never binds a call with an
    unaligned (not 16-byte) pointer. Calling the cache itself is the eager form for launches whose arguments are
    cheap: it adds the grid and the live tensors' dtypes to the key. Live tensors must be CUDA tensors.
    Thread-safe; at most ``limit`` bindings (then it starts over).

    Args:
        fn: The JIT kernel.
        limit: Most bindings kept.
    """

    def __init__(self, fn: Any, limit: int = 256) -> None:
        self._fn = fn
        self._limit = limit
        self._bound: dict[Hashable, BoundLaunch] = {}

    def __len__(self) -> int:
        return len(self._bound)

    def find(
        self, key: tuple[Any, ...], live: tuple[Any, ...]
    ) -> tuple[Hashable | None, BoundLaunch | None, list[int]]:
        """The binding of ``key`` for these live tensors, if any: one bound from live tensors that were all distinct
        serves any call (each argument position takes its own tensor); a call whose live tensors repeat one (a tensor
        in two roles) is otherwise served only by a binding made with the same repetition.

        Args:
            key: The caller's key (hashable; see the class).
            live: The tensors among the arguments whose data changes between calls.

        Returns:
            ``(token, binding, ptrs)``: call ``binding(live, ptrs)`` when it is not None, else :meth:`launch_new`
            with ``token`` (None when a pointer is unaligned or direct launches are off: such a launch is never
            bound); ``ptrs`` are the live tensors' data pointers.
        """
        ptrs = list(map(_data_ptr, live))
        if gcd(*ptrs) % 16 or not DIRECT:  # every pointer 16-byte aligned (gcd(0, 0) is 0)
            return None, None, ptrs
        found = self._bound.get(key)
        if found is not None:
            return key, found, ptrs
        ids = tuple(map(id, live))
        if len(set(ids)) == len(ids):
            return key, None, ptrs
        token = (_ALIASED, key, tuple(map(ids.index, ids)))  # a tensor in two roles: which
        return token, self._bound.get(token), ptrs

    def launch_new(
        self, token: Hashable | None, grid: tuple[int, ...], args: tuple[Any, ...], kw: dict[str, Any],
        live: tuple[Any, ...],
    ) -> BoundLaunch | None:  # fmt: skip
        """``launch(fn, grid)(*args, **kw)`` for a call :meth:`find` found no binding for, and bind it under
        ``token`` (unless None).

        Args:
            token: :meth:`find`'s token.
            grid: 1 to 3 program counts.
            args: Positional arguments.
            kw: Constexprs and launch options.
            live: The tensors :meth:`find` was given.

        Returns:
            The binding made, or None.
        """
        launch(self._fn, grid)(*args, **kw)
        if token is None:
            return None
        made = bind(self._fn, grid, args, kw, live)
        if made is not None:
            with _LOCK:
                if len(self._bound) >= self._limit:
                    self._bound.clear()
                self._bound[token] = made
        return made

    def __call__(
        self, key: tuple[Any, ...], grid: tuple[int, ...], args: tuple[Any, ...], kw: dict[str, Any],
        live: tuple[Any, ...],
    ) -> BoundLaunch | None:  # fmt: skip
        """:meth:`find`, then the binding or :meth:`launch_new`, for arguments already built: ``grid`` and the live
        tensors' dtypes join ``key``.

        Args:
            key: The caller's part of the key (hashable).
            grid: 1 to 3 program counts.
            args: Positional arguments.
            kw: Constexprs and launch options.
            live: The tensors among ``args``/``kw`` whose data changes between calls.

        Returns:
            The binding that launched or was made (a caller may keep it and call it with new live tensors of the
            same layout, aliasing and alignment), or None.
        """
        token, found, ptrs = self.find((key, grid, *[t.dtype for t in live]), live)
        if found is not None:
            found(live, ptrs)
            return found
        return self.launch_new(token, grid, args, kw, live)


def call_signature(*parts: Any) -> tuple[Any, ...] | None:
    """A key for a call's kept binding: each tensor's layout (shape, strides, dtype, device index, whether CUDA, whether
    it requires grad: a result buffer that does is refused, so never kept) and which tensors are one (identity), every
    other part with its type. Two calls with equal keys pass equal checks and launch the same way on their own data
    pointers (which the caller still checks: alignment, overlaps).

    Args:
        *parts: Tensors, None, bools, ints, floats and strings.

    Returns:
        The key, or None when direct launches are off or a part is of another type (such a call is never kept).
    """
    if not DIRECT:
        return None
    key: list[Any] = []
    ids: list[int] = []
    for p in parts:
        if isinstance(p, torch.Tensor):
            key.append((p.shape, p.stride(), p.dtype, p.get_device(), p.is_cuda, p.requires_grad))
            ids.append(id(p))
        elif p is None or type(p) in _PLAIN:
            key.append((type(p), p))  # 1 and True (equal as keys) are told apart
        else:
            return None
    if len(set(ids)) != len(ids):  # a tensor in two roles: which
        key.append(tuple(map(ids.index, ids)))
    return tuple(key)


_PLAIN = (bool, int, float, str)
