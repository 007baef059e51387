"""What the paged-attention op checks share: tolerances, the result record, grading, the cases' pages.

Nothing here imports torch at import time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from .reference import make_arena_caches, make_block_tables

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_TOLERANCES",
    "OpCase",
    "OpCheckResult",
    "OpOptions",
    "PagedGeometry",
    "graded",
    "op_case",
    "paged_pages",
    "run_op",
]


class PagedGeometry(TypedDict):
    """The shape of a case (keyword arguments of the decode, prefill and variant checks).

    Attributes:
        dtype: Query and cache dtype.
        head_dim: Head dimension.
        block_size: Tokens per block.
        num_heads: Query heads.
        num_kv_heads: KV heads.
    """

    dtype: torch.dtype
    head_dim: int
    block_size: int
    num_heads: int
    num_kv_heads: int


class OpOptions(TypedDict, total=False):
    """How the decode and prefill checks call the op (every key optional).

    Attributes:
        index_dtype: Dtype of the index tensors (default int64).
        pad_value: Block-table entries past each sequence's pages (default -1).
        use_out: Pass a preallocated ``out`` (default False).
        scale: Softmax scale (default ``head_dim ** -0.5``).
        seed: Random seed (default 0).
        tolerances: Overrides of :data:`DEFAULT_TOLERANCES`, by dtype name.
    """

    index_dtype: torch.dtype | None
    pad_value: int
    use_out: bool
    scale: float | None
    seed: int
    tolerances: dict[str, tuple[float, float]] | None


class OpCase(PagedGeometry, OpOptions):
    """A geometry and the options of one decode or prefill check."""


def op_case(case: OpCase) -> dict[str, Any]:
    """``case`` with every option's default filled in (``index_dtype`` resolved, ``scale`` computed).

    Args:
        case: The check's keyword arguments.

    Returns:
        Every key of :class:`OpCase`.

    Raises:
        TypeError: A key that :class:`OpCase` does not name, or a missing geometry key.
    """
    import torch

    unknown = sorted(set(case) - set(OpCase.__annotations__))
    missing = sorted(PagedGeometry.__required_keys__ - set(case))
    if unknown or missing:
        raise TypeError(f"case keys: unknown {unknown}, missing {missing}; known: {sorted(OpCase.__annotations__)}")
    out: dict[str, Any] = {"pad_value": -1, "use_out": False, "seed": 0, "tolerances": None, **case}
    out["index_dtype"] = case.get("index_dtype") or torch.int64
    scale = case.get("scale")
    out["scale"] = case["head_dim"] ** -0.5 if scale is None else scale
    return out


#: (atol, rtol) per dtype name, against a float64 reference computed from the same (rounded) inputs.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float32": (2e-3, 2e-3),
    "float16": (1e-2, 1e-2),
    "bfloat16": (3e-2, 3e-2),
    "float64": (1e-9, 1e-9),
}


@dataclass(frozen=True)
class OpCheckResult:
    """One checked case.

    Attributes:
        op: ``store_kv``, ``paged_decode`` or ``paged_prefill``.
        case: The case's parameters (dtype, head dims, block size, lengths ...).
        max_abs_err: Largest ``|out - ref|`` (0 for ``store_kv``, which must be exact).
        worst_ratio: Largest ``|out - ref| / (atol + rtol * |ref|)``; the case passes when <= 1.
    """

    op: str
    case: dict[str, Any]
    max_abs_err: float
    worst_ratio: float


def _compare(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, tol: tuple[float, float]) -> tuple[float, float]:
    import torch

    if out.dtype != dtype:
        raise AssertionError(f"result dtype {out.dtype}, expected {dtype}")
    if tuple(out.shape) != tuple(ref.shape):
        raise AssertionError(f"result shape {tuple(out.shape)}, expected {tuple(ref.shape)}")
    o = out.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(o).all()):
        raise AssertionError("result has non-finite values")
    err = (o - ref).abs()
    atol, rtol = tol
    return float(err.max()), float((err / (atol + rtol * ref.abs())).max())


def graded(
    op: str,
    case: dict[str, Any],
    out: torch.Tensor,
    ref: torch.Tensor,
    dtype: torch.dtype,
    tolerances: dict[str, tuple[float, float]] | None,
) -> OpCheckResult:
    """The result of ``op`` on ``case``, compared with the reference under the dtype's tolerance.

    Args:
        op: The op's name.
        case: The case's parameters.
        out: The op's result.
        ref: The float64 reference.
        dtype: The expected result dtype.
        tolerances: Overrides of :data:`DEFAULT_TOLERANCES`, by dtype name.

    Returns:
        The case's result.

    Raises:
        AssertionError: Wrong dtype/shape, non-finite values, or outside tolerance.
    """
    name = str(dtype).removeprefix("torch.")
    err, ratio = _compare(out, ref, dtype, (tolerances or {}).get(name, DEFAULT_TOLERANCES[name]))
    if ratio > 1.0:
        raise AssertionError(f"{op} outside tolerance for {case}: max abs err {err:.3g}, ratio {ratio:.3g}")
    return OpCheckResult(op, case, err, ratio)


def run_op(name: str, fn: Any, out_buf: torch.Tensor | None, args: tuple[Any, ...]) -> torch.Tensor:
    """``fn(*args)``, with ``out=out_buf`` when given, checking that the op returned ``out_buf``.

    Args:
        name: The op's name (for the error).
        fn: The op.
        out_buf: Preallocated result, or None.
        args: Positional arguments.

    Returns:
        The op's result.

    Raises:
        AssertionError: The op did not return ``out_buf``.
    """
    res = fn(*args) if out_buf is None else fn(*args, out=out_buf)
    if out_buf is not None and res.data_ptr() != out_buf.data_ptr():
        raise AssertionError(f"{name}(out=...) must return the out tensor")
    return res  # type: ignore[no-any-return]  # op modules are duck-typed


def paged_pages(
    key_lens: list[int],
    geometry: Mapping[str, Any],
    device: torch.device | str,
    generator: torch.Generator,
    pad_value: int = -1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """An arena with three spare blocks beyond the sequences' pages, and shuffled block tables over it.

    Args:
        key_lens: Key positions per sequence.
        geometry: The case's :class:`PagedGeometry` (``num_heads`` is not used).
        device: Device of the arena.
        generator: Random source.
        pad_value: Block-table entries past each sequence's pages.

    Returns:
        ``(arena, k_cache, v_cache, block_tables)`` (block tables on the CPU, int64).
    """
    bs = geometry["block_size"]
    num_blocks = sum(math.ceil(n / bs) for n in key_lens) + 3
    shape = (num_blocks, bs, geometry["num_kv_heads"], geometry["head_dim"], geometry["dtype"])
    arena, kc, vc = make_arena_caches(*shape, device, generator=generator)
    table = make_block_tables(key_lens, bs, num_blocks, generator=generator, pad_value=pad_value)
    return arena, kc, vc, table
