"""Mock provider: real bytes, enforced limits, deterministic handles, faults, multi-rank collectives."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from sagellm_backend import (
    CollectiveError,
    CommGroupError,
    CommTimeoutError,
    DType,
    InvalidArgumentError,
    KVTransferError,
    MockBackendProvider,
    MockWorld,
    ResourceExhaustedError,
    UnsupportedOperationError,
    create_mock_world,
)


def test_handles_are_deterministic() -> None:
    a, b = MockBackendProvider(), MockBackendProvider()
    ha = [a.kv_block_alloc(4, DType.FP16).handle for _ in range(3)]
    hb = [b.kv_block_alloc(4, DType.FP16).handle for _ in range(3)]
    assert ha == hb == [1, 2, 3]


def test_max_memory_enforced_state_intact() -> None:
    p = MockBackendProvider(max_memory_mb=8)  # 8 MiB; a 128-token fp16 block is 2.75 MiB
    blocks = [p.kv_block_alloc(128, DType.FP16) for _ in range(2)]
    before = p.memory_stats()
    with pytest.raises(ResourceExhaustedError, match="limit") as info:
        p.kv_block_alloc(128, DType.FP16)
    assert isinstance(info.value, MemoryError) and info.value.details["limit"] == 8 << 20
    assert p.memory_stats() == before
    for b in blocks:
        p.kv_block_free(b)
    assert p.memory_stats()["allocated_bytes"] == 0
    assert p.memory_stats()["peak_allocated_bytes"] == 2 * blocks[0].nbytes
    assert p.kv_block_alloc(128, DType.FP16).handle == 3  # the failed call took no handle; freed ones are never reused


def test_unsupported_dtype_on_mock() -> None:
    p = MockBackendProvider(supported_dtypes=[DType.FP16])
    with pytest.raises(ValueError, match="bf16 is not supported on mock:0"):
        p.kv_block_alloc(4, DType.BF16)
    assert p.memory_stats()["num_blocks"] == 0


def test_copy_and_migrate_byte_for_byte() -> None:
    p = MockBackendProvider(num_devices=2)
    a = p.kv_block_alloc(16, DType.BF16)
    data = os.urandom(a.nbytes)
    p.kv_block_write(a, data)
    b = p.kv_block_alloc(16, DType.BF16)
    p.kv_block_copy(a, b)
    assert p.kv_block_read(b) == data
    p.kv_block_migrate(b, "mock:1")
    assert b.device == "mock:1" and p.kv_block_read(b) == data
    stats = p.memory_stats()
    assert stats["mock_1_kv_allocated_bytes"] == b.nbytes and stats["allocated_bytes"] == a.nbytes
    p.kv_block_migrate(b, "cpu")
    assert p.memory_stats()["host_kv_allocated_bytes"] == b.nbytes
    assert p.kv_block_read(b) == data


def test_fault_injection_allocation() -> None:
    p = MockBackendProvider()
    p.faults.fail_allocation(nth=2)
    first = p.kv_block_alloc(4, DType.FP16)
    before = p.memory_stats()
    with pytest.raises(ResourceExhaustedError, match="injected"):
        p.kv_block_alloc(4, DType.FP16)
    assert p.memory_stats() == before
    assert p.kv_block_alloc(4, DType.FP16).handle == first.handle + 1


def test_fault_injection_transfers_leave_source_intact() -> None:
    p = MockBackendProvider(num_devices=2)
    a = p.kv_block_alloc(8, DType.FP16)
    data = os.urandom(a.nbytes)
    p.kv_block_write(a, data)
    b = p.kv_block_alloc(8, DType.FP16)
    p.kv_block_write(b, b"\x01" * b.nbytes)
    p.faults.fail_transfers(2)
    with pytest.raises(KVTransferError) as info:
        p.kv_block_copy(a, b)
    assert info.value.code.value == "kv_transfer_failed"
    assert p.kv_block_read(b) == b"\x01" * b.nbytes
    before = p.memory_stats()
    with pytest.raises(KVTransferError):
        p.kv_block_migrate(a, "mock:1")
    assert a.device == "mock:0" and p.kv_block_read(a) == data and p.memory_stats() == before
    p.kv_block_migrate(a, "mock:1")  # faults used up
    assert p.kv_block_read(a) == data


def test_fault_injection_pool_batch_rolls_back() -> None:
    p = MockBackendProvider(kv_geometry={"num_layers": 1, "num_kv_heads": 1, "head_dim": 8})
    pool = p.create_kv_pool(16, block_size=2)
    pool.allocate(3)
    snapshot = (
        pool.stats(),
        list(pool._state.alloc._free),
        set(pool._state.alloc._single),
        dict(pool._state.alloc._shared),
    )
    p.faults.fail_allocation(nth=5)  # the 5th block of the next batch of 8
    with pytest.raises(ResourceExhaustedError, match="injected"):
        pool.allocate(8)
    assert (
        pool.stats(),
        list(pool._state.alloc._free),
        set(pool._state.alloc._single),
        dict(pool._state.alloc._shared),
    ) == snapshot
    assert pool.allocate(8) == list(range(3, 11))


def test_graph_capture_on_mock() -> None:
    p = MockBackendProvider(has_graph_exec=True)
    a, b = p.kv_block_alloc(4, DType.FP16), p.kv_block_alloc(4, DType.FP16)
    p.kv_block_write(a, os.urandom(a.nbytes))
    p.kv_block_write(b, b"\x00" * b.nbytes)
    with p.capture_graph() as g:
        p.kv_block_copy(a, b)
    assert p.kv_block_read(b) == b"\x00" * b.nbytes and g.num_ops == 1
    g.replay()
    assert p.kv_block_read(b) == p.kv_block_read(a)
    with pytest.raises(UnsupportedOperationError, match="has_graph_exec=False"):
        MockBackendProvider().capture_graph().__enter__()


def _run_ranks(ranks, fn):
    with ThreadPoolExecutor(len(ranks)) as ex:
        return list(ex.map(fn, ranks))


@pytest.mark.parametrize("world_size", [2, 4])
def test_mock_world_collectives(world_size: int) -> None:
    ranks = create_mock_world(world_size, timeout=10)

    def work(p: MockBackendProvider) -> dict[str, np.ndarray]:
        r = p.rank
        out = {}
        out["sum"] = p.all_reduce(np.arange(4, dtype=np.float32) + r, "sum").copy()
        out["max"] = p.all_reduce(np.array([r, -r], dtype=np.int64), "max").copy()
        out["avg"] = p.all_reduce(np.full(3, float(r)), "avg").copy()
        out["prod"] = p.all_reduce(np.array([r + 1.0]), "prod").copy()
        out["gather"] = p.all_gather(np.array([r, r * 10], dtype=np.int32))
        out["rs"] = p.reduce_scatter(np.arange(world_size * 2, dtype=np.float64), "sum")
        out["bcast"] = p.broadcast(np.full(2, float(r)), src=world_size - 1).copy()
        p.barrier()
        nxt, prev = (r + 1) % world_size, (r - 1) % world_size
        p.send(np.array([r], dtype=np.int64), nxt)
        out["recv"] = p.recv(np.empty(1, dtype=np.int64), prev)
        return out

    outs = _run_ranks(ranks, work)
    ws = world_size
    for r, o in enumerate(outs):
        np.testing.assert_array_equal(o["sum"], np.arange(4) * ws + sum(range(ws)))
        np.testing.assert_array_equal(o["max"], [ws - 1, 0])
        np.testing.assert_allclose(o["avg"], np.full(3, (ws - 1) / 2))
        assert o["prod"][0] == np.prod(np.arange(1, ws + 1))
        np.testing.assert_array_equal(o["gather"], [[i, i * 10] for i in range(ws)])
        np.testing.assert_array_equal(o["rs"], (np.arange(ws * 2) * ws)[r * 2 : (r + 1) * 2])
        np.testing.assert_array_equal(o["bcast"], [ws - 1.0, ws - 1.0])
        assert o["recv"][0] == (r - 1) % ws


def test_mock_world_mismatch_is_clear_error() -> None:
    ranks = create_mock_world(2, timeout=10)
    outs = _run_ranks(ranks, lambda p: _catch(lambda: p.all_reduce(np.ones(2 + p.rank), "sum")))
    assert all(isinstance(e, CollectiveError) and "rank 1: shape (3,)" in str(e) for e in outs)
    outs = _run_ranks(ranks, lambda p: _catch(lambda: p.all_reduce(np.ones(2), "sum" if p.rank else "max")))
    assert all(isinstance(e, CollectiveError) for e in outs)


def _catch(fn):
    try:
        return fn()
    except Exception as exc:
        return exc


def test_mock_world_timeout_when_rank_absent() -> None:
    ranks = create_mock_world(2, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(CommTimeoutError, match=r"timed out after 0\.5s") as info:
        ranks[0].all_reduce(np.ones(2))
    assert time.monotonic() - t0 < 5 and isinstance(info.value, TimeoutError)
    with pytest.raises(CommTimeoutError):
        ranks[1].recv(np.empty(1), src=0)


def test_world_is_reachable_from_the_providers_and_reset_repairs_it() -> None:
    ranks = create_mock_world(2, timeout=0.3)
    assert ranks[0].world is ranks[1].world and isinstance(ranks[0].world, MockWorld)
    assert ranks[0].world.world_size == 2 and MockBackendProvider().world is None
    with pytest.raises(CommTimeoutError, match=r"provider\.world\.reset\(\)"):
        ranks[0].all_reduce(np.ones(2))
    with pytest.raises(CommTimeoutError):  # broken until reset: even a lone call fails at once
        ranks[1].all_reduce(np.ones(2))
    ranks[1].world.reset()
    outs = _run_ranks(ranks, lambda p: p.all_reduce(np.full(2, p.rank + 1.0), "sum").tolist())
    assert outs == [[3.0, 3.0], [3.0, 3.0]]
    with pytest.raises(TypeError, match="world must be a MockWorld from create_mock_world"):
        MockBackendProvider(world="world")


def test_world_of_one_and_p2p_errors() -> None:
    p = MockBackendProvider()
    x = np.arange(3.0)
    assert p.all_reduce(x, "avg") is x and p.all_gather(x).shape == (1, 3)
    with pytest.raises(CommGroupError, match="point-to-point needs another rank"):
        p.send(x, 0)
    with pytest.raises(TypeError, match="numpy array"):
        p.all_reduce([1, 2])
    with pytest.raises(InvalidArgumentError, match="avg needs a float"):
        p.all_reduce(np.arange(3), "avg")
    with pytest.raises(UnsupportedOperationError):
        MockBackendProvider(has_collective=False).all_reduce(x)


def test_concurrent_alloc_free_consistent() -> None:
    """8 threads allocating and freeing for ~2 s: unique handles, consistent stats, no lost blocks."""
    p = MockBackendProvider(max_memory_mb=1024, kv_geometry={"num_layers": 1, "num_kv_heads": 1, "head_dim": 8})
    seen: list[list[int]] = [[] for _ in range(8)]
    stop = time.monotonic() + 2.0
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        rng = np.random.default_rng(i)
        mine = []
        try:
            while time.monotonic() < stop:
                if mine and rng.random() < 0.45:
                    p.kv_block_free(mine.pop(int(rng.integers(len(mine)))))
                else:
                    b = p.kv_block_alloc(int(rng.integers(1, 64)), DType.FP16)
                    mine.append(b)
                    seen[i].append(b.handle)
            live = sum(b.nbytes for b in mine)
            seen[i].append(-live)
            for b in mine:
                p.kv_block_free(b)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    handles = [h for s in seen for h in s if h > 0]
    assert len(handles) == len(set(handles)) and len(handles) > 1000
    stats = p.memory_stats()
    assert stats["allocated_bytes"] == 0 and stats["num_blocks"] == 0


def test_mock_host_allocations_respect_max_memory_mb() -> None:
    p = MockBackendProvider(max_memory_mb=1)
    with pytest.raises(ResourceExhaustedError, match="limit"):
        p.kv_block_alloc(1000, DType.FP16, device="cpu")  # 21 MiB of host memory over a 1 MiB cap
    assert p.memory_stats()["kv_allocated_bytes"] == 0 and not p.live_blocks()
