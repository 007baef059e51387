"""Random operation sequences on a KV pool and its provider against a reference model (issue 11).

A hypothesis state machine drives one provider (Mock with two devices, and CPU) through allocate,
free, fork, make_writable, copy_blocks (checked and trusted), writes, swap_out / swap_in / release
(synchronous and as batches on a stream), block views with the single-block API (read, write,
copy, free, migrate across devices), standalone blocks, and closing and reopening the pool. The
model predicts every outcome: a call it deems valid must succeed with the predicted effect; any
other call must raise a ``BackendError`` and leave a snapshot of the provider unchanged.

After every step: reference counts, occupancy, peak, the bytes of every live block and of every
swap, and the memory accounting of every device equal the model's.

Then several threads run random sequences on one provider and pool at once, each owning its ids
and blocks and sharing some forked ids; afterwards the same global invariants hold and every
thread's bytes are intact.
"""

from __future__ import annotations

import random
import sys
import threading
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from props_support import BLOCK_TOKENS, check_invariants, fill, kv_figures, make_provider, snapshot, stat_key
from sagellm_backend import BackendError, BlockFreedError, DType, ResourceExhaustedError
from sagellm_backend.api.blocks import KVBlock

NB = 6  # blocks per pool: small, so exhaustion, sharing and reuse happen often


def _row_bytes(rows: Any, k: int) -> bytes:
    """Bytes of row ``k`` of a swap's host copy (numpy array or torch tensor)."""
    row = rows[k]
    return bytes((row if isinstance(row, np.ndarray) else row.numpy()).tobytes())


class View:
    """The model of a block the provider handed out: a pool view or a standalone block."""

    def __init__(self, block: KVBlock, pool_id: int | None, data: bytes | None) -> None:
        self.block = block
        self.pool_id = pool_id  # None once standalone (allocated so, or migrated out)
        self.data = data  # standalone bytes (None: not known yet)


class Model:
    """What the pool should hold: reference counts, peak, and bytes per id (None: unknown)."""

    def __init__(self) -> None:
        self.rc = [0] * NB
        self.views = [0] * NB  # references held by KVBlock views (only kv_block_free drops them)
        self.data: list[bytes | None] = [None] * NB
        self.peak = 0

    @property
    def free(self) -> int:
        return self.rc.count(0)

    def live(self, i: object) -> bool:
        return type(i) is int and 0 <= i < NB and self.rc[i] > 0

    def take(self, ids: list[int]) -> None:
        assert len(set(ids)) == len(ids) and all(0 <= i < NB and self.rc[i] == 0 for i in ids), ids
        for i in ids:
            self.rc[i] = 1
            self.data[i] = None  # uninitialised
        self.peak = max(self.peak, NB - self.free)


class PoolMachine(RuleBasedStateMachine):
    KIND = "mock"

    def __init__(self) -> None:
        super().__init__()
        self.p = make_provider(self.KIND)
        self.devices = self.p.reachable_devices()
        self.pools: list[Any] = []
        self.stream = self.p.create_stream()
        self.views: list[View] = []
        self.swaps: list[tuple[Any, list[bytes | None]]] = []
        self.seed = 0
        self._open()

    def _open(self) -> None:
        self.pool = self.p.create_kv_pool(NB, block_size=BLOCK_TOKENS, dtype=DType.FP32)
        self.pools.append(self.pool)
        self.m = Model()
        self.swaps = []

    def teardown(self) -> None:
        self.p.close()

    # ------------------------------------------------------------------ helpers
    def payload(self) -> bytes:
        self.seed += 1
        return fill(self.pool.block_nbytes, self.seed)

    def snap(self, *, with_bytes: bool = True) -> Any:
        if with_bytes:
            return snapshot(self.p, self.pools)
        return (
            self.p.memory_stats()["kv_allocated_bytes"],
            [(v.block.handle, v.block.device, v.block.is_freed) for v in self.views],
            None if self.pool.closed else (self.pool.stats(), [self.pool.refcount(i) for i in range(NB)]),
        )

    def attempt(self, ok: bool, call: Any, *, with_bytes: bool = True) -> Any:
        """Run ``call``: it must succeed when the model says ``ok``, else raise typed, changing nothing."""
        if ok:
            return call()
        before = self.snap(with_bytes=with_bytes)
        with pytest.raises(BackendError):
            call()
        assert self.snap(with_bytes=with_bytes) == before, "a failed call changed the provider's state"
        return None

    def ids(self, data: st.DataObject, max_size: int = 4) -> list[int]:
        """Mostly live ids (most calls should be valid), sometimes any ids (free, out of range)."""
        live = [i for i in range(NB) if self.m.rc[i]]
        if live and data.draw(st.integers(0, 4)):
            return data.draw(st.lists(st.sampled_from(live), max_size=max_size))
        return data.draw(st.lists(st.integers(-1, NB), max_size=max_size))

    def one(self, data: st.DataObject) -> int:
        live = [i for i in range(NB) if self.m.rc[i]]
        if live and data.draw(st.integers(0, 4)):
            return data.draw(st.sampled_from(live))
        return data.draw(st.integers(-1, NB))

    def open(self) -> bool:
        return not self.pool.closed

    # --------------------------------------------------------------- pool ids
    @rule(n=st.integers(0, NB + 1))
    def allocate(self, n: int) -> None:
        ids = self.attempt(self.open() and n <= self.m.free, lambda: self.pool.allocate(n))
        if ids is not None:
            assert len(ids) == n
            self.m.take(ids)

    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        ids = self.ids(data)
        counts = Counter(ids)
        ok = self.open() and all(0 <= i < NB and c <= self.m.rc[i] - self.m.views[i] for i, c in counts.items())
        if self.attempt(ok, lambda: self.pool.free(ids)) is None and ok:
            for i, c in counts.items():
                self.m.rc[i] -= c

    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        ids = self.ids(data)
        ok = self.open() and all(self.m.live(i) for i in ids)
        if self.attempt(ok, lambda: self.pool.fork(ids)) is not None:
            for i in ids:
                self.m.rc[i] += 1

    def _make_writable_ok(self, ids: list[int]) -> bool:
        shared = [i for i in ids if self.m.live(i) and self.m.rc[i] > 1]
        return (
            self.open()
            and len(set(ids)) == len(ids)
            and all(self.m.live(i) for i in ids)
            and len(shared) <= self.m.free
            and all(self.m.rc[i] > self.m.views[i] for i in shared)  # one reference of the caller's to drop
        )

    def _make_writable_apply(self, ids: list[int], out: list[int]) -> None:
        assert len(out) == len(ids)
        fresh = [(i, j) for i, j in zip(ids, out) if i != j]
        assert all(self.m.rc[i] > 1 for i, _ in fresh)
        assert all(self.m.rc[i] == 1 for i, j in zip(ids, out) if i == j)
        self.m.take([j for _, j in fresh])
        for i, j in fresh:
            self.m.data[j] = self.m.data[i]
            self.m.rc[i] -= 1

    @rule(data=st.data())
    def make_writable(self, data: st.DataObject) -> None:
        ids = self.ids(data)
        out = self.attempt(self._make_writable_ok(ids), lambda: self.pool.make_writable(ids))
        if out is not None:
            self._make_writable_apply(ids, out)

    def _copy_ok(self, src: list[int], dst: list[int], validate: bool) -> bool:
        if not self.open() or len(src) != len(dst):
            return False
        if not validate:
            return all(type(i) is int and 0 <= i < NB for i in src + dst)
        return len(set(dst)) == len(dst) and not set(dst) & set(src) and all(self.m.live(i) for i in src + dst)

    def _copy_apply(self, src: list[int], dst: list[int]) -> None:
        old = list(self.m.data)
        for s, d in zip(src, dst):
            self.m.data[d] = old[s]

    @rule(data=st.data(), validate=st.booleans())
    def copy_blocks(self, data: st.DataObject, validate: bool) -> None:
        src, dst = self.ids(data), self.ids(data)
        if not validate and (len(set(dst)) != len(dst) or set(dst) & set(src)):
            dst = [i for i in dict.fromkeys(dst) if i not in src]  # the trusted path's contract
            src = src[: len(dst)]
        ok = self._copy_ok(src, dst, validate)
        self.attempt(ok, lambda: self.pool.copy_blocks(src, dst, validate=validate))
        if ok:
            self._copy_apply(src, dst)

    @rule(data=st.data())
    def write(self, data: st.DataObject) -> None:
        i = self.one(data)
        payload = self.payload()
        ok = self.open() and self.m.live(i)
        self.attempt(ok, lambda: self.pool.write_block(i, payload))
        if ok:
            self.m.data[i] = payload

    # ------------------------------------------------------------------- swaps
    @rule(data=st.data())
    def swap_out(self, data: st.DataObject) -> None:
        ids = self.ids(data)
        swapped = self.attempt(self.open() and all(self.m.live(i) for i in ids), lambda: self.pool.swap_out(ids))
        if swapped is not None:
            self.swaps.append((swapped, [self.m.data[i] for i in ids]))

    def _swap_in_ok(self, swapped: Any, dst: list[int] | None) -> bool:
        if not self.open() or swapped.released:
            return False
        n = swapped.num_blocks
        if dst is None:
            return n <= self.m.free
        return len(dst) == n and len(set(dst)) == n and all(self.m.live(i) for i in dst)

    def _swap_in_apply(self, payloads: list[bytes | None], dst: list[int] | None, out: list[int]) -> None:
        if dst is None:
            self.m.take(out)
        else:
            assert out == dst
        for i, b in zip(out, payloads):
            self.m.data[i] = b

    @precondition(lambda self: bool(self.swaps))
    @rule(data=st.data(), fresh=st.booleans())
    def swap_in(self, data: st.DataObject, fresh: bool) -> None:
        swapped, payloads = data.draw(st.sampled_from(self.swaps))
        dst = None if fresh else self.ids(data)
        out = self.attempt(self._swap_in_ok(swapped, dst), lambda: self.pool.swap_in(swapped, dst))
        if out is not None:
            self._swap_in_apply(payloads, dst, out)

    @precondition(lambda self: bool(self.swaps))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        swapped, _ = data.draw(st.sampled_from(self.swaps))
        swapped.release()
        assert swapped.released and swapped.data is None

    @rule(data=st.data())
    def stream_batch(self, data: st.DataObject) -> None:
        """2-4 operations enqueued on one stream, checked once it drains (stream order)."""
        s = self.stream
        for _ in range(data.draw(st.integers(2, 4))):
            op = data.draw(st.sampled_from(["copy", "swap_out", "swap_in", "make_writable"]))
            if op == "copy":
                src, dst = self.ids(data), self.ids(data)
                ok = self._copy_ok(src, dst, True)
                self.attempt(ok, lambda: self.pool.copy_blocks(src, dst, stream=s), with_bytes=False)  # noqa: B023
                if ok:
                    self._copy_apply(src, dst)
            elif op == "swap_out":
                ids = self.ids(data)
                ok = self.open() and all(self.m.live(i) for i in ids)
                swapped = self.attempt(ok, lambda: self.pool.swap_out(ids, stream=s), with_bytes=False)  # noqa: B023
                if swapped is not None:
                    self.swaps.append((swapped, [self.m.data[i] for i in ids]))
            elif op == "swap_in" and self.swaps:
                swapped, payloads = data.draw(st.sampled_from(self.swaps))
                dst = None if data.draw(st.booleans()) else self.ids(data)
                ok = self._swap_in_ok(swapped, dst)
                out = self.attempt(ok, lambda: self.pool.swap_in(swapped, dst, stream=s), with_bytes=False)  # noqa: B023
                if out is not None:
                    self._swap_in_apply(payloads, dst, out)
            elif op == "make_writable":
                ids = self.ids(data)
                ok = self._make_writable_ok(ids)
                out = self.attempt(ok, lambda: self.pool.make_writable(ids, stream=s), with_bytes=False)  # noqa: B023
                if out is not None:
                    self._make_writable_apply(ids, out)
        s.synchronize(timeout=30.0)

    # -------------------------------------------------------- single-block API
    @rule(data=st.data())
    def view(self, data: st.DataObject) -> None:
        i = self.one(data)
        block = self.attempt(self.open() and self.m.live(i), lambda: self.pool.block(i))
        if block is not None:
            self.m.rc[i] += 1
            self.m.views[i] += 1
            assert block.pool_block_id == i and block.num_tokens == BLOCK_TOKENS
            self.views.append(View(block, i, None))

    @rule(tokens=st.sampled_from([1, BLOCK_TOKENS]), data=st.data())
    def alloc_standalone(self, tokens: int, data: st.DataObject) -> None:
        dev = data.draw(st.sampled_from(self.devices))
        block = self.p.kv_block_alloc(tokens, DType.FP32, device=dev)
        payload = fill(block.nbytes, self.seed + 1000)
        self.p.kv_block_write(block, payload)
        self.views.append(View(block, None, payload))

    def expected_bytes(self, v: View) -> bytes | None:
        return v.data if v.pool_id is None else self.m.data[v.pool_id]

    def alive(self, v: View) -> bool:
        return not v.block.is_freed

    @precondition(lambda self: bool(self.views))
    @rule(data=st.data())
    def block_write(self, data: st.DataObject) -> None:
        v = data.draw(st.sampled_from(self.views))
        payload = fill(v.block.nbytes, self.seed + 2000)
        self.seed += 1
        self.attempt(self.alive(v), lambda: self.p.kv_block_write(v.block, payload))
        if self.alive(v):
            if v.pool_id is None:
                v.data = payload
            else:
                self.m.data[v.pool_id] = payload

    @precondition(lambda self: bool(self.views))
    @rule(data=st.data())
    def block_copy(self, data: st.DataObject) -> None:
        a, b = data.draw(st.sampled_from(self.views)), data.draw(st.sampled_from(self.views))
        ok = self.alive(a) and self.alive(b) and a.block.num_tokens == b.block.num_tokens
        self.attempt(ok, lambda: self.p.kv_block_copy(a.block, b.block))
        if ok:
            src = self.expected_bytes(a)
            if b.pool_id is None:
                b.data = src
            else:
                self.m.data[b.pool_id] = src

    @precondition(lambda self: bool(self.views))
    @rule(data=st.data())
    def block_free(self, data: st.DataObject) -> None:
        v = data.draw(st.sampled_from(self.views))
        ok = self.alive(v)
        self.attempt(ok, lambda: self.p.kv_block_free(v.block))
        if ok:
            assert v.block.is_freed
            if v.pool_id is not None:
                self.m.rc[v.pool_id] -= 1
                self.m.views[v.pool_id] -= 1

    @precondition(lambda self: bool(self.views))
    @rule(data=st.data())
    def block_migrate(self, data: st.DataObject) -> None:
        v = data.draw(st.sampled_from(self.views))
        dev = data.draw(st.sampled_from(self.devices))
        ok = self.alive(v)
        before = self.expected_bytes(v)
        out = self.attempt(ok, lambda: self.p.kv_block_migrate(v.block, dev))
        if out is not None:
            assert out is v.block and v.block.device == dev
            if v.pool_id is not None and dev != self.pool.device:
                self.m.rc[v.pool_id] -= 1
                self.m.views[v.pool_id] -= 1
                v.pool_id, v.data = None, before
                assert v.block.pool_block_id is None

    # --------------------------------------------------------------- lifecycle
    @precondition(lambda self: not self.pool.closed)
    @rule(now=st.integers(0, 3))
    def close_pool(self, now: int) -> None:
        if now:  # closing ends a pool's story: not too often
            return
        self.pool.close()
        for v in self.views:
            if v.pool_id is not None:  # closing a pool retires its views: their memory went with it
                assert v.block.is_freed
                v.pool_id = None
        self.swaps = []

    @precondition(lambda self: self.pool.closed)
    @rule()
    def reopen(self) -> None:
        self._open()

    # --------------------------------------------------------------- invariants
    @invariant()
    def pool_matches_model(self) -> None:
        if self.pool.closed:
            return
        st_ = self.pool.stats()
        assert [self.pool.refcount(i) for i in range(NB)] == self.m.rc
        assert st_.used_blocks == NB - self.m.free and st_.free_blocks == self.m.free
        assert st_.shared_blocks == sum(rc > 1 for rc in self.m.rc)
        assert st_.peak_used_blocks == self.m.peak
        for i in range(NB):
            if self.m.rc[i] and self.m.data[i] is not None:
                assert self.pool.read_block(i) == self.m.data[i], f"block {i} lost its bytes"

    @invariant()
    def blocks_and_swaps_match_model(self) -> None:
        live = {b.handle for b in self.p.live_blocks()}
        for v in self.views:
            assert (v.block.handle in live) == self.alive(v)
            want = self.expected_bytes(v)
            if self.alive(v) and want is not None:
                assert self.p.kv_block_read(v.block) == want
        assert len(live) == sum(self.alive(v) for v in self.views)
        for swapped, payloads in self.swaps:
            if not swapped.released:
                swapped.wait(timeout=30.0)
                rows = [_row_bytes(swapped.data, k) for k in range(swapped.num_blocks)]
                for row, want in zip(rows, payloads):
                    if want is not None:
                        assert row == want, "a swap's host copy differs from the blocks swapped out"

    @invariant()
    def accounting_matches_model(self) -> None:
        own = self.p.device
        want: dict[str, int] = {}
        if not self.pool.closed:
            want["kv_allocated_bytes"] = NB * self.pool.block_nbytes
        for v in self.views:
            if self.alive(v) and v.pool_id is None:
                key = stat_key(v.block.device, own)
                want[key] = want.get(key, 0) + v.block.nbytes
        assert kv_figures(self.p) == {k: n for k, n in want.items() if n}
        assert self.p.memory_stats()["num_blocks"] == sum(self.alive(v) for v in self.views)
        check_invariants(self.p, self.pools)


STATE_SETTINGS = settings(
    max_examples=250,
    stateful_step_count=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


class MockPoolMachine(PoolMachine):
    KIND = "mock"


class CPUPoolMachine(PoolMachine):
    KIND = "cpu"


TestMockPool = pytest.mark.timeout(240)(MockPoolMachine.TestCase)
TestMockPool.settings = STATE_SETTINGS
TestCPUPool = pytest.mark.timeout(240)(CPUPoolMachine.TestCase)
TestCPUPool.settings = STATE_SETTINGS


# --------------------------------------------------------------------------- several threads
THREADS = 4
STEPS = 400
SHARED = 3


class Worker:
    """One thread's random sequence: the ids, views and blocks it owns, and what they must hold."""

    def __init__(self, p: Any, pool: Any, shared: dict[int, bytes], seed: int) -> None:
        self.p, self.pool, self.shared = p, pool, shared
        self.rng = random.Random(seed)
        self.own: dict[int, bytes] = {}  # pool id (one reference, this thread's) -> bytes
        self.extra: Counter[int] = Counter({i: 1 for i in shared})  # references held on shared ids
        self.views: list[tuple[KVBlock, int]] = []  # views of own ids
        self.blocks: list[tuple[KVBlock, bytes]] = []  # standalone blocks (allocated or migrated out)
        self.stream = p.create_stream()
        self.seed = seed * 1000

    def payload(self, nbytes: int) -> bytes:
        self.seed += 1
        return fill(nbytes, self.seed)

    def pick(self, k: int = 1) -> list[int]:
        ids = list(self.own)
        return self.rng.sample(ids, k) if len(ids) >= k else []

    def step(self) -> None:
        op = self.rng.choice(
            [
                "alloc",
                "alloc",
                "free",
                "write",
                "copy",
                "trusted",
                "swap",
                "cow",
                "fork_shared",
                "free_shared",
                "view",
                "standalone",
                "bad",
                "check",
            ]
        )
        getattr(self, "op_" + op)()

    def op_alloc(self) -> None:
        try:
            ids = self.pool.allocate(self.rng.randint(1, 3))
        except ResourceExhaustedError:
            return
        for i in ids:
            assert i not in self.own and i not in self.shared
            self.own[i] = self.payload(self.pool.block_nbytes)
            self.pool.write_block(i, self.own[i])

    def op_free(self) -> None:
        ids = [i for i in self.pick(self.rng.randint(1, 2)) if not any(j == i for _, j in self.views)]
        self.pool.free(ids)
        for i in ids:
            del self.own[i]

    def op_write(self) -> None:
        for i in self.pick():
            self.own[i] = self.payload(self.pool.block_nbytes)
            self.pool.write_block(i, self.own[i])

    def op_copy(self) -> None:
        ids = self.pick(2)
        if ids:
            on_stream = self.rng.random() < 0.5
            self.pool.copy_blocks([ids[0]], [ids[1]], stream=self.stream if on_stream else None)
            if on_stream:
                self.stream.synchronize(timeout=30.0)
            self.own[ids[1]] = self.own[ids[0]]

    def op_trusted(self) -> None:
        ids = self.pick(2)
        if ids:
            self.pool.copy_blocks([ids[0]], [ids[1]], validate=False)
            self.own[ids[1]] = self.own[ids[0]]

    def op_swap(self) -> None:
        ids = [i for i in self.pick(self.rng.randint(1, 2)) if not any(j == i for _, j in self.views)]
        if not ids:
            return
        on_stream = self.rng.random() < 0.5
        swapped = self.pool.swap_out(ids, stream=self.stream if on_stream else None)
        swapped.wait(timeout=30.0)
        try:
            back = self.pool.swap_in(swapped)
        except ResourceExhaustedError:
            swapped.release()
            return
        self.pool.free(ids)
        swapped.release()
        for old, new in zip(ids, back):
            self.own[new] = self.own.pop(old)

    def op_cow(self) -> None:
        sid = self.rng.choice(list(self.shared))
        self.pool.fork([sid])
        try:
            (new,) = self.pool.make_writable([sid])
        except ResourceExhaustedError:
            self.pool.free([sid])
            return
        assert new != sid
        self.own[new] = self.shared[sid]

    def op_fork_shared(self) -> None:
        sid = self.rng.choice(list(self.shared))
        self.pool.fork([sid])
        self.extra[sid] += 1

    def op_free_shared(self) -> None:
        held = [i for i, c in self.extra.items() if c > 1]
        if held:
            sid = self.rng.choice(held)
            self.pool.free([sid])
            self.extra[sid] -= 1

    def op_view(self) -> None:
        for i in self.pick():
            view = self.pool.block(i)
            payload = self.payload(view.nbytes)
            self.p.kv_block_write(view, payload)
            self.own[i] = payload
            what = self.rng.choice(["keep", "free", "migrate"])
            if what == "keep":
                self.views.append((view, i))
            elif what == "free":
                self.p.kv_block_free(view)
            else:
                dev = self.rng.choice(self.p.reachable_devices())
                self.p.kv_block_migrate(view, dev)
                if dev == self.pool.device:
                    self.views.append((view, i))
                else:
                    self.blocks.append((view, payload))
        if self.views and self.rng.random() < 0.3:
            view, _ = self.views.pop(self.rng.randrange(len(self.views)))
            self.p.kv_block_free(view)

    def op_standalone(self) -> None:
        if self.blocks and self.rng.random() < 0.5:
            block, _ = self.blocks.pop(self.rng.randrange(len(self.blocks)))
            self.p.kv_block_free(block)
            return
        dev = self.rng.choice(self.p.reachable_devices())
        block = self.p.kv_block_alloc(BLOCK_TOKENS, DType.FP32, device=dev)
        payload = self.payload(block.nbytes)
        self.p.kv_block_write(block, payload)
        self.blocks.append((block, payload))

    def op_bad(self) -> None:
        """Calls that are wrong whatever the other threads do: typed errors, nothing changes."""
        bad = self.rng.choice(
            [
                lambda: self.pool.free([self.pool.num_blocks]),
                lambda: self.pool.fork([-1]),
                lambda: self.pool.free([True]),
                lambda: self.pool.copy_blocks([0], [self.pool.num_blocks], validate=False),
                lambda: self.pool.allocate(self.pool.num_blocks + 1),
                lambda: self.pool.make_writable([next(iter(self.shared))] * 2),
            ]
        )
        with pytest.raises(BackendError):
            bad()

    def op_check(self) -> None:
        for i in self.pick():
            assert self.pool.read_block(i) == self.own[i]
        sid = self.rng.choice(list(self.shared))
        assert self.pool.read_block(sid) == self.shared[sid]

    def verify(self) -> None:
        for i, want in self.own.items():
            assert self.pool.refcount(i) == 1 + sum(j == i for _, j in self.views)
            assert self.pool.read_block(i) == want, f"block {i} lost its bytes"
        for view, i in self.views:
            assert self.p.kv_block_read(view) == self.own[i]
        for block, want in self.blocks:
            assert self.p.kv_block_read(block) == want


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["mock", "cpu"])
def test_threads_with_random_sequences_keep_every_invariant(kind: str) -> None:
    p = make_provider(kind)
    pool = p.create_kv_pool(40, block_size=BLOCK_TOKENS, dtype=DType.FP32)
    shared = {i: fill(pool.block_nbytes, 7 + i) for i in pool.allocate(SHARED)}
    for i, data in shared.items():
        pool.write_block(i, data)
    workers = [Worker(p, pool, shared, seed) for seed in range(1, THREADS + 1)]
    for _ in workers:
        pool.fork(list(shared))  # each thread owns one reference of every shared id
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def run(w: Worker) -> None:
        try:
            start.wait(timeout=30)
            for _ in range(STEPS):
                w.step()
            w.verify()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads every few bytecodes, not every 5 ms: real interleaving
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=90)
    finally:
        sys.setswitchinterval(interval)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]

    # global invariants once every thread is done
    for sid in shared:
        assert pool.refcount(sid) == 1 + sum(w.extra[sid] for w in workers)
        assert pool.read_block(sid) == shared[sid]
    owned = [i for w in workers for i in w.own]
    assert len(owned) == len(set(owned)), "two threads were given the same block"
    stats = pool.stats()
    assert stats.used_blocks == len(owned) + SHARED
    assert stats.free_blocks + stats.used_blocks == pool.num_blocks
    for w in workers:
        w.verify()
    standalone: dict[str, int] = {}
    for w in workers:
        for block, _ in w.blocks:
            key = stat_key(block.device, p.device)
            standalone[key] = standalone.get(key, 0) + block.nbytes
    arena = {"kv_allocated_bytes": pool.arena_nbytes}
    want = {k: arena.get(k, 0) + standalone.get(k, 0) for k in {*arena, *standalone}}
    assert kv_figures(p) == {k: v for k, v in want.items() if v}
    check_invariants(p, [pool])

    # everything returned: the pool empty, only the arena accounted
    for w in workers:
        for view, _ in w.views:
            p.kv_block_free(view)
        for block, _ in w.blocks:
            p.kv_block_free(block)
        pool.free(list(w.own))
        pool.free([i for i, c in w.extra.items() for _ in range(c)])
    pool.free(list(shared))
    assert pool.stats().used_blocks == 0
    assert kv_figures(p) == {"kv_allocated_bytes": pool.arena_nbytes}
    assert not p.live_blocks()
    p.close()
    assert kv_figures(p) == {}


# --------------------------------------------------------------------------- what the properties found
@pytest.mark.parametrize("kind", ["mock", "cpu"])
def test_found_a_views_reference_cannot_be_freed_through_the_pool(kind: str) -> None:
    # pool.free dropped the reference a KVBlock view held: the view then pointed at a free block
    # that the next allocate handed to someone else (and its kv_block_free raised yet freed).
    p = make_provider(kind)
    pool = p.create_kv_pool(4, block_size=BLOCK_TOKENS, dtype=DType.FP32)
    (i,) = pool.allocate(1)
    view = pool.block(i)
    with pytest.raises(BlockFreedError, match="view"):
        pool.free([i, i])  # one of the two references is the view's
    assert pool.refcount(i) == 2
    pool.fork([i])
    (j,) = pool.make_writable([i])  # drops one of the caller's references, never the view's
    assert j != i and pool.refcount(i) == 2
    pool.free([i])  # the caller's last reference
    with pytest.raises(BlockFreedError, match="view"):
        pool.free([i])
    second = pool.block(i)
    with pytest.raises(BlockFreedError, match="view"):
        pool.make_writable([i])  # shared, but only by views: no reference of the caller's to drop
    assert pool.refcount(i) == 2 and pool.stats().used_blocks == 2
    p.kv_block_free(view)
    p.kv_block_free(second)
    assert pool.refcount(i) == 0
    pool.free([j])
    assert pool.stats().used_blocks == 0


@pytest.mark.parametrize("kind", ["mock", "cpu"])
def test_found_closing_a_pool_frees_its_views(kind: str) -> None:
    # views of a closed pool stayed live: each held the whole arena while memory_stats said freed
    p = make_provider(kind)
    pool = p.create_kv_pool(4, block_size=BLOCK_TOKENS, dtype=DType.FP32)
    views = [pool.block(i) for i in pool.allocate(2)]
    pool.close()
    assert all(v.is_freed for v in views) and not p.live_blocks()
    assert kv_figures(p) == {}
    with pytest.raises(BackendError):
        p.kv_block_read(views[0])


@pytest.mark.timeout(30)
def test_found_migrating_a_view_on_a_stream_keeps_its_block_until_the_copy_ran() -> None:
    # The pool block was released when the copy was enqueued: reallocated and overwritten before
    # the stream copied it, the migrated block received someone else's bytes. (The Mock: the CPU
    # provider has no second device to migrate to.)
    p = make_provider("mock")
    pool = p.create_kv_pool(2, block_size=BLOCK_TOKENS, dtype=DType.FP32)
    (i,) = pool.allocate(1)
    original = fill(pool.block_nbytes, 1)
    pool.write_block(i, original)
    view = pool.block(i)
    pool.free([i])  # only the view holds the block now
    s = p.create_stream()
    gate = threading.Event()
    s.submit(gate.wait, 10.0)
    p.kv_block_migrate(view, "mock:1", stream=s)
    try:
        taken = pool.allocate(2)
    except ResourceExhaustedError:  # the view's block stays referenced until the copy ran
        taken = pool.allocate(1)
    for j in taken:
        pool.write_block(j, fill(pool.block_nbytes, 99))
    gate.set()
    s.synchronize(timeout=10.0)
    assert p.kv_block_read(view) == original
    assert view.device == "mock:1" and pool.refcount(i) == (1 if i in taken else 0)
    assert pool.stats().used_blocks == len(taken) == 1
