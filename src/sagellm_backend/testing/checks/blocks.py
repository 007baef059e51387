"""Checks of KV blocks used as intended: sizes, bytes through write/read/copy/migrate, the table
of live blocks and the memory accounting."""

from __future__ import annotations

from ...api import BackendProvider
from .base import provider_check
from .support import poisoned_block, random_block, stat, storage_dtype

__all__: list[str] = []


@provider_check
def check_alloc_size_and_handles(p: BackendProvider) -> None:
    """kv_block_alloc(128, fp16) owns 128 x bytes-per-token bytes; handles unique and increasing."""
    dt = storage_dtype(p)
    blocks = [p.kv_block_alloc(128, dt) for _ in range(3)]
    geo = p.kv_geometry
    for b in blocks:
        assert b.nbytes == 128 * geo.bytes_per_token(dt), (b.nbytes, geo)
        assert b.num_tokens == 128 and b.dtype is dt and b.device == p.device
        assert b.geometry == geo, (b.geometry, geo)
        shape = tuple(b.data.shape)
        assert shape == geo.storage_shape(128, dt), (shape, geo.storage_shape(128, dt))
    handles = [b.handle for b in blocks]
    assert handles == sorted(set(handles)), handles
    for b in blocks:
        p.kv_block_free(b)


@provider_check
def check_write_read_roundtrip(p: BackendProvider) -> None:
    """Random bytes written to a block read back bit for bit."""
    blk, data = random_block(p, 8)
    assert p.kv_block_read(blk) == data
    p.kv_block_free(blk)


@provider_check
def check_copy_bit_exact(p: BackendProvider) -> None:
    """kv_block_copy moves every byte of random data into a poisoned destination."""
    src, data = random_block(p, 8)
    dst = poisoned_block(p, 8, src.dtype, 0xA5)
    p.kv_block_copy(src, dst)
    p.synchronize()
    assert p.kv_block_read(dst) == data, "destination differs from source after copy"
    assert p.kv_block_read(src) == data, "copy changed the source"
    for b in (src, dst):
        p.kv_block_free(b)


@provider_check
def check_migrate_roundtrip(p: BackendProvider) -> None:
    """Migrating to every reachable device and back keeps the bytes and the handle."""
    blk, data = random_block(p, 8)
    handle = blk.handle
    for dev in [*p.reachable_devices()[1:], p.device]:
        out = p.kv_block_migrate(blk, dev)
        p.synchronize()
        assert out is blk and blk.device == dev and blk.handle == handle
        assert p.kv_block_read(blk) == data, f"bytes changed migrating to {dev}"
    p.kv_block_free(blk)


@provider_check
def check_live_blocks(p: BackendProvider) -> None:
    """live_blocks() lists exactly the blocks allocated and not freed, by handle, wherever they live."""
    before = {b.handle for b in p.live_blocks()}
    dt = storage_dtype(p)
    blocks = [p.kv_block_alloc(2, dt) for _ in range(3)]
    blocks.append(p.kv_block_alloc(2, dt, device=p.reachable_devices()[-1]))
    live = p.live_blocks()
    assert [b.handle for b in live] == sorted(b.handle for b in live), "live_blocks() not ordered by handle"
    assert {b.handle for b in live} == before | {b.handle for b in blocks}, (live, blocks)
    assert all(any(x is b for x in live) for b in blocks), "live_blocks() returned other objects than allocated"
    p.kv_block_free(blocks[1])
    live = p.live_blocks()
    assert blocks[1].handle not in {b.handle for b in live}, "a freed block is still listed"
    assert len(live) == len(before) + 3
    for b in (blocks[0], blocks[2], blocks[3]):
        p.kv_block_free(b)
    assert {b.handle for b in p.live_blocks()} == before


@provider_check
def check_memory_stats_baseline(p: BackendProvider) -> None:
    """memory_stats() counts allocations and returns to baseline after frees."""
    dt = storage_dtype(p)
    base = stat(p)
    blocks = [p.kv_block_alloc(16, dt) for _ in range(5)]
    used, n = stat(p)
    assert n == base[1] + 5, (n, base)
    assert used >= base[0] + sum(b.nbytes for b in blocks)
    for b in blocks:
        p.kv_block_free(b)
    assert stat(p) == base, (stat(p), base)
    stats = p.memory_stats()
    for key in ("allocated_bytes", "reserved_bytes", "peak_allocated_bytes", "total", "available"):
        assert key in stats and isinstance(stats[key], int), key


@provider_check
def check_reset_peak_memory_stats(p: BackendProvider) -> None:
    """reset_peak_memory_stats() brings kv_peak_allocated_bytes down to kv_allocated_bytes."""
    dt = storage_dtype(p)
    a, b = p.kv_block_alloc(32, dt), p.kv_block_alloc(32, dt)
    p.kv_block_free(a)
    s = p.memory_stats()
    assert s["kv_peak_allocated_bytes"] >= s["kv_allocated_bytes"] + a.nbytes, f"peak forgot a freed block: {s}"
    p.reset_peak_memory_stats()
    s = p.memory_stats()
    assert s["kv_peak_allocated_bytes"] == s["kv_allocated_bytes"], f"peak not reset: {s}"
    c = p.kv_block_alloc(32, dt)
    s = p.memory_stats()
    assert s["kv_peak_allocated_bytes"] == s["kv_allocated_bytes"], f"peak does not follow new allocations: {s}"
    for blk in (b, c):
        p.kv_block_free(blk)
