"""Each row of the bad-input table: the typed error, and the provider's state unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bad_input_table import ROWS, Ctx, Row, render
from sagellm_backend import BackendError, DType, MockBackendProvider, provider_registry

GEO = {"num_layers": 2, "num_kv_heads": 2, "head_dim": 8}
VOLATILE = {"rss", "vms", "available", "used", "total"}


def _make(kind: str):
    if kind == "mock":
        return MockBackendProvider(kv_geometry=GEO)
    pytest.importorskip("torch")
    from sagellm_backend import CPUBackendProvider

    return CPUBackendProvider(kv_geometry=GEO)


def _ctx(kind: str) -> Ctx:
    p, other = _make(kind), _make(kind)
    a = p.kv_block_alloc(4, DType.FP16)
    b = p.kv_block_alloc(4, DType.FP16)
    for blk in (a, b):
        p.kv_block_write(blk, os.urandom(blk.nbytes))
    freed = p.kv_block_alloc(4, DType.FP16)
    p.kv_block_free(freed)
    pool = p.create_kv_pool(8, block_size=2)
    ids = pool.allocate(4)
    swapped = pool.swap_out(ids[:1])
    closed = p.create_kv_pool(2, block_size=2)
    closed_view = closed.block(closed.allocate(1)[0])
    closed.close()
    views = [pool.block(ids[3]), pool.block(ids[2]), pool.block(ids[2])]  # ids[2]: shared by views only
    pool.free(ids[2:3])
    read_only = np.empty((1, 1), dtype=np.float32)
    read_only.flags.writeable = False
    extra = {
        "read_only": read_only,
        "fp32": p.kv_block_alloc(4, DType.FP32),
        "fp16_only": MockBackendProvider(supported_dtypes=[DType.FP16], kv_geometry=GEO),
        "tiny": MockBackendProvider(max_memory_mb=1, kv_geometry=GEO),
        "alien_stream": other.create_stream(),
        "swapped": swapped,
        "closed_view": closed_view,
        "views": views,
        "int_array": np.array([1, 2]),
    }
    return Ctx(p, a, b, p.kv_block_alloc(2, DType.FP16), freed, other.kv_block_alloc(4, DType.FP16), pool, ids, extra)


def _state(c: Ctx) -> tuple:
    stats = {k: v for k, v in c.p.memory_stats().items() if k not in VOLATILE}
    blocks = tuple((b.handle, b.device, c.p.kv_block_read(b)) for b in c.p.live_blocks())  # type: ignore[attr-defined]
    pool = (
        c.pool.stats(),
        tuple(c.pool.refcount(i) for i in range(c.pool.num_blocks)),
        tuple(c.pool.read_block(i) for i in c.ids),
    )
    others = (c.extra["tiny"].memory_stats(), c.extra["fp16_only"].memory_stats(), c.foreign.device, c.foreign.is_freed)
    registry = sorted(provider_registry), {k: tuple(v.aliases) for k, v in provider_registry.items()}
    comm = (c.p.rank, c.p.world_size, getattr(c.p.communicator, "timeout_s", None), c.p.communicator.available)
    return stats, blocks, pool, others, registry, comm


CASES = [(r, k) for r in ROWS for k in r.providers]


@pytest.mark.parametrize(("row", "kind"), CASES, ids=[f"{r.method}:{r.bad_input}:{k}" for r, k in CASES])
def test_bad_input(row: Row, kind: str) -> None:
    c = _ctx(kind)
    before = _state(c)
    with pytest.raises(row.error) as info:
        row.call(c)
    err = info.value
    assert type(err) is row.error or isinstance(err, row.error)
    if isinstance(err, BackendError):
        assert len(str(err)) >= 30, f"message too short to say what/found/fix: {err!r}"
    assert _state(c) == before, "the failed call changed the provider's state"


def test_doc_is_current() -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "BAD_INPUTS.md"
    assert doc.read_text() == render(), "regenerate: python tests/bad_input_table.py > docs/BAD_INPUTS.md"
