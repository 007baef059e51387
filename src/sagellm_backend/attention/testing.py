"""Conformance checks for paged-attention op modules, against a float64 reference.

An *op module* is any object with three callables (``paged_torch`` and ``paged_triton`` are two)::

    store_kv(key, value, k_cache, v_cache, slot_mapping) -> None
    paged_decode(query, k_cache, v_cache, block_tables, seq_lens, scale, out=None) -> Tensor
    paged_prefill(query, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale, out=None) -> Tensor

An op set that declares variants or fp8 caches in :mod:`.registry` also takes the keywords
``sliding_window``, ``logits_soft_cap``, ``alibi_slopes`` (decode and prefill; :func:`check_paged_variants`)
and ``k_scale``, ``v_scale`` (all three ops; :mod:`.kv_quant`): :class:`~.variants.PagedOptions`.

What the checks assume of the caller (the backend validates it) and demand of the ops:

- caches are ``[num_blocks, block_size, Hkv, D]``; the inner three dims are contiguous (the checks use
  token-major pages; the backend also accepts head-major ones, :func:`.validation.page_layout`), ``stride(0)``
  is arbitrary and the storage offset may be non-zero (the checks use one layer's K or V view of a
  block-major arena ``[num_blocks, 2, num_layers, block_size, Hkv, D]``);
- index tensors (``slot_mapping``, ``block_tables``, ``seq_lens``, ``cu_seqlens_q``) are int32 or int64
  (the checks alternate); ``query``/``key``/``value`` are contiguous and share the caches' dtype;
- ``store_kv`` skips ``slot < 0`` and writes nothing else (checked byte for byte over the whole arena);
- ``block_tables`` entries past ``ceil(seq_len / block_size)`` are arbitrary (the checks fill them with
  ``-1`` or ``0``) and must not be read as pages;
- query head ``h`` uses KV head ``h // (Hq // Hkv)``;
- ``out``, when given, is a contiguous ``[*, Hq, D]`` tensor of the query's dtype; the op writes the result
  into it and returns it;
- results are in the query's dtype, within the tolerances of :data:`DEFAULT_TOLERANCES`
  (``|out - ref| <= atol + rtol * |ref|`` element-wise). fp32 allows TF32 tensor-core dots.

Torch is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from .op_check_common import DEFAULT_TOLERANCES, OpCase, OpCheckResult, graded, op_case, paged_pages, run_op
from .reference import make_arena_caches, make_block_tables, reference_paged_decode, reference_paged_prefill
from .variant_checks import check_paged_variants

if TYPE_CHECKING:
    import torch
    from typing_extensions import Unpack


__all__ = [
    "DEFAULT_TOLERANCES",
    "OpCheckResult",
    "check_paged_decode",
    "check_paged_ops",
    "check_paged_prefill",
    "check_paged_variants",
    "check_store_kv",
    "make_arena_caches",
    "make_block_tables",
    "reference_paged_decode",
    "reference_paged_prefill",
]


def check_store_kv(
    ops: Any,
    device: torch.device | str,
    *,
    dtype: torch.dtype,
    head_dim: int,
    block_size: int,
    num_kv_heads: int,
    num_tokens: int = 37,
    num_blocks: int = 9,
    index_dtype: torch.dtype | None = None,
    seed: int = 0,
) -> OpCheckResult:
    """Check ``store_kv``: written slots equal the inputs, padding (-1) slots and everything else untouched.

    Args:
        ops: The op module.
        device: Device of every tensor.
        dtype: Cache and key/value dtype.
        head_dim: Head dimension.
        block_size: Tokens per block.
        num_kv_heads: KV heads.
        num_tokens: Tokens to store (about a quarter become padding slots).
        num_blocks: Blocks in the arena.
        index_dtype: ``slot_mapping`` dtype (default int64).
        seed: Random seed.

    Returns:
        The case's result.

    Raises:
        AssertionError: Any byte of the arena differs from the expectation.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    arena, kc, vc = make_arena_caches(num_blocks, block_size, num_kv_heads, head_dim, dtype, device, generator=g)
    expected = arena.clone()
    total = num_blocks * block_size
    slots = torch.randperm(total, generator=g)[:num_tokens]
    slots[torch.rand(num_tokens, generator=g) < 0.25] = -1
    key = torch.randn(num_tokens, num_kv_heads, head_dim, generator=g).to(dtype=dtype, device=device)
    value = torch.randn(num_tokens, num_kv_heads, head_dim, generator=g).to(dtype=dtype, device=device)
    keep = slots >= 0
    ek = expected[:, 0, 1].reshape(total, num_kv_heads, head_dim)
    ev = expected[:, 1, 1].reshape(total, num_kv_heads, head_dim)
    expected[:, 0, 1] = ek.index_copy(0, slots[keep].to(device), key[keep.to(device)]).view_as(kc)
    expected[:, 1, 1] = ev.index_copy(0, slots[keep].to(device), value[keep.to(device)]).view_as(vc)
    idx = slots.to(device=device, dtype=index_dtype or torch.int64)
    ops.store_kv(key, value, kc, vc, idx)
    case = {"dtype": str(dtype), "head_dim": head_dim, "block_size": block_size, "num_kv_heads": num_kv_heads}
    if not torch.equal(arena, expected):
        bad = (arena != expected).nonzero()[:4].tolist()
        raise AssertionError(f"store_kv wrote wrong bytes for {case}; first differing arena indices {bad}")
    return OpCheckResult("store_kv", case, 0.0, 0.0)


def _record(c: dict[str, Any], **lens: list[int]) -> dict[str, Any]:
    """A case's parameters as the result records them (dtypes as strings)."""
    keys = ("head_dim", "block_size", "num_heads", "num_kv_heads", "pad_value")
    return {"dtype": str(c["dtype"]), **{k: c[k] for k in keys}, **lens, "index_dtype": str(c["index_dtype"])}


def _inputs(
    case: OpCase, key_lens: list[int], num_queries: int, device: torch.device | str
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The resolved case, its K/V pages and block tables over ``key_lens``, and ``num_queries`` random queries."""
    import torch

    c = op_case(case)
    g = torch.Generator().manual_seed(c["seed"])
    _, kc, vc, table = paged_pages(key_lens, c, device, g, c["pad_value"])
    q = torch.randn(num_queries, c["num_heads"], c["head_dim"], generator=g).to(dtype=c["dtype"], device=device)
    return c, kc, vc, table, q


def _run_graded(
    name: str,
    fn: Any,
    reference: Any,
    c: dict[str, Any],
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    index: tuple[torch.Tensor, ...],
    device: torch.device | str,
    record: dict[str, Any],
) -> OpCheckResult:
    """Run op ``name`` on ``(query, k_cache, v_cache, *index, scale)`` (index tensors moved to ``device`` in the
    case's index dtype) and grade it against ``reference`` on the CPU index tensors."""
    import torch

    ref = reference(*tensors, *index, c["scale"])
    out_buf = torch.empty_like(tensors[0]) if c["use_out"] else None
    dev_index = [x.to(device=device, dtype=c["index_dtype"]) for x in index]
    out = run_op(name, fn, out_buf, (*tensors, *dev_index, c["scale"]))
    return graded(name, record, out, ref, c["dtype"], c["tolerances"])


def check_paged_decode(
    ops: Any, device: torch.device | str, *, seq_lens: list[int], **case: Unpack[OpCase]
) -> OpCheckResult:
    """Check ``paged_decode`` on shuffled pages of an arena against :func:`reference_paged_decode`.

    Args:
        ops: The op module.
        device: Device of every tensor.
        seq_lens: Visible key positions per sequence (each >= 1).
        **case: The geometry (:class:`PagedGeometry`) and options (:class:`OpOptions`).

    Returns:
        The case's result.

    Raises:
        AssertionError: Wrong dtype/shape, non-finite values, or outside tolerance.
        TypeError: A key of ``case`` that :class:`OpCase` does not name.
    """
    import torch

    c, kc, vc, table, q = _inputs(case, seq_lens, len(seq_lens), device)
    index = (table, torch.tensor(seq_lens, dtype=torch.int64))
    return _run_graded(
        "paged_decode",
        ops.paged_decode,
        reference_paged_decode,
        c,
        (q, kc, vc),
        index,
        device,
        _record(c, seq_lens=seq_lens),
    )


def check_paged_prefill(
    ops: Any, device: torch.device | str, *, q_lens: list[int], cached_lens: list[int], **case: Unpack[OpCase]
) -> OpCheckResult:
    """Check ``paged_prefill`` (chunked: ``cached_lens`` positions precede each sequence's new queries).

    Args:
        ops: As :func:`check_paged_decode`.
        device: As :func:`check_paged_decode`.
        q_lens: New query tokens per sequence (each >= 1).
        cached_lens: Positions already cached per sequence (each >= 0).
        **case: As :func:`check_paged_decode`.

    Returns:
        The case's result.

    Raises:
        AssertionError: As :func:`check_paged_decode`.
        TypeError: As :func:`check_paged_decode`.
    """
    import torch

    key_lens = [n + q for n, q in zip(cached_lens, q_lens)]
    c, kc, vc, table, q = _inputs(case, key_lens, sum(q_lens), device)
    cu = torch.tensor([0, *itertools.accumulate(q_lens)], dtype=torch.int64)
    index = (table, cu, torch.tensor(key_lens, dtype=torch.int64))
    record = _record(c, q_lens=q_lens, cached_lens=cached_lens)
    return _run_graded(
        "paged_prefill", ops.paged_prefill, reference_paged_prefill, c, (q, kc, vc), index, device, record
    )


def check_paged_ops(
    ops_module: Any,
    device: torch.device | str,
    *,
    dtypes: tuple[torch.dtype, ...] | None = None,
    head_dims: tuple[int, ...] = (64, 128, 256),
    block_sizes: tuple[int, ...] = (16, 32),
    head_configs: tuple[tuple[int, int], ...] = ((4, 4), (8, 2), (4, 1)),
    long_context: bool = True,
    exhaustive: bool = False,
    seed: int = 0,
    tolerances: dict[str, tuple[float, float]] | None = None,
) -> list[OpCheckResult]:
    """Run ``store_kv``, ``paged_decode`` and ``paged_prefill`` of ``ops_module`` over a grid of cases.

    Every (dtype, head_dim, block_size) gets one store, one decode and two prefill cases (one plain, one
    chunked over cached context); head configs (Hq, Hkv) rotate over the grid unless ``exhaustive``. Lengths
    cover 1 token, exact block multiples, block + 1 and multi-block spans; index dtypes alternate
    int32/int64, padding entries alternate -1/0, ``out=`` and a non-default scale alternate. With
    ``long_context`` each dtype also gets a decode mixing ~1.1k, ~2.1k and 1-17 positions and a prefill with
    1k+ cached positions.

    Args:
        ops_module: Object with ``store_kv``, ``paged_decode``, ``paged_prefill``.
        device: Device to run on.
        dtypes: Dtypes to check (default fp32, fp16, bf16).
        head_dims: Head dims to check.
        block_sizes: Block sizes to check.
        head_configs: ``(Hq, Hkv)`` pairs (MHA, GQA, MQA by default).
        long_context: Add the long cases.
        exhaustive: Check every head config at every grid point.
        seed: Base random seed.
        tolerances: Overrides of :data:`DEFAULT_TOLERANCES`, by dtype name.

    Returns:
        One :class:`OpCheckResult` per checked case.

    Raises:
        AssertionError: The first failing case, with its parameters.
    """
    import torch

    dts = dtypes or (torch.float32, torch.float16, torch.bfloat16)
    results: list[OpCheckResult] = []
    k = 0
    for dtype, d, bs in itertools.product(dts, head_dims, block_sizes):
        configs = head_configs if exhaustive else (head_configs[k % len(head_configs)],)
        for hq, hkv in configs:
            k += 1
            common: dict[str, Any] = {
                "dtype": dtype, "head_dim": d, "block_size": bs, "seed": seed + k,
                "index_dtype": torch.int32 if k % 2 else torch.int64,
            }  # fmt: skip
            heads: dict[str, Any] = {"num_heads": hq, "num_kv_heads": hkv}
            opt: dict[str, Any] = {
                "pad_value": -1 if (k // 2) % 2 else 0, "use_out": k % 3 == 0, "scale": 0.37 if k % 4 == 1 else None,
                "tolerances": tolerances,
            }  # fmt: skip
            results.append(check_store_kv(ops_module, device, num_kv_heads=hkv, **common))
            results.append(
                check_paged_decode(ops_module, device, seq_lens=[1, bs, bs + 1, 3 * bs - 5], **common, **heads, **opt)
            )
            results.append(
                check_paged_prefill(
                    ops_module, device, q_lens=[1, bs + 3, 2 * bs], cached_lens=[0, 0, 0], **common, **heads, **opt
                )
            )
            results.append(
                check_paged_prefill(
                    ops_module, device, q_lens=[1, 7, bs, 2], cached_lens=[bs, 5, bs - 1, 2 * bs + 3],
                    **common, **heads, **opt,
                )
            )  # fmt: skip
    if long_context:
        for dtype in dts:
            k += 1
            common = {"dtype": dtype, "head_dim": 128, "block_size": 16, "num_heads": 8, "num_kv_heads": 2}
            results.append(
                check_paged_decode(ops_module, device, seq_lens=[1100, 2113, 17, 1, 2, 1], seed=seed + k, **common)
            )
            results.append(
                check_paged_prefill(
                    ops_module, device, q_lens=[130, 1], cached_lens=[1000, 1500], seed=seed + k, **common
                )
            )
    return results
