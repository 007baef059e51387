"""The fused kernels as :class:`~.base.Kernel` classes (the names the engine's fusion detector imports).

Each class picks its implementation when constructed, from ``backend``: ``"torch"``, ``"numpy"``,
``"triton"`` (CUDA; inputs it cannot handle go to torch) or ``"auto"`` (see
:func:`~.base.resolve_backend`). Constructing one imports that backend; importing this module
imports none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..errors import UnsupportedOperationError
from .base import Kernel, backend_function, resolve_backend

__all__ = ["FusedAddRMSNormKernel", "FusedKernel", "FusedQKVProjectionKernel", "FusedSiLUMulKernel"]


class FusedKernel(Kernel):
    """A :class:`Kernel` bound at construction to one backend's function ``_op``."""

    _op: str = ""

    def __init__(
        self,
        backend: str = "auto",
        *,
        name: str | None = None,
        device_type: str | None = None,
        dtypes: Iterable[object] | None = None,
    ) -> None:
        """Bind the implementation.

        Args:
            backend: ``"auto"``, ``"torch"``, ``"numpy"`` or ``"triton"``.
            name: Kernel name (default: the class's).
            device_type: Device type it is registered for (default ``"*"``).
            dtypes: Supported dtypes (default fp32, fp16, bf16).

        Raises:
            InvalidArgumentError: an unknown backend.
            UnavailableError: the backend's library does not import.
            UnsupportedOperationError: the backend has no implementation of this kernel.
        """
        concrete = resolve_backend(backend)
        super().__init__(name, backend=concrete, device_type=device_type, dtypes=dtypes)
        fn = backend_function(concrete, self._op)
        if fn is None:
            raise UnsupportedOperationError(f"backend {concrete!r} has no {self._op!r} kernel; use backend='torch'.")
        self._fn: Callable[..., Any] = fn


class FusedSiLUMulKernel(FusedKernel):
    """``silu(gate) * up``: ``k(gate, up)``, or ``k(x)`` with ``x``'s last dimension ``[gate | up]``."""

    name = "fused_silu_mul"
    _op = "silu_mul"

    def forward(self, x: Any, up: Any | None = None, *, out: Any | None = None) -> Any:
        """Compute ``silu(gate) * up``.

        Args:
            x: The gate, or ``[..., 2 * d]`` holding ``[gate | up]`` (gate first) when ``up`` is ``None``.
            up: The up projection, same shape as the gate.
            out: Optional result buffer of the gate's shape (vLLM's ``silu_and_mul(out, x)``).

        Returns:
            ``[..., d]`` (``out`` when given).
        """
        return self._fn(x, up, out=out)

    __call__ = forward


class FusedAddRMSNormKernel(FusedKernel):
    """``k(x, residual, w, eps) -> (rmsnorm(x + residual, w, eps), x + residual)``, new tensors."""

    name = "fused_add_rmsnorm"
    _op = "add_rmsnorm"

    def forward(self, x: Any, residual: Any, w: Any, eps: float = 1e-6, *, inplace: bool = False) -> tuple[Any, Any]:
        """Residual add, then RMS norm (Hugging Face ``LlamaRMSNorm`` semantics): :func:`.torch_ops.add_rmsnorm`
        on the bound backend (arguments, ``inplace`` and result as there)."""
        out: tuple[Any, Any] = self._fn(x, residual, w, eps, inplace=inplace)
        return out

    __call__ = forward


class FusedQKVProjectionKernel(FusedKernel):
    """``k(h, qkv_w, nh, nkv, hd, qkv_bias=None) -> (q [..., nh, hd], k [..., nkv, hd], v [..., nkv, hd])``."""

    name = "fused_qkv_projection"
    _op = "fused_qkv_projection"

    def forward(
        self, h: Any, qkv_w: Any, nh: int, nkv: int, hd: int, qkv_bias: Any | None = None
    ) -> tuple[Any, Any, Any]:
        """One GEMM with the ``[q; k; v]``-stacked weight, split into heads: :func:`.torch_ops.fused_qkv_projection`
        on the bound backend (arguments and result as there)."""
        out: tuple[Any, Any, Any] = self._fn(h, qkv_w, nh, nkv, hd, qkv_bias)
        return out

    __call__ = forward
