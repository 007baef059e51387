"""The data-moving block operations of :class:`~sagellm_backend.core.provider.Provider`: copy and
migrate, run with the blocks' locks held (the provider takes them). They use the provider's parts:
its storage, ledger, block table and fault hook."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import (
    BackendError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidBlockError,
    KVTransferError,
    ResourceExhaustedError,
)
from .validate import fmt_bytes

if TYPE_CHECKING:
    from ..api.blocks import KVBlock
    from ..api.streams import Stream
    from .parts import ProviderInternals

__all__ = ["copy_held", "migrate_held"]


def copy_held(p: ProviderInternals, src: KVBlock, dst: KVBlock, stream: Stream | None) -> None:
    """The body of :meth:`Provider.kv_block_copy`, with both blocks' locks held."""
    if src is dst:
        return
    if (src.num_tokens, src.dtype, src.geometry) != (dst.num_tokens, dst.dtype, dst.geometry):
        raise InvalidBlockError(
            f"cannot copy {src!r} into {dst!r}: blocks must match in num_tokens, dtype and "
            f"geometry (src {src.num_tokens} x {src.dtype.value}, dst {dst.num_tokens} x "
            f"{dst.dtype.value}). Allocate dst with kv_block_alloc({src.num_tokens}, DType.{src.dtype.name}).",
            src_tokens=src.num_tokens,
            dst_tokens=dst.num_tokens,
        )
    s = p.stream_for(stream)
    p.fault("transfer")
    try:
        p.storage.copy(src.data, dst.data, s)
    except BackendError:
        raise
    except Exception as exc:
        raise KVTransferError(
            f"copying block {src.handle} ({src.device}) into block {dst.handle} ({dst.device}) failed: "
            f"{exc}. The source block is intact.",
        ) from exc


def migrate_held(p: ProviderInternals, block: KVBlock, target_device: object, stream: Stream | None) -> KVBlock:
    """The body of :meth:`Provider.kv_block_migrate`, with the block's lock held."""
    if block.pool is not None and block.pool.closed:
        raise InvalidArgumentError(
            f"block {block.handle} is a view of a KV pool that was closed; its memory is gone. Nothing was moved."
        )
    if target_device is None:
        raise InvalidArgumentTypeError(
            f"target_device is None; pass the device to migrate to, one of {p.reachable_devices()}."
        )
    dev = p.target_device(target_device)
    if str(dev) == block.device:
        return block
    p.check_dtype(block.dtype, dev)
    s = p.stream_for(stream)
    nbytes = block.nbytes
    peak = p.ledger.reserve(str(dev), nbytes, f"a migrated KV block of {block.num_tokens} tokens")
    pool_id, release = block.pool_block_id, p.blocks.view_release(block)
    try:
        p.fault("transfer")
        new_data = p.storage.transfer(block.data, dev, s)
        if release is not None and pool_id is not None:
            # A view's reference is dropped before the block changes (it raises if the pool
            # closed), and on a stream only once the copy has read the block: released now, the
            # block could be reallocated and overwritten before the queued copy reads it.
            try:
                if s is None:
                    release(pool_id, False)
                else:
                    s.submit(release, pool_id, True)
            except BaseException:
                p.storage.release(new_data, s)
                raise
    except BaseException as exc:
        p.ledger.unreserve(str(dev), nbytes, peak)
        if isinstance(exc, BackendError) or not isinstance(exc, Exception):
            raise
        if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
            raise ResourceExhaustedError(
                f"no memory on {dev} to migrate block {block.handle} ({fmt_bytes(nbytes)}): {exc}. "
                f"The block stays on {block.device}.",
            ) from exc
        raise KVTransferError(
            f"migrating block {block.handle} from {block.device} to {dev} failed: {exc}. "
            f"The block stays on {block.device}, intact.",
        ) from exc
    old_data, old_device, was_view = p.blocks.rehome(block, new_data, str(dev))
    if not was_view:
        p.ledger.unreserve(old_device, nbytes)
        p.storage.release(old_data, s)
    return block
