"""The contract is the API: every public member of every built-in provider and communicator class
has the contract's exact signature (both directions), provider classes are composed rather than
stacked, and the ``sagellm.backends`` entry points are the vendor table."""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from sagellm_backend import (
    AscendBackendProvider,
    CPUBackendProvider,
    CUDABackendProvider,
    KunlunBackendProvider,
    MockBackendProvider,
)
from sagellm_backend.api import BackendProvider
from sagellm_backend.api.comm import Communicator, NoCommunicator
from sagellm_backend.comm.mock_world import MockCommunicator
from sagellm_backend.comm.torch_dist import TorchCommunicator
from sagellm_backend.registry import ENTRY_POINT_GROUP
from sagellm_backend.vendors import BUILTIN_VENDORS, load_vendor

ROOT = Path(__file__).resolve().parents[1]

#: Static facts every provider class sets from its vendor spec; not behaviour, not compared.
PROVIDER_CLASS_FACTS = frozenset({"name", "device_type", "dist_backend", "vendor"})

#: Public members found on a class that the contract lacks, known and reported; each entry must
#: disappear once fixed (the test fails on a stale entry as on a new drift).
KNOWN_DRIFT: dict[str, frozenset[str]] = {}


def _provider_classes() -> list[type[BackendProvider]]:
    classes: list[type[BackendProvider]] = [
        CPUBackendProvider,
        CUDABackendProvider,
        AscendBackendProvider,
        KunlunBackendProvider,
        MockBackendProvider,
    ]
    for name in BUILTIN_VENDORS:
        cls = load_vendor(name).load_class()
        if cls not in classes:
            classes.append(cls)
    return classes


PROVIDERS = _provider_classes()
COMMUNICATORS: list[type[Communicator]] = [TorchCommunicator, MockCommunicator, NoCommunicator]


# ------------------------------------------------------------------ comparing members
def _public(cls: type) -> dict[str, Any]:
    return {n: inspect.getattr_static(cls, n) for n in dir(cls) if not n.startswith("_")}


def _kind(raw: Any) -> str:
    if isinstance(raw, property):
        return "property"
    if isinstance(raw, classmethod):
        return "classmethod"
    if isinstance(raw, staticmethod):
        return "staticmethod"
    if inspect.isfunction(raw):
        return "method"
    return "attribute"


def _signature(raw: Any) -> inspect.Signature:
    fn: Callable[..., Any]
    if isinstance(raw, property):
        assert raw.fget is not None
        fn = raw.fget
    elif isinstance(raw, (classmethod, staticmethod)):
        fn = raw.__func__
    else:
        fn = raw
    return inspect.signature(fn)


def drift(cls: type, contract: type, excluded: frozenset[str] = frozenset()) -> dict[str, str]:
    """Every difference between ``cls``'s public members and ``contract``'s.

    Returns:
        ``{member: what differs}``: members the contract lacks, members of another kind
        (property / method / classmethod / staticmethod), and signatures that differ in any
        parameter name, kind, default or annotation, or in the return annotation. Data attributes
        of the contract may be implemented in any form.
    """
    mine, theirs = _public(cls), _public(contract)
    found: dict[str, str] = {}
    for name in sorted(mine.keys() - theirs.keys() - excluded):
        found[name] = f"{cls.__name__}.{name} ({_kind(mine[name])}) is public but not in {contract.__name__}"
    for name in sorted(theirs.keys() - excluded):
        want, have = theirs[name], mine.get(name)
        if _kind(want) == "attribute":
            continue
        if have is None:
            found[name] = f"{cls.__name__} lacks {contract.__name__}.{name}"
        elif _kind(have) != _kind(want):
            found[name] = f"{cls.__name__}.{name} is a {_kind(have)}; {contract.__name__} declares a {_kind(want)}"
        elif _signature(have) != _signature(want):
            found[name] = f"{cls.__name__}.{name}{_signature(have)} != {contract.__name__}.{name}{_signature(want)}"
    return found


def _assert_no_drift(cls: type, contract: type, excluded: frozenset[str] = frozenset()) -> None:
    assert not inspect.isabstract(cls), f"{cls.__name__} leaves abstract: {sorted(cls.__abstractmethods__)}"
    found = drift(cls, contract, excluded)
    known = KNOWN_DRIFT.get(cls.__name__, frozenset())
    new = [msg for name, msg in found.items() if name not in known]
    fixed = sorted(known - found.keys())
    assert not new, "drift from the contract:\n  " + "\n  ".join(new)
    assert not fixed, f"{cls.__name__}: {fixed} no longer drift; remove them from KNOWN_DRIFT"


@pytest.mark.parametrize("cls", PROVIDERS, ids=lambda c: c.__name__)
def test_provider_members_are_the_contract(cls: type[BackendProvider]) -> None:
    _assert_no_drift(cls, BackendProvider, PROVIDER_CLASS_FACTS)


@pytest.mark.parametrize("cls", COMMUNICATORS, ids=lambda c: c.__name__)
def test_communicator_members_are_the_contract(cls: type[Communicator]) -> None:
    assert issubclass(cls, Communicator)
    _assert_no_drift(cls, Communicator)


def test_drift_is_detected_both_ways() -> None:
    class Drifted(MockBackendProvider):
        rank = 0  # type: ignore[assignment]  # a plain attribute where the contract declares a property

        def extra_helper(self) -> None:
            """Public, not in the contract."""

        def kv_block_free(self, block: Any, force: bool = False) -> None:  # type: ignore[override]  # on purpose
            """A parameter the contract lacks."""

        def kv_block_copy(self, src: Any, dst: Any, *, stream: Any = None) -> None:  # type: ignore[override]
            """Same names, other annotations."""

        @property
        def gpu_utilization(self) -> float | None:  # type: ignore[override]  # a property, not a method
            return None

    found = drift(Drifted, BackendProvider, PROVIDER_CLASS_FACTS)
    assert set(found) == {"rank", "extra_helper", "kv_block_free", "kv_block_copy", "gpu_utilization"}, found
    assert "not in BackendProvider" in found["extra_helper"] and "force" in found["kv_block_free"]
    assert "is a attribute" in found["rank"] and "is a property" in found["gpu_utilization"]
    assert drift(MockBackendProvider, BackendProvider, PROVIDER_CLASS_FACTS) == {}


# ------------------------------------------------------------------ composition
@pytest.mark.parametrize("cls", PROVIDERS, ids=lambda c: c.__name__)
def test_provider_mro_is_shallow(cls: type[BackendProvider]) -> None:
    ours = [k for k in cls.__mro__ if k.__module__.partition(".")[0] == "sagellm_backend"]
    assert len(ours) <= 3, f"{cls.__name__} stacks {len(ours)} project classes: {[k.__qualname__ for k in ours]}"
    assert ours[0] is cls and ours[-1] is BackendProvider, ours


# ------------------------------------------------------------------ entry points
def _expected_entry_points() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in BUILTIN_VENDORS:
        spec = load_vendor(name)
        for n in (spec.name, *spec.aliases):
            assert n not in out, f"{n} is claimed by two vendors"
            out[n] = spec.factory_path
    return out


def _pyproject_entry_points() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib", reason="parsing pyproject.toml needs Python >= 3.11 (tomllib)")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    eps: dict[str, str] = data["project"]["entry-points"][ENTRY_POINT_GROUP]
    return eps


def _load(target: str) -> object:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def test_pyproject_entry_point_names_are_the_vendor_table() -> None:
    assert set(_pyproject_entry_points()) == set(_expected_entry_points())


def test_pyproject_entry_points_load_the_vendor_factories() -> None:
    expected = _expected_entry_points()
    for name, target in _pyproject_entry_points().items():
        assert _load(target) is _load(expected[name]), f"{name} = {target} is not {expected[name]}"


def test_pyproject_entry_points_are_exactly_the_factory_paths() -> None:
    assert _pyproject_entry_points() == _expected_entry_points()


def _installed_from() -> Path | None:
    dist = metadata.distribution("isagellm-backend")
    raw = dist.read_text("direct_url.json")
    if not raw:
        return None
    url = str(json.loads(raw).get("url", ""))
    return Path(url.removeprefix("file://")).resolve() if url.startswith("file://") else None


def test_installed_entry_points_agree() -> None:
    try:
        dist = metadata.distribution("isagellm-backend")
    except metadata.PackageNotFoundError:
        pytest.skip("needs the package installed (pip install -e .); it runs from the source tree here")
    installed = {ep.name: ep.value for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP}
    declared = _pyproject_entry_points()
    if installed != declared:
        source = _installed_from()
        if source is not None and source != ROOT:
            pytest.skip(f"the installed metadata comes from {source}, not this checkout ({ROOT}); pip install -e .")
        folder = f"{dist.metadata['Name'].replace('-', '_')}-{dist.version}.dist-info"
        meta = Path(str(dist.locate_file(folder))) / "entry_points.txt"
        if meta.exists() and meta.stat().st_mtime < (ROOT / "pyproject.toml").stat().st_mtime:
            pytest.skip("the editable install's metadata is older than pyproject.toml; re-run pip install -e .")
    assert installed == declared, f"installed {installed} != pyproject {declared}"
    expected = _expected_entry_points()
    assert set(installed) == set(expected)
    for name, target in installed.items():
        assert _load(target) is _load(expected[name]), f"installed {name} = {target} is not {expected[name]}"
