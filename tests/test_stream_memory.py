"""A long loop of allocate / copy / swap out / swap in / free on streams returns its memory."""

from __future__ import annotations

import gc
import os
import threading
from typing import Any

import pytest

from sagellm_backend import DType, MockBackendProvider

GEOMETRY = {"num_layers": 2, "num_kv_heads": 2, "head_dim": 64}  # 16 KiB per 16-token fp16 block
ITERATIONS = 2000


def _make(name: str) -> Any:
    if name == "cpu":
        pytest.importorskip("torch")
        from sagellm_backend import CPUBackendProvider

        return CPUBackendProvider(kv_geometry=GEOMETRY)
    return MockBackendProvider(kv_geometry=GEOMETRY)


def _rss() -> int:
    import psutil

    gc.collect()
    return int(psutil.Process().memory_info().rss)


def _one(pool: Any, s1: Any, s2: Any, marks: list[bytes]) -> list[bytes]:
    """allocate 8, copy 4 -> 4 on s1, swap all out on s1, wait, free, swap in on s2, check, free."""
    ids = pool.allocate(8)
    for i, m in zip(ids[:4], marks):
        pool.write_block(i, m)
    pool.copy_blocks(ids[:4], ids[4:], stream=s1)
    swapped = pool.swap_out(ids, stream=s1)
    swapped.wait(timeout=30.0)
    pool.free(ids)
    back = pool.swap_in(swapped, stream=s2)
    s2.record_event().synchronize(timeout=30.0)
    swapped.release()
    got = [pool.read_block(i) for i in back]
    pool.free(back)
    return got


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", ["mock", "cpu"])
def test_stream_loop_returns_rss_within_5_percent(name: str) -> None:
    p = _make(name)
    pool = p.create_kv_pool(32, block_size=16, dtype=DType.FP16)
    s1, s2 = p.create_stream(), p.create_stream()
    marks = [os.urandom(pool.block_nbytes) for _ in range(4)]
    for _ in range(50):  # warm-up: worker threads, recycled swap buffers, copy thread pools
        _one(pool, s1, s2, marks)
    threads, before = threading.active_count(), _rss()
    for k in range(ITERATIONS):
        got = _one(pool, s1, s2, marks)
        if k % 500 == 0:
            assert got == marks + marks, f"iteration {k}: swapped-in bytes differ"
    s1.synchronize(timeout=30.0)
    s2.synchronize(timeout=30.0)
    after = _rss()
    assert pool.stats().free_blocks == 32 and threading.active_count() == threads
    growth = (after - before) / before
    print(f"{name}: RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB ({growth:+.2%}) over {ITERATIONS} loops")
    assert after <= before * 1.05, f"RSS grew {growth:.1%}: {before} -> {after} bytes"
    p.close()
