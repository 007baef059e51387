"""The table behind the registry: provider names and aliases (lower case) -> entries, filled from
the built-in vendors and the ``sagellm.backends`` entry points on first use."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from .errors import InvalidArgumentError, InvalidArgumentTypeError, ProviderNotFoundError
from .provider_entry import ProviderEntry, RawEntryPoint, check_provider_name, parse_target, read_entry_points
from .vendors import BUILTIN_VENDORS, load_vendor

__all__ = ["ENTRY_POINT_GROUP", "ProviderTable"]

ENTRY_POINT_GROUP = "sagellm.backends"
_SELF_DIST = "isagellm-backend"


class ProviderTable:
    """Names (lower case) -> entries, and aliases (lower case) -> names. Every mutation validates
    all of its arguments first, then changes state under the lock. Built-ins come from
    :data:`~sagellm_backend.vendors.BUILTIN_VENDORS`, other providers from the entry points."""

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
                entry = self._entries.setdefault(
                    name, ProviderEntry(name, spec.factory_path, "builtin", spec.install_hint)
                )
                for alias in (a.strip().lower() for a in spec.aliases):
                    self._aliases.setdefault(alias, name)
                    if self._aliases[alias] == name and alias not in entry.aliases:
                        entry.aliases.append(alias)
            for raw in read_entry_points(ENTRY_POINT_GROUP):
                self._add_entry_point(raw)
            self._discovered = True

    def _add_entry_point(self, ep: RawEntryPoint) -> None:
        if ep.dist == _SELF_DIST and ep.problem is None:
            return  # our own pyproject entries: the built-ins above, derived from the same table
        key = ep.name.strip().lower()
        canonical = self._aliases.get(key, key)
        existing = self._entries.get(canonical)
        if existing is not None:
            if existing.target == ep.value or existing.source == "runtime":
                return  # the same factory under an alias, or replaced on purpose at run time
            existing.notes.append(
                f"entry point {ep.name} = {ep.value} from {ep.dist} ignored: the name is taken by "
                f"{existing.target} ({existing.source}); register it under another name"
            )
            return
        self._entries[key] = ProviderEntry(key, ep.value or None, ep.dist, problem=ep.problem)

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

    def resolve(self, name: object) -> ProviderEntry:
        if not isinstance(name, str):
            raise InvalidArgumentTypeError(
                f"provider name must be a string; got {type(name).__name__} {name!r}. Pass e.g. 'cpu' or 'auto'."
            )
        self._discover()
        key = name.strip().lower()
        with self._lock:
            entry = self._entries.get(self._aliases.get(key, key))
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

    def _check_aliases(self, key: str, aliases: object) -> list[str]:
        if isinstance(aliases, (str, bytes)) or not isinstance(aliases, Sequence):
            raise InvalidArgumentTypeError(
                f"aliases must be a list of strings; got {type(aliases).__name__} {aliases!r}."
            )
        keys: list[str] = []
        for alias in aliases:
            a = check_provider_name("alias", alias)
            if a == key:
                raise InvalidArgumentError(f"alias {alias!r} is the provider's own name {key!r}; drop it.")
            if a in keys:
                raise InvalidArgumentError(f"alias {alias!r} is given twice (names are case-insensitive).")
            keys.append(a)
        return keys

    def register(
        self, name: object, factory: object, *, overwrite: object, install_hint: object, aliases: object
    ) -> ProviderEntry:
        key = check_provider_name("provider name", name)
        if not isinstance(overwrite, bool):
            raise InvalidArgumentTypeError(f"overwrite must be True or False; got {overwrite!r}.")
        if not isinstance(install_hint, str):
            raise InvalidArgumentTypeError(f"install_hint must be a string; got {type(install_hint).__name__}.")
        alias_keys = self._check_aliases(key, aliases)
        if isinstance(factory, str):
            parse_target(factory)
            entry = ProviderEntry(key, factory.strip(), "runtime", install_hint, list(alias_keys))
        elif callable(factory):
            entry = ProviderEntry(key, None, "runtime", install_hint, list(alias_keys), _factory=factory)
        else:
            raise InvalidArgumentTypeError(
                f"factory must be callable or a 'module:attr' string; got {type(factory).__name__}."
            )
        self._discover()
        with self._lock:
            alias_owner = self._aliases.get(key)
            if (key in self._entries or alias_owner is not None) and not overwrite:
                taken = f"an alias of {alias_owner!r}" if alias_owner is not None else "registered"
                raise InvalidArgumentError(
                    f"a provider named {key!r} is already {taken}; pass overwrite=True to replace it, or pick "
                    "another name."
                )
            for a in alias_keys:
                other = self._entries.get(a)
                if other is not None:
                    kind = "built-in provider" if other.source == "builtin" else f"provider from {other.source}"
                    raise InvalidArgumentError(
                        f"alias {a!r} would shadow the {kind} {a!r}; an alias can never take a provider's name "
                        "(overwrite=True replaces the name given, not other providers). Pick another alias."
                    )
                owner = self._aliases.get(a)
                if owner is not None and owner != key:
                    raise InvalidArgumentError(f"alias {a!r} already names the provider {owner!r}; pick another alias.")
            # validated: now change state
            old = self._entries.get(key)
            if old is not None:
                for a in old.aliases:
                    self._aliases.pop(a, None)
            if alias_owner is not None:
                self._aliases.pop(key, None)
                owner_entry = self._entries.get(alias_owner)
                if owner_entry is not None and key in owner_entry.aliases:
                    owner_entry.aliases.remove(key)
            self._entries[key] = entry
            for a in alias_keys:
                self._aliases[a] = key
            return entry
