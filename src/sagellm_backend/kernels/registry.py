"""Kernel registry: named implementations with priorities and fallback across provider types.

Registrations are keyed by *target*: a provider name (``"cuda"``, ``"kunlun"``), a device type
(``"cuda"``, ``"npu"``), or ``"*"`` for any provider. A provider resolves a name through its
own instance registrations first, then the global registry in the order
``(provider name, device type, "*")``; within one target the highest priority wins, and among
equal priorities the latest registration wins. So a generic torch kernel registered for ``"*"``
serves every provider until a faster one is registered for ``"cuda"``.

The choice is :func:`sagellm_backend.selection.select` over :class:`KernelChoice` candidates, whose
priority is ``(target place, priority, registration order)``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgumentError, InvalidArgumentTypeError, KernelNotFoundError
from ..protocol import KernelKind, coerce_enum
from ..selection import rank, select

__all__ = ["KernelChoice", "KernelEntry", "KernelRegistry", "ProviderKernels", "global_kernels", "register_kernel"]

_order = itertools.count()


@dataclass(frozen=True)
class KernelEntry:
    """One registration.

    Attributes:
        name: Kernel name.
        impl: The callable.
        target: Provider name, device type, or ``"*"``.
        priority: Higher wins.
        kind: The :class:`KernelKind`, if given.
        seq: Registration order (later wins ties).
    """

    name: str
    impl: Callable[..., Any]
    target: str
    priority: int = 0
    kind: KernelKind | None = None
    seq: int = field(default_factory=lambda: next(_order))


@dataclass(frozen=True)
class KernelChoice:
    """A registration as a :func:`sagellm_backend.selection.select` candidate of one search.

    Attributes:
        entry: The registration.
        place: Rank of its target in the search (0 is searched first), or None when the search skips it.
    """

    entry: KernelEntry
    place: int | None

    @property
    def name(self) -> str:
        """``target#order``: unique among a kernel's registrations."""
        return f"{self.entry.target}#{self.entry.seq}"

    @property
    def priority(self) -> tuple[int, int, int]:
        """Earlier target first, then higher priority, then the latest registration."""
        return (-(self.place if self.place is not None else 1 << 30), self.entry.priority, self.entry.seq)

    def why_not(self, request: object) -> str | None:
        """``None`` when the search covers the registration's target, else which target it is registered for.

        Args:
            request: The search (appears in messages only).

        Returns:
            None, or the reason.
        """
        return None if self.place is not None else f"registered for target {self.entry.target!r}"


def check_kernel_name(name: object) -> str:
    """A kernel name: a non-empty string (every lookup and registration checks it first).

    Args:
        name: What the caller passed.

    Returns:
        The name.

    Raises:
        InvalidArgumentTypeError: not a string.
        InvalidArgumentError: the empty string.
    """
    if not isinstance(name, str):
        raise InvalidArgumentTypeError(
            f"kernel name must be a string such as 'rmsnorm'; got {type(name).__name__} {name!r}."
        )
    if not name:
        raise InvalidArgumentError("kernel name must be a non-empty string; got ''.")
    return name


def _check(name: object, impl: object, priority: object) -> None:
    check_kernel_name(name)
    if not callable(impl):
        raise InvalidArgumentTypeError(f"kernel {name!r} implementation must be callable; got {type(impl).__name__}.")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidArgumentTypeError(f"kernel priority must be an int; got {priority!r}.")


class KernelRegistry:
    """Thread-safe map of kernel name -> registrations."""

    def __init__(self) -> None:
        self._entries: dict[str, list[KernelEntry]] = {}
        self._lock = threading.Lock()

    def register(
        self,
        name: str,
        impl: Callable[..., Any],
        *,
        targets: Iterable[str] = ("*",),
        priority: int = 0,
        kind: Any = None,
    ) -> None:
        """Register ``impl`` under ``name`` for each of ``targets``.

        Args:
            name: Kernel name.
            impl: Callable implementation.
            targets: Provider names / device types, or ``"*"``.
            priority: Higher wins.
            kind: Optional :class:`KernelKind` (or its string value).

        Raises:
            InvalidArgumentError: empty name or no targets.
            InvalidArgumentTypeError: ``name`` not a string, ``impl`` not callable, ``priority`` not an int.
        """
        _check(name, impl, priority)
        kind_value = None if kind is None else coerce_enum(KernelKind, kind, what="kernel kind")
        if isinstance(targets, (bytes, bytearray)) or not isinstance(targets, (str, Iterable)):
            raise InvalidArgumentTypeError(
                f"targets must be a provider name, a device type, '*', or a list of them; got {targets!r}."
            )
        target_list = [targets] if isinstance(targets, str) else list(targets)
        if any(not isinstance(t, str) or not t for t in target_list):
            raise InvalidArgumentTypeError(f"every target must be a non-empty string; got {target_list!r}.")
        if not target_list:
            raise InvalidArgumentError(f"kernel {name!r} needs at least one target; got none.")
        with self._lock:
            bucket = self._entries.setdefault(name, [])
            for target in target_list:
                bucket.append(KernelEntry(name, impl, target, priority, kind_value))

    def unregister(self, name: str, impl: Callable[..., Any] | None = None) -> int:
        """Remove registrations of ``name`` (only those of ``impl`` when given).

        Args:
            name: Kernel name.
            impl: Only remove this implementation.

        Returns:
            How many registrations were removed.
        """
        with self._lock:
            bucket = self._entries.get(name, [])
            keep = [e for e in bucket if impl is not None and e.impl is not impl]
            removed = len(bucket) - len(keep)
            if keep:
                self._entries[name] = keep
            else:
                self._entries.pop(name, None)
            return removed

    def choices(self, name: str, search_order: Sequence[str], *, first_place: int = 0) -> list[KernelChoice]:
        """Every registration of ``name`` as a candidate of a search over ``search_order``.

        Args:
            name: Kernel name.
            search_order: Targets in fallback order.
            first_place: Place of the first target (a search over several registries numbers them on).

        Returns:
            One choice per registration, in registration order.

        Raises:
            InvalidArgumentTypeError / InvalidArgumentError: ``name`` is not a non-empty string.
        """
        check_kernel_name(name)
        places: dict[str, int] = {}
        for i, target in enumerate(search_order, first_place):
            places.setdefault(target, i)
        with self._lock:
            bucket = list(self._entries.get(name, ()))
        return [KernelChoice(e, places.get(e.target)) for e in bucket]

    def candidates(self, name: str, search_order: Sequence[str]) -> list[KernelEntry]:
        """Registrations usable by a provider with this search order, best first.

        Args:
            name: Kernel name.
            search_order: Targets in fallback order.

        Returns:
            Matching entries, grouped by target in ``search_order``, best first in each.

        Raises:
            InvalidArgumentTypeError / InvalidArgumentError: ``name`` is not a non-empty string.
        """
        return [c.entry for c in rank(self.choices(name, search_order)) if c.place is not None]

    def names(self) -> list[str]:
        """All registered kernel names, sorted."""
        with self._lock:
            return sorted(self._entries)

    def kinds(self, search_order: Sequence[str]) -> set[KernelKind]:
        """Kernel kinds available to a provider with this search order.

        Args:
            search_order: Targets in fallback order.

        Returns:
            The set of kinds.
        """
        with self._lock:
            entries = [e for bucket in self._entries.values() for e in bucket]
        return {e.kind for e in entries if e.kind is not None and e.target in search_order}


global_kernels = KernelRegistry()
"""The process-wide registry every provider falls back to."""


def register_kernel(
    name: str, impl: Callable[..., Any], *, targets: Iterable[str] = ("*",), priority: int = 0, kind: Any = None
) -> None:
    """Register a kernel in the global registry (see :meth:`KernelRegistry.register`).

    Args:
        name: Kernel name.
        impl: Callable implementation.
        targets: Provider names / device types, or ``"*"`` for every provider.
        priority: Higher wins.
        kind: Optional :class:`KernelKind`.
    """
    global_kernels.register(name, impl, targets=targets, priority=priority, kind=kind)


class ProviderKernels:
    """A provider's view: its own registrations first, then the global registry."""

    def __init__(self, search_order: Sequence[str]) -> None:
        self.search_order = tuple(dict.fromkeys(search_order))
        self.local = KernelRegistry()

    def register(self, name: str, impl: Callable[..., Any], *, priority: int = 0, kind: Any = None) -> None:
        """Register for this provider instance only.

        Args:
            name: Kernel name.
            impl: Callable implementation.
            priority: Higher wins.
            kind: Optional :class:`KernelKind`.
        """
        self.local.register(name, impl, targets=("local",), priority=priority, kind=kind)

    def candidates(self, name: str) -> list[KernelEntry]:
        """Resolution order for ``name``: local by priority, then global by target order.

        Args:
            name: Kernel name.

        Returns:
            Entries, best first.
        """
        return [c.entry for c in rank(self._choices(name)) if c.place is not None]

    def _choices(self, name: str) -> list[KernelChoice]:
        """Local registrations at place 0, then the global ones by ``search_order``."""
        return self.local.choices(name, ("local",)) + global_kernels.choices(name, self.search_order, first_place=1)

    def get(self, name: str) -> Callable[..., Any]:
        """Best implementation of ``name``.

        Args:
            name: Kernel name.

        Returns:
            The callable.

        Raises:
            KernelNotFoundError: nothing registered for this provider.
        """
        found = self._choices(name)
        if all(c.place is None for c in found):
            known = sorted(set(self.local.names()) | set(global_kernels.names()))
            raise KernelNotFoundError(
                f"Kernel {name!r} not found for targets {list(self.search_order)}. "
                f"Registered kernels: {known or 'none'}. "
                "Register one with provider.register_kernel(name, impl) or "
                "sagellm_backend.register_kernel(name, impl, targets=[...]).",
                kernel=name,
            )
        return select(found, f"kernel {name!r} for targets {list(self.search_order)}", what="kernel").entry.impl

    def kinds(self) -> set[KernelKind]:
        """Kinds of every kernel this provider can resolve."""
        return self.local.kinds(("local",)) | global_kernels.kinds(self.search_order)
