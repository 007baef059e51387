"""The registry under hostile plugins and arguments: a broken plugin is listed unavailable with its
reason and never breaks listing or ``auto`` for everyone; registration validates everything before
it changes anything; names are case-insensitive everywhere; bad options are typed errors."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sagellm_backend as sb
from sagellm_backend import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MockBackendProvider,
    ProviderNotFoundError,
    UnavailableError,
    get_provider,
    list_providers,
    provider_registry,
    register_provider,
)
from sagellm_backend.registry import ENTRY_POINT_GROUP, refresh_providers

GOOD = """
from sagellm_backend import MockBackendProvider, provider_factory

VALUE = 42

@provider_factory(detect=lambda: (True, "board found"), priority=None)
def create(config=None, **options):
    return MockBackendProvider(**options)

def create_strict(config=None):
    return MockBackendProvider()

def create_raises(config=None, **options):
    raise RuntimeError("firmware too old")
"""

# module name -> source; every one but hostile_good fails at import
MODULES = {
    "hostile_good": GOOD,
    "hostile_runtime": 'raise RuntimeError("driver exploded")\n',
    "hostile_syntax": "def broken(:\n    pass\n",
    "hostile_exit": 'import sys\nsys.exit("plugin called exit")\n',
    "hostile_missing_dep": "import sagellm_no_such_sdk_xyz\n",
    "hostile_getattr": 'def __getattr__(name):\n    raise ValueError(f"lazy attribute {name} broke")\n',
}

ENTRY_POINTS = {
    "h-good": "hostile_good:create",
    "H-Upper": "hostile_good:create",  # a capitalised name: listed and found in lower case
    "h-runtime": "hostile_runtime:create",
    "h-syntax": "hostile_syntax:create",
    "h-exit": "hostile_exit:create",
    "h-missing-dep": "hostile_missing_dep:create",
    "h-getattr": "hostile_getattr:create",
    "h-nocolon": "hostile_good",
    "h-dots": "hostile_runtime..x:create",
    "h-noattr": "hostile_good:nothing_here",
    "h-notcallable": "hostile_good:VALUE",
    "h-strict": "hostile_good:create_strict",
    "h-raises": "hostile_good:create_raises",
}


@pytest.fixture
def hostile_dist(tmp_path: Path) -> Iterator[Path]:
    for name, source in MODULES.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    dist = tmp_path / "hostile_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hostile-backend\nVersion: 1.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in ENTRY_POINTS.items())
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    sys.path.insert(0, str(tmp_path))
    refresh_providers()
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in MODULES:
            sys.modules.pop(name, None)
        refresh_providers()


def test_broken_plugins_are_listed_unavailable_with_reasons(hostile_dist: Path) -> None:
    infos = {i.name: i for i in list_providers()}  # raised RuntimeError on the base
    assert infos["h-good"].available and infos["h-good"].source == "hostile-backend"
    expected = {
        "h-runtime": ("RuntimeError", "driver exploded"),
        "h-syntax": ("SyntaxError", "hostile_syntax"),
        "h-exit": ("SystemExit", "plugin called exit"),
        "h-missing-dep": ("sagellm_no_such_sdk_xyz", "Install"),
        "h-getattr": ("ValueError", "lazy attribute create broke"),
        "h-nocolon": ("'module:attribute'", "hostile_good"),
        "h-dots": ("'module:attribute'", "hostile_runtime..x:create"),
        "h-noattr": ("nothing_here", "AttributeError"),
        "h-notcallable": ("not callable", "int"),
    }
    for name, words in expected.items():
        info = infos[name]
        assert not info.available and info.priority is None, info
        assert "\n" not in info.reason
        for w in words:
            assert w in info.reason, (name, info.reason)
    # the malformed dotted path is refused before anything is imported (hostile_runtime raises at import)
    assert "driver exploded" not in infos["h-dots"].reason


def test_broken_plugins_do_not_break_auto_or_explicit_names(hostile_dist: Path) -> None:
    pytest.importorskip("torch")
    assert get_provider("auto").name in ("cpu", "cuda")
    with pytest.raises(UnavailableError, match="RuntimeError: driver exploded"):
        get_provider("h-runtime")
    with pytest.raises(UnavailableError, match="SystemExit"):
        get_provider("h-exit")
    with pytest.raises(UnavailableError, match="module:attribute"):
        get_provider("h-nocolon")
    p = get_provider("h-good", None, max_memory_mb=4)
    assert isinstance(p, MockBackendProvider) and p.max_memory_mb == 4


def test_failing_third_party_factory_is_a_typed_error(hostile_dist: Path) -> None:
    with pytest.raises(UnavailableError, match="RuntimeError: firmware too old") as info:
        get_provider("h-raises")
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(InvalidArgumentTypeError, match="bogus"):
        get_provider("h-strict", None, bogus=1)


def test_entry_point_names_are_case_insensitive(hostile_dist: Path) -> None:
    names = [i.name for i in list_providers()]
    assert "h-upper" in names and "H-Upper" not in names
    for spelled in ("h-upper", "H-UPPER", " H-Upper "):
        assert isinstance(get_provider(spelled), MockBackendProvider)
    for info in list_providers():  # every listed name is accepted as it is listed
        assert sb.registry.resolve_provider_name(info.name) == info.name


def test_keyboard_interrupt_at_plugin_import_is_not_swallowed(tmp_path: Path) -> None:
    (tmp_path / "hostile_kbd.py").write_text("raise KeyboardInterrupt\n")
    dist = tmp_path / "hostile_kbd-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hostile-kbd\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nh-kbd = hostile_kbd:create\n")
    sys.path.insert(0, str(tmp_path))
    try:
        refresh_providers()
        with pytest.raises(KeyboardInterrupt):
            list_providers()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("hostile_kbd", None)
        refresh_providers()


def test_unparseable_entry_points_file_does_not_break_listing(tmp_path: Path) -> None:
    dist = tmp_path / "hostile_garbage-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hostile-garbage\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nthis line has no equals sign\n")
    sys.path.insert(0, str(tmp_path))
    try:
        refresh_providers()
        infos = {i.name: i for i in list_providers()}  # TypeError from importlib.metadata on the base
        assert infos["mock"].available
        broken = [i for i in infos.values() if i.source == "hostile-garbage"]
        assert len(broken) == 1 and not broken[0].available and "entry_points.txt" in broken[0].reason
    finally:
        sys.path.remove(str(tmp_path))
        refresh_providers()


class _EvilEntryPoint:
    """An entry point object whose attributes raise."""

    def __init__(self, name: str, fail: str) -> None:
        self._name, self._fail = name, fail
        self.group = ENTRY_POINT_GROUP
        self.dist = None

    @property
    def name(self) -> str:
        if self._fail == "name":
            raise RuntimeError("name unreadable")
        return self._name

    @property
    def value(self) -> str:
        if self._fail == "value":
            raise RuntimeError("value unreadable")
        return "sagellm_backend.vendors.mock:create_mock_backend"

    def load(self) -> Any:
        raise RuntimeError("load exploded")


def test_entry_point_objects_that_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata as md

    real = md.entry_points

    def fake(**kw: Any) -> Any:
        found = list(real(**kw))
        if kw.get("group") == ENTRY_POINT_GROUP:
            found += [_EvilEntryPoint("h-evil-value", "value"), _EvilEntryPoint("x", "name")]
            found += [_EvilEntryPoint("h-evil-load", "load")]
        return found

    monkeypatch.setattr(md, "entry_points", fake)
    try:
        refresh_providers()
        infos = {i.name: i for i in list_providers()}
        assert not infos["h-evil-value"].available and "value unreadable" in infos["h-evil-value"].reason
        unnamed = [i for i in infos.values() if "name unreadable" in i.reason]
        assert len(unnamed) == 1 and not unnamed[0].available
        # .load() is never called: the registry imports the dotted path itself, lazily
        assert infos["h-evil-load"].available
        assert infos["cpu"].source == "builtin"
    finally:
        monkeypatch.undo()
        refresh_providers()


def _cleanup(*names: str) -> None:
    reg = sb.registry._registry
    for n in names:
        reg._entries.pop(n, None)
    for a in [a for a, n in reg._aliases.items() if n in names]:
        reg._aliases.pop(a)


def _factory(config: object = None, **kw: Any) -> MockBackendProvider:
    return MockBackendProvider(**kw)


def _snapshot() -> tuple[Any, ...]:
    reg = sb.registry._registry
    reg.entries()
    return dict(reg._aliases), {k: (v.target, v.source, list(v.aliases)) for k, v in reg._entries.items()}


@pytest.mark.parametrize(
    ("aliases", "error", "words"),
    [
        (["cpu"], InvalidArgumentError, "built-in"),
        (["CPU"], InvalidArgumentError, "built-in"),
        (["pytorch-cuda"], InvalidArgumentError, "already"),
        (["auto"], InvalidArgumentError, "auto"),
        ([""], InvalidArgumentError, "empty"),
        (["ok", 123], InvalidArgumentTypeError, "123"),
        ("abc", InvalidArgumentTypeError, "list"),
        (["dup", "DUP"], InvalidArgumentError, "twice"),
        (["h-rt"], InvalidArgumentError, "own name"),
    ],
)
def test_register_validates_aliases_before_registering(aliases: Any, error: type[Exception], words: str) -> None:
    before = _snapshot()
    try:
        with pytest.raises(error, match=words):
            register_provider("h-rt", _factory, aliases=aliases)
        assert _snapshot() == before, "a failed register_provider changed the registry"
        assert "h-rt" not in provider_registry
    finally:
        _cleanup("h-rt")


def test_alias_cannot_take_a_name_even_with_overwrite() -> None:
    try:
        with pytest.raises(InvalidArgumentError, match="cpu"):
            register_provider("h-rt", _factory, aliases=["cpu"], overwrite=True)
        assert sb.registry.resolve_provider_name("cpu") == "cpu"
    finally:
        _cleanup("h-rt")


def test_register_is_case_insensitive_and_overwrite_replaces_aliases() -> None:
    try:
        register_provider("H-Mixed", _factory, aliases=["H-Alias"])
        assert "h-mixed" in provider_registry and "H-Mixed" not in provider_registry
        assert provider_registry["h-mixed"].aliases == ["h-alias"]
        assert [i.name for i in list_providers()].count("h-mixed") == 1
        assert get_provider("H-ALIAS", None, max_memory_mb=2).max_memory_mb == 2
        register_provider("h-mixed", _factory, aliases=["h-other"], overwrite=True)
        with pytest.raises(ProviderNotFoundError):
            get_provider("h-alias")
        assert sb.registry.resolve_provider_name("H-Other") == "h-mixed"
    finally:
        _cleanup("h-mixed")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": 3, "factory": _factory}, InvalidArgumentTypeError),
        ({"name": "h-rt", "factory": "no_colon"}, InvalidArgumentError),
        ({"name": "h-rt", "factory": "a..b:c"}, InvalidArgumentError),
        ({"name": "h-rt", "factory": _factory, "install_hint": 5}, InvalidArgumentTypeError),
    ],
)
def test_register_rejects_bad_arguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    before = _snapshot()
    with pytest.raises(error):
        register_provider(**kwargs)
    assert _snapshot() == before


@pytest.mark.parametrize(
    ("name", "options", "bad"),
    [
        ("mock", {"bogus": 1}, "bogus"),
        ("mock", {"max_memory": 8, "devices": 2}, "devices"),
        ("cpu", {"device_id": 0}, "device_id"),
        ("cpu", {"kv_geom": {}}, "kv_geom"),
    ],
)
def test_unknown_options_name_the_bad_and_the_accepted(name: str, options: dict[str, Any], bad: str) -> None:
    if name == "cpu":
        pytest.importorskip("torch")
    with pytest.raises(InvalidArgumentTypeError) as info:
        get_provider(name, None, **options)
    msg = str(info.value)
    assert bad in msg and "kv_geometry" in msg, msg
    with pytest.raises(InvalidArgumentTypeError, match=bad):
        get_provider(name, dict(options))  # config dict keys become options: same check


def test_bad_env_override_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGELLM_BACKEND", "nonsense")
    with pytest.raises(ProviderNotFoundError, match="SAGELLM_BACKEND") as info:
        get_provider()
    assert "nonsense" in str(info.value)
    monkeypatch.setenv("SAGELLM_BACKEND", "ascend")
    with pytest.raises(UnavailableError, match="SAGELLM_BACKEND"):
        get_provider("auto")


@pytest.mark.parametrize("name", [3, None, ["cpu"], b"cpu"])
def test_resolve_rejects_non_strings(name: Any) -> None:
    with pytest.raises(InvalidArgumentTypeError):
        sb.registry.resolve_provider_name(name)
