"""On-disk cache of hardware profiles: ``~/.sagellm/hardware_profile.json``.

File format::

    {"version": "1.0", "detected_at": "2026-05-01T12:00:00Z", "profiles": {"cpu": {...}, "cuda": {...}}}

Reads never raise: a missing, unreadable, malformed or other-version file reads as empty. Writes
are atomic (a temporary file in the same directory, then ``os.replace``), so readers see the old
file or the new one, never a partial one. Read-modify-write (:meth:`ProfileCache.update`) is
serialised between threads of this process for each cache file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError, InvalidArgumentTypeError, UnavailableError
from .profile import PROFILE_FORMAT_VERSION, HardwareProfile, utc_timestamp

__all__ = ["CACHE_FORMAT_VERSION", "UMBRELLA_NAMES", "ProfileCache", "default_cache_path"]

CACHE_FORMAT_VERSION = PROFILE_FORMAT_VERSION

UMBRELLA_NAMES: dict[str, str] = {"haiguang": "rocm"}
"""The umbrella CLI's name -> the name this package stores the profile under. ``sagellm run`` looks profiles up as
``ascend, kunlun, haiguang, muxi, cuda, cpu``; Hygon DCUs (and every GPU a ROCm/DTK build of torch drives, all
served by the ``rocm`` provider, which also answers to ``haiguang``) are profiled as ``rocm``. ``muxi`` (MetaX) is
another vendor, with no provider here."""

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def default_cache_path() -> Path:
    """``$HOME/.sagellm/hardware_profile.json``, evaluated now (so a changed ``$HOME`` counts).

    Returns:
        The path.
    """
    return Path.home() / ".sagellm" / "hardware_profile.json"


def _lock_for(path: Path) -> threading.RLock:
    key = os.path.abspath(path)
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.RLock())


def _check_name(hw: object) -> str:
    if not isinstance(hw, str):
        raise InvalidArgumentTypeError(f"hardware name must be a string; got {type(hw).__name__} {hw!r}.")
    if not hw.strip():
        raise InvalidArgumentError("hardware name must not be empty.")
    return hw


class ProfileCache:
    """Load and store :class:`~sagellm_backend.hardware.profile.HardwareProfile` objects by hardware name.

    Args:
        cache_path: File to use; ``~/.sagellm/hardware_profile.json`` by default (``$HOME`` read
            when the cache is constructed). Parent directories are created on the first write.

    Raises:
        InvalidArgumentTypeError: ``cache_path`` is not a path.
    """

    def __init__(self, cache_path: str | os.PathLike[str] | None = None) -> None:
        if cache_path is None:
            self.cache_path = default_cache_path()
        elif isinstance(cache_path, (str, os.PathLike)):
            self.cache_path = Path(cache_path)
        else:
            raise InvalidArgumentTypeError(
                f"cache_path must be a path (str or os.PathLike) or None; got {type(cache_path).__name__}."
            )
        self._lock = _lock_for(self.cache_path)

    def __repr__(self) -> str:
        return f"ProfileCache(cache_path={str(self.cache_path)!r})"

    # ----------------------------------------------------------------- reading

    def load_raw(self) -> dict[str, dict[str, Any]]:
        """The stored profiles as plain dicts.

        Returns:
            ``{name: profile dict}``; ``{}`` when the file is missing, unreadable, not JSON, not an
            object, of another format version, or has no ``profiles`` object. Entries that are not
            objects are left out.
        """
        try:
            text = self.cache_path.read_text(encoding="utf-8")
            data = json.loads(text)
        except (OSError, ValueError):  # missing/unreadable file, bad JSON or bad encoding
            return {}
        if not isinstance(data, dict) or data.get("version") != CACHE_FORMAT_VERSION:
            return {}
        profiles = data.get("profiles")
        if not isinstance(profiles, dict):
            return {}
        return {str(hw): dict(p) for hw, p in profiles.items() if isinstance(p, dict)}

    def load(self) -> dict[str, HardwareProfile]:
        """The stored profiles, also under the umbrella CLI's names (:data:`UMBRELLA_NAMES`).

        Returns:
            ``{name: HardwareProfile}``; ``{}`` as for :meth:`load_raw`. Entries that do not parse
            are left out. A profile stored as ``rocm`` is also returned as ``haiguang`` (the same
            object) unless a ``haiguang`` entry is stored itself; :meth:`load_raw` shows the file as it is.
        """
        out: dict[str, HardwareProfile] = {}
        for hw, raw in self.load_raw().items():
            try:
                out[hw] = HardwareProfile.from_dict(raw)
            except (InvalidArgumentError, InvalidArgumentTypeError):
                continue
        for umbrella, stored in UMBRELLA_NAMES.items():
            if umbrella not in out and stored in out:
                out[umbrella] = out[stored]
        return out

    def get(self, hw: str) -> HardwareProfile | None:
        """One stored profile.

        Args:
            hw: Hardware name as stored, or an umbrella CLI name (:meth:`load`).

        Returns:
            The profile, or None.

        Raises:
            InvalidArgumentTypeError: ``hw`` is not a string.
            InvalidArgumentError: ``hw`` is empty.
        """
        return self.load().get(_check_name(hw))

    # ----------------------------------------------------------------- writing

    def save(self, profiles: Mapping[str, HardwareProfile]) -> None:
        """Replace the file's profiles with ``profiles`` (atomically).

        Args:
            profiles: ``{name: HardwareProfile}``.

        Raises:
            InvalidArgumentTypeError: ``profiles`` is not a mapping of names to profiles, or a
                profile holds values JSON cannot store.
            UnavailableError: The file or its directory cannot be written.
        """
        if not isinstance(profiles, Mapping):
            raise InvalidArgumentTypeError(f"profiles must be a mapping; got {type(profiles).__name__}.")
        raw = {}
        for hw, profile in profiles.items():
            if not isinstance(profile, HardwareProfile):
                raise InvalidArgumentTypeError(
                    f"profiles[{hw!r}] must be a HardwareProfile; got {type(profile).__name__}."
                )
            raw[_check_name(hw)] = profile.to_dict()
        with self._lock:
            self._write(raw)

    def update(self, hw: str, profile: HardwareProfile) -> None:
        """Store one profile, keeping the others (read-modify-write under the file's lock).

        Args:
            hw: Hardware name to store it under.
            profile: The profile.

        Raises:
            InvalidArgumentTypeError: Wrong argument types, or values JSON cannot store.
            InvalidArgumentError: ``hw`` is empty.
            UnavailableError: The file or its directory cannot be written.
        """
        name = _check_name(hw)
        if not isinstance(profile, HardwareProfile):
            raise InvalidArgumentTypeError(f"profile must be a HardwareProfile; got {type(profile).__name__}.")
        entry = profile.to_dict()
        with self._lock:
            raw = self.load_raw()
            raw[name] = entry
            self._write(raw)

    def clear(self) -> None:
        """Delete the cache file (no error when it does not exist).

        Raises:
            UnavailableError: The file exists but cannot be removed.
        """
        with self._lock:
            try:
                self.cache_path.unlink(missing_ok=True)
            except OSError as exc:
                raise UnavailableError(
                    f"cannot remove the hardware profile cache {self.cache_path}: {exc}. Check its permissions.",
                    path=str(self.cache_path),
                ) from exc

    def _write(self, raw: dict[str, dict[str, Any]]) -> None:
        payload = {"version": CACHE_FORMAT_VERSION, "detected_at": utc_timestamp(), "profiles": raw}
        try:
            text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentTypeError(
                f"hardware profiles must hold only JSON values (str, int, float, bool, None, lists, dicts): {exc}."
            ) from exc
        directory = self.cache_path.parent
        tmp: str | None = None
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.cache_path.name}.", suffix=".tmp", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.cache_path)
            tmp = None
        except OSError as exc:
            raise UnavailableError(
                f"cannot write the hardware profile cache {self.cache_path}: {exc}. "
                f"Check the directory's permissions, or pass ProfileCache(cache_path=...) to use another file.",
                path=str(self.cache_path),
            ) from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
