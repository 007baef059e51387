"""KV-cache memory: block geometry, the paged pool, batched host copies."""

from __future__ import annotations

from .allocator import BlockAllocator
from .geometry import DEFAULT_KV_GEOMETRY, KVGeometry
from .pool import KVCachePool, PoolStats, SwappedBlocks

__all__ = ["DEFAULT_KV_GEOMETRY", "BlockAllocator", "KVCachePool", "KVGeometry", "PoolStats", "SwappedBlocks"]
