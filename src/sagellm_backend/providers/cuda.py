"""The CUDA provider (NVIDIA GPUs through ``torch.cuda``): device memory, streams and events,
NCCL collectives, CUDA graphs, peer and pinned-host migration, one-launch batched block copies.

Capability rule for ``supported_dtypes`` (by compute capability, cc):
fp32 and fp16 always (cc >= 5.3 on every GPU CUDA 12 supports); int8 from cc 6.1;
bf16 from cc 8.0; fp8 (``float8_e4m3fn``) from cc 8.9; int4 as packed storage (two per byte).
A dtype outside the list is refused on the GPU with the reason
("bf16 needs compute capability >= 8.0; cuda:0 (Tesla T4) has 7.5; use fp16").
"""

from __future__ import annotations

import collections
import functools
from typing import Any

from ..protocol import DType
from ._accel import AcceleratorProvider, VendorSpec, detect_vendor
from ._torch import storable_dtypes
from .config import Availability, ProviderConfig, provider_factory

__all__ = ["CUDA_VENDOR", "CUDABackendProvider", "create_cuda_backend", "detect_cuda"]

CUDA_VENDOR = VendorSpec(
    provider="cuda",
    sdk_module=None,
    torch_module="cuda",
    device_type="cuda",
    dist_backend="nccl",
    graph_class="CUDAGraph",
    install_hint="a CUDA build of torch (pip install 'torch>=2.4' on Linux) and an NVIDIA driver",
    sources=("https://docs.pytorch.org/docs/stable/cuda.html",),
)

_MIN_CC: dict[DType, tuple[int, int]] = {
    DType.FP32: (0, 0),
    DType.FP16: (5, 3),
    DType.INT8: (6, 1),
    DType.BF16: (8, 0),
    DType.FP8: (8, 9),
    DType.INT4: (0, 0),
}
_FIX = {DType.BF16: "use fp16", DType.FP8: "use fp16 or int8", DType.INT8: "use fp16", DType.FP16: "use fp32"}


def detect_cuda() -> Availability:
    """NVIDIA CUDA through torch.cuda, excluding torch builds where torch.cuda is another vendor's.

    Returns:
        Availability with the reason (never initialises CUDA).
    """
    try:
        import torch
    except ImportError as exc:
        return Availability(False, f"torch is not installed ({exc}); install {CUDA_VENDOR.install_hint}")
    if getattr(torch.version, "cuda", None) is None and getattr(torch.version, "hip", None) is None:
        return Availability(False, f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)")
    return detect_vendor(
        CUDA_VENDOR,
        exclude_module="torch_xmlir",
        exclude_reason="torch.cuda is served by Kunlunxin XPyTorch (torch_xmlir) here; use the 'kunlun' provider",
    )


@functools.lru_cache(maxsize=1)
def _triton_copy() -> Any:
    try:
        from ..kv import triton_copy
    except Exception:  # no Triton, or a Triton that cannot compile here: torch indexing instead
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


class CUDABackendProvider(AcceleratorProvider):
    """KV blocks in GPU memory; streams, events, graphs from torch.cuda; NCCL collectives.

    Args:
        device_id: GPU ordinal.
        kv_geometry: :class:`~sagellm_backend.kv.geometry.KVGeometry` or dict.
        max_memory_bytes: Optional cap on what this provider allocates on its GPU.
    """

    name = "cuda"
    device_type = "cuda"
    dist_backend = "nccl"
    accelerator_module = "cuda"
    vendor = CUDA_VENDOR

    @classmethod
    def detect(cls) -> Availability:
        return detect_cuda()

    def _cc(self) -> tuple[int, int]:
        import torch

        major, minor = torch.cuda.get_device_capability(self.device_id)
        return int(major), int(minor)

    def _compute_capability(self) -> str:
        major, minor = self._cc()
        return f"{major}.{minor}"

    def _native_dtypes(self) -> list[DType]:
        cc = self._cc()
        storable = storable_dtypes()
        return [d for d in DType if d in storable and cc >= _MIN_CC[d]]

    def _dtype_hint(self, dtype: DType) -> str:
        need = _MIN_CC[dtype]
        major, minor = self._cc()
        if dtype not in storable_dtypes():
            return "this torch has no float8_e4m3fn; upgrade torch (>= 2.1)"
        return (
            f"{dtype.value} needs compute capability >= {need[0]}.{need[1]}; {self.device} "
            f"({self._device_name()}) has {major}.{minor}; {_FIX.get(dtype, 'use fp32')}"
        )

    def _device_copy_rows(self, src: Any, src_ids: Any, dst: Any, dst_ids: Any) -> None:
        """One Triton launch; index lists go to the device as int32, index tensors already on the
        device are used as they are (the trusted path)."""
        import torch

        tc = _triton_copy()
        if tc is None:
            super()._device_copy_rows(src, src_ids, dst, dst_ids)
            return
        dev = dst.device
        n = len(src_ids) if src_ids is not None else len(dst_ids)
        lists = [ids for ids in (src_ids, dst_ids) if ids is not None and not isinstance(ids, torch.Tensor)]
        staged = iter(self._index_stager().stage(lists, dev) if lists else [])

        def index(ids: Any) -> Any:
            if ids is None:
                return None
            if isinstance(ids, torch.Tensor):
                return ids if ids.device == dev else ids.to(dev, non_blocking=True)
            return next(staged)

        s, words = self._words(src, tc)
        d, _ = self._words(dst, tc)
        tc.copy_words(s, index(src_ids), d, index(dst_ids), n, words)

    def _index_stager(self) -> _IndexStager:
        stager: _IndexStager | None = self.__dict__.get("_stager")
        if stager is None:
            stager = _IndexStager(self.device_id or 0)
            self.__dict__["_stager"] = stager
        return stager

    def _words(self, t: Any, tc: Any) -> tuple[Any, int]:
        """Word view of ``t``, cached for long-lived tensors (pool arenas) by address and shape."""
        cache: dict[tuple[int, tuple[int, ...]], tuple[Any, int]] = self.__dict__.setdefault("_word_views", {})
        key = (t.data_ptr(), tuple(t.shape))
        hit = cache.get(key)
        if hit is not None:
            return hit
        view: tuple[Any, int] = tc.word_view(t)
        if any(p._arena is t for p in self._pools):  # only arenas: they live until pool.close()
            cache[key] = view
        return view


@provider_factory(detect=detect_cuda, priority=100)
def create_cuda_backend(config: object = None, **options: Any) -> CUDABackendProvider:
    """Entry-point factory for ``cuda`` (alias ``pytorch-cuda``).

    Args:
        config: ``None``, a dict, or an object with ``kind``/``device``/``device_ids``.
        **options: ``device_id``, ``kv_geometry``, ``max_memory_bytes``.

    Returns:
        A :class:`CUDABackendProvider`.
    """
    cfg = ProviderConfig.from_any(config, **options)
    kwargs = dict(cfg.options)
    index = cfg.device_index("cuda")
    if index is not None:
        kwargs.setdefault("device_id", index)
    return CUDABackendProvider(**kwargs)
