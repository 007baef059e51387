"""What the contract says of a kernel registration (``BackendProvider.kernel_candidates`` returns
them; :class:`sagellm_backend.kernels.KernelEntry` is the implementation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["KernelCandidate"]


class KernelCandidate(Protocol):
    """One registration that could serve a kernel name."""

    @property
    def name(self) -> str:
        """Kernel name."""

    @property
    def impl(self) -> Callable[..., Any]:
        """The callable."""

    @property
    def target(self) -> str:
        """Provider name, device type, or ``"*"``."""

    @property
    def priority(self) -> int:
        """Higher wins."""

    @property
    def kind(self) -> Any:
        """The :class:`~sagellm_backend.protocol.KernelKind`, or ``None``."""
