"""The RoPE tile helper the Triton kernels share: the standalone ``rotary_embedding`` kernel
(:mod:`.rope_triton`) and the fused decode, which rotates the query and the new key itself
(:mod:`..attention.triton_kernels`). Only triton below it.

Imported lazily (it imports triton).
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["cos_sin_at"]


@triton.jit
def cos_sin_at(  # type: ignore[no-untyped-def]  # a Triton JIT helper: untyped pointers and constexprs
    cs_ptr, s_cs, max_position, pos, idx, mask, HALF: tl.constexpr
):
    """``(cos, sin)`` of position ``pos`` at pair indices ``idx`` of the cache (fp32); 1 and 0, so no rotation, where
    ``mask`` is false or the position is outside ``[0, max_position)``."""
    ok = (pos >= 0) & (pos < max_position)
    row = cs_ptr + tl.where(ok, pos, 0) * s_cs  # row 0 stands in for an out-of-range position: never read out
    cos = tl.where(ok, tl.load(row + idx, mask=mask, other=1.0).to(tl.float32), 1.0)
    sin = tl.where(ok, tl.load(row + HALF + idx, mask=mask, other=0.0).to(tl.float32), 0.0)
    return cos, sin
