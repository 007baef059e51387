"""The built-in vendors: one module each, holding every fact about its vendor (a
:class:`~sagellm_backend.vendors.base.VendorSpec`), its detection and its provider class.

:data:`BUILTIN_VENDORS` maps each name to the dotted path of its spec, imported on first use; the
registry and the ``sagellm.backends`` entry points in ``pyproject.toml`` are derived from (and
tested against) this table.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import VendorSpec

__all__ = ["BUILTIN_VENDORS", "load_vendor"]

BUILTIN_VENDORS = MappingProxyType(
    {
        "cuda": "sagellm_backend.vendors.cuda:CUDA",
        "rocm": "sagellm_backend.vendors.rocm:ROCM",
        "ascend": "sagellm_backend.vendors.ascend:ASCEND",
        "kunlun": "sagellm_backend.vendors.kunlun:KUNLUN",
        "musa": "sagellm_backend.vendors.musa:MUSA",
        "cpu": "sagellm_backend.vendors.cpu:CPU",
        "mock": "sagellm_backend.vendors.mock:MOCK",
    }
)


def load_vendor(name: str) -> VendorSpec:
    """Import a built-in vendor's spec.

    Args:
        name: A key of :data:`BUILTIN_VENDORS`.

    Returns:
        The spec.
    """
    module, _, attr = BUILTIN_VENDORS[name].partition(":")
    spec: VendorSpec = getattr(importlib.import_module(module), attr)
    return spec
