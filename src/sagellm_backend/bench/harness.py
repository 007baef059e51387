"""What every benchmark shares: the result row, the geometry, timing, and provider set-up.

Two clocks are used. :func:`median_time` times device work with device events around a loop
of calls (host overhead that the device cannot hide shows up in it). :func:`wall_times_per_call`
times whole calls by the host clock with one synchronize per trial, after the loop: with the
device pipelined this is the host-side cost per call whenever the host is the bottleneck.
Every figure is the median of several timed trials after warm-up.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..api.provider import BackendProvider
from ..kv.geometry import KVGeometry
from ..protocol import DType
from .timing import event_trials

if TYPE_CHECKING:
    from ..kv.pool import KVCachePool

__all__ = [
    "BENCH_GEOMETRY",
    "BLOCK_TOKENS",
    "GB",
    "Result",
    "fill_random",
    "filled_pool",
    "is_device",
    "median_time",
    "on_host_arrays",
    "same_kind",
    "wall_times_per_call",
]

BENCH_GEOMETRY = KVGeometry(num_layers=1, num_kv_heads=8, head_dim=128, kv_factor=2)
"""1 layer x 8 KV heads x head dim 128 x K and V: 4096 bytes per fp16 token."""
BLOCK_TOKENS = 16
"""Tokens per block: with :data:`BENCH_GEOMETRY` in fp16, 64 KiB per block."""
GB = 1e9


@dataclass
class Result:
    """One benchmark row.

    Attributes:
        bench: What is measured (``"copy_blocks"``, ``"swap_out"``, ``"pool allocate+free"``).
        case: The size or variant (``"8192 x 64 KiB"``, ``"1 pair (Python lists)"``).
        unit: ``"GB/s"`` (read + written), ``"GB/s (one way)"``, ``"M blocks/s"``,
            ``"us/op"`` or ``"us/call"``.
        ceiling: The plain operation on the same bytes, measured in the same run.
        naive: The baseline: what a caller does without this package.
        ours: This package.
        extra: Other variants measured (name -> value, same unit).
        target: The goal, in words.
        met: Whether ``ours`` meets it (``None``: no target on this provider).
        higher_is_better: False for times.
    """

    bench: str
    case: str
    unit: str
    ceiling: float | None
    naive: float | None
    ours: float
    extra: dict[str, float] = field(default_factory=dict)
    target: str | None = None
    met: bool | None = None
    higher_is_better: bool = True

    @property
    def of_ceiling(self) -> float | None:
        """``ours / ceiling`` (or ``ceiling / ours`` for times)."""
        if not self.ceiling:
            return None
        return self.ours / self.ceiling if self.higher_is_better else self.ceiling / self.ours

    @property
    def vs_naive(self) -> float | None:
        """Speed-up over the baseline."""
        if not self.naive:
            return None
        return self.ours / self.naive if self.higher_is_better else self.naive / self.ours

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the ratios.

        Returns:
            The row.
        """
        d = asdict(self)
        d["of_ceiling"] = self.of_ceiling
        d["vs_naive"] = self.vs_naive
        return d


def same_kind(provider: BackendProvider, geometry: KVGeometry = BENCH_GEOMETRY) -> BackendProvider:
    """A provider of the same kind and device as ``provider``, with the benchmark geometry.

    Args:
        provider: The provider under test.
        geometry: KV geometry for the new instance.

    Returns:
        The new provider.
    """
    old: Any = provider
    cls: Any = type(provider)
    made: BackendProvider
    if on_host_arrays(provider):  # the Mock: as many simulated devices, memory not the limit
        made = cls(kv_geometry=geometry, max_memory_mb=1 << 20, num_devices=old.num_devices)
        return made
    device_id = getattr(provider, "device_id", None)
    made = cls(kv_geometry=geometry) if device_id is None else cls(device_id, kv_geometry=geometry)
    return made


def is_device(provider: BackendProvider) -> bool:
    """Whether ``provider`` runs on an accelerator (device events, pinned host memory).

    Args:
        provider: The provider.

    Returns:
        True for accelerators.
    """
    return provider.device_type not in ("cpu", "mock")


def on_host_arrays(provider: BackendProvider) -> bool:
    """Whether ``provider`` keeps its blocks in numpy arrays (the Mock's simulated devices).

    Args:
        provider: The provider.

    Returns:
        True for the Mock.
    """
    return provider.device_type == "mock"


def _host_trial(fn: Callable[[], Any], provider: BackendProvider, reps: int) -> float:
    """Seconds per call of ``reps`` back-to-back calls, one synchronize after the loop."""
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    provider.synchronize()
    return (time.perf_counter() - t0) / reps


def median_time(fn: Callable[[], Any], provider: BackendProvider, reps: int, trials: int = 5) -> float:
    """Seconds per call: device events around ``reps`` calls (host clock on host providers).

    Args:
        fn: The operation.
        provider: Where it runs.
        reps: Calls per trial.
        trials: Timed trials (the median is returned), after two warm-up calls.

    Returns:
        Median seconds per call.
    """
    fn()
    fn()
    provider.synchronize()
    if is_device(provider):
        import torch

        times = event_trials(fn, torch.get_device_module(provider.get_torch_device()).Event, reps, trials)
    else:
        times = [_host_trial(fn, provider, reps) for _ in range(trials)]
    return float(statistics.median(times))


def wall_times_per_call(
    fns: Mapping[str, Callable[[], Any]], provider: BackendProvider, reps: int, trials: int = 7
) -> dict[str, float]:
    """Host seconds per call of each variant, trials interleaved so clock drift hits all alike.

    Each trial runs ``reps`` calls back to back and synchronizes the device once, after the
    loop: the device stays pipelined, so the figure is the host-side cost of a call unless the
    device work per call takes longer. Trial ``k`` starts at variant ``k mod len(fns)``.

    Args:
        fns: Variant name -> operation.
        provider: Where they run.
        reps: Calls per trial.
        trials: Timed trials per variant (median returned), after two warm-up calls each.

    Returns:
        Variant name -> median seconds per call.
    """
    names = list(fns)
    for name in names:
        fns[name]()
        fns[name]()
    provider.synchronize()
    times: dict[str, list[float]] = {name: [] for name in names}
    for k in range(trials):
        for j in range(len(names)):
            name = names[(k + j) % len(names)]
            times[name].append(_host_trial(fns[name], provider, reps))
    return {name: float(statistics.median(t)) for name, t in times.items()}


def fill_random(provider: BackendProvider, arena: Any) -> None:
    """Fill a pool arena with random bytes (so a wrong copy cannot pass the read-back check).

    Args:
        provider: The arena's provider (numpy arena for Mock, tensor otherwise).
        arena: The arena.
    """
    if on_host_arrays(provider):
        import numpy as np

        flat = arena.reshape(-1).view(np.uint8)
        flat[:] = np.random.default_rng(0).integers(0, 256, size=flat.size, dtype=np.uint8)
    else:
        import torch

        arena.reshape(-1).view(torch.uint8).random_(0, 256)


def filled_pool(provider: BackendProvider, num_blocks: int) -> tuple[BackendProvider, KVCachePool, list[int]]:
    """A provider of the same kind (:func:`same_kind`) with a pool of ``num_blocks`` fp16 blocks of
    :data:`BLOCK_TOKENS` tokens, every block allocated and filled with random bytes (:func:`fill_random`).

    Args:
        provider: The provider under test.
        num_blocks: Blocks in the pool.

    Returns:
        ``(provider, pool, block ids)``.
    """
    p = same_kind(provider)
    pool = p.create_kv_pool(num_blocks, block_size=BLOCK_TOKENS, dtype=DType.FP16)
    ids = pool.allocate(pool.num_blocks)
    fill_random(p, pool.arena)
    return p, pool, ids
