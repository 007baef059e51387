"""Provider registry: the ``sagellm.backends`` entry-point group, resolved lazily.

Entries are dotted paths (``"pkg.module:factory"``) imported on first use, so listing providers
imports no SDK until a provider is detected or created. This package registers ``cpu``, ``cuda``,
``rocm``, ``ascend``, ``kunlun``, ``musa`` and ``mock`` (with aliases: the seed release's names
``pytorch-cuda``, ``pytorch-ascend`` and ``ascend_cann``, and ``dcu``/``hygon``/``amd`` for
``rocm``, ``mthreads`` for ``musa``); providers of other installed distributions appear the same
way, through their own ``[project.entry-points."sagellm.backends"]``.

A factory may carry ``factory.detect`` (a side-effect-free callable returning
:class:`~sagellm_backend.providers.config.Availability`) and ``factory.priority`` (its rank in
``auto``; ``None`` keeps it out). :func:`~sagellm_backend.providers.config.provider_factory`
sets both.

``get_provider("auto")`` picks the available provider of highest priority: cuda (100) >
rocm (95) > ascend (90) > kunlun (80) > musa (70) > cpu (10). The ``SAGELLM_BACKEND`` environment
variable, when set, replaces ``"auto"`` with the name it holds; explicit names are never overridden.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from types import MappingProxyType
from typing import Any

from .api.provider import BackendProvider
from .core.config import Availability
from .errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ProviderNotFoundError,
    UnavailableError,
)
from .vendors import BUILTIN_VENDORS, load_vendor

__all__ = [
    "ENTRY_POINT_GROUP",
    "ProviderEntry",
    "ProviderInfo",
    "available_providers",
    "get_provider",
    "list_providers",
    "provider_registry",
    "refresh_providers",
    "register_provider",
    "resolve_provider_name",
]

ENTRY_POINT_GROUP = "sagellm.backends"
_SELF_DIST = "isagellm-backend"


@dataclass
class ProviderEntry:
    """One registered provider.

    Attributes:
        name: Canonical name.
        target: ``"module:attribute"`` of the factory, or ``None`` for an object registered at run time.
        source: ``"builtin"``, the distribution that declared the entry point, or ``"runtime"``.
        install_hint: What to install when it is unavailable.
        aliases: Other names resolving to this entry.
        notes: Problems found while registering (e.g. an ignored conflicting entry point).
    """

    name: str
    target: str | None
    source: str
    install_hint: str = ""
    aliases: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _factory: Callable[..., Any] | None = field(default=None, repr=False)

    def load(self) -> Callable[..., Any]:
        """Import and return the factory (cached).

        Returns:
            The factory callable.

        Raises:
            UnavailableError: the module cannot be imported (carries the install hint).
        """
        if self._factory is not None:
            return self._factory
        assert self.target is not None
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
            factory = module
            for part in attr.split("."):
                factory = getattr(factory, part)
        except (ImportError, AttributeError) as exc:
            raise UnavailableError(
                f"provider {self.name!r} ({self.target}) cannot be loaded: {exc}. "
                f"Install {self.install_hint or 'the distribution that provides it'}.",
                provider=self.name,
            ) from exc
        if not callable(factory):
            raise UnavailableError(f"provider {self.name!r}: {self.target} is not callable.")
        self._factory = factory
        return factory

    @property
    def priority(self) -> int | None:
        """Rank in ``auto`` (``None``: never picked automatically)."""
        try:
            value = getattr(self.load(), "priority", None)
        except UnavailableError:
            return None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def detect(self) -> Availability:
        """Run the factory's detection hook (no hook: assumed available).

        Returns:
            The availability and why.
        """
        try:
            factory = self.load()
        except UnavailableError as exc:
            return Availability(False, str(exc))
        hook = getattr(factory, "detect", None)
        if hook is None:
            return Availability(True, "no detection hook; assumed available")
        try:
            return Availability.coerce(hook())
        except Exception as exc:  # a broken third-party hook must not break listing
            return Availability(False, f"detection raised {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class ProviderInfo:
    """What :func:`list_providers` reports for one provider."""

    name: str
    available: bool
    reason: str
    priority: int | None
    source: str
    aliases: tuple[str, ...]
    device_count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict.

        Returns:
            The fields as a dict.
        """
        out = asdict(self)
        out["aliases"] = list(self.aliases)
        return out


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._entries: dict[str, ProviderEntry] = {}
        self._aliases: dict[str, str] = {}
        self._discovered = False

    def _discover(self) -> None:
        with self._lock:
            if self._discovered:
                return
            for name in BUILTIN_VENDORS:
                spec = load_vendor(name)
                self._entries.setdefault(name, ProviderEntry(name, spec.factory_path, "builtin", spec.install_hint))
                for alias in spec.aliases:
                    self._aliases.setdefault(alias, name)
                    if alias not in self._entries[name].aliases:
                        self._entries[name].aliases.append(alias)
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                self._add_entry_point(ep)
            self._discovered = True

    def _add_entry_point(self, ep: metadata.EntryPoint) -> None:
        dist = getattr(getattr(ep, "dist", None), "name", None) or "unknown distribution"
        canonical = self._aliases.get(ep.name, ep.name)
        existing = self._entries.get(canonical)
        if existing is not None:
            if existing.target == ep.value or existing.source == "runtime":
                return  # our own pyproject entries, or an alias pointing at the same factory
            existing.notes.append(
                f"entry point {ep.name} = {ep.value} from {dist} ignored: the name is taken by "
                f"{existing.target} ({existing.source}); register it under another name"
            )
            return
        self._entries[ep.name] = ProviderEntry(ep.name, ep.value, dist)

    def refresh(self) -> None:
        with self._lock:
            runtime = {k: v for k, v in self._entries.items() if v.source == "runtime"}
            self._entries = dict(runtime)
            self._aliases = {a: n for a, n in self._aliases.items() if n in runtime}
            self._discovered = False
        self._discover()

    def entries(self) -> dict[str, ProviderEntry]:
        self._discover()
        with self._lock:
            return dict(self._entries)

    def resolve(self, name: str) -> ProviderEntry:
        self._discover()
        key = name.strip().lower() if isinstance(name, str) else name
        with self._lock:
            canonical = self._aliases.get(key, key)
            entry = self._entries.get(canonical)
            if entry is None:
                known = sorted(self._entries)
                aliases = sorted(self._aliases)
                raise ProviderNotFoundError(
                    f"unknown provider {name!r}. Known providers: {', '.join(known)}"
                    f" (aliases: {', '.join(aliases)}), or 'auto'. Third-party providers register "
                    f"through the {ENTRY_POINT_GROUP!r} entry-point group.",
                    name=name,
                )
            return entry

    def register(
        self, name: str, factory: Callable[..., Any] | str, *, overwrite: bool, install_hint: str, aliases: list[str]
    ) -> ProviderEntry:
        self._discover()
        if not isinstance(name, str) or not name.strip() or name.strip().lower() == "auto":
            raise InvalidArgumentError(f"provider name must be a non-empty string other than 'auto'; got {name!r}.")
        key = name.strip().lower()
        with self._lock:
            if (key in self._entries or key in self._aliases) and not overwrite:
                raise InvalidArgumentError(
                    f"a provider named {key!r} is already registered; pass overwrite=True to replace it."
                )
            if isinstance(factory, str):
                if ":" not in factory:
                    raise InvalidArgumentError(f"a dotted factory path looks like 'pkg.module:attr'; got {factory!r}.")
                entry = ProviderEntry(key, factory, "runtime", install_hint, list(aliases))
            elif callable(factory):
                entry = ProviderEntry(key, None, "runtime", install_hint, list(aliases), _factory=factory)
            else:
                raise InvalidArgumentTypeError(
                    f"factory must be callable or a 'module:attr' string; got {type(factory).__name__}."
                )
            self._aliases.pop(key, None)
            self._entries[key] = entry
            for alias in aliases:
                self._aliases[alias.strip().lower()] = key
            return entry


_registry = _Registry()


class _ReadOnlyRegistry(Mapping[str, ProviderEntry]):
    """Read-only live view of the registered providers (name -> :class:`ProviderEntry`)."""

    def __getitem__(self, key: str) -> ProviderEntry:
        return MappingProxyType(_registry.entries())[key]

    def __iter__(self) -> Any:
        return iter(_registry.entries())

    def __len__(self) -> int:
        return len(_registry.entries())

    def __repr__(self) -> str:
        return f"provider_registry({sorted(_registry.entries())})"


provider_registry: Mapping[str, ProviderEntry] = _ReadOnlyRegistry()
"""Read-only mapping of every registered provider (entries are created on first access)."""


def refresh_providers() -> None:
    """Re-read the entry points (after installing a distribution at run time)."""
    _registry.refresh()


def register_provider(
    name: str,
    factory: Callable[..., Any] | str,
    *,
    overwrite: bool = False,
    install_hint: str = "",
    aliases: list[str] | None = None,
) -> None:
    """Register a provider at run time (entry points are the usual way).

    Args:
        name: Provider name.
        factory: Callable, or a ``"module:attr"`` path imported on first use.
        overwrite: Replace an existing registration of that name.
        install_hint: Shown when it cannot be loaded.
        aliases: Other names for it.
    """
    _registry.register(name, factory, overwrite=overwrite, install_hint=install_hint, aliases=aliases or [])


def resolve_provider_name(name: str) -> str:
    """Canonical name for a provider name or alias.

    Args:
        name: Name or alias.

    Returns:
        The canonical name.
    """
    return _registry.resolve(name).name


def list_providers() -> list[ProviderInfo]:
    """Every registered provider, whether it is available here, and why (not).

    Detection never creates a provider or initialises a device.

    Returns:
        Providers by descending ``auto`` priority, then name.
    """
    out = []
    for entry in _registry.entries().values():
        found = entry.detect()
        out.append(
            ProviderInfo(
                entry.name,
                found.available,
                found.reason,
                entry.priority,
                entry.source,
                tuple(entry.aliases),
                found.device_count,
            )
        )
    return sorted(out, key=lambda i: (-(i.priority if i.priority is not None else -1), i.name))


def available_providers() -> list[str]:
    """Names of the providers available here, best first.

    Returns:
        Provider names.
    """
    return [i.name for i in list_providers() if i.available]


def _pick_auto() -> tuple[ProviderEntry, Availability]:
    infos = list_providers()
    for info in infos:
        if info.available and info.priority is not None:
            return _registry.resolve(info.name), Availability(True, info.reason, info.device_count)
    reasons = "; ".join(f"{i.name}: {i.reason}" for i in infos if i.priority is not None)
    raise UnavailableError(
        f"no provider is available for 'auto' ({reasons}). Install one of them, or use "
        "get_provider('mock') for a hardware-free backend.",
    )


def get_provider(name: str = "auto", config: object = None, **options: Any) -> BackendProvider:
    """Create a provider by name (or the best available one).

    Detection runs once per call and its result is passed on to built-in factories.

    Args:
        name: Provider name or alias, or ``"auto"`` (``SAGELLM_BACKEND`` overrides ``auto``).
        config: Passed positionally to the factory (``None``, dict, or engine config object).
        **options: Keyword options for the factory (``device_id=1``, ``kv_geometry=...``).

    Returns:
        The provider.

    Raises:
        ProviderNotFoundError: unknown name (the message lists the known ones).
        UnavailableError: the provider cannot run here (the message says why and what to install).
    """
    if not isinstance(name, str):
        raise InvalidArgumentTypeError(f"provider name must be a string; got {type(name).__name__}.")
    key = name.strip().lower()
    if key == "auto":
        env = os.environ.get("SAGELLM_BACKEND", "").strip().lower()
        if env and env != "auto":
            key = env
    if key == "auto":
        entry, found = _pick_auto()
    else:
        entry = _registry.resolve(key)
        found = entry.detect()
    if not found.available:
        raise UnavailableError(
            f"provider {entry.name!r} is not available here: {found.reason}. "
            f"To use it, install {entry.install_hint or 'its SDK'}.",
            provider=entry.name,
        )
    factory = entry.load()
    if entry.source == "builtin":
        options["availability"] = found
    return factory(config, **options)  # type: ignore[no-any-return]
