"""The shared torch-device core: KV storage as torch tensors, streams, collectives, graphs.

Written once against torch's device-agnostic APIs and the ``torch.<accelerator>`` module shape
that ``torch.cuda``, ``torch.npu`` (torch_npu) and Kunlun's XPyTorch share, so the vendor files
(:mod:`.cpu`, :mod:`.cuda`, :mod:`.ascend`, :mod:`.kunlun`) only state facts and detection.

Dtype storage: fp32/fp16/bf16/int8 natively; fp8 as ``torch.float8_e4m3fn``; int4 packed two per
byte in ``torch.uint8`` along the head dimension (low nibble first, the caller packs).

torch is imported inside functions only: importing this module never imports torch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from ..collectives import CommGroup, TorchCommunicator
from ..contract import Event, Graph, Stream, current_stream
from ..contract import _tls as _contract_tls
from ..device import Device
from ..errors import InvalidArgumentError, InvalidArgumentTypeError, UnsupportedOperationError
from ..kernels import global_kernels
from ..kernels.engine import register_engine_kernels  # engine kernels
from ..kv.hostcopy import copy_rows
from ..kv.pool import ArenaOps
from ..protocol import DType, KernelKind
from ..streams import HostEvent, HostStream
from ._core import ProviderCore

if TYPE_CHECKING:
    import torch

__all__ = ["DeviceEvent", "DeviceStream", "TorchGraph", "TorchProviderCore", "torch_dtype"]

#: Device <-> host transfers are split into chunks of this size so that the gather (or scatter)
#: of chunk k+1 on the compute stream overlaps the PCIe copy of chunk k on a copy stream.
_PIPELINE_CHUNK_BYTES = 32 << 20
_kernels_done: set[str] = set()
_kernels_lock = threading.Lock()


def torch_dtype(dtype: DType) -> torch.dtype:
    """The torch storage dtype of a protocol dtype (int4 -> packed ``uint8``).

    Args:
        dtype: Protocol dtype.

    Returns:
        The torch dtype.

    Raises:
        UnsupportedOperationError: fp8 on a torch without ``float8_e4m3fn``.
    """
    import torch

    if dtype is DType.FP8:
        fp8 = getattr(torch, "float8_e4m3fn", None)
        if fp8 is None:
            raise UnsupportedOperationError(
                f"fp8 needs torch.float8_e4m3fn (torch >= 2.1); this torch is {torch.__version__}."
            )
        return cast("torch.dtype", fp8)
    table: dict[DType, torch.dtype] = {
        DType.FP32: torch.float32,
        DType.FP16: torch.float16,
        DType.BF16: torch.bfloat16,
        DType.INT8: torch.int8,
        DType.INT4: torch.uint8,
    }
    return table[dtype]


def storable_dtypes() -> list[DType]:
    """Protocol dtypes this torch can store (fp8 needs ``float8_e4m3fn``).

    Returns:
        The dtypes, protocol order.
    """
    import torch

    return [d for d in DType if d is not DType.FP8 or hasattr(torch, "float8_e4m3fn")]


def _register_torch_kernels(target: str) -> None:
    """Register torch's own implementations as low-priority kernels for ``target`` (once)."""
    with _kernels_lock:
        if target in _kernels_done:
            return
        _kernels_done.add(target)
    import torch
    import torch.nn.functional as F

    builtin: list[tuple[str, Callable[..., Any], KernelKind]] = [
        ("matmul", torch.matmul, KernelKind.MATMUL),
        ("attention", F.scaled_dot_product_attention, KernelKind.ATTENTION),
        ("layernorm", F.layer_norm, KernelKind.LAYERNORM),
        ("softmax", torch.softmax, KernelKind.SOFTMAX),
    ]
    for name, impl, kind in builtin:
        global_kernels.register(name, impl, targets=(target,), priority=-100, kind=kind)
    # --- engine kernels (sagellm_backend.kernels.engine): torch for every target, fused Triton on CUDA ---
    register_engine_kernels(target, "torch")
    if target == "cuda":
        register_engine_kernels(target, "triton")
    # --- end engine kernels ---


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    import torch

    return t.reshape(-1).view(torch.uint8)


# ---------------------------------------------------------------- device streams
class DeviceEvent(Event):
    """A ``torch.<accelerator>.Event`` with timing enabled."""

    def __init__(self, owner_id: int, device: str, module: Any) -> None:
        self._owner_id = owner_id
        self._device = device
        self._mod = module
        self.native = module.Event(enable_timing=True)
        self._recorded = False

    @property
    def device(self) -> str:
        return self._device

    def record(self, stream: Stream | None = None) -> None:
        if stream is None and not getattr(_contract_tls, "streams", None):
            self.native.record()  # fast path: no HAL stream entered in this thread
            self._recorded = True
            return
        s = stream if stream is not None else current_stream(self._owner_id)
        if s is None:
            self.native.record()
        elif isinstance(s, DeviceStream):
            self.native.record(s.native)
        else:
            raise InvalidArgumentTypeError(
                f"a device event can only be recorded on a DeviceStream; got {type(s).__name__}."
            )
        self._recorded = True

    def synchronize(self) -> None:
        if self._recorded:
            self.native.synchronize()

    def query(self) -> bool:
        return bool(self.native.query())

    def elapsed_ms(self, start: Event) -> float:
        if type(start) is DeviceEvent and start._recorded and self._recorded:  # fast path
            self.native.synchronize()
            return float(start.native.elapsed_time(self.native))
        if not isinstance(start, DeviceEvent):
            raise InvalidArgumentTypeError(f"elapsed_ms needs a start DeviceEvent; got {type(start).__name__}.")
        if not (start._recorded and self._recorded):
            which = "start" if not start._recorded else "end"
            raise InvalidArgumentError(
                f"the {which} event was never recorded, so there is no interval to time. Record both events first."
            )
        self.native.synchronize()
        return float(start.native.elapsed_time(self.native))

    def __repr__(self) -> str:
        return f"DeviceEvent(device={self._device!r}, recorded={self._recorded})"


class DeviceStream(Stream):
    """A ``torch.<accelerator>.Stream``."""

    def __init__(self, owner_id: int, device: str, module: Any, native: Any) -> None:
        super().__init__(owner_id)
        self._device = device
        self._mod = module
        self.native = native
        self._contexts: list[Any] = []

    @property
    def device(self) -> str:
        return self._device

    @property
    def handle(self) -> int:
        for attr in ("cuda_stream", "npu_stream", "stream_id"):
            value = getattr(self.native, attr, None)
            if isinstance(value, int):
                return value
        return id(self.native)

    def synchronize(self) -> None:
        self.native.synchronize()

    def record_event(self, event: Event | None = None) -> Event:
        ev = event if event is not None else DeviceEvent(self.owner_id, self._device, self._mod)
        ev.record(self)
        return ev

    def wait_event(self, event: Event) -> None:
        if not isinstance(event, DeviceEvent):
            raise InvalidArgumentTypeError(
                f"a device stream can only wait on a DeviceEvent; got {type(event).__name__}."
            )
        if event._recorded:
            self.native.wait_event(event.native)

    def query(self) -> bool:
        return bool(self.native.query())

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        with self._mod.stream(self.native):
            fn(*args, **kwargs)

    def _on_enter(self) -> None:
        ctx = self._mod.stream(self.native)
        ctx.__enter__()
        self._contexts.append(ctx)

    def _on_exit(self) -> None:
        if self._contexts:
            self._contexts.pop().__exit__(None, None, None)


class TorchGraph(Graph):
    """A captured accelerator graph (``torch.cuda.CUDAGraph``, ``torch_npu.npu.NPUGraph``)."""

    def __init__(self, native: Any) -> None:
        self.native = native

    def replay(self) -> None:
        self.native.replay()

    def reset(self) -> None:
        self.native.reset()


# ------------------------------------------------------------------ arena ops
class _TorchArenaOps(ArenaOps):
    """Batched block movement for torch arenas (host memcpy engine / Triton on CUDA)."""

    def __init__(self, provider: TorchProviderCore) -> None:
        self.p = provider

    def view(self, arena: Any, block_id: int) -> Any:
        return arena[block_id]

    def record(self, stream: Stream | None) -> Event | None:
        """Device copies are asynchronous even without a stream: mark them on the current one."""
        if stream is not None:
            return stream.record_event()
        if self.p.is_accelerator:
            ev = self.p.create_event()
            ev.record()
            return ev
        return None

    def _host_sync_for(self, stream: Stream | None) -> None:
        """Before host code touches a host arena that device work may be writing, wait for it."""
        if isinstance(stream, DeviceStream):
            stream.synchronize()
        elif self.p.is_accelerator:
            self.p.synchronize()

    def _host(self, stream: Stream | None, fn: Callable[..., Any], *args: Any) -> None:
        if isinstance(stream, HostStream):
            stream.submit(fn, *args)
        else:
            self._host_sync_for(stream)
            fn(*args)

    def copy_blocks(self, arena: Any, src: list[int], dst: list[int], stream: Stream | None) -> None:
        if arena.is_cpu:
            base = arena.data_ptr()
            row = arena.nbytes // arena.shape[0]
            self._host(stream, copy_rows, base, src, base, dst, len(src), row)
        elif stream is None:
            self.p._device_copy_rows(arena, src, arena, dst)
        else:
            with self.p._device_stream_ctx(stream):
                self.p._device_copy_rows(arena, src, arena, dst)

    def gather(self, arena: Any, ids: list[int], device: Device, stream: Stream | None, out: Any = None) -> Any:
        import torch

        n = len(ids)
        shape = (n, *arena.shape[1:])
        row = arena[0].numel() * arena.element_size()
        if arena.device.type == "cpu":
            if out is None or device.type != "cpu":
                out = self.p._alloc_tensor(Device("cpu"), arena.dtype, shape, pinned=self.p.is_accelerator)
            self._host(stream, copy_rows, arena.data_ptr(), ids, out.data_ptr(), None, n, row)
            if device.type == "cpu":
                return out
            with self.p._device_stream_ctx(stream):
                moved = out.to(self.p._torch_device(device), non_blocking=True)
            return moved
        with self.p._device_stream_ctx(stream):
            if device.type == "cpu":
                if out is None:
                    out = self.p._alloc_tensor(Device("cpu"), arena.dtype, shape, pinned=True)
                mod = self.p._module()
                cur = mod.current_stream(arena.device)
                cs = self.p._copy_stream()
                rows_per_chunk = max(1, _PIPELINE_CHUNK_BYTES // row)
                for lo in range(0, n, rows_per_chunk):
                    part = ids[lo : lo + rows_per_chunk]
                    staging = torch.empty((len(part), *arena.shape[1:]), dtype=arena.dtype, device=arena.device)
                    self.p._device_copy_rows(arena, part, staging, None)  # gather k on the compute stream
                    cs.wait_stream(cur)
                    with mod.stream(cs):  # while PCIe moves chunk k, the compute stream gathers k+1
                        out[lo : lo + len(part)].copy_(staging, non_blocking=True)
                    staging.record_stream(cs)
                cur.wait_stream(cs)  # later work on this stream (and its events) follow the last copy
                return out
            staging = torch.empty(shape, dtype=arena.dtype, device=arena.device)
            self.p._device_copy_rows(arena, ids, staging, None)
            if str(device) == str(arena.device):
                return staging
            moved = staging.to(self.p._torch_device(device), non_blocking=True)
            self.p._keep_alive(staging, stream)
            return moved

    def scatter(self, arena: Any, ids: list[int], rows: Any, stream: Stream | None) -> None:
        n = len(ids)
        row = arena[0].numel() * arena.element_size()
        if arena.device.type == "cpu":
            if rows.device.type != "cpu":
                with self.p._device_stream_ctx(stream):
                    rows = rows.to("cpu")
            rows = rows.contiguous()
            self._host(stream, copy_rows, rows.data_ptr(), None, arena.data_ptr(), ids, n, row)
            return
        with self.p._device_stream_ctx(stream):
            if rows.device == arena.device:
                self.p._device_copy_rows(rows, None, arena, ids)
                return
            mod = self.p._module()
            cur = mod.current_stream(arena.device)
            cs = self.p._copy_stream()
            cs.wait_stream(cur)  # the source rows may still be being written on this stream
            rows_per_chunk = max(1, _PIPELINE_CHUNK_BYTES // row)
            for lo in range(0, n, rows_per_chunk):
                part = rows[lo : lo + rows_per_chunk]
                with mod.stream(cs):  # staging belongs to the copy stream: no reuse hazard there
                    staging = part.to(arena.device, non_blocking=True)
                cur.wait_stream(cs)  # scatter k waits for copy k; copy k+1 runs during scatter k
                self.p._device_copy_rows(staging, None, arena, ids[lo : lo + rows_per_chunk])
                staging.record_stream(cur)


# ------------------------------------------------------------------ the core
class TorchProviderCore(ProviderCore):
    """Block API, pools, streams and collectives on one torch device type."""

    #: The ``torch.<name>`` accelerator module (``"cuda"``, ``"npu"``); ``None`` on CPU.
    accelerator_module: str | None = None

    def __init__(
        self, device_id: int | None = None, *, kv_geometry: object = None, max_memory_bytes: int | None = None
    ) -> None:
        super().__init__(kv_geometry=kv_geometry, max_memory_bytes=max_memory_bytes)
        self.device_id = device_id
        self._comm = TorchCommunicator(self.device_type, device_id, self.dist_backend or "gloo")
        _register_torch_kernels(self.device_type)

    # ----------------------------------------------------------- identity
    @property
    def is_accelerator(self) -> bool:
        """True for providers whose memory is not host memory."""
        return self.accelerator_module is not None

    @property
    def device(self) -> str:
        return self.device_type if self.device_id is None else f"{self.device_type}:{self.device_id}"

    def _module(self) -> Any:
        import torch

        if self.accelerator_module is None:
            raise UnsupportedOperationError(f"the {self.name!r} provider has no accelerator module.")
        return getattr(torch, self.accelerator_module)

    def _torch_device(self, device: Device) -> torch.device:
        import torch

        return torch.device(str(device))

    def _dtypes_on(self, device: Device) -> list[DType]:
        return storable_dtypes()

    # -------------------------------------------------------------- storage
    def _alloc_tensor(self, device: Device, dtype: Any, shape: tuple[int, ...], *, pinned: bool = False) -> Any:
        import torch

        return torch.empty(
            shape, dtype=dtype, device=self._torch_device(device), pin_memory=pinned and device.type == "cpu"
        )

    def _storage_alloc(self, device: Device, dtype: DType, shape: tuple[int, ...]) -> Any:
        pinned = self.is_accelerator and device.type == "cpu"
        return self._alloc_tensor(device, torch_dtype(dtype), shape, pinned=pinned)

    @contextmanager
    def _device_stream_ctx(self, stream: Stream | None) -> Iterator[None]:
        if isinstance(stream, DeviceStream):
            with self._module().stream(stream.native):
                yield
        else:
            yield

    def _copy_stream(self) -> Any:
        """A native side stream for device <-> host transfers, created on first use."""
        cs = self.__dict__.get("_native_copy_stream")
        if cs is None:
            mod = self._module()
            cs = mod.Stream(device=self._torch_device(Device(self.device_type, self.device_id)))
            self.__dict__["_native_copy_stream"] = cs
        return cs

    def _keep_alive(self, tensor: Any, stream: Stream | None) -> None:
        """Tell the caching allocator ``tensor`` is used on a side stream."""
        if isinstance(stream, DeviceStream) and tensor.device.type != "cpu":
            tensor.record_stream(stream.native)

    def _copy(self, dst: Any, src: Any, stream: Stream | None) -> None:
        if isinstance(stream, HostStream):
            stream.submit(dst.copy_, src)
            return
        if isinstance(stream, DeviceStream):
            with self._module().stream(stream.native):
                dst.copy_(src, non_blocking=True)
            self._keep_alive(src, stream)
            self._keep_alive(dst, stream)
            return
        if stream is not None:
            stream.submit(dst.copy_, src)  # e.g. a capture stream
            return
        dst.copy_(src, non_blocking=self.is_accelerator)

    def _storage_copy(self, src: Any, dst: Any, stream: Stream | None) -> None:
        self._copy(dst, src, stream)

    def _storage_transfer(self, data: Any, device: Device, stream: Stream | None) -> Any:
        new = self._alloc_tensor(
            device, data.dtype, tuple(data.shape), pinned=self.is_accelerator and device.type == "cpu"
        )
        self._copy(new, data, stream)
        return new

    def _storage_release(self, data: Any, stream: Stream | None) -> None:
        if data is not None:
            self._keep_alive(data, stream)

    def _storage_read(self, data: Any) -> bytes:
        if data.device.type != "cpu":
            data = data.to("cpu")
        return bytes(_as_bytes(data.contiguous()).numpy().tobytes())

    def _storage_write(self, data: Any, buf: memoryview) -> None:
        import torch

        src = torch.frombuffer(bytearray(buf), dtype=torch.uint8)
        _as_bytes(data).copy_(src)
        if data.device.type != "cpu":
            self.synchronize()

    def _arena_ops(self) -> ArenaOps:
        return _TorchArenaOps(self)

    def _device_copy_rows(self, src: Any, src_ids: list[int] | None, dst: Any, dst_ids: list[int] | None) -> None:
        """``dst[dst_ids[k]] = src[src_ids[k]]`` on the device (ids ``None``: rows 0..n-1)."""
        import torch

        n = len(src_ids) if src_ids is not None else len(dst_ids or [])
        dev = dst.device
        s_rows = src.reshape(src.shape[0], -1)
        d_rows = dst.reshape(dst.shape[0], -1)
        if src_ids is None:
            d_rows.index_copy_(0, torch.tensor(dst_ids, dtype=torch.int64, device=dev), s_rows[:n])
        elif dst_ids is None:
            torch.index_select(s_rows, 0, torch.tensor(src_ids, dtype=torch.int64, device=dev), out=d_rows[:n])
        else:
            idx_s = torch.tensor(src_ids, dtype=torch.int64, device=dev)
            idx_d = torch.tensor(dst_ids, dtype=torch.int64, device=dev)
            d_rows.index_copy_(0, idx_d, s_rows.index_select(0, idx_s))

    # -------------------------------------------------------------- streams
    def create_stream(self) -> Stream:
        """A new stream: a worker-thread stream on CPU, a native stream on accelerators.

        Returns:
            The stream.
        """
        self._check_open()
        if not self.is_accelerator:
            return self._register_stream(HostStream(self._uid, self.device))
        mod = self._module()
        native = mod.Stream(device=self._torch_device(Device(self.device_type, self.device_id)))
        return self._register_stream(DeviceStream(self._uid, self.device, mod, native))

    def create_event(self) -> Event:
        """A timing event (host-stamped on CPU, native on accelerators).

        Returns:
            The event.
        """
        if not self.is_accelerator:
            return HostEvent(self._uid, self.device)
        with self._module().device(self.device_id):
            return DeviceEvent(self._uid, self.device, self._module())

    def synchronize(self) -> None:
        """Wait for all device work of this provider's device (no-op on CPU)."""
        if self.is_accelerator:
            self._module().synchronize(self.device_id)

    # ----------------------------------------------------------- collectives
    @property
    def communicator(self) -> TorchCommunicator:
        """The provider's :class:`~sagellm_backend.collectives.TorchCommunicator`."""
        return self._comm

    def init_process_group(
        self,
        backend: str | None = None,
        *,
        init_method: str | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        timeout: float = 300.0,
        check_consistency: bool | None = None,
        blocking_wait: bool = True,
    ) -> None:
        """Join a torch.distributed process group (explicitly or from torchrun's environment).

        Args:
            backend: Default: :attr:`dist_backend`.
            init_method: ``tcp://``, ``file://`` or ``env://`` (default from torchrun's env).
            rank: Default ``RANK``.
            world_size: Default ``WORLD_SIZE``.
            timeout: Seconds before a collective raises :class:`CommTimeoutError`.
            check_consistency: Verify shapes/dtypes/ops across ranks before each collective.
            blocking_wait: NCCL: make timeouts raise on the host.
        """
        if self.is_accelerator and self.device_id is not None:
            self._module().set_device(self.device_id)
        self._comm.init_process_group(
            backend,
            init_method=init_method,
            rank=rank,
            world_size=world_size,
            timeout=timeout,
            check_consistency=check_consistency,
            blocking_wait=blocking_wait,
        )

    def destroy_process_group(self) -> None:
        """Leave and destroy the default process group."""
        self._comm.destroy()

    @property
    def rank(self) -> int:
        """Global rank (0 without a process group)."""
        return self._comm.rank

    @property
    def world_size(self) -> int:
        """World size (1 without a process group)."""
        return self._comm.world_size

    def new_group(self, ranks: list[int], *, timeout: float | None = None) -> CommGroup:
        """Create a sub-group (call on every rank).

        Args:
            ranks: Member ranks.
            timeout: Seconds.

        Returns:
            The group.
        """
        return self._comm.new_group(ranks, timeout=timeout)

    def all_reduce(self, tensor: Any, op: Any = "sum", *, group: CommGroup | None = None) -> Any:
        """See :meth:`TorchCommunicator.all_reduce`."""
        return self._comm.all_reduce(tensor, op, group=group)

    def all_gather(self, tensor: Any, *, group: CommGroup | None = None, out: Any = None) -> Any:
        """See :meth:`TorchCommunicator.all_gather`."""
        return self._comm.all_gather(tensor, group=group, out=out)

    def reduce_scatter(self, tensor: Any, op: Any = "sum", *, group: CommGroup | None = None) -> Any:
        """See :meth:`TorchCommunicator.reduce_scatter`."""
        return self._comm.reduce_scatter(tensor, op, group=group)

    def broadcast(self, tensor: Any, src: int = 0, *, group: CommGroup | None = None) -> Any:
        """See :meth:`TorchCommunicator.broadcast`."""
        return self._comm.broadcast(tensor, src, group=group)

    def barrier(self, *, group: CommGroup | None = None) -> None:
        """See :meth:`TorchCommunicator.barrier`."""
        self._comm.barrier(group=group)

    def send(self, tensor: Any, dst: int, *, tag: int = 0, group: CommGroup | None = None) -> None:
        """See :meth:`TorchCommunicator.send`."""
        self._comm.send(tensor, dst, tag=tag, group=group)

    def recv(self, tensor: Any, src: int, *, tag: int = 0, group: CommGroup | None = None) -> Any:
        """See :meth:`TorchCommunicator.recv`."""
        return self._comm.recv(tensor, src, tag=tag, group=group)

    # ------------------------------------------------------------- kernels
    def _kernel_kinds(self) -> list[KernelKind]:
        kinds = self._kernel_view().kinds()
        return [k for k in KernelKind if k in kinds]

    def _collective_names(self) -> list[str]:
        return ["all_reduce", "all_gather", "reduce_scatter", "broadcast", "barrier", "send", "recv"]
