"""Attention through ``torch.nn.functional.scaled_dot_product_attention`` on any torch device, without a KV cache.

Paths (the diagnostics' ``path_name``):

- ``varlen``: prefill over packed ``seq_lens`` (causal for ``attn_type='decoder'``). Sequences of equal
  length are batched into one call each; when that means several calls and the whole batch is small
  (``T**2 <= sum(len**2) + 4096``, i.e. the masked-out work stays below the per-call overhead measured on
  CPU), one call with a block-diagonal mask runs instead.
- ``masked``: prefill with an HF mask ``[B, 1|Hq, q, kv]``: the query is ``B`` rows of ``q`` tokens and the
  mask (causality included) decides everything; rows with nothing to attend to give zeros.
- ``decode_self``: decode without a cache: each token attends to itself only, so the result is its value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InvalidArgumentError, UnsupportedOperationError
from .base import AttentionMetadata, check_device, reject_unknown_options
from .checked import AttentionCall, CheckedAttentionBackend
from .validation import check_mask

if TYPE_CHECKING:
    import torch

__all__ = ["SDPAAttentionBackend", "sdpa_attention", "use_block_diagonal"]


def use_block_diagonal(lens: list[int]) -> bool:
    """Whether a packed prefill of ``lens`` runs as one block-diagonal-masked call (see the module doc).

    Args:
        lens: Tokens per sequence.

    Returns:
        True for one masked call, False for one call per distinct length.
    """
    if len(set(lens)) <= 1:
        return False
    t = sum(lens)
    return t * t <= sum(n * n for n in lens) + 4096


def _sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool, scale: float
) -> torch.Tensor:
    """SDPA of ``q [B,Hq,M,D]`` over ``k, v [B,Hkv,N,D]`` with GQA."""
    import torch.nn.functional as F

    hq, hkv = q.shape[1], k.shape[1]
    if hq == hkv:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
    try:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale, enable_gqa=True)
    except TypeError:  # torch < 2.5 has no enable_gqa
        g = hq // hkv
        k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)


def _heads_first(x: torch.Tensor, batch: int) -> torch.Tensor:
    """``[batch*M, H, D]`` -> ``[batch, H, M, D]`` (a view)."""
    return x.view(batch, -1, x.shape[1], x.shape[2]).transpose(1, 2)


def _varlen(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lens: list[int], causal: bool, scale: float
) -> torch.Tensor:
    import torch

    t = q.shape[0]
    if t == 0:
        return q.clone()
    if len(lens) == 1 or len(set(lens)) == 1:
        b = len(lens)
        out = _sdpa(_heads_first(q, b), _heads_first(k, b), _heads_first(v, b), None, causal, scale)
        return out.transpose(1, 2).reshape(q.shape)
    if use_block_diagonal(lens):
        counts = torch.tensor(lens, device=q.device)
        seq = torch.repeat_interleave(torch.arange(len(lens), device=q.device), counts)
        mask = seq[:, None] == seq[None, :]
        if causal:
            pos = torch.arange(t, device=q.device)
            mask &= pos[None, :] <= pos[:, None]
        out = _sdpa(_heads_first(q, 1), _heads_first(k, 1), _heads_first(v, 1), mask, False, scale)
        return out.transpose(1, 2).reshape(q.shape)
    out = torch.empty_like(q)
    starts = [0]
    for n in lens:
        starts.append(starts[-1] + n)
    by_len: dict[int, list[int]] = {}
    for i, n in enumerate(lens):
        if n:
            by_len.setdefault(n, []).append(i)
    for n, seqs in by_len.items():
        b = len(seqs)
        if b == 1:
            rows: slice | torch.Tensor = slice(starts[seqs[0]], starts[seqs[0]] + n)
        else:
            first = torch.tensor([starts[i] for i in seqs], device=q.device)
            rows = (first[:, None] + torch.arange(n, device=q.device)[None, :]).reshape(-1)
        o = _sdpa(_heads_first(q[rows], b), _heads_first(k[rows], b), _heads_first(v[rows], b), None, causal, scale)
        out[rows] = o.transpose(1, 2).reshape(b * n, q.shape[1], q.shape[2])
    return out


def _masked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    import torch

    t = q.shape[0]
    qlen, kvlen = mask.shape[2], mask.shape[3]
    if qlen == 0 or t % qlen or mask.shape[0] not in (1, t // qlen) or kvlen != qlen:
        raise InvalidArgumentError(
            f"attn_mask {tuple(mask.shape)} does not fit {t} query tokens without a KV cache: expected "
            f"[B, 1, q, q] with B*q == {t} (B rows of q tokens each)."
        )
    b = t // qlen
    out = _sdpa(_heads_first(q, b), _heads_first(k, b), _heads_first(v, b), mask, False, scale)
    if mask.dtype == torch.bool:
        out = out.masked_fill(~mask.any(-1, keepdim=True), 0.0)  # rows with no key: zeros, not NaN
    return out.transpose(1, 2).reshape(q.shape)


def sdpa_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    md: AttentionMetadata,
    scale: float,
    attn_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, str]:
    """Attention of validated inputs without a cache (see the module doc for the paths).

    Args:
        query: ``[T, Hq, D]``.
        key: ``[T, Hkv, D]``.
        value: ``[T, Hkv, D]``.
        md: The metadata.
        scale: Softmax scale.
        attn_mask: Checked HF mask or None.

    Returns:
        ``([T, Hq, D], path_name)``.

    Raises:
        InvalidArgumentError: Lengths do not fit the tokens, or cached context is required.
    """
    t = query.shape[0]
    if not md.is_prefill:
        if t != md.num_seqs:
            raise InvalidArgumentError(f"decode has one token per sequence: {md.num_seqs} sequences but {t} tokens.")
        g = query.shape[1] // key.shape[1]
        return (value if g == 1 else value.repeat_interleave(g, dim=1)).clone(), "decode_self"
    if md.cached_lens and any(md.cached_lens):
        raise InvalidArgumentError(
            "prefill with cached_lens > 0 needs the cached keys: use the paged backend with a kv_cache."
        )
    q, k, v = query.contiguous(), key.contiguous(), value.contiguous()
    if attn_mask is not None:
        return _masked(q, k, v, attn_mask, scale), "masked"
    if sum(md.seq_lens) != t:
        raise InvalidArgumentError(
            f"seq_lens sum to {sum(md.seq_lens)} but there are {t} query tokens; pack the sequences "
            "without padding or pass the HF attn_mask for a padded batch."
        )
    return _varlen(q, k, v, md.seq_lens, md.attn_type == "decoder", scale), "varlen"


class SDPAAttentionBackend(CheckedAttentionBackend):
    """Cache-less attention through torch SDPA; works on every torch device.

    Args:
        device: Informational only (the tensors decide where it runs).
        **unknown: Anything else is refused (this backend keeps no cache, so ``block_size`` too).

    Raises:
        InvalidArgumentTypeError: ``device`` is not a str/torch.device, or an unknown option.
        InvalidArgumentError: ``device`` is an empty string.
    """

    def __init__(self, *, device: torch.device | str | None = None, **unknown: object) -> None:
        reject_unknown_options(SDPAAttentionBackend.__init__, unknown)
        if device is not None:
            check_device(device)
        self.device = device

    @property
    def name(self) -> str:
        """``"sdpa"``."""
        return "sdpa"

    def _attend(self, call: AttentionCall) -> tuple[torch.Tensor, str]:
        """Prefill (packed varlen or HF-masked) or cache-less decode.

        Args:
            call: The call; ``kv_cache`` must be None (this backend keeps no cache), ``attn_mask`` is an
                optional HF mask ``[B, 1|Hq, q, q]`` (bool True = attend, or additive float).

        Returns:
            ``([T, Hq, D] in the query's dtype, path name)``.

        Raises:
            UnsupportedOperationError: A kv_cache, k_scale or v_scale was passed.
            InvalidArgumentError: A mask or lengths that do not fit.
        """
        if call.k_scale is not None or call.v_scale is not None:
            raise UnsupportedOperationError(
                "the sdpa backend keeps no KV cache, so k_scale/v_scale (fp8 cache scales) do not apply; "
                "use PagedAttentionBackend(kv_cache_dtype='fp8_e4m3')."
            )
        if call.kv_cache is not None:
            raise UnsupportedOperationError(
                "the sdpa backend keeps no KV cache (supports_paged_attention is False); "
                "use PagedAttentionBackend for kv_cache."
            )
        mask = None if call.attn_mask is None else check_mask(call.attn_mask, call.query, call.shape.num_heads)
        return sdpa_attention(call.query, call.key, call.value, call.metadata, call.scale, mask)
