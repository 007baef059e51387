"""Builds paged-attention metadata (slot mappings) from block tables, vectorised in torch.

Token at position ``p`` of sequence ``i`` lives in slot ``block_tables[i][p // bs] * bs + p % bs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError, InvalidBlockError
from .base import AttentionMetadata, check_device, int_list, int_tensor, positive_int

if TYPE_CHECKING:
    import torch

__all__ = ["PagedAttentionMetadataBuilder"]


class PagedAttentionMetadataBuilder:
    """Makes :class:`AttentionMetadata` with ``slot_mapping`` for a paged KV cache.

    Args:
        block_size: Tokens per KV block.
        device: Where the metadata's tensors live (``torch.device`` or str).

    Raises:
        InvalidArgumentTypeError: ``block_size`` is not an int or ``device`` not a str/torch.device.
        InvalidArgumentError: ``block_size`` is not positive.
    """

    def __init__(self, block_size: int, device: torch.device | str = "cpu") -> None:
        self.block_size = positive_int("block_size", block_size)
        check_device(device)
        self.device = device

    def __repr__(self) -> str:
        return f"PagedAttentionMetadataBuilder(block_size={self.block_size}, device={str(self.device)!r})"

    def _table(self, block_tables: object, num_seqs: int, key_lens: list[int]) -> torch.Tensor:
        import torch

        table = int_tensor("block_tables", block_tables, 2, self.device).to(device=self.device, dtype=torch.int64)
        if table.shape[0] != num_seqs:
            raise InvalidArgumentError(f"block_tables has {table.shape[0]} rows for {num_seqs} sequences.")
        width = table.shape[1]
        for i, n in enumerate(key_lens):
            need = -(-n // self.block_size)
            if need > width:
                raise InvalidBlockError(
                    f"sequence {i} needs {need} blocks for {n} positions at block_size={self.block_size}, but "
                    f"block_tables has only {width} columns; allocate blocks for every position before building."
                )
        return table

    def _slots(self, table: torch.Tensor, seq_ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        bs = self.block_size
        blocks = table[seq_ids, pos // bs]
        if blocks.numel() and int(blocks.min()) < 0:
            bad = int((blocks < 0).nonzero()[0, 0])
            raise InvalidBlockError(
                f"block_tables[{int(seq_ids[bad])}][{int(pos[bad]) // bs}] = {int(blocks[bad])} is negative but "
                f"holds position {int(pos[bad])}; every used entry must be a block id >= 0."
            )
        return blocks * bs + pos % bs

    def build_prefill_metadata(
        self,
        seq_lens: Sequence[int],
        block_tables: torch.Tensor | Sequence[Sequence[int]],
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        cached_lens: Sequence[int] | None = None,
        **kw: Any,
    ) -> AttentionMetadata:
        """Prefill metadata: slots for every new token, packed in sequence order.

        Args:
            seq_lens: New tokens per sequence.
            block_tables: ``[num_seqs, max_blocks]`` block ids (tensor, or lists zero-padded to one).
            num_kv_heads: KV heads, recorded in the metadata.
            head_dim: Head dimension, recorded in the metadata.
            cached_lens: Tokens already cached per sequence (chunked prefill); default zeros. New token ``j``
                of sequence ``i`` is at position ``cached_lens[i] + j``.
            **kw: Further metadata fields.

        Returns:
            Metadata with ``is_prefill=True``, ``slot_mapping`` (int64, ``[sum(seq_lens)]``) and the block tables.

        Raises:
            InvalidArgumentTypeError: Wrong argument types.
            InvalidArgumentError: Lengths disagree with each other or with the table's row count.
            InvalidBlockError: A table is too short for its positions, or a used entry is negative.
        """
        import torch

        lens = int_list("seq_lens", seq_lens)
        cached = [0] * len(lens) if cached_lens is None else int_list("cached_lens", cached_lens)
        if len(cached) != len(lens):
            raise InvalidArgumentError(f"cached_lens has {len(cached)} entries for {len(lens)} sequences.")
        table = self._table(block_tables, len(lens), [c + n for c, n in zip(cached, lens)])
        dev = table.device
        counts = torch.tensor(lens, dtype=torch.int64, device=dev)
        seq_ids = torch.repeat_interleave(torch.arange(len(lens), device=dev), counts)
        starts = torch.cumsum(counts, 0) - counts
        offsets = torch.tensor(cached, dtype=torch.int64, device=dev) - starts
        pos = torch.arange(int(seq_ids.numel()), device=dev) + offsets[seq_ids]
        slots = self._slots(table, seq_ids, pos)
        return AttentionMetadata.for_prefill(
            lens, device=self.device, block_tables=table, slot_mapping=slots, block_size=self.block_size,
            num_kv_heads=num_kv_heads, head_dim=head_dim, cached_lens=cached, **kw,
        )  # fmt: skip

    def build_decode_metadata(
        self, context_lens: Sequence[int], block_tables: torch.Tensor | Sequence[Sequence[int]],
        num_kv_heads: int | None = None, head_dim: int | None = None, **kw: Any,
    ) -> AttentionMetadata:  # fmt: skip
        """Decode metadata: one new token per sequence at position ``context_lens[i]``.

        Args:
            context_lens: Tokens already cached per sequence.
            block_tables: ``[num_seqs, max_blocks]`` block ids (tensor, or lists zero-padded to one).
            num_kv_heads: KV heads, recorded in the metadata.
            head_dim: Head dimension, recorded in the metadata.
            **kw: Further metadata fields.

        Returns:
            Metadata with ``is_prefill=False`` and ``slot_mapping[i]`` = the slot of position ``context_lens[i]``.

        Raises:
            InvalidArgumentTypeError: Wrong argument types.
            InvalidArgumentError: The table's row count differs from the number of sequences.
            InvalidBlockError: A table is too short for the new position, or a used entry is negative.
        """
        import torch

        ctx = int_list("context_lens", context_lens)
        table = self._table(block_tables, len(ctx), [c + 1 for c in ctx])
        pos = torch.tensor(ctx, dtype=torch.int64, device=table.device)
        slots = self._slots(table, torch.arange(len(ctx), device=table.device), pos)
        return AttentionMetadata.for_decode(
            ctx, table, device=self.device, slot_mapping=slots, block_size=self.block_size,
            num_kv_heads=num_kv_heads, head_dim=head_dim, **kw,
        )  # fmt: skip
