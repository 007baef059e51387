"""One integer rule (``core.validate.exact_int``) at every count, id and index outside attention/:
exact integers of any library are taken and stored as ``int``; bools, floats and strings are refused
with a typed error, and nothing changes."""

from __future__ import annotations

import enum

import numpy as np
import pytest

from sagellm_backend import InvalidArgumentError, InvalidArgumentTypeError, KVGeometry, MockBackendProvider
from sagellm_backend.core.config import ProviderConfig
from sagellm_backend.hardware.profile import HardwareProfile


class Three(enum.IntEnum):
    THREE = 3


EXACT = [3, np.int64(3), np.uint8(3), np.array(3, dtype=np.int32), Three.THREE]
NOT_INTS = [True, np.bool_(True), 3.0, np.float32(3), "3", None, np.array([3])]


@pytest.mark.parametrize("value", EXACT)
def test_exact_integers_are_taken_as_int(value: object) -> None:
    geometry = KVGeometry(num_layers=value, num_kv_heads=value)  # type: ignore[arg-type]  # the rule takes them
    assert type(geometry.num_layers) is int and geometry.num_layers == 3 and geometry.num_kv_heads == 3
    assert geometry == KVGeometry(num_layers=3, num_kv_heads=3)
    assert HardwareProfile.from_dict({"hardware_type": "cpu", "device_count": value}).device_count == 3
    assert ProviderConfig.from_any({"device_ids": iter([value, 0])}).device_ids == [3, 0]
    with MockBackendProvider() as p:
        pool = p.create_kv_pool(8, block_size=2)
        assert pool.allocate(value) == [0, 1, 2]  # type: ignore[arg-type]


@pytest.mark.parametrize("value", NOT_INTS)
def test_anything_else_is_refused_with_a_typed_error(value: object) -> None:
    with pytest.raises(InvalidArgumentTypeError, match=r"KVGeometry\.head_dim must be an int"):
        KVGeometry(head_dim=value)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentTypeError, match="device_count must be an int"):
        HardwareProfile.from_dict({"hardware_type": "cpu", "device_count": value})
    with pytest.raises(InvalidArgumentError, match="device_ids must be non-negative ints"):
        ProviderConfig.from_any({"device_ids": [0, value]})
    with MockBackendProvider() as p:
        pool = p.create_kv_pool(8, block_size=2)
        with pytest.raises(InvalidArgumentTypeError, match="n must be an int"):
            pool.allocate(value)  # type: ignore[arg-type]
        assert pool.stats().used_blocks == 0


def test_ranges_are_checked_after_the_type() -> None:
    with pytest.raises(InvalidArgumentError, match="kv_factor must be 1"):
        KVGeometry(kv_factor=np.int64(3))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="num_layers must be >= 1"):
        KVGeometry(num_layers=np.int64(0))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="device_count must be >= 0"):
        HardwareProfile.from_dict({"hardware_type": "cpu", "device_count": np.int8(-1)})
    with pytest.raises(InvalidArgumentError, match="device_ids must be non-negative"):
        ProviderConfig.from_any({"device_ids": [np.int64(-1)]})
    with MockBackendProvider() as p, pytest.raises(InvalidArgumentError, match="n must be >= 0"):
        p.create_kv_pool(8, block_size=2).allocate(np.int64(-1))  # type: ignore[arg-type]
