"""What the multi-process benchmarks (bench_collectives, bench_comm_check, bench_p2p) share: spawning ranks on a free
local port, one rank's provider set-up, and host time per call."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.multiprocessing as mp


def spawn(worker: Callable[..., None], nprocs: int, *args: Any) -> None:
    """Run ``worker(rank, port, *args)`` in ``nprocs`` processes, ``port`` a free local TCP port for the rendezvous.

    Args:
        worker: The rank's entry point.
        nprocs: Ranks.
        *args: The worker's further arguments.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(port, *args), nprocs=nprocs, join=True)


def rank_provider(rank: int, world: int, port: int, provider_name: str, *, pin: bool = True, **init: Any) -> Any:
    """This rank's provider, in the process group: one CPU thread, pinned to a core of its own on CPU providers
    (``pin`` and enough cores), the rank's GPU on CUDA.

    Args:
        rank: This rank.
        world: Ranks.
        port: The rendezvous port.
        provider_name: ``"cpu"`` or ``"cuda"``.
        pin: Pin CPU ranks to a core each.
        **init: Further ``init_process_group`` keywords.

    Returns:
        The provider.
    """
    from sagellm_backend import get_provider

    device = provider_name == "cuda"
    if pin and not device and (os.cpu_count() or 1) >= world:
        os.sched_setaffinity(0, {rank % (os.cpu_count() or 1)})
    torch.set_num_threads(1)
    p = get_provider(provider_name, None, **({"device_id": rank} if device else {}))
    p.init_process_group(init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=600, **init)
    return p


def per_call(fn: Callable[[], Any], k: int, sync: Callable[[], Any]) -> float:
    """Seconds per call of ``fn`` over ``k`` back-to-back calls, synchronised before and after.

    Args:
        fn: The call.
        k: Calls.
        sync: Waits for the device.

    Returns:
        Seconds per call.
    """
    sync()
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    sync()
    return (time.perf_counter() - t0) / k
