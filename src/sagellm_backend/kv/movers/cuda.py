"""The CUDA block mover's row copier: one Triton launch per batch, index lists staged through a
pinned ring, word views of arenas cached until the pool forgets its arena; very short lists go
through one ``cudaMemcpyAsync`` per block, which costs less than staging and a launch.

The same copier serves ROCm builds of torch (``torch.cuda`` is HIP there), where Triton's AMD
backend compiles the kernel. A kernel is compiled on the first launch of each specialisation, not
when the module imports, so a Triton that cannot compile for the device (an architecture its
backend does not know, a broken toolchain) fails at that first launch; the copier then switches
to torch indexing for good, with a warning that says why.
"""

from __future__ import annotations

import collections
import functools
import warnings
from typing import Any

from .torch_device import index_copy_rows

__all__ = ["CudaRowCopier"]

#: Up to this many pairs given as Python lists, copy block by block (a memcpy each).
SHORT_LIST_PAIRS = 4


@functools.lru_cache(maxsize=1)
def _triton_copy() -> Any:
    try:
        from .. import triton_copy
    except (ImportError, RuntimeError):  # no Triton, or one that cannot compile here: torch indexing
        return None
    return triton_copy


class _IndexStager:
    """Moves index lists to the GPU through one reusable pinned ring buffer.

    ``tensor.pin_memory()`` per call churns torch's pinned-memory cache (and can fall back to
    cudaHostAlloc, which takes milliseconds); a pageable copy would synchronise the stream. Here
    the lists are written into a pinned int32 ring and copied with one asynchronous H2D; an event
    per copy tells when its slice of the ring may be overwritten.
    """

    def __init__(self, device_index: int) -> None:
        self.device_index = device_index
        self.buf: Any = None
        self.np_buf: Any = None
        self.pos = 0
        self.pending: collections.deque[tuple[int, int, Any]] = collections.deque()

    def _reserve(self, n: int) -> int:
        import torch

        if self.buf is None or n > self.buf.numel():
            for _, _, ev in self.pending:
                ev.synchronize()
            self.pending.clear()
            cap = max(1 << 20, 2 * n)
            self.buf = torch.empty(cap, dtype=torch.int32, pin_memory=True)
            self.np_buf = self.buf.numpy()
            self.pos = 0
        if self.pos + n > self.buf.numel():
            self.pos = 0
        start, end = self.pos, self.pos + n
        while self.pending and self.pending[0][0] < end and self.pending[0][1] > start:
            self.pending.popleft()[2].synchronize()  # that slice's copy must be done first
        self.pos = end
        return start

    def stage(self, lists: list[Any], device: Any) -> list[Any]:
        import torch

        n = sum(len(x) for x in lists)
        start = self._reserve(n)
        pos = start
        for ids in lists:
            self.np_buf[pos : pos + len(ids)] = ids
            pos += len(ids)
        dev = self.buf[start : start + n].to(device, non_blocking=True)
        ev = torch.cuda.Event()  # type: ignore[no-untyped-call]
        ev.record()
        self.pending.append((start, start + n, ev))
        out, pos = [], 0
        for ids in lists:
            out.append(dev[pos : pos + len(ids)])
            pos += len(ids)
        return out


class CudaRowCopier:
    """``dst[dst_ids[k]] = src[src_ids[k]]`` on a CUDA device, as one Triton launch.

    Args:
        device_index: The GPU.
        tc: The ``triton_copy`` module.
    """

    def __init__(self, device_index: int, tc: Any) -> None:
        self.tc = tc
        self.stager = _IndexStager(device_index)
        self.words: dict[tuple[int, tuple[int, ...], Any], tuple[Any, int]] = {}
        #: Kernel specialisations that launched once (compiled and ran) on this device.
        self.proven: set[tuple[bool, bool, Any]] = set()
        #: Why Triton was given up for torch indexing, or ``None`` while it serves.
        self.disabled: str | None = None

    @classmethod
    def create(cls, device_index: int) -> CudaRowCopier | None:
        """A copier, or ``None`` where Triton is missing (torch indexing is used then).

        Args:
            device_index: The GPU.

        Returns:
            The copier or ``None``.
        """
        tc = _triton_copy()
        return None if tc is None else cls(device_index, tc)

    def forget(self, arena: Any) -> None:
        """Drop the cached word view of an arena about to be released.

        Args:
            arena: The arena tensor.
        """
        self.words.pop((arena.data_ptr(), tuple(arena.shape), arena.dtype), None)

    def _words(self, t: Any, cache: bool) -> tuple[Any, int]:
        key = (t.data_ptr(), tuple(t.shape), t.dtype)
        hit = self.words.get(key)
        if hit is not None:
            return hit
        view: tuple[Any, int] = self.tc.word_view(t)
        if cache:
            self.words[key] = view
        return view

    def __call__(self, src: Any, src_ids: Any, dst: Any, dst_ids: Any) -> None:
        import torch

        if self.disabled is not None:
            index_copy_rows(src, src_ids, dst, dst_ids)
            return
        if (
            type(src_ids) is list
            and type(dst_ids) is list
            and len(src_ids) <= SHORT_LIST_PAIRS
            and src.dtype == dst.dtype
        ):
            for s, d in zip(src_ids, dst_ids):
                dst[d].copy_(src[s], non_blocking=True)
            return
        dev = dst.device
        n = len(src_ids) if src_ids is not None else len(dst_ids)
        lists = [ids for ids in (src_ids, dst_ids) if ids is not None and not isinstance(ids, torch.Tensor)]
        staged = iter(self.stager.stage(lists, dev) if lists else [])

        def index(ids: Any) -> Any:
            if ids is None:
                return None
            if isinstance(ids, torch.Tensor):
                return ids if ids.device == dev else ids.to(dev, non_blocking=True)
            return next(staged)

        s, words = self._words(src, src is dst or src_ids is not None)
        d, _ = self._words(dst, src is dst or dst_ids is not None)
        spec = (src_ids is None, dst_ids is None, s.dtype)
        if spec in self.proven:
            self.tc.copy_words(s, index(src_ids), d, index(dst_ids), n, words)
            return
        try:
            self.tc.copy_words(s, index(src_ids), d, index(dst_ids), n, words)
        except Exception as exc:  # first launch compiles: Triton cannot build for this device
            # Compilation fails before anything is launched, so nothing was written: the same
            # copy through torch indexing is complete and correct (and raises itself if the
            # arguments were at fault).
            self.disabled = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"the Triton block copier failed on its first launch on {dev} ({self.disabled}); "
                "block copies use torch indexing from now on",
                RuntimeWarning,
                stacklevel=2,
            )
            index_copy_rows(src, src_ids, dst, dst_ids)
            return
        self.proven.add(spec)
