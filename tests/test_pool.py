"""Paged KV pool: allocator semantics, batched ops bit-exact on random data, property tests."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sagellm_backend import (
    BlockFreedError,
    DType,
    ForeignBlockError,
    InvalidArgumentError,
    KVTransferError,
    MockBackendProvider,
    ResourceExhaustedError,
)
from sagellm_backend.kv.allocator import BlockAllocator

SMALL = {"num_layers": 2, "num_kv_heads": 2, "head_dim": 8}


@pytest.fixture(params=["mock", "cpu"])
def provider(request):
    if request.param == "cpu":
        pytest.importorskip("torch")
        from sagellm_backend import CPUBackendProvider

        p = CPUBackendProvider(kv_geometry=SMALL)
    else:
        p = MockBackendProvider(kv_geometry=SMALL, num_devices=2)
    yield p
    p.close()


def test_allocator_basics() -> None:
    a = BlockAllocator(4)
    assert a.allocate(2) == [0, 1] and a.allocate(0) == []
    with pytest.raises(ResourceExhaustedError, match="only 2 of 4 are free"):
        a.allocate(3)
    assert a.num_free == 2
    a.fork([0])
    assert a.refcount(0) == 2 and a.refcount(3) == 0
    assert a.free([0, 1]) == [1]
    assert a.free([0]) == [0]
    with pytest.raises(BlockFreedError, match="already free"):
        a.free([0])
    with pytest.raises(BlockFreedError):
        a.free([2, 2])
    with pytest.raises(InvalidArgumentError, match="out of range"):
        a.free([7])
    with pytest.raises(TypeError):
        a.free(["x"])  # type: ignore[list-item]
    a.allocate(2)
    a.fork([0, 0])  # a block forked twice in one call holds three references
    assert a.refcount(0) == 3
    assert a.free([0, 0, 0]) == [0]


def test_arena_layout_and_memory_accounting(provider) -> None:
    base = provider.memory_stats()["allocated_bytes"]
    pool = provider.create_kv_pool(10, block_size=4, dtype=DType.FP16)
    geo = provider.kv_geometry
    assert tuple(pool.arena.shape) == (10, 2, 2, 4, 2, 8)
    assert pool.block_nbytes == 4 * geo.bytes_per_token(DType.FP16) and pool.arena_nbytes == 10 * pool.block_nbytes
    assert provider.memory_stats()["allocated_bytes"] == base + pool.arena_nbytes
    pool.close()
    pool.close()
    assert provider.memory_stats()["allocated_bytes"] == base
    with pytest.raises(InvalidArgumentError, match="closed"):
        pool.allocate(1)


def test_pool_respects_memory_limit() -> None:
    p = MockBackendProvider(kv_geometry=SMALL, max_memory_mb=1)
    with pytest.raises(ResourceExhaustedError):
        p.create_kv_pool(10_000, block_size=16)
    pool = p.create_kv_pool(memory_fraction=0.5, block_size=16)
    assert pool.arena_nbytes <= (1 << 20) // 2 and pool.num_blocks == (1 << 19) // pool.block_nbytes
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        p.create_kv_pool(4, memory_fraction=0.1)
    with pytest.raises(InvalidArgumentError, match=r"\(0, 1\]"):
        p.create_kv_pool(memory_fraction=1.5)


@pytest.mark.parametrize("dtype", [DType.BF16, DType.FP8, DType.INT4, DType.FP32])
@pytest.mark.parametrize("count", [1, 7, 33])
def test_copy_blocks_bit_exact_poison_overwritten(provider, dtype: DType, count: int) -> None:
    pool = provider.create_kv_pool(80, block_size=3, dtype=dtype)
    ids = pool.allocate(2 * count + 3)
    rng = np.random.default_rng(count)
    perm = rng.permutation(ids).tolist()
    src, dst = perm[:count], perm[count : 2 * count]
    data = {i: os.urandom(pool.block_nbytes) for i in src}
    for i in src:
        pool.write_block(i, data[i])
    for i in dst:
        pool.write_block(i, b"\xcd" * pool.block_nbytes)
    pool.copy_blocks(src, dst)
    for s, d in zip(src, dst):
        got = pool.read_block(d)
        assert b"\xcd" * 8 not in got or got == data[s]
        assert got == data[s]
    for i in src:
        assert pool.read_block(i) == data[i]


def test_copy_blocks_validation(provider) -> None:
    pool = provider.create_kv_pool(8, block_size=2)
    a, b, c = pool.allocate(3)
    with pytest.raises(InvalidArgumentError, match="same length"):
        pool.copy_blocks([a, b], [c])
    with pytest.raises(InvalidArgumentError, match="duplicates"):
        pool.copy_blocks([a, b], [c, c])
    with pytest.raises(InvalidArgumentError, match="overlap"):
        pool.copy_blocks([a, b], [b, c])
    with pytest.raises(BlockFreedError, match="not allocated"):
        pool.copy_blocks([a], [7])
    with pytest.raises(InvalidArgumentError, match="out of range"):
        pool.copy_blocks([a], [99])
    with pytest.raises(TypeError):
        pool.copy_blocks(3, [c])  # type: ignore[arg-type]
    pool.copy_blocks(np.array([a]), np.array([c]))  # numpy ids work


def test_copy_blocks_on_stream_is_async(provider) -> None:
    pool = provider.create_kv_pool(64, block_size=2)
    ids = pool.allocate(64)
    data = {i: os.urandom(pool.block_nbytes) for i in ids[:32]}
    for i, d in data.items():
        pool.write_block(i, d)
    s = provider.create_stream()
    gate = threading.Event()
    s.submit(gate.wait)
    pool.copy_blocks(ids[:32], ids[32:], stream=s)
    assert not s.query()
    gate.set()
    s.synchronize()
    assert all(pool.read_block(d) == data[i] for i, d in zip(ids[:32], ids[32:]))


def test_swap_out_in_roundtrip_bit_exact(provider) -> None:
    pool = provider.create_kv_pool(40, block_size=4, dtype=DType.BF16)
    ids = pool.allocate(17)
    data = [os.urandom(pool.block_nbytes) for _ in ids]
    for i, d in zip(ids, data):
        pool.write_block(i, d)
    s = provider.create_stream()
    swapped = pool.swap_out(ids, stream=s)
    assert swapped.event is not None and swapped.num_blocks == 17 and swapped.nbytes == 17 * pool.block_nbytes
    swapped.wait()
    pool.free(ids)
    dst = pool.allocate(17)[::-1]
    back = pool.swap_in(swapped, dst, stream=s)
    s.synchronize()
    assert back == dst and [pool.read_block(i) for i in dst] == data
    other = provider.create_kv_pool(40, block_size=4, dtype=DType.BF16)
    with pytest.raises(ForeignBlockError):
        other.swap_in(swapped)
    with pytest.raises(InvalidArgumentError, match="dst_ids"):
        pool.swap_in(swapped, dst[:3])


def test_a_released_swap_buffer_outlives_a_pending_swap_in(provider) -> None:
    """release() right after an asynchronous swap_in: the next swap_out of the same size must not reuse (and
    overwrite) the host buffer the swap-in has not read yet."""
    pool = provider.create_kv_pool(40, block_size=4, dtype=DType.BF16)
    ids = pool.allocate(8)
    data = [os.urandom(pool.block_nbytes) for _ in ids]
    for i, d in zip(ids, data):
        pool.write_block(i, d)
    swapped = pool.swap_out(ids)
    pool.free(ids)
    s = provider.create_stream()
    gate = threading.Event()
    s.submit(gate.wait, 10.0)  # the swap-in below stays queued until the gate opens
    dst = pool.allocate(8)
    pool.swap_in(swapped, dst, stream=s)
    swapped.release()
    others = pool.allocate(8)
    for i in others:
        pool.write_block(i, b"\xff" * pool.block_nbytes)
    later = pool.swap_out(others)  # synchronous: writes whichever host buffer it takes now
    gate.set()
    s.synchronize()
    assert [pool.read_block(i) for i in dst] == data
    later.release()


def test_swap_in_allocation_is_atomic(provider) -> None:
    pool = provider.create_kv_pool(6, block_size=2)
    ids = pool.allocate(4)
    swapped = pool.swap_out(ids)
    free_before = pool.stats().free_blocks
    with pytest.raises(ResourceExhaustedError):
        pool.swap_in(swapped)  # needs 4, 2 free
    assert pool.stats().free_blocks == free_before


def test_migrate_blocks_between_devices() -> None:
    p = MockBackendProvider(kv_geometry=SMALL, num_devices=2)
    a = p.create_kv_pool(16, block_size=4, dtype=DType.FP16)
    b = p.create_kv_pool(16, block_size=4, dtype=DType.FP16, device="mock:1")
    h = p.create_kv_pool(16, block_size=4, dtype=DType.FP16, device="cpu")
    ids = a.allocate(9)
    data = [os.urandom(a.block_nbytes) for _ in ids]
    for i, d in zip(ids, data):
        a.write_block(i, d)
    on_b = a.migrate_blocks(ids, b)
    on_h = b.migrate_blocks(on_b, h)
    assert [h.read_block(i) for i in on_h] == data and b.device == "mock:1" and h.device == "cpu"
    with pytest.raises(InvalidArgumentError, match="must match"):
        a.migrate_blocks(ids, p.create_kv_pool(4, block_size=2, dtype=DType.FP16))
    with pytest.raises(ForeignBlockError):
        a.migrate_blocks(ids, MockBackendProvider(kv_geometry=SMALL).create_kv_pool(16, block_size=4))


def test_transfer_fault_in_batch_leaves_everything(provider) -> None:
    if not isinstance(provider, MockBackendProvider):
        pytest.skip("fault injection is a Mock feature")
    pool = provider.create_kv_pool(10, block_size=2)
    ids = pool.allocate(4)
    data = [os.urandom(pool.block_nbytes) for _ in ids]
    for i, d in zip(ids, data):
        pool.write_block(i, d)
    stats = pool.stats()
    provider.faults.fail_transfers(1)
    with pytest.raises(KVTransferError):
        pool.make_writable(pool.fork(ids[:2]) + ids[2:])
    pool.free(ids[:2])  # drop the fork's references
    assert pool.stats() == stats and [pool.read_block(i) for i in ids] == data


def test_copy_on_write_semantics(provider) -> None:
    pool = provider.create_kv_pool(6, block_size=2)
    seq_a = pool.allocate(3)
    payload = [os.urandom(pool.block_nbytes) for _ in seq_a]
    for i, d in zip(seq_a, payload):
        pool.write_block(i, d)
    seq_b = pool.fork(seq_a)  # prefix sharing: same blocks, refcount 2
    assert seq_b == seq_a and all(pool.refcount(i) == 2 for i in seq_a)
    seq_b = pool.make_writable(seq_b)  # B is about to write: gets private copies
    assert set(seq_b).isdisjoint(seq_a) and all(pool.refcount(i) == 1 for i in seq_a + seq_b)
    assert [pool.read_block(i) for i in seq_b] == payload
    assert pool.make_writable(seq_a) == seq_a  # nothing shared any more: no copies
    with pytest.raises(ResourceExhaustedError):
        pool.make_writable(pool.fork(seq_a))  # 3 copies needed, 0 free
    assert all(pool.refcount(i) == 2 for i in seq_a)  # unchanged by the failure
    with pytest.raises(InvalidArgumentError, match="duplicates"):
        pool.make_writable([seq_a[0], seq_a[0]])


def test_pool_block_views_use_single_block_api(provider) -> None:
    pool = provider.create_kv_pool(4, block_size=2)
    (i, j) = pool.allocate(2)
    pool.write_block(i, os.urandom(pool.block_nbytes))
    vi, vj = pool.block(i), pool.block(j)
    provider.kv_block_copy(vi, vj)
    assert pool.read_block(j) == pool.read_block(i)
    payload = pool.read_block(i)
    provider.kv_block_migrate(vi, "cpu" if provider.device != "cpu" else provider.device)
    assert provider.kv_block_read(vi) == payload
    provider.kv_block_free(vj)
    assert pool.refcount(j) == 1
    with pytest.raises(BlockFreedError):
        pool.block(3)


def test_concurrent_pool_threads(provider) -> None:
    pool = provider.create_kv_pool(4096, block_size=1)
    errors: list[BaseException] = []
    owned: list[list[int]] = [[] for _ in range(8)]

    def worker(k: int) -> None:
        rng = np.random.default_rng(k)
        try:
            for _ in range(3000):
                if owned[k] and rng.random() < 0.5:
                    n = int(rng.integers(1, len(owned[k]) + 1))
                    pool.free(owned[k][:n])
                    del owned[k][:n]
                else:
                    owned[k] += pool.allocate(int(rng.integers(1, 16)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    flat = [i for o in owned for i in o]
    assert len(flat) == len(set(flat)), "a block was handed to two owners"
    assert pool.stats().used_blocks == len(flat)
    pool.free(flat)
    assert pool.stats().free_blocks == 4096


@settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
class PoolModel(RuleBasedStateMachine):
    """Random allocate / free / fork / copy-on-write / copy / swap / migrate against a plain model:
    data checked byte for byte after every step, and memory back to baseline at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.p = MockBackendProvider(kv_geometry={"num_layers": 1, "num_kv_heads": 1, "head_dim": 4}, num_devices=2)
        self.base = self.p.memory_stats()
        self.pool = self.p.create_kv_pool(24, block_size=2)
        self.refs: dict[int, int] = {}  # model: block id -> reference count
        self.data: dict[int, bytes] = {}  # model: block id -> contents
        self.blocks: dict[int, bytes] = {}  # standalone KVBlocks: handle -> contents
        self.live_blocks: dict[int, object] = {}

    def _fresh(self) -> bytes:
        return os.urandom(self.pool.block_nbytes)

    @rule(n=st.integers(0, 6))
    def allocate(self, n: int) -> None:
        free = 24 - len(self.refs)
        if n > free:
            with pytest.raises(ResourceExhaustedError):
                self.pool.allocate(n)
            return
        for i in self.pool.allocate(n):
            assert i not in self.refs
            self.refs[i] = 1
            self.data[i] = self._fresh()
            self.pool.write_block(i, self.data[i])

    @precondition(lambda self: self.refs)
    @rule(k=st.integers(1, 4), data=st.data())
    def free(self, k: int, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.refs)), min_size=1, max_size=k, unique=True))
        self.pool.free(ids)
        for i in ids:
            self.refs[i] -= 1
            if not self.refs[i]:
                del self.refs[i], self.data[i]

    @rule(i=st.integers(0, 23))
    def free_bad(self, i: int) -> None:
        if i not in self.refs:
            with pytest.raises(BlockFreedError):
                self.pool.free([i])

    @precondition(lambda self: self.refs)
    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.refs)), min_size=1, max_size=3, unique=True))
        self.pool.fork(ids)
        for i in ids:
            self.refs[i] += 1

    @precondition(lambda self: self.refs)
    @rule(data=st.data())
    def make_writable(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.refs)), min_size=1, max_size=3, unique=True))
        shared = [i for i in ids if self.refs[i] > 1]
        if len(shared) > 24 - len(self.refs):
            with pytest.raises(ResourceExhaustedError):
                self.pool.make_writable(ids)
            return
        out = self.pool.make_writable(ids)
        for old, new in zip(ids, out):
            if old in shared:
                assert new not in self.refs
                self.refs[old] -= 1
                self.refs[new] = 1
                self.data[new] = self.data[old]
            else:
                assert new == old

    @precondition(lambda self: len(self.refs) >= 2)
    @rule(data=st.data())
    def copy(self, data: st.DataObject) -> None:
        ids = data.draw(st.permutations(sorted(self.refs)))
        half = len(ids) // 2
        src, dst = ids[:half], ids[half : 2 * half]
        self.pool.copy_blocks(src, dst)
        for s, d in zip(src, dst):
            self.data[d] = self.data[s]

    @precondition(lambda self: self.refs)
    @rule(data=st.data())
    def swap_roundtrip(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.refs)), min_size=1, max_size=4, unique=True))
        out = self.pool.swap_out(ids)
        for i in ids:  # scribble over the originals, then restore from host
            self.pool.write_block(i, b"\x00" * self.pool.block_nbytes)
        self.pool.swap_in(out, ids)

    @rule(tokens=st.integers(1, 5), dtype=st.sampled_from([DType.FP16, DType.INT4, DType.FP8]))
    def standalone_block(self, tokens: int, dtype: DType) -> None:
        b = self.p.kv_block_alloc(tokens, dtype)
        payload = os.urandom(b.nbytes)
        self.p.kv_block_write(b, payload)
        self.blocks[b.handle] = payload
        self.live_blocks[b.handle] = b

    @precondition(lambda self: self.live_blocks)
    @rule(data=st.data(), device=st.sampled_from(["cpu", "mock:1", "mock:0"]))
    def migrate_block(self, data: st.DataObject, device: str) -> None:
        h = data.draw(st.sampled_from(sorted(self.live_blocks)))
        self.p.kv_block_migrate(self.live_blocks[h], device)

    @precondition(lambda self: self.live_blocks)
    @rule(data=st.data())
    def free_block(self, data: st.DataObject) -> None:
        h = data.draw(st.sampled_from(sorted(self.live_blocks)))
        self.p.kv_block_free(self.live_blocks.pop(h))
        del self.blocks[h]

    @invariant()
    def matches_model(self) -> None:
        st_ = self.pool.stats()
        assert st_.used_blocks == len(self.refs)
        assert st_.shared_blocks == sum(1 for r in self.refs.values() if r > 1)
        for i, r in self.refs.items():
            assert self.pool.refcount(i) == r
            assert self.pool.read_block(i) == self.data[i]
        for h, b in self.live_blocks.items():
            assert self.p.kv_block_read(b) == self.blocks[h]

    def teardown(self) -> None:
        for h in list(self.live_blocks):
            self.p.kv_block_free(self.live_blocks.pop(h))
        for i, r in list(self.refs.items()):
            self.pool.free([i] * r)
        assert self.pool.stats().used_blocks == 0
        self.pool.close()
        now = {k: v for k, v in self.p.memory_stats().items() if "peak" not in k}
        assert now == {k: v for k, v in self.base.items() if "peak" not in k}, "memory did not return to baseline"


TestPoolModel = PoolModel.TestCase
