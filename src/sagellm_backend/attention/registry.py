"""What each attention backend and implementation supports, as data, and choosing one by priority.

Two tables. :data:`ATTENTION_BACKENDS`: the classes :func:`~.selector.create_attention_backend` builds by name.
:data:`ATTENTION_IMPLS`: the op sets those backends run, one row each, with the devices, dtypes, KV-cache
dtypes, head sizes, block sizes and variants it supports and a priority. A call is served by the
highest-priority row that supports it (:func:`select_impl`, through :func:`sagellm_backend.selection.select`);
asking for a combination no row supports is an ``UnsupportedOperationError`` listing what each row supports.

A new implementation is one op module plus one row of :data:`ATTENTION_IMPLS`; a new backend is one module
with its class plus one row of :data:`ATTENTION_BACKENDS` (and rows for its implementations).

Importing this module imports no torch; :meth:`AttentionImpl.load_ops` imports the op modules on first use.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from ..selection import select

__all__ = [
    "ATTENTION_BACKENDS",
    "ATTENTION_IMPLS",
    "ATTENTION_VARIANTS",
    "IMPL_ENV",
    "KV_CACHE_DTYPES",
    "AttentionBackendRow",
    "AttentionImpl",
    "AttentionRequest",
    "SizeRule",
    "describe_attention_impls",
    "impls_of",
    "select_impl",
]

_LOG = logging.getLogger(__name__)

#: Variant options of the paged backend, by vLLM's ``AttentionImpl`` names.
ATTENTION_VARIANTS: tuple[str, ...] = ("sliding_window", "logits_soft_cap", "alibi_slopes")
#: Canonical ``kv_cache_dtype`` values (vLLM's names; ``"fp8"`` is ``"fp8_e4m3"``); ``auto`` stores the cache in
#: the query's dtype.
KV_CACHE_DTYPES: tuple[str, ...] = ("auto", "fp8_e4m3", "fp8_e5m2")
#: Environment variable forcing the paged implementation (``torch``, ``triton`` or ``auto``).
IMPL_ENV = "SAGELLM_PAGED_ATTENTION_IMPL"


@dataclass(frozen=True)
class SizeRule:
    """Sizes an implementation takes: ``minimum <= n <= maximum``, optionally powers of two only.

    Attributes:
        minimum: Smallest size.
        maximum: Largest size, or None for no bound.
        power_of_two: Only powers of two.
    """

    minimum: int = 1
    maximum: int | None = None
    power_of_two: bool = False

    def fits(self, n: int) -> bool:
        """Whether ``n`` is allowed.

        Args:
            n: The size.

        Returns:
            True when allowed.
        """
        if n < self.minimum or (self.maximum is not None and n > self.maximum):
            return False
        return not self.power_of_two or n & (n - 1) == 0

    def __str__(self) -> str:
        span = f">= {self.minimum}" if self.maximum is None else f"{self.minimum}..{self.maximum}"
        if self.power_of_two:
            return f"powers of two {span}"
        return "any" if span == ">= 1" else span


@dataclass(frozen=True)
class AttentionRequest:
    """What one call needs.

    Attributes:
        device_type: Torch device type of the tensors (``"cpu"``, ``"cuda"`` ...).
        dtype: Query dtype name (``"float16"`` ...).
        head_size: Head dimension.
        block_size: Cache block size, or None for a call without a paged cache.
        kv_cache_dtype: One of :data:`KV_CACHE_DTYPES`.
        variants: Names of the variants in use (:data:`ATTENTION_VARIANTS`).
        device_index: The device's ordinal where a rule depends on the card (fp8's compute capability), else None
            (the current device).
    """

    device_type: str
    dtype: str
    head_size: int
    block_size: int | None = None
    kv_cache_dtype: str = "auto"
    variants: frozenset[str] = field(default_factory=frozenset)
    device_index: int | None = None

    def __str__(self) -> str:
        parts = [f"device {self.device_type}", f"dtype {self.dtype}", f"head size {self.head_size}"]
        if self.block_size is not None:
            parts.append(f"block size {self.block_size}")
        if self.kv_cache_dtype != "auto":
            parts.append(f"kv_cache_dtype {self.kv_cache_dtype}")
        if self.variants:
            parts.append(f"variants {sorted(self.variants)}")
        return ", ".join(parts)


@dataclass(frozen=True)
class AttentionImpl:
    """One implementation of an attention backend and what it supports.

    Attributes:
        backend: The backend it serves (a name of :data:`ATTENTION_BACKENDS`).
        name: Implementation name, unique per backend (``"triton"``, ``"torch"``).
        priority: Higher is preferred when several support a call.
        devices: Torch device types, or ``("*",)`` for every torch device.
        dtypes: Query dtype names.
        kv_cache_dtypes: Values of ``kv_cache_dtype`` (``()`` for a backend without a cache).
        head_sizes: Head dimensions.
        block_sizes: Cache block sizes, or None for a backend that keeps no cache.
        variants: Variant options it honours.
        requires: Modules that must be importable.
        ops: Modules holding the op functions (``store_kv``, ``paged_decode``, ``paged_prefill``), searched in
            order, relative to this package; empty for a backend computing in its own class.
        fp8_min_capability: fp8 KV caches need an NVIDIA GPU (not ROCm) of at least this compute capability,
            or None for no such need.
    """

    backend: str
    name: str
    priority: int
    devices: tuple[str, ...]
    dtypes: tuple[str, ...]
    kv_cache_dtypes: tuple[str, ...]
    head_sizes: SizeRule
    block_sizes: SizeRule | None
    variants: tuple[str, ...]
    requires: tuple[str, ...] = ()
    ops: tuple[str, ...] = ()
    fp8_min_capability: tuple[int, int] | None = None

    def installed(self) -> str | None:
        """Why it cannot run in this environment (a required module is missing), or None.

        Returns:
            The reason or None; only module specs are looked up (nothing is imported).
        """
        missing = [m for m in self.requires if not _has(m)]
        return f"{', '.join(missing)} not installed" if missing else None

    def why_not(self, request: object) -> str | None:
        """None when this implementation serves ``request``, else what it supports instead.

        Args:
            request: An :class:`AttentionRequest`.

        Returns:
            The reason, or None.
        """
        assert isinstance(request, AttentionRequest)  # only called by select_impl with its own request
        r = request
        if "*" not in self.devices and r.device_type not in self.devices:
            return f"runs on {list(self.devices)}, not {r.device_type}"
        if r.dtype not in self.dtypes:
            return f"dtypes {list(self.dtypes)}, not {r.dtype}"
        if not self.head_sizes.fits(r.head_size):
            return f"head sizes {self.head_sizes}, not {r.head_size}"
        if r.block_size is not None:
            if self.block_sizes is None:
                return "keeps no paged KV cache"
            if not self.block_sizes.fits(r.block_size):
                return f"block sizes {self.block_sizes}, not {r.block_size}"
        if r.kv_cache_dtype not in self.kv_cache_dtypes and not (r.block_size is None and r.kv_cache_dtype == "auto"):
            return f"kv_cache_dtype {list(self.kv_cache_dtypes)}, not {r.kv_cache_dtype!r}"
        extra = sorted(r.variants - set(self.variants))
        if extra:
            return f"variants {list(self.variants)}, not {extra}"
        if r.kv_cache_dtype != "auto" and self.fp8_min_capability is not None:
            found = _cuda_capability(r.device_index)
            if found is None or found < self.fp8_min_capability:
                need = ".".join(map(str, self.fp8_min_capability))
                return f"fp8 KV caches need an NVIDIA GPU of compute capability >= {need} (found {found or 'none'})"
        missing = self.installed()
        if missing is not None:
            return missing
        if self.ops:
            try:
                self.load_ops()
            except ImportError as exc:
                return f"its ops do not import ({exc})"
        return None

    def load_ops(self) -> Any:
        """The op set (imported once; an import failure is remembered).

        Returns:
            A namespace with ``store_kv``, ``paged_decode`` and ``paged_prefill`` (and ``paged_decode_store``
            where the op modules have it).

        Raises:
            ImportError: An op module or an op is missing, or an op module failed to import.
        """
        return _load_ops(self.ops)

    def describe(self) -> dict[str, Any]:
        """What it supports, as plain data (for ``sagellm-backend info``).

        Returns:
            A JSON-serialisable dict.
        """
        return {
            "backend": self.backend,
            "implementation": self.name,
            "priority": self.priority,
            "devices": list(self.devices),
            "dtypes": list(self.dtypes),
            "kv_cache_dtypes": list(self.kv_cache_dtypes),
            "head_sizes": str(self.head_sizes),
            "block_sizes": None if self.block_sizes is None else str(self.block_sizes),
            "variants": list(self.variants),
            "fp8_min_capability": None if self.fp8_min_capability is None else list(self.fp8_min_capability),
            "unavailable_reason": self.installed(),
        }


@dataclass(frozen=True)
class AttentionBackendRow:
    """An attention backend class and its facts.

    Attributes:
        name: Backend name.
        cls: ``"module:Class"``, the module relative to this package.
        supports_paged_attention: Whether it keeps a paged KV cache.
        aliases: Other accepted spellings.
    """

    name: str
    cls: str
    supports_paged_attention: bool
    aliases: tuple[str, ...] = ()

    def load_class(self) -> Any:
        """The backend class (imports its module).

        Returns:
            The class.
        """
        module, _, attr = self.cls.partition(":")
        return getattr(importlib.import_module(module, __package__), attr)


_FLOATS = ("float16", "bfloat16", "float32")

#: Backends by name; the first is the default every provider gets.
ATTENTION_BACKENDS: tuple[AttentionBackendRow, ...] = (
    AttentionBackendRow("sdpa", ".sdpa:SDPAAttentionBackend", False, ("default", "torch", "torch_sdpa")),
    AttentionBackendRow("paged", ".paged:PagedAttentionBackend", True, ("paged_attention", "paged-attention")),
)

#: Implementations; the highest priority that supports a call serves it.
ATTENTION_IMPLS: tuple[AttentionImpl, ...] = (
    AttentionImpl(
        backend="paged", name="triton", priority=20, devices=("cuda",), dtypes=_FLOATS, kv_cache_dtypes=KV_CACHE_DTYPES,
        head_sizes=SizeRule(16, 256, True), block_sizes=SizeRule(8, None, True), variants=ATTENTION_VARIANTS,
        requires=("torch", "triton"), ops=(".paged_triton", ".paged_triton_prefill"), fp8_min_capability=(8, 9),
    ),
    AttentionImpl(
        backend="paged", name="torch", priority=10, devices=("*",), dtypes=(*_FLOATS, "float64"),
        kv_cache_dtypes=KV_CACHE_DTYPES, head_sizes=SizeRule(), block_sizes=SizeRule(), variants=ATTENTION_VARIANTS,
        requires=("torch",), ops=(".paged_torch",),
    ),
    AttentionImpl(
        backend="sdpa", name="torch", priority=10, devices=("*",), dtypes=(*_FLOATS, "float64"), kv_cache_dtypes=(),
        head_sizes=SizeRule(), block_sizes=None, variants=(), requires=("torch",),
    ),
)  # fmt: skip


def _cuda_capability(index: int | None = None) -> tuple[int, int] | None:
    """The compute capability of NVIDIA GPU ``index`` (None: the current one), or None (no CUDA, or a ROCm build)."""
    try:
        import torch
    except ImportError:
        return None
    if torch.version.hip is not None or not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(index)
    return int(major), int(minor)


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


_OPS: dict[tuple[str, ...], Any] = {}
_OPS_LOCK = threading.Lock()
_OP_NAMES = ("store_kv", "paged_decode", "paged_prefill")
#: Ops an implementation may add: ``paged_decode_store`` (``store_kv`` then ``paged_decode`` of one new token per
#: sequence, fused; same arguments as ``paged_triton.paged_decode_store``).
_OPTIONAL_OP_NAMES = ("paged_decode_store",)


def _load_ops(modules: tuple[str, ...]) -> Any:
    with _OPS_LOCK:
        if modules not in _OPS:
            try:
                _OPS[modules] = _import_ops(modules)
            except ImportError as exc:
                _OPS[modules] = exc
            except Exception as exc:  # a broken install (Triton's compiler probe ...) must not break attention
                _LOG.warning("attention ops %s failed to load (%s: %s)", modules, type(exc).__name__, exc)
                _OPS[modules] = ImportError(f"{type(exc).__name__}: {exc}")
        ops = _OPS[modules]
    if isinstance(ops, ImportError):
        raise ops
    return ops


def _import_ops(modules: tuple[str, ...]) -> SimpleNamespace:
    found: dict[str, Any] = {}
    for path in modules:
        module = importlib.import_module(path, __package__)
        for op in (*_OP_NAMES, *_OPTIONAL_OP_NAMES):
            if op not in found and callable(getattr(module, op, None)):
                found[op] = getattr(module, op)
    missing = [op for op in _OP_NAMES if op not in found]
    if missing:
        raise ImportError(f"{list(modules)} lack {missing}")
    return SimpleNamespace(**found)


def impls_of(backend: str) -> list[AttentionImpl]:
    """The implementations of ``backend``, highest priority first.

    Args:
        backend: A backend name.

    Returns:
        Its rows of :data:`ATTENTION_IMPLS`.
    """
    return sorted((i for i in ATTENTION_IMPLS if i.backend == backend), key=lambda i: (-i.priority, i.name))


@functools.lru_cache(maxsize=256)
def _select(backend: str, request: AttentionRequest, forced: str) -> AttentionImpl:
    return select(
        impls_of(backend), request, what=f"{backend} attention implementation", forced=forced, forced_by=IMPL_ENV
    )


def select_impl(backend: str, request: AttentionRequest) -> AttentionImpl:
    """The implementation of ``backend`` that serves ``request`` (``SAGELLM_PAGED_ATTENTION_IMPL`` may force one).

    Args:
        backend: A backend name.
        request: What the call needs.

    Returns:
        The highest-priority implementation that supports the request.

    Raises:
        InvalidArgumentError: The environment variable names no implementation.
        UnsupportedOperationError: None supports the request (or not the forced one); the message says what
            each supports.
    """
    forced = os.environ.get(IMPL_ENV, "auto").strip().lower() if backend == "paged" else "auto"
    return _select(backend, request, forced)


def describe_attention_impls() -> list[dict[str, Any]]:
    """Every implementation and what it supports, the backend's default first.

    Returns:
        One dict per row (:meth:`AttentionImpl.describe`).
    """
    order = {b.name: i for i, b in enumerate(ATTENTION_BACKENDS)}
    rows = sorted(ATTENTION_IMPLS, key=lambda i: (order.get(i.backend, len(order)), -i.priority, i.name))
    return [i.describe() for i in rows]
