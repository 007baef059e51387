"""Helpers the check areas share that act on a provider: a storable dtype, read/write, what it
holds, random blocks, and tensors on its device."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ...api import BackendProvider, KVBlock
from ...errors import UnsupportedOperationError
from ...protocol import DType
from .base import CheckSkipped

__all__ = [
    "as_floats",
    "device_array",
    "poisoned_block",
    "random_block",
    "read_write",
    "stat",
    "storage_dtype",
    "torch_device_or_none",
]


def storage_dtype(p: BackendProvider) -> DType:
    """A dtype the provider stores KV blocks in: fp16 where possible (the seed's example), else fp32.

    Args:
        p: The provider.

    Returns:
        The dtype.

    Raises:
        CheckSkipped: it stores none of fp16/fp32/bf16/int8.
    """
    storable = p.kv_storage_dtypes()
    for d in (DType.FP16, DType.FP32, DType.BF16, DType.INT8):
        if d in storable:
            return d
    raise CheckSkipped(f"needs fp16/fp32/bf16/int8 KV storage; provider offers {storable}")


def read_write(p: BackendProvider) -> tuple[Callable[[KVBlock], bytes], Callable[[KVBlock, bytes], None]]:
    """The provider's ``kv_block_read`` / ``kv_block_write``, after checking that they work.

    Args:
        p: The provider.

    Returns:
        ``(read, write)``.

    Raises:
        CheckSkipped: reading a block raises :class:`UnsupportedOperationError`.
    """
    blk = p.kv_block_alloc(1, storage_dtype(p))
    try:
        p.kv_block_read(blk)
    except UnsupportedOperationError as exc:
        raise CheckSkipped(f"needs kv_block_read/kv_block_write; provider says: {exc}") from None
    finally:
        p.kv_block_free(blk)
    return p.kv_block_read, p.kv_block_write


def stat(p: BackendProvider) -> tuple[int, int]:
    """What the provider holds: ``(memory_stats()['kv_allocated_bytes'], len(live_blocks()))``.

    Args:
        p: The provider.

    Returns:
        Bytes and blocks.
    """
    return p.memory_stats()["kv_allocated_bytes"], len(p.live_blocks())


def random_block(p: BackendProvider, tokens: int = 4) -> tuple[KVBlock, bytes]:
    """A new block filled with random bytes.

    Args:
        p: The provider.
        tokens: Its size.

    Returns:
        The block and its bytes.
    """
    _, write = read_write(p)
    blk = p.kv_block_alloc(tokens, storage_dtype(p))
    data = os.urandom(blk.nbytes)
    write(blk, data)
    return blk, data


def poisoned_block(p: BackendProvider, tokens: int, dtype: DType, fill: int) -> KVBlock:
    """A new block with every byte set to ``fill``: a destination whose every byte a check expects
    to see overwritten (or untouched).

    Args:
        p: The provider.
        tokens: Its size.
        dtype: Its dtype.
        fill: The byte value.

    Returns:
        The block.
    """
    blk = p.kv_block_alloc(tokens, dtype)
    p.kv_block_write(blk, bytes([fill]) * blk.nbytes)
    return blk


def torch_device_or_none(p: BackendProvider) -> Any:
    """``p.get_torch_device()``, or ``None`` where the provider has none and says so with
    :class:`UnsupportedOperationError` (the Mock: its tensors are numpy arrays).

    Args:
        p: The provider.

    Returns:
        The ``torch.device`` or ``None``.
    """
    try:
        return p.get_torch_device()
    except UnsupportedOperationError:
        return None


def device_array(p: BackendProvider, values: list[float]) -> Any:
    """A float32 tensor of ``values`` on the provider's device (numpy where it has no torch device).

    Args:
        p: The provider.
        values: The values.

    Returns:
        The tensor.
    """
    dev = torch_device_or_none(p)
    if dev is None:
        import numpy as np

        return np.asarray(values, dtype=np.float32)
    import torch

    return torch.tensor(values, dtype=torch.float32, device=dev)


def as_floats(t: Any) -> list[float]:
    """The values of a 1-D numpy array or torch tensor (on any device) as Python floats.

    Args:
        t: The tensor.

    Returns:
        The values.
    """
    return [float(x) for x in t.tolist()]
