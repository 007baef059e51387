"""The :class:`Kernel` object: a named, callable compute kernel with the facts a registry needs.

The engine resolves kernels with ``provider.get_kernel(name)`` and then either registers
``obj.forward`` (when it is callable) or calls ``obj(...)`` directly; a :class:`Kernel` supports
both, and ``k(*a)`` is exactly ``k.forward(*a)``.

Implementations live in backend modules imported only on first use: :mod:`.torch_ops` (any torch
device), :mod:`.numpy_ops` (the Mock provider's numpy arrays) and :mod:`.triton_ops` (fused CUDA
kernels). :func:`backend_function` loads one of them, so importing this module imports neither
torch nor triton.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgumentError, InvalidArgumentTypeError, UnavailableError, UnsupportedOperationError
from ..protocol import DType, coerce_dtype
from ..selection import select

__all__ = [
    "BACKENDS",
    "FLOAT_DTYPES",
    "OP_FUNCTIONS",
    "FunctionKernel",
    "Kernel",
    "backend_function",
    "check_inplace_flag",
    "qkv_split_sizes",
    "resolve_backend",
    "split_gate_up",
]

#: Implementation backends a kernel can come from.
BACKENDS = ("torch", "numpy", "triton")
#: The functions each backend module of the engine's operations (``torch_ops``, ``numpy_ops``) defines,
#: one per operation; the engine's kernel names map onto them.
OP_FUNCTIONS: tuple[str, ...] = (
    "add_rmsnorm",
    "embedding",
    "fused_qkv_projection",
    "gelu",
    "layernorm",
    "linear",
    "relu",
    "rmsnorm",
    "rotary_embedding",
    "silu",
    "silu_mul",
)
#: The floating-point dtypes the compute kernels accept.
FLOAT_DTYPES: tuple[DType, ...] = (DType.FP32, DType.FP16, DType.BF16)


class Kernel:
    """A callable compute kernel.

    Subclasses override :meth:`forward`. Calling the object calls :meth:`forward`.

    Attributes:
        name: Kernel name (``"rmsnorm"``).
        backend: Where the implementation comes from (``"torch"``, ``"numpy"``, ``"triton"``).
        device_type: Device type it runs on (``"cuda"``), or ``"*"`` for any.
        dtypes: Element types it computes with.
    """

    name: str = "kernel"
    backend: str = "torch"
    device_type: str = "*"
    dtypes: tuple[DType, ...] = FLOAT_DTYPES

    def __init__(
        self,
        name: str | None = None,
        *,
        backend: str | None = None,
        device_type: str | None = None,
        dtypes: Iterable[object] | None = None,
    ) -> None:
        """Set the descriptive attributes (class defaults where an argument is ``None``).

        Args:
            name: Kernel name.
            backend: Implementation backend.
            device_type: Device type, or ``"*"``.
            dtypes: Supported dtypes (``DType`` members or their names).

        Raises:
            InvalidArgumentError: an empty name or device type, or an unknown dtype name.
        """
        if name is not None:
            if not isinstance(name, str) or not name:
                raise InvalidArgumentError(f"kernel name must be a non-empty string; got {name!r}.")
            self.name = name
        if backend is not None:
            self.backend = backend
        if device_type is not None:
            if not isinstance(device_type, str) or not device_type:
                raise InvalidArgumentError(
                    f"device_type must be a non-empty string such as 'cuda'; got {device_type!r}."
                )
            self.device_type = device_type
        if dtypes is not None:
            self.dtypes = tuple(coerce_dtype(d) for d in dtypes)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the kernel.

        Args:
            *args: Kernel inputs.
            **kwargs: Kernel options.

        Returns:
            The kernel's output.

        Raises:
            UnsupportedOperationError: always, in this base class.
        """
        raise UnsupportedOperationError(f"{type(self).__name__} {self.name!r} does not implement forward().")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Same as :meth:`forward`."""
        return self.forward(*args, **kwargs)

    def supports(self, dtype: object) -> bool:
        """Whether this kernel computes with ``dtype``.

        Args:
            dtype: A :class:`DType` or its name.

        Returns:
            True when ``dtype`` is in :attr:`dtypes`.
        """
        return coerce_dtype(dtype) in self.dtypes

    def __repr__(self) -> str:
        dts = ", ".join(d.value for d in self.dtypes)
        return (
            f"{type(self).__name__}(name={self.name!r}, backend={self.backend!r}, "
            f"device_type={self.device_type!r}, dtypes=[{dts}])"
        )


class FunctionKernel(Kernel):
    """A :class:`Kernel` around a plain function.

    Args:
        fn: The implementation.
        name: Kernel name.
        backend: Implementation backend.
        device_type: Device type, or ``"*"``.
        dtypes: Supported dtypes.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        *,
        backend: str = "torch",
        device_type: str = "*",
        dtypes: Iterable[object] | None = None,
    ) -> None:
        super().__init__(name, backend=backend, device_type=device_type, dtypes=dtypes)
        if not callable(fn):
            raise InvalidArgumentError(f"kernel {name!r} needs a callable implementation; got {type(fn).__name__}.")
        self.fn = fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped function.

        Args:
            *args: Kernel inputs.
            **kwargs: Kernel options.

        Returns:
            What the function returns.
        """
        return self.fn(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Same as :meth:`forward` (one call less on the hot path)."""
        return self.fn(*args, **kwargs)


def _check_backend(backend: object) -> str:
    if backend not in (*BACKENDS, "auto"):
        raise InvalidArgumentError(f"kernel backend must be one of {[*BACKENDS, 'auto']}; got {backend!r}.")
    return str(backend)


def _torch_missing() -> str | None:
    try:
        import torch  # noqa: F401  # only whether it imports
    except ImportError:
        return "torch is not installed"
    return None


def _triton_missing() -> str | None:
    reason = _torch_missing()
    if reason is not None:
        return reason
    import torch

    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    try:
        importlib.import_module(".triton_ops", __package__)
    except ImportError as exc:
        return f"the Triton kernels do not import ({exc})"
    return None


@dataclass(frozen=True)
class _AutoBackend:
    """A backend ``"auto"`` may resolve to, for :func:`sagellm_backend.selection.select`."""

    name: str
    priority: int
    missing: Callable[[], str | None]

    def why_not(self, request: object) -> str | None:
        """Why this backend cannot run here, or None (``request`` is always ``"auto"``)."""
        return self.missing()


#: What ``"auto"`` chooses from, by priority.
_AUTO = (
    _AutoBackend("triton", 30, _triton_missing),
    _AutoBackend("torch", 20, _torch_missing),
    _AutoBackend("numpy", 10, lambda: None),
)


def resolve_backend(backend: str) -> str:
    """Turn ``"auto"`` into a concrete backend; check the others.

    ``"auto"`` is the highest-priority backend that can run here (:func:`sagellm_backend.selection.select`):
    ``"triton"`` when torch sees a CUDA device and the Triton kernels import, ``"torch"`` when torch imports,
    else ``"numpy"``.

    Args:
        backend: ``"auto"``, ``"torch"``, ``"numpy"`` or ``"triton"``.

    Returns:
        The concrete backend.

    Raises:
        InvalidArgumentError: an unknown backend name.
    """
    if _check_backend(backend) != "auto":
        return backend
    return select(_AUTO, "auto", what="kernel backend").name


def backend_function(backend: str, name: str) -> Callable[..., Any] | None:
    """The implementation of ``name`` in a backend module, imported on first use.

    Names the Triton module lacks (the plain ops, the QKV projection whose GEMM is cuBLAS's anyway)
    come from the torch module.

    Args:
        backend: ``"torch"``, ``"numpy"``, ``"triton"`` or ``"auto"``.
        name: Function name.

    Returns:
        The function, or ``None`` when that backend has none.

    Raises:
        InvalidArgumentError: an unknown backend name.
        UnavailableError: the backend's library (torch, Triton) does not import.
    """
    backend = resolve_backend(backend)
    try:
        module = importlib.import_module(f".{backend}_ops", __package__)
    except ImportError as exc:
        raise UnavailableError(
            f"kernel backend {backend!r} is not available: {exc}. Install it or pick another backend."
        ) from exc
    fn = getattr(module, name, None)
    if fn is None and backend == "triton":
        return backend_function("torch", name)
    return fn if callable(fn) else None


def split_gate_up(x: Any, up: Any | None) -> tuple[Any, Any]:
    """``(gate, up)`` for ``silu_mul``: the two-argument form as given, or the halves of ``x``.

    Works on torch tensors and numpy arrays alike (``ndim``, ``shape`` and ``[..., a:b]``).

    Args:
        x: The gate, or ``[..., 2 * d]`` holding ``[gate | up]`` (gate first, vLLM's layout).
        up: The up projection, or ``None`` for the one-argument form.

    Returns:
        ``(gate, up)``.

    Raises:
        InvalidArgumentError: one-argument form with an odd last dimension (or a scalar).
    """
    if up is not None:
        return x, up
    if x.ndim == 0 or x.shape[-1] % 2:
        raise InvalidArgumentError(
            f"silu_mul(x) needs a last dimension of even size holding [gate | up]; got shape {tuple(x.shape)}. "
            "Pass silu_mul(gate, up) for separate tensors."
        )
    d = x.shape[-1] // 2
    return x[..., :d], x[..., d:]


def qkv_split_sizes(qkv_rows: int, nh: int, nkv: int, hd: int) -> tuple[int, int]:
    """Rows of q and of k (= v) in a stacked QKV weight, after checking them.

    Args:
        qkv_rows: Rows of the stacked weight.
        nh: Query heads.
        nkv: Key/value heads.
        hd: Head dimension.

    Returns:
        ``(nh * hd, nkv * hd)``.

    Raises:
        InvalidArgumentError: non-positive sizes, or a weight of the wrong height.
    """
    for label, v in (("nh", nh), ("nkv", nkv), ("hd", hd)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise InvalidArgumentError(f"fused_qkv_projection: {label} must be a positive int; got {v!r}.")
    if qkv_rows != (nh + 2 * nkv) * hd:
        raise InvalidArgumentError(
            f"fused_qkv_projection: the qkv weight has {qkv_rows} rows; (nh + 2*nkv) * hd = ({nh} + 2*{nkv}) * {hd} "
            f"= {(nh + 2 * nkv) * hd} expected. Stack the q, k and v weights along dim 0."
        )
    return nh * hd, nkv * hd


def check_inplace_flag(inplace: object) -> None:
    """``add_rmsnorm``'s ``inplace`` must be ``True`` or ``False`` (every backend takes it the same way).

    Args:
        inplace: The argument.

    Raises:
        InvalidArgumentTypeError: Anything else (``1``, ``None``, a numpy bool).
    """
    if type(inplace) is not bool:
        raise InvalidArgumentTypeError(f"add_rmsnorm: inplace must be True or False; got {inplace!r}.")
