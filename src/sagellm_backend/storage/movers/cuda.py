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

import functools
import warnings
from typing import Any

from .rows import index_copy_rows

__all__ = ["CudaRowCopier"]

#: Up to this many pairs, the kernel reads the staged indices straight from pinned host memory.
ZERO_COPY_PAIRS = 256

#: Up to this many pairs given as Python lists, copy block by block (one memcpy each; see
#: docs/PERFORMANCE.md for the measurement behind the threshold).
SHORT_LIST_PAIRS = 1


@functools.lru_cache(maxsize=1)
def _triton_copy() -> Any:
    try:
        from .. import triton_copy
    except (ImportError, RuntimeError):  # no Triton, or one that cannot compile here: torch indexing
        return None
    return triton_copy


class _IndexStager:
    """Moves index lists to the GPU through one reusable pinned ring buffer.

    ``tensor.pin_memory()`` per call churns torch's pinned-memory cache, and a pageable copy
    synchronises the stream. Here the lists are written into a pinned int32 ring and copied with
    one asynchronous H2D. The ring is cut into segments; an event per stream that read a segment is
    recorded only when staging moves on to the next segment, and a segment is written again only
    after those events completed, so a call records no event of its own.
    """

    SEGMENTS = 16

    def __init__(self, device_index: int) -> None:
        self.device_index = device_index
        self.buf: Any = None
        self.np_buf: Any = None
        self.seg_size = 0
        self.seg = 0
        self.pos = 0
        self.readers: set[int] = set()  # ids of the streams that read the current segment
        self.seg_events: list[list[Any]] = []

    def _leave(self) -> None:
        """Mark the end of the current segment's reads on every stream that read it."""
        import torch

        if not self.seg_events:
            return
        events = self.seg_events[self.seg]
        for stream_id in self.readers:
            stream = torch.cuda.Stream(stream_id=stream_id, device_index=self.device_index)  # type: ignore[no-untyped-call]  # unannotated in torch
            ev = torch.cuda.Event()  # type: ignore[no-untyped-call]  # torch leaves Event.__init__ unannotated
            ev.record(stream)
            events.append(ev)
        self.readers.clear()

    def _grow(self, n: int) -> None:
        import torch

        self._leave()
        for events in self.seg_events:
            for ev in events:
                ev.synchronize()
        size = 1 << 16
        while size < n:
            size <<= 1
        self.buf = torch.empty(size * self.SEGMENTS, dtype=torch.int32, pin_memory=True)
        self.np_buf = self.buf.numpy()
        self.seg_size, self.seg, self.pos = size, 0, 0
        self.seg_events = [[] for _ in range(self.SEGMENTS)]

    def _reserve(self, n: int) -> int:
        if self.buf is None or n > self.seg_size:
            self._grow(n)
        if self.pos + n > (self.seg + 1) * self.seg_size:
            self._leave()
            self.seg = (self.seg + 1) % self.SEGMENTS
            for ev in self.seg_events[self.seg]:
                ev.synchronize()  # the copies that last read this segment are done
            self.seg_events[self.seg].clear()
            self.pos = self.seg * self.seg_size
        start = self.pos
        self.pos += n
        return start

    def stage(self, lists: list[Any], device: Any, *, zero_copy: bool = False) -> Any:
        """Put the concatenated lists where a kernel on ``device`` can read them, asynchronously.

        Args:
            lists: Lists of ints.
            device: The CUDA device.
            zero_copy: Hand out the pinned ring slice itself: under unified addressing a kernel
                reads pinned host memory through the same pointer, so no H2D copy is enqueued
                (worth it for short lists, which a kernel reads once).

        Returns:
            One int32 tensor (on the device, or the pinned slice) holding the lists one after another.
        """
        import torch

        n = sum(len(x) for x in lists)
        start = self._reserve(n)
        pos = start
        for ids in lists:
            self.np_buf[pos : pos + len(ids)] = ids
            pos += len(ids)
        staged = self.buf[start : start + n]
        if not zero_copy:
            staged = staged.to(device, non_blocking=True)
        self.readers.add(torch._C._cuda_getCurrentStream(self.device_index)[0])
        return staged


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
        #: Short index lists are read by the kernel from pinned host memory (off if that ever fails).
        self.zero_copy = True
        self.zero_copy_proven = False

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

    def _prove_zero_copy(self, src: Any, dst: Any, staged: Any, n: int, lists: list[Any]) -> Any:
        """Launch the first zero-copy batch; where the kernel cannot read pinned host memory, stage
        through the device from now on. Returns ``None`` when the copy is done, else the indices to use."""
        s, words = self._words(src, True)
        d, _ = self._words(dst, True)
        try:
            self.tc.copy_words(s, staged, d, staged, n, words, dst_off=n)
        except Exception:
            self.zero_copy = False
            return self.stager.stage(lists, dst.device)
        self.zero_copy_proven = True
        return None

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
        src_t, dst_t, dst_off = src_ids, dst_ids, 0
        if type(src_ids) is list and type(dst_ids) is list:  # both lists: one staged tensor, no slicing
            zero_copy = self.zero_copy and n <= ZERO_COPY_PAIRS
            src_t = dst_t = self.stager.stage([src_ids, dst_ids], dev, zero_copy=zero_copy)
            dst_off = n
            if zero_copy and not self.zero_copy_proven:
                src_t = dst_t = self._prove_zero_copy(src, dst, src_t, n, [src_ids, dst_ids])
                if src_t is None:
                    return
        else:
            if src_ids is not None and not isinstance(src_ids, torch.Tensor):
                src_t = self.stager.stage([src_ids], dev)
            elif isinstance(src_ids, torch.Tensor) and src_ids.device != dev:
                src_t = src_ids.to(dev, non_blocking=True)
            if dst_ids is not None and not isinstance(dst_ids, torch.Tensor):
                dst_t = self.stager.stage([dst_ids], dev)
            elif isinstance(dst_ids, torch.Tensor) and dst_ids.device != dev:
                dst_t = dst_ids.to(dev, non_blocking=True)
        s, words = self._words(src, src is dst or src_ids is not None)
        d, _ = self._words(dst, src is dst or dst_ids is not None)
        spec = (src_ids is None, dst_ids is None, s.dtype)
        if spec in self.proven:
            self.tc.copy_words(s, src_t, d, dst_t, n, words, dst_off=dst_off)
            return
        try:
            self.tc.copy_words(s, src_t, d, dst_t, n, words, dst_off=dst_off)
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
