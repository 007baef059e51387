"""FP8 KV pools (e4m3 and e5m2): the arena's dtype, per-layer fp8 views (raw bytes on the Mock), and every block
operation moving the bytes unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from pool_checks import check_bytes_survive_moves
from sagellm_backend import DType, InvalidArgumentError, MockBackendProvider, UnsupportedOperationError
from sagellm_backend.dtype_conversion import decode_fp8_e4m3_numpy, decode_fp8_e5m2_numpy

torch = pytest.importorskip("torch")

GEOM = {"num_layers": 2, "num_kv_heads": 2, "head_dim": 8}
FORMATS = {"fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}


@pytest.fixture(params=["mock", "cpu"])
def provider(request):
    if request.param == "cpu":
        from sagellm_backend import CPUBackendProvider

        p = CPUBackendProvider(kv_geometry=GEOM)
    else:
        p = MockBackendProvider(kv_geometry=GEOM)
    yield p
    p.close()


@pytest.mark.parametrize(
    "dtype,name", [("fp8_e4m3", "fp8_e4m3"), ("FP8_E5M2", "fp8_e5m2"), (DType.FP8, "fp8_e4m3"), ("fp8", "fp8_e4m3")]
)
def test_fp8_pool_dtype_views_and_size(provider, dtype, name: str) -> None:
    pool = provider.create_kv_pool(6, block_size=4, dtype=dtype)
    half = provider.create_kv_pool(6, block_size=4, dtype=DType.FP16)
    assert pool.dtype is DType.FP8 and pool.kv_cache_dtype == name and name in repr(pool)
    assert 2 * pool.block_nbytes == half.block_nbytes and half.kv_cache_dtype == "fp16"
    k, v = pool.kv_caches(1)
    assert tuple(k.shape) == (6, 4, 2, 8) == tuple(v.shape)
    if isinstance(provider, MockBackendProvider):
        assert isinstance(k, np.ndarray) and k.dtype == np.uint8  # raw bits
    else:
        assert k.dtype == getattr(torch, FORMATS[name]) == pool.arena.dtype


@pytest.mark.parametrize("name", list(FORMATS))
def test_values_written_through_the_views_read_back_as_their_bytes(provider, name: str) -> None:
    pool = provider.create_kv_pool(4, block_size=4, dtype=name)
    (b,) = pool.allocate(1)
    pool.write_block(b, b"\x00" * pool.block_nbytes)
    k, _ = pool.kv_caches(0)
    codes = np.random.default_rng(3).integers(0, 256, size=(4, 2, 8), dtype=np.uint8)
    if isinstance(k, np.ndarray):
        k[b] = codes
    else:
        k[b].view(torch.uint8).copy_(torch.from_numpy(codes))
        decode = decode_fp8_e5m2_numpy if name == "fp8_e5m2" else decode_fp8_e4m3_numpy
        assert np.array_equal(k[b].float().numpy(), decode(codes), equal_nan=True)  # the view reads the format
    raw = np.frombuffer(pool.read_block(b), dtype=np.uint8).reshape(2, 2, 4, 2, 8)
    assert np.array_equal(raw[0, 0], codes) and not raw[1].any() and not raw[0, 1].any()


@pytest.mark.parametrize("name", list(FORMATS))
def test_copy_cow_swap_and_migrate_move_fp8_bytes_unchanged(provider, name: str) -> None:
    pool = provider.create_kv_pool(24, block_size=4, dtype=name)
    check_bytes_survive_moves(pool, lambda: provider.create_kv_pool(8, block_size=4, dtype=name), 4)


def test_migrate_between_fp8_formats_is_refused_and_changes_nothing(provider) -> None:
    a = provider.create_kv_pool(8, block_size=4, dtype="fp8_e4m3")
    b = provider.create_kv_pool(8, block_size=4, dtype="fp8_e5m2")
    ids = a.allocate(2)
    with pytest.raises(InvalidArgumentError, match="fp8_e5m2 blocks, this one 4-token fp8_e4m3"):
        a.migrate_blocks(ids, b)
    assert b.stats().used_blocks == 0


def test_unknown_cache_dtypes_and_non_attention_pools(provider) -> None:
    with pytest.raises(InvalidArgumentError, match="fp8_e5m2"):
        provider.create_kv_pool(4, block_size=4, dtype="fp8_e3m4")
    with pytest.raises(UnsupportedOperationError, match="int8"):
        provider.create_kv_pool(4, block_size=4, dtype=DType.INT8).kv_caches()
