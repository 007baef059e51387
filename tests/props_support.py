"""Shared by the property tests: providers under test, a snapshot of everything a failed call must
leave unchanged, and the invariants every provider satisfies after a call that succeeded."""

from __future__ import annotations

from typing import Any

from sagellm_backend import BackendError, MockBackendProvider, get_provider
from sagellm_backend.api.blocks import KVBlock

#: A small geometry: an fp32 token is 2 * 1 * 4 * 4 = 32 bytes, a 2-token block 64 bytes.
GEOM = {"num_layers": 1, "num_kv_heads": 1, "head_dim": 4}
BLOCK_TOKENS = 2
KINDS = ["mock", "cpu"]
#: memory_stats keys read from the operating system: they move on their own.
VOLATILE = {"rss", "vms", "available", "used", "total"}


def make_provider(kind: str) -> Any:
    """A provider of ``kind`` with the small geometry (the Mock with two devices and 64 MiB each)."""
    if kind == "mock":
        return MockBackendProvider(kv_geometry=GEOM, num_devices=2, max_memory_mb=64, has_graph_exec=True)
    return get_provider("cpu", kv_geometry=GEOM)


def stat_key(device: str, own: str) -> str:
    """The ``memory_stats`` key under which ``device``'s KV bytes are reported."""
    if device == own:
        return "kv_allocated_bytes"
    return ("host" if device == "cpu" else device.replace(":", "_")) + "_kv_allocated_bytes"


def expected_kv_bytes(p: Any, pools: list[Any]) -> dict[str, int]:
    """KV bytes per ``memory_stats`` key: the arenas of open pools and standalone live blocks."""
    own = p.device
    out: dict[str, int] = {}
    for pool in pools:
        if pool.owner_id == p.owner_id and not pool.closed:
            key = stat_key(pool.device, own)
            out[key] = out.get(key, 0) + pool.arena_nbytes
    for b in p.live_blocks():
        if b._pool is None:
            key = stat_key(b.device, own)
            out[key] = out.get(key, 0) + b.nbytes
    return out


def kv_figures(p: Any) -> dict[str, int]:
    """The KV accounting figures of ``memory_stats`` (zero entries dropped)."""
    return {k: v for k, v in p.memory_stats().items() if k.endswith("kv_allocated_bytes") and v}


def pool_state(pool: Any) -> tuple[Any, ...]:
    """Occupancy, reference counts and the bytes of every live block of an open pool."""
    if pool.closed:
        return ("closed", pool.num_blocks)
    rcs = tuple(pool.refcount(i) for i in range(pool.num_blocks))
    data = tuple(pool.read_block(i) if rc else None for i, rc in enumerate(rcs))
    return pool.stats(), rcs, data


def block_state(p: Any, b: KVBlock) -> tuple[Any, ...]:
    try:
        data: object = p.kv_block_read(b)
    except BackendError as exc:  # a view of a closed pool refuses reads
        data = type(exc).__name__
    return b.handle, b.device, b.is_freed, b.pool_block_id, data


def snapshot(p: Any, pools: list[Any], others: tuple[tuple[Any, KVBlock], ...] = ()) -> tuple[Any, ...]:
    """Everything a failed call must leave as it was.

    Args:
        p: The provider under test.
        pools: Its pools (open or closed).
        others: ``(provider, block)`` pairs of other providers whose blocks calls may be handed.

    Returns:
        A comparable snapshot.
    """
    stats = {k: v for k, v in p.memory_stats().items() if k not in VOLATILE}
    blocks = tuple(block_state(p, b) for b in p.live_blocks())
    comm = (p.rank, p.world_size, getattr(p.communicator, "timeout_s", None), p.communicator.available)
    local = p._kernels.local
    kernels = tuple(sorted((n, len(local.candidates(n, ("local",)))) for n in local.names()))
    foreign = tuple(block_state(q, b) for q, b in others)
    return stats, blocks, tuple(pool_state(pool) for pool in pools), comm, kernels, foreign, p._closed


def check_invariants(p: Any, pools: list[Any]) -> None:
    """What holds after every call that succeeded.

    Accounting equals the open arenas plus standalone blocks on each device; no figure is
    negative; every live block reads back ``nbytes`` bytes; every open pool's occupancy agrees
    with its reference counts.
    """
    stats = p.memory_stats()
    assert all(v >= 0 for k, v in stats.items() if isinstance(v, int)), stats
    assert kv_figures(p) == expected_kv_bytes(p, pools), (kv_figures(p), expected_kv_bytes(p, pools))
    assert stats["num_blocks"] == len(p.live_blocks())
    reachable = p.reachable_devices()
    for b in p.live_blocks():
        assert not b.is_freed
        assert b.device in reachable, f"block {b.handle} on {b.device!r}, not one of {reachable}"
        # a live view of a closed pool would hold the whole arena alive while the accounting says freed
        assert b._pool is None or not b._pool.closed, f"block {b.handle} is a live view of a closed pool"
        assert len(p.kv_block_read(b)) == b.nbytes
    for pool in pools:
        if pool.closed:
            continue
        st = pool.stats()
        rcs = [pool.refcount(i) for i in range(pool.num_blocks)]
        assert min(rcs) >= 0
        assert st.free_blocks + st.used_blocks == st.num_blocks == pool.num_blocks
        assert st.used_blocks == sum(rc > 0 for rc in rcs)
        assert st.shared_blocks == sum(rc > 1 for rc in rcs)
        assert st.peak_used_blocks >= st.used_blocks
        views = [b for b in p.live_blocks() if b._pool is pool]
        for b in views:
            assert rcs[b.pool_block_id] >= 1, "a live view holds a reference"


def fill(nbytes: int, seed: int) -> bytes:
    """Deterministic payload of ``nbytes`` bytes."""
    return bytes((seed * 131 + i * 7 + (i >> 8)) & 0xFF for i in range(nbytes))


__all__ = [
    "BLOCK_TOKENS",
    "GEOM",
    "KINDS",
    "block_state",
    "check_invariants",
    "expected_kv_bytes",
    "fill",
    "kv_figures",
    "make_provider",
    "pool_state",
    "snapshot",
    "stat_key",
]
