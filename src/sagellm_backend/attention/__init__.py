"""Attention backends (``sdpa``, ``paged``), their metadata, builder, selector and diagnostics.

Importing this package does not import torch: the backends and ops load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import AttentionBackend, AttentionMetadata
from .builder import PagedAttentionMetadataBuilder
from .diagnostics import get_attention_diagnostics, record_attention_call, reset_attention_diagnostics
from .selector import (
    create_attention_backend,
    get_attention_backend_availability,
    is_attention_backend_available,
    supported_attention_backends,
)

if TYPE_CHECKING:
    from .paged import PagedAttentionBackend
    from .sdpa import SDPAAttentionBackend
    from .wrapper import PagedAttentionWrapper

__all__ = [
    "AttentionBackend",
    "AttentionMetadata",
    "PagedAttentionBackend",
    "PagedAttentionMetadataBuilder",
    "PagedAttentionWrapper",
    "SDPAAttentionBackend",
    "create_attention_backend",
    "get_attention_backend_availability",
    "get_attention_diagnostics",
    "is_attention_backend_available",
    "record_attention_call",
    "reset_attention_diagnostics",
    "supported_attention_backends",
]

_LAZY = {"PagedAttentionBackend": ".paged", "PagedAttentionWrapper": ".wrapper", "SDPAAttentionBackend": ".sdpa"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
