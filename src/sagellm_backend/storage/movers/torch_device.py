"""Block movement for torch arenas in device memory: batched row copies on the device (Triton on
CUDA, torch indexing elsewhere) and device <-> host transfers pipelined over two streams."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from ...device import Device
from ...kv.mover import BlockMover
from .rows import index_copy_rows

if TYPE_CHECKING:
    from ...api.streams import Event, Stream

__all__ = ["DeviceOps", "TorchDeviceMover"]

#: Device <-> host transfers are split into chunks of this size so that the gather (or scatter)
#: of chunk k+1 on the compute stream overlaps the PCIe copy of chunk k on a copy stream.
_PIPELINE_CHUNK_BYTES = 32 << 20


class DeviceOps(Protocol):
    """What a device mover needs from its storage (a ``storage.torch_device.TorchDeviceStorage``)."""

    @property
    def device_id(self) -> int:
        """The device's ordinal."""

    @property
    def module(self) -> Any:
        """``torch.<accelerator>``."""

    def create_event(self, owner: int) -> Event:
        """A native event on the device."""

    def stream_ctx(self, stream: Stream | None) -> AbstractContextManager[Any]:
        """Enter ``stream`` (``None``: stay on the current one)."""

    def keep_alive(self, tensor: Any, stream: Stream | None) -> None:
        """Hold ``tensor`` until the work queued on ``stream`` has run."""

    def alloc_tensor(self, device: Device, dtype: Any, shape: tuple[int, ...], *, pinned: bool = False) -> Any:
        """An uninitialised tensor."""

    def copy_stream(self) -> Any:
        """The native side stream for device <-> host transfers."""


class TorchDeviceMover(BlockMover):
    """Moves blocks of an accelerator's arenas (device arenas, and pinned host arenas through
    :class:`TorchHostMover`).

    Args:
        storage: The device storage.
        host: The mover of its pinned host arenas.
        fast_copy: Use the CUDA row copier (Triton) for batched copies where it loads.
    """

    def __init__(self, storage: DeviceOps, host: BlockMover, *, fast_copy: bool = False) -> None:
        self.storage = storage
        self.host = host
        self.copy_rows: Any = index_copy_rows
        if fast_copy:
            from .cuda import CudaRowCopier

            copier = CudaRowCopier.create(storage.device_id)
            if copier is not None:
                self.copy_rows = copier

    def view(self, arena: Any, block_id: int) -> Any:
        return arena[block_id]

    def record(self, stream: Stream | None) -> Event | None:
        """Device copies are asynchronous even without a stream: mark them on the current one."""
        if stream is not None:
            return stream.record_event()
        ev = self.storage.create_event(0)
        ev.record()
        return ev

    def copy_blocks(self, arena: Any, src: list[int], dst: list[int], stream: Stream | None) -> None:
        if arena.is_cpu:
            self.host.copy_blocks(arena, src, dst, stream)
        elif stream is None:  # the hot path: no context manager
            self.copy_rows(arena, src, arena, dst)
        else:
            with self.storage.stream_ctx(stream):
                self.copy_rows(arena, src, arena, dst)

    def gather(self, arena: Any, ids: list[int], device: Device, stream: Stream | None, out: Any = None) -> Any:
        import torch

        if arena.is_cpu:
            return self.host.gather(arena, ids, device, stream, out)
        n = len(ids)
        shape = (n, *arena.shape[1:])
        with self.storage.stream_ctx(stream):
            if device.type != "cpu":
                staging = torch.empty(shape, dtype=arena.dtype, device=arena.device)
                self.copy_rows(arena, ids, staging, None)
                if str(device) == str(arena.device):
                    return staging
                moved = staging.to(str(device), non_blocking=True)
                self.storage.keep_alive(staging, stream)
                return moved
            if out is None:
                out = self.storage.alloc_tensor(Device("cpu"), arena.dtype, shape, pinned=True)
            mod = self.storage.module
            cur = mod.current_stream(arena.device)
            cs = self.storage.copy_stream()
            row = arena[0].numel() * arena.element_size()
            per_chunk = max(1, _PIPELINE_CHUNK_BYTES // row)
            for lo in range(0, n, per_chunk):
                part = ids[lo : lo + per_chunk]
                staging = torch.empty((len(part), *arena.shape[1:]), dtype=arena.dtype, device=arena.device)
                self.copy_rows(arena, part, staging, None)  # gather k on the compute stream
                cs.wait_stream(cur)
                with mod.stream(cs):  # while PCIe moves chunk k, the compute stream gathers k+1
                    out[lo : lo + len(part)].copy_(staging, non_blocking=True)
                staging.record_stream(cs)
            cur.wait_stream(cs)  # later work on this stream (and its events) follow the last copy
            return out

    def scatter(self, arena: Any, ids: list[int], rows: Any, stream: Stream | None) -> None:
        if arena.is_cpu:
            self.host.scatter(arena, ids, rows, stream)
            return
        with self.storage.stream_ctx(stream):
            if rows.device == arena.device:
                self.copy_rows(rows, None, arena, ids)
                return
            mod = self.storage.module
            cur = mod.current_stream(arena.device)
            cs = self.storage.copy_stream()
            cs.wait_stream(cur)  # the source rows may still be being written on this stream
            row = arena[0].numel() * arena.element_size()
            per_chunk = max(1, _PIPELINE_CHUNK_BYTES // row)
            for lo in range(0, len(ids), per_chunk):
                part = rows[lo : lo + per_chunk]
                with mod.stream(cs):  # staging belongs to the copy stream: no reuse hazard there
                    staging = part.to(arena.device, non_blocking=True)
                cur.wait_stream(cs)  # scatter k waits for copy k; copy k+1 runs during scatter k
                self.copy_rows(staging, None, arena, ids[lo : lo + per_chunk])
                staging.record_stream(cur)

    def forget(self, arena: Any) -> None:
        forget = getattr(self.copy_rows, "forget", None)
        if forget is not None and not arena.is_cpu:
            forget(arena)
