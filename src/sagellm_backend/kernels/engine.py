"""Registration of the engine's kernels (engine interface 0.5, section 3) in :data:`global_kernels`.

:func:`register_engine_kernels` puts one backend's implementations of :data:`ENGINE_KERNEL_NAMES`
into the global registry for one target (a provider name or device type), as :class:`~.base.Kernel`
objects: callable, with a callable ``.forward``. Priorities: torch and numpy at -50, Triton at -40
(so on CUDA the fused Triton kernels win over torch's for the names Triton implements, and any
kernel a user registers at the default priority 0 wins over both).

Importing this module imports neither torch, numpy nor Triton; registering imports the backend.
"""

from __future__ import annotations

import logging
import threading

from ..errors import InvalidArgumentError
from ..protocol import DType, KernelKind
from .base import BACKENDS, FLOAT_DTYPES, FunctionKernel, Kernel, backend_function
from .fused_ops import FusedAddRMSNormKernel, FusedKernel, FusedQKVProjectionKernel, FusedSiLUMulKernel
from .registry import global_kernels

__all__ = ["CUDA_TARGETS", "ENGINE_KERNEL_NAMES", "PRIORITIES", "TRITON_KERNEL_NAMES", "register_engine_kernels"]

_log = logging.getLogger(__name__)

#: Every name registered, with the implementation function each maps to and its kernel kind.
_TABLE: dict[str, tuple[str, KernelKind | None]] = {
    "linear": ("linear", KernelKind.MATMUL),
    "embedding": ("embedding", None),
    "rmsnorm": ("rmsnorm", KernelKind.LAYERNORM),
    "layernorm": ("layernorm", KernelKind.LAYERNORM),
    "silu": ("silu", None),
    "gelu": ("gelu", None),
    "relu": ("relu", None),
    "silu_mul": ("silu_mul", KernelKind.FUSION),
    "fused_silu_mul": ("silu_mul", KernelKind.FUSION),
    "add_rmsnorm": ("add_rmsnorm", KernelKind.FUSION),
    "fused_rmsnorm": ("add_rmsnorm", KernelKind.FUSION),
    "fused_add_rmsnorm": ("add_rmsnorm", KernelKind.FUSION),
    "fused_qkv_projection": ("fused_qkv_projection", KernelKind.FUSION),
    "rotary_embedding": ("rotary_embedding", None),
}
#: The kernel names :func:`register_engine_kernels` provides (``silu_mul`` / ``fused_silu_mul`` and
#: ``add_rmsnorm`` / ``fused_rmsnorm`` / ``fused_add_rmsnorm`` are aliases).
ENGINE_KERNEL_NAMES: tuple[str, ...] = tuple(_TABLE)
#: Names the Triton backend replaces (the rest stay torch's on CUDA).
TRITON_KERNEL_NAMES: tuple[str, ...] = (
    "rmsnorm",
    "silu_mul",
    "fused_silu_mul",
    "add_rmsnorm",
    "fused_rmsnorm",
    "fused_add_rmsnorm",
    "rotary_embedding",
)
#: Registry priority per backend.
PRIORITIES: dict[str, int] = {"torch": -50, "numpy": -50, "triton": -40}
#: Targets whose tensors are CUDA tensors (the only ones Triton kernels are registered for).
CUDA_TARGETS = frozenset({"cuda"})
_FUSED: dict[str, type[FusedKernel]] = {
    "silu_mul": FusedSiLUMulKernel,
    "add_rmsnorm": FusedAddRMSNormKernel,
    "fused_qkv_projection": FusedQKVProjectionKernel,
}
_DTYPES: dict[str, tuple[DType, ...]] = {
    "numpy": (DType.FP32, DType.FP16),
    "torch": FLOAT_DTYPES,
    "triton": FLOAT_DTYPES,
}

_done: set[tuple[str, str]] = set()
_lock = threading.Lock()


def _triton_importable() -> bool:
    try:
        backend_function("triton", "rmsnorm")
    except Exception as exc:  # ImportError, or Triton failing to initialise on this machine
        _log.debug("Triton kernels not registered: %s", exc)
        return False
    return True


def _kernel(name: str, fn_name: str, backend: str, target: str) -> Kernel | None:
    fused = _FUSED.get(fn_name)
    if fused is not None:
        return fused(backend, name=name, device_type=target, dtypes=_DTYPES[backend])
    fn = backend_function(backend, fn_name)
    if fn is None:
        return None
    return FunctionKernel(fn, name, backend=backend, device_type=target, dtypes=_DTYPES[backend])


def register_engine_kernels(target: str, backend: str) -> None:
    """Register ``backend``'s engine kernels for ``target`` in the global registry (once per pair).

    Thread-safe; a second call with the same ``(target, backend)`` does nothing. ``"triton"``
    registers only when Triton imports and ``target`` is a CUDA target, and only the names in
    :data:`TRITON_KERNEL_NAMES`; register ``"torch"`` for the same target for the others. A
    name a backend cannot compute is not registered, so ``get_kernel`` raises
    :class:`~sagellm_backend.errors.KernelNotFoundError` for it.

    Args:
        target: Provider name or device type (``"cpu"``, ``"cuda"``, ``"mock"``).
        backend: ``"torch"``, ``"numpy"`` or ``"triton"``.

    Raises:
        InvalidArgumentError: an empty target or an unknown backend.
        UnavailableError: torch (or numpy) does not import for that backend.
    """
    if not isinstance(target, str) or not target:
        raise InvalidArgumentError(f"kernel target must be a non-empty string such as 'cuda'; got {target!r}.")
    if backend not in BACKENDS:
        raise InvalidArgumentError(f"engine kernel backend must be one of {list(BACKENDS)}; got {backend!r}.")
    with _lock:
        if (target, backend) in _done:
            return
        names: tuple[str, ...] = ENGINE_KERNEL_NAMES
        if backend == "triton":
            names = TRITON_KERNEL_NAMES if target in CUDA_TARGETS and _triton_importable() else ()
        made = [(name, _kernel(name, _TABLE[name][0], backend, target)) for name in names]
        for name, kernel in made:
            if kernel is not None:
                global_kernels.register(
                    name, kernel, targets=(target,), priority=PRIORITIES[backend], kind=_TABLE[name][1]
                )
        _done.add((target, backend))
