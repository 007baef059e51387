"""Hostile use of blocks and pools (issue 11): memory safety, non-integer ids, races, state left
unchanged by failed calls, lifecycle. Every case here failed on the code before the fix."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from sagellm_backend import (
    BackendError,
    BlockFreedError,
    DType,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    KVGeometry,
    MockBackendProvider,
    get_provider,
)

torch = pytest.importorskip("torch")

GEOM = {"num_layers": 1, "num_kv_heads": 1, "head_dim": 8}


def _providers() -> list[object]:
    return [MockBackendProvider(kv_geometry=GEOM, num_devices=2), get_provider("cpu", kv_geometry=GEOM)]


@pytest.fixture(params=["mock", "cpu"])
def provider(request: pytest.FixtureRequest) -> object:
    if request.param == "mock":
        return MockBackendProvider(kv_geometry=GEOM, num_devices=2)
    return get_provider("cpu", kv_geometry=GEOM)


def _snapshot(pool: object) -> tuple[object, ...]:
    st = pool.stats()  # type: ignore[attr-defined]
    return (st.free_blocks, st.used_blocks, st.shared_blocks, [pool.refcount(i) for i in range(pool.num_blocks)])  # type: ignore[attr-defined]


# ------------------------------------------------------------------ memory safety
def test_swap_in_of_released_swap_is_refused(provider: object) -> None:
    pool = provider.create_kv_pool(8, block_size=4, dtype=DType.FP32)  # type: ignore[attr-defined]
    ids = pool.allocate(2)
    swapped = pool.swap_out(ids)
    swapped.release()
    before = _snapshot(pool)
    with pytest.raises(InvalidArgumentError, match="released"):
        pool.swap_in(swapped)
    assert _snapshot(pool) == before


_TRUSTED_OOB = """
import sys
from sagellm_backend import get_provider, MockBackendProvider, DType, InvalidArgumentError
geom = {"num_layers": 1, "num_kv_heads": 1, "head_dim": 8}
for p in (MockBackendProvider(kv_geometry=geom), get_provider("cpu", kv_geometry=geom)):
    pool = p.create_kv_pool(4, block_size=4, dtype=DType.FP32)
    ids = pool.allocate(4)
    for bad in ([4], [-1], [10**9]):
        try:
            pool.copy_blocks(bad, [0], validate=False)
        except InvalidArgumentError:
            pass
        else:
            sys.exit("no error for " + repr(bad))
print("ok")
"""


def test_trusted_copy_with_out_of_range_ids_never_crashes() -> None:
    # Before the fix this killed the interpreter (SIGSEGV) or corrupted the heap: run it apart.
    out = subprocess.run([sys.executable, "-c", _TRUSTED_OOB], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.strip() == "ok"


# ------------------------------------------------------------------ integer ids
@pytest.mark.parametrize(
    "bad",
    [[True], [1.0], [np.float64(1.0)], np.array([[1]]), np.array([1.0]), [[1]], ["1"], [None]],
    ids=["bool", "float", "np-float", "2-D", "float-array", "nested", "str", "none"],
)
def test_non_integer_ids_are_refused_everywhere(provider: object, bad: object) -> None:
    pool = provider.create_kv_pool(4, block_size=4, dtype=DType.FP32)  # type: ignore[attr-defined]
    pool.allocate(2)
    before = _snapshot(pool)
    for call in (
        lambda: pool.free(bad),
        lambda: pool.fork(bad),
        lambda: pool.swap_out(bad),
        lambda: pool.copy_blocks(bad, [3]),
        lambda: pool.copy_blocks(bad, [3], validate=False),
        lambda: pool.make_writable(bad),
    ):
        with pytest.raises(InvalidArgumentTypeError):
            call()
    assert _snapshot(pool) == before


@pytest.mark.parametrize("bad", [True, 1.0, np.float32(1), np.array([1]), "1"])
def test_single_block_id_must_be_an_integer(provider: object, bad: object) -> None:
    pool = provider.create_kv_pool(4, block_size=4, dtype=DType.FP32)  # type: ignore[attr-defined]
    pool.allocate(2)
    for call in (lambda: pool.read_block(bad), lambda: pool.block(bad), lambda: pool.refcount(bad)):
        with pytest.raises(InvalidArgumentTypeError):
            call()
    with pytest.raises(InvalidArgumentTypeError):
        pool.write_block(0, 12)


def test_numpy_and_tensor_integers_are_accepted(provider: object) -> None:
    pool = provider.create_kv_pool(4, block_size=4, dtype=DType.FP32)  # type: ignore[attr-defined]
    ids = pool.allocate(2)
    data = bytes(range(pool.block_nbytes % 256)) * (pool.block_nbytes // max(1, pool.block_nbytes % 256))
    data = (bytes(range(256)) * (pool.block_nbytes // 256 + 1))[: pool.block_nbytes]
    pool.write_block(np.int64(ids[0]), data)
    assert pool.read_block(torch.tensor(ids[0])) == data
    pool.copy_blocks(np.array([ids[0]]), torch.tensor([ids[1]]))
    assert pool.read_block(ids[1]) == data
    pool.free(np.array(ids))
    assert pool.stats().used_blocks == 0


# ------------------------------------------------------------------ races
def test_migrate_racing_free_keeps_accounting_exact() -> None:
    p = MockBackendProvider(num_devices=2)  # TinyLlama geometry: a 2048-token block is 92 MB to move
    for _ in range(12):
        block = p.kv_block_alloc(2048, DType.FP32)
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def migrate(b: object = block, bar: threading.Barrier = barrier, out: list[str] = outcomes) -> None:
            bar.wait()
            try:
                p.kv_block_migrate(b, "mock:1")
                out.append("migrated")
            except BlockFreedError:
                out.append("migrate-refused")

        def free(b: object = block, bar: threading.Barrier = barrier, out: list[str] = outcomes) -> None:
            bar.wait()
            time.sleep(0.005)  # land inside the migration's copy (tens of ms for 92 MB)
            try:
                p.kv_block_free(b)
                out.append("freed")
            except BlockFreedError:
                out.append("free-refused")

        threads = [threading.Thread(target=migrate), threading.Thread(target=free)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert "freed" in outcomes  # free always wins eventually: before or after the migration
        stats = p.memory_stats()
        assert stats["kv_allocated_bytes"] == 0, stats
        assert stats.get("mock_1_kv_allocated_bytes", 0) == 0, stats
        assert not p.live_blocks()


# ------------------------------------------------------------------ failed calls change nothing
def test_closed_pool_views_are_refused_without_changes(provider: object) -> None:
    pool = provider.create_kv_pool(4, block_size=4, dtype=DType.FP32)  # type: ignore[attr-defined]
    (i,) = pool.allocate(1)
    view = pool.block(i)
    pool.close()  # its views die with it: alive, they would hold the whole arena the accounting freed
    assert view.is_freed and view not in provider.live_blocks()  # type: ignore[attr-defined]
    assert provider.memory_stats()["kv_allocated_bytes"] == 0  # type: ignore[attr-defined]
    with pytest.raises(BlockFreedError):
        provider.kv_block_free(view)  # type: ignore[attr-defined]
    with pytest.raises(BlockFreedError):
        provider.kv_block_migrate(view, "cpu")  # type: ignore[attr-defined]
    with pytest.raises(BlockFreedError):
        provider.kv_block_read(view)  # type: ignore[attr-defined]
    assert view.device == pool.device and view.pool_block_id == i
    assert provider.memory_stats()["kv_allocated_bytes"] == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("field", ["kv_factor", "num_layers", "head_dim"])
def test_geometry_fields_must_be_integers(field: str) -> None:
    with pytest.raises(InvalidArgumentTypeError):
        KVGeometry(**{**GEOM, field: 2.0})
    with pytest.raises(InvalidArgumentTypeError):
        MockBackendProvider(kv_geometry={**GEOM, field: 2.0})


# ------------------------------------------------------------------ lifecycle
def test_provider_close_closes_its_pools(provider: object) -> None:
    pool = provider.create_kv_pool(4, block_size=4, dtype=DType.FP32)  # type: ignore[attr-defined]
    provider.close()  # type: ignore[attr-defined]
    assert pool.closed
    assert provider.memory_stats()["kv_allocated_bytes"] == 0  # type: ignore[attr-defined]


def test_dropped_pool_returns_its_memory(provider: object) -> None:
    pool = provider.create_kv_pool(16, block_size=4, dtype=DType.FP32)  # type: ignore[attr-defined]
    assert provider.memory_stats()["kv_allocated_bytes"] > 0  # type: ignore[attr-defined]
    del pool
    gc.collect()
    assert provider.memory_stats()["kv_allocated_bytes"] == 0  # type: ignore[attr-defined]


def test_dropped_swap_buffer_is_never_overwritten_by_the_next_swap(provider: object) -> None:
    pool = provider.create_kv_pool(4, block_size=4, dtype=DType.FP32)  # type: ignore[attr-defined]
    a, b = pool.allocate(2)
    pool.write_block(a, b"\x01" * pool.block_nbytes)
    pool.write_block(b, b"\x02" * pool.block_nbytes)
    first = pool.swap_out([a])
    first.wait()
    kept = first.data
    del first
    gc.collect()
    second = pool.swap_out([b])
    second.wait()
    assert bytes(np.asarray(kept).reshape(-1).view(np.uint8)) == b"\x01" * pool.block_nbytes
    assert second.data is not kept


# ------------------------------------------------------------------ untyped errors elsewhere
@pytest.mark.parametrize("count", [np.array([3, 4]), np.float64(3.0), 3.0, "3", None])
def test_token_counts_must_be_integers(count: object) -> None:
    for p in _providers():
        with pytest.raises(InvalidArgumentTypeError):
            p.kv_block_alloc(count, DType.FP32)  # type: ignore[attr-defined]
        with pytest.raises(InvalidArgumentTypeError):
            p.kv_block_alloc(torch.tensor(3.0), DType.FP32)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", [123, None, b"linear", ("a",)])
def test_kernel_names_must_be_strings(name: object) -> None:
    for p in _providers():
        with pytest.raises(InvalidArgumentTypeError):
            p.get_kernel(name)  # type: ignore[attr-defined]


@pytest.mark.parametrize("device", ["cuda:\u0661", "mock:\u0661", "cpu:99999999999999999999999", "mock:99999999999"])
def test_odd_device_strings_are_typed_errors(device: str) -> None:
    for p in _providers():
        with pytest.raises(BackendError):
            p.kv_block_alloc(4, DType.FP32, device=device)  # type: ignore[attr-defined]


_DROP_IN_FLIGHT = """
import gc, time
from sagellm_backend import get_provider, MockBackendProvider, DType
for p in (get_provider("cpu"), MockBackendProvider()):
    for _ in range(5):
        pool = p.create_kv_pool(64, block_size=16, dtype=DType.FP16)
        ids = pool.allocate(64)
        s = p.create_stream()
        s.submit(time.sleep, 0.05)  # the copies below are still queued when their owners go away
        swapped = pool.swap_out(ids, stream=s)
        pool.copy_blocks(ids[:32], ids[32:], stream=s)
        swapped.release()
        del swapped
        pool.close()
        del pool
        gc.collect()
        s.synchronize()
print("ok")
"""


def test_memory_freed_while_a_stream_still_copies_is_kept_alive() -> None:
    # Host streams used raw addresses: a swap buffer dropped, or a pool closed, while its copy was
    # still queued made the worker write into freed memory (the process aborted).
    out = subprocess.run([sys.executable, "-c", _DROP_IN_FLIGHT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.strip() == "ok"


def test_a_pool_outlives_the_name_of_its_provider() -> None:
    pool = get_provider("cpu", kv_geometry=GEOM).create_kv_pool(4, block_size=4, dtype=DType.FP32)
    gc.collect()
    a, b = pool.allocate(2)
    pool.write_block(a, b"\x05" * pool.block_nbytes)
    pool.copy_blocks([a], [b])
    assert pool.read_block(b) == b"\x05" * pool.block_nbytes
