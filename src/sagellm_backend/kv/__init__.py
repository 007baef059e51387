"""KV-cache memory: block geometry, the paged pool, batched host copies."""

from __future__ import annotations

from .geometry import DEFAULT_KV_GEOMETRY, KVGeometry
from .pool import BlockAllocator, KVCachePool, PoolStats, SwappedBlocks

__all__ = ["DEFAULT_KV_GEOMETRY", "BlockAllocator", "KVCachePool", "KVGeometry", "PoolStats", "SwappedBlocks"]
