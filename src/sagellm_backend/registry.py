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

Names and aliases are case-insensitive. A plugin that fails in any way is listed as unavailable,
with the error as its reason (:mod:`sagellm_backend.provider_entry`); it never breaks listing or
``auto`` for the others.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

from .api.provider import BackendProvider
from .core.config import Availability
from .errors import (
    BackendError,
    InvalidArgumentTypeError,
    ProviderNotFoundError,
    UnavailableError,
)
from .provider_entry import PLUGIN_ERRORS, ProviderEntry, describe
from .provider_table import ENTRY_POINT_GROUP, ProviderTable

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

ENV_VAR = "SAGELLM_BACKEND"


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


_registry = ProviderTable()


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
        aliases: Other names for it. Names and aliases are case-insensitive (kept in lower case).

    Raises:
        InvalidArgumentTypeError: ``name``, an alias, ``factory`` or ``install_hint`` is of the wrong type.
        InvalidArgumentError: ``name`` is taken (without ``overwrite``), empty or ``"auto"``; an alias is
            empty, repeated, ``"auto"``, a registered provider's name (even with ``overwrite``), or
            another provider's alias; ``factory`` is a malformed ``"module:attr"`` path. Nothing is
            registered then.
    """
    _registry.register(
        name, factory, overwrite=overwrite, install_hint=install_hint, aliases=[] if aliases is None else aliases
    )


def resolve_provider_name(name: str) -> str:
    """Canonical name for a provider name or alias.

    Args:
        name: Name or alias.

    Returns:
        The canonical name.

    Raises:
        InvalidArgumentTypeError: ``name`` is not a string.
        ProviderNotFoundError: no provider has that name or alias.
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


def _with_env(exc: BackendError, raw: str) -> BackendError:
    """The same error, saying that the name came from :data:`ENV_VAR`."""
    out = type(exc)(
        f"{ENV_VAR}={raw!r} (set in the environment; it replaces 'auto'): {exc} Unset {ENV_VAR} or set it "
        "to an available provider.",
        code=exc.code,
        **exc.details,
    )
    return out


def _check_call(entry: ProviderEntry, factory: Callable[..., Any], config: object, options: dict[str, Any]) -> None:
    """Refuse options the factory's own signature cannot take (built-in factories take any keyword
    and check against their provider class in :func:`~sagellm_backend.vendors.base.create_from_config`)."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # no introspectable signature: let the call decide
        return
    try:
        sig.bind(config, **options)
    except TypeError as exc:
        accepted = [p.name for p in list(sig.parameters.values())[1:] if p.kind is not p.VAR_POSITIONAL]
        raise InvalidArgumentTypeError(
            f"get_provider({entry.name!r}): {exc}; its factory takes a config and "
            f"{', '.join(accepted) or 'no options'}.",
            provider=entry.name,
        ) from None


def get_provider(name: str = "auto", config: object = None, **options: Any) -> BackendProvider:
    """Create a provider by name (or the best available one).

    Detection runs once per call and its result is passed on to built-in factories.

    Args:
        name: Provider name or alias (any case), or ``"auto"`` (``SAGELLM_BACKEND`` overrides ``auto``).
        config: Passed positionally to the factory (``None``, dict, or engine config object).
        **options: Keyword options for the factory (``device_id=1``, ``kv_geometry=...``).

    Returns:
        The provider.

    Raises:
        InvalidArgumentTypeError: ``name`` is not a string, or an option the provider does not take
            (the message names it and the accepted ones).
        ProviderNotFoundError: unknown name (the message lists the known ones, and names
            ``SAGELLM_BACKEND`` when the name came from there).
        UnavailableError: the provider cannot run here (the message says why and what to install), its
            plugin is broken, or a third-party factory failed (the cause is chained).
    """
    if not isinstance(name, str):
        raise InvalidArgumentTypeError(
            f"provider name must be a string; got {type(name).__name__} {name!r}. Pass e.g. 'cpu' or 'auto'."
        )
    key = name.strip().lower()
    from_env: str | None = None
    if key == "auto":
        raw = os.environ.get(ENV_VAR, "")
        if raw.strip() and raw.strip().lower() != "auto":
            key, from_env = raw.strip().lower(), raw
    try:
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
    except (ProviderNotFoundError, UnavailableError) as exc:
        if from_env is None:
            raise
        raise _with_env(exc, from_env) from None
    if entry.source == "builtin":
        return factory(config, **{**options, "availability": found})  # type: ignore[no-any-return]  # ours
    _check_call(entry, factory, config, options)
    try:
        return factory(config, **options)  # type: ignore[no-any-return]  # a third-party factory
    except BackendError:
        raise
    except TypeError as exc:
        raise InvalidArgumentTypeError(
            f"provider {entry.name!r} (from {entry.source}) refused its arguments: {describe(exc)}.",
            provider=entry.name,
        ) from exc
    except PLUGIN_ERRORS as exc:
        raise UnavailableError(
            f"provider {entry.name!r} (from {entry.source}) failed while creating its provider: "
            f"{describe(exc)}. Fix or uninstall {entry.source}.",
            provider=entry.name,
        ) from exc
