"""Validation of a paged-attention call's metadata against its cache, and the device tensors the ops need.

Everything is checked before the backend writes the cache: lengths against the tokens and the table width,
used block ids within ``[0, num_blocks)``, slots within the cache and equal to the slot of their token's
position (negative slots are skipped). The device-side checks cost one host sync. The result is memoised on
the metadata object (every layer of a step shares it), keyed by the lengths, the cache geometry and the
identity (and version counter, where tracked) of the metadata's tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError, InvalidBlockError, UnsupportedOperationError
from .base import AttentionMetadata
from .validation import QKVShape

if TYPE_CHECKING:
    import torch

__all__ = ["PagedPlan", "ident", "plan_paged_call"]


@dataclass(frozen=True)
class PagedPlan:
    """Device tensors and sizes of one validated paged call.

    Attributes:
        block_tables: ``[B, width]`` int64 on the query's device.
        slot_mapping: ``[tokens]`` int64 on the query's device.
        key_lens: ``[B]`` int32: key positions visible to each sequence's last query (cached + new).
        cu_seqlens_q: ``[B + 1]`` int32 query offsets (prefill), else None.
        token_index: For a padded prefill: rows of the query holding real tokens, in packed order; else None.
        tokens: Real (packed) query tokens.
        max_key_len: Largest key length.
        keep: References that keep the memo key's tensors alive.
    """

    block_tables: torch.Tensor
    slot_mapping: torch.Tensor
    key_lens: torch.Tensor
    cu_seqlens_q: torch.Tensor | None
    token_index: torch.Tensor | None
    tokens: int
    max_key_len: int
    keep: tuple[Any, ...]


def ident(t: torch.Tensor | None) -> tuple[int, int] | None:
    """``(id, version counter)`` of a tensor (version -1 for inference tensors), or None."""
    if t is None:
        return None
    try:
        version = int(t._version)
    except RuntimeError:  # inference tensors track no version; identity only
        version = -1
    return id(t), version


def _padded_index(mask: torch.Tensor | None, md: AttentionMetadata, t: int) -> torch.Tensor:
    """Rows of the real tokens of a padded prefill ``[B*q]``, read off the mask's (offset) diagonal."""
    import torch

    if mask is None or mask.dtype != torch.bool or mask.shape[0] * mask.shape[2] != t or mask.shape[0] != md.num_seqs:
        raise InvalidArgumentError(
            f"seq_lens sum to {sum(md.seq_lens)} but there are {t} query tokens: pack the sequences, or for a padded "
            f"batch of {md.num_seqs} rows pass the bool HF attn_mask [B, 1, q, kv] with B*q == {t}."
        )
    q, kv = mask.shape[2], mask.shape[3]
    if kv < q:
        raise InvalidArgumentError(f"attn_mask {tuple(mask.shape)} has fewer key columns than query rows.")
    rows = torch.arange(q, device=mask.device)
    real = mask[:, 0, rows, rows + (kv - q)]  # token j of row b is real iff it may attend to itself
    counts = real.sum(1).tolist()
    if counts != md.seq_lens:
        raise InvalidArgumentError(
            f"attn_mask marks {counts} real tokens per row but seq_lens is {md.seq_lens}; they must agree."
        )
    return real.reshape(-1).nonzero().squeeze(1)


def _check_static(md: AttentionMetadata, shp: QKVShape, k_cache: torch.Tensor, padded_ok: bool) -> list[int]:
    """Host-side checks; returns key lengths per sequence."""
    bs = int(k_cache.shape[1])
    if md.attn_type != "decoder":
        raise UnsupportedOperationError(f"paged attention is causal (attn_type='decoder'); got {md.attn_type!r}.")
    if md.block_size is not None and md.block_size != bs:
        raise InvalidArgumentError(
            f"metadata block_size={md.block_size} but the cache has block_size={bs}; build the metadata and "
            "allocate the cache with the same block size."
        )
    for name, want, got in (
        ("num_kv_heads", md.num_kv_heads, shp.num_kv_heads),
        ("head_dim", md.head_dim, shp.head_dim),
    ):
        if want is not None and want != got:
            raise InvalidArgumentError(f"metadata {name}={want} but key/value have {got}.")
    assert md.block_tables is not None  # the backend checked
    if md.slot_mapping is None:
        raise InvalidArgumentError("block_tables without slot_mapping: the new tokens' cache slots are needed.")
    if md.is_prefill:
        assert md.cached_lens is not None  # set by AttentionMetadata
        key_lens = [c + n for c, n in zip(md.cached_lens, md.seq_lens)]
    else:
        assert md.context_lens is not None  # required for decode
        if shp.tokens != md.num_seqs:
            raise InvalidArgumentError(
                f"decode has one token per sequence: {md.num_seqs} sequences, {shp.tokens} tokens."
            )
        key_lens = [c + 1 for c in md.context_lens]
    tokens = sum(md.seq_lens)
    if shp.tokens != tokens and not padded_ok:
        raise InvalidArgumentError(
            f"seq_lens sum to {tokens} but there are {shp.tokens} query tokens: pack the sequences, or for a padded "
            f"prefill of {md.num_seqs} rows pass the bool HF attn_mask [B, 1, q, kv]."
        )
    if md.slot_mapping.dim() != 1 or md.slot_mapping.shape[0] != tokens:
        raise InvalidArgumentError(
            f"slot_mapping must be [{tokens}] (one slot per new token); got {tuple(md.slot_mapping.shape)}."
        )
    width = int(md.block_tables.shape[1])
    for i, n in enumerate(key_lens):
        if -(-n // bs) > width:
            raise InvalidBlockError(
                f"sequence {i} has {n} key positions = {-(-n // bs)} blocks of {bs}, but block_tables has {width} "
                "columns; the table must cover every position."
            )
    return key_lens


def _check_device_side(
    table: torch.Tensor, slots: torch.Tensor, key_lens: list[int], md: AttentionMetadata, num_blocks: int, bs: int
) -> None:
    """Block ids in range for used entries, slots in range and matching their positions: one host sync."""
    import torch

    dev = table.device
    need = torch.tensor([-(-n // bs) for n in key_lens], dtype=torch.int64, device=dev)
    used = torch.arange(table.shape[1], device=dev)[None, :] < need[:, None]
    bad_ids = used & ((table < 0) | (table >= num_blocks))
    if md.is_prefill:
        assert md.cached_lens is not None  # set by AttentionMetadata
        counts = torch.tensor(md.seq_lens, dtype=torch.int64, device=dev)
        seq = torch.repeat_interleave(torch.arange(len(key_lens), device=dev), counts)
        first = torch.tensor(md.cached_lens, dtype=torch.int64, device=dev) - (torch.cumsum(counts, 0) - counts)
        pos = torch.arange(seq.numel(), device=dev) + first[seq]
    else:
        assert md.context_lens is not None  # required for decode
        seq = torch.arange(len(key_lens), device=dev)
        pos = torch.tensor(md.context_lens, dtype=torch.int64, device=dev)
    expected = table[seq, pos // bs] * bs + pos % bs
    bad_slots = (slots >= num_blocks * bs) | ((slots >= 0) & (slots != expected))
    if not bool(torch.cat([bad_ids.reshape(-1), bad_slots]).any()):
        return
    if bool(bad_ids.any()):
        i, j = (int(x) for x in bad_ids.nonzero()[0])
        raise InvalidBlockError(
            f"block_tables[{i}][{j}] = {int(table[i, j])} is used (sequence {i} has {key_lens[i]} positions) but is "
            f"not a block id of this cache (0..{num_blocks - 1})."
        )
    k = int(bad_slots.nonzero()[0, 0])
    raise InvalidArgumentError(
        f"slot_mapping[{k}] = {int(slots[k])} but token {k} (sequence {int(seq[k])}, position {int(pos[k])}) lives in "
        f"slot {int(expected[k])} by block_tables (cache has {num_blocks * bs} slots); use negative slots only to skip."
    )


def plan_paged_call(
    md: AttentionMetadata, shp: QKVShape, k_cache: torch.Tensor, device: torch.device, attn_mask: torch.Tensor | None
) -> PagedPlan:
    """Validate ``md`` for a paged call on ``k_cache`` and build (or reuse) the ops' device tensors.

    Args:
        md: Metadata with ``block_tables`` set.
        shp: Checked query/key dimensions.
        k_cache: The checked key cache ``[num_blocks, block_size, Hkv, D]``.
        device: The query's device (metadata tensors are moved there).
        attn_mask: Checked HF mask or None (used only to locate real tokens of a padded prefill).

    Returns:
        The plan.

    Raises:
        InvalidArgumentError: Lengths, slots or the block size disagree with the tokens or the cache.
        InvalidBlockError: The table is too narrow or a used entry is not a block id of this cache.
        UnsupportedOperationError: A non-causal ``attn_type``.
    """
    import torch

    num_blocks, bs = int(k_cache.shape[0]), int(k_cache.shape[1])
    padded = md.is_prefill and shp.tokens != sum(md.seq_lens)
    if md.is_prefill and attn_mask is not None and attn_mask.shape[0] * attn_mask.shape[2] != shp.tokens:
        raise InvalidArgumentError(
            f"attn_mask {tuple(attn_mask.shape)} does not fit {shp.tokens} query tokens: a prefill mask is "
            "[B, 1, q, kv] for B rows of q tokens (B*q == tokens)."
        )
    memo = (
        num_blocks, bs, shp.tokens, str(device), md.is_prefill, tuple(md.seq_lens),
        tuple(() if md.context_lens is None else md.context_lens),  # any sequence: a numpy array has no truth value
        tuple(() if md.cached_lens is None else md.cached_lens), ident(md.block_tables), ident(md.slot_mapping),
        ident(attn_mask) if padded else None,
    )  # fmt: skip
    plan: PagedPlan | None = md.step_plans.get(memo)
    if plan is not None:
        return plan
    key_lens = _check_static(md, shp, k_cache, padded and attn_mask is not None)
    assert md.block_tables is not None and md.slot_mapping is not None  # checked above
    index = _padded_index(attn_mask, md, shp.tokens) if padded else None
    table = md.block_tables.to(device=device, dtype=torch.int64)
    slots = md.slot_mapping.to(device=device, dtype=torch.int64)
    _check_device_side(table, slots, key_lens, md, num_blocks, bs)
    cu = None
    if md.is_prefill:
        offsets = [0]
        for n in md.seq_lens:
            offsets.append(offsets[-1] + n)
        cu = torch.tensor(offsets, dtype=torch.int32, device=device)
    plan = PagedPlan(
        block_tables=table, slot_mapping=slots, key_lens=torch.tensor(key_lens, dtype=torch.int32, device=device),
        cu_seqlens_q=cu, token_index=index, tokens=sum(md.seq_lens), max_key_len=max(key_lens, default=0),
        keep=(md.block_tables, md.slot_mapping, attn_mask),
    )  # fmt: skip
    if len(md.step_plans) >= 4:
        md.step_plans.clear()
    md.step_plans[memo] = plan
    return plan
