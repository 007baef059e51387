"""Registry: entry points, aliases, auto selection, factory configs, third-party discovery."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

import sagellm_backend as sb
from sagellm_backend import (
    InvalidArgumentError,
    MockBackendProvider,
    ProviderNotFoundError,
    UnavailableError,
    get_provider,
    list_providers,
    provider_registry,
)
from sagellm_backend.registry import ENTRY_POINT_GROUP, refresh_providers


def test_builtin_names_and_aliases() -> None:
    names = set(provider_registry)
    assert {"cpu", "cuda", "ascend", "kunlun", "mock"} <= names
    assert provider_registry["ascend"].aliases == ["pytorch-ascend", "ascend_cann"]
    assert provider_registry["cuda"].aliases == ["pytorch-cuda"]
    assert sb.registry.resolve_provider_name("PyTorch-CUDA") == "cuda"
    assert sb.registry.resolve_provider_name("ascend_cann") == "ascend"
    with pytest.raises(TypeError):
        provider_registry["x"] = None  # type: ignore[index]


def test_our_entry_points_are_installed() -> None:
    from importlib.metadata import PackageNotFoundError, distribution, entry_points

    try:
        distribution("isagellm-backend")
    except PackageNotFoundError:
        pytest.skip("needs the package installed (pip install -e .); it runs from the source tree here")

    eps = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for name in ("cpu", "cuda", "ascend", "kunlun", "mock", "pytorch-cuda", "pytorch-ascend", "ascend_cann"):
        assert name in eps, f"{name} missing from installed entry points: {sorted(eps)}"
    assert eps["ascend_cann"] == "sagellm_backend.providers.ascend:create_ascend_backend"


def test_list_providers_reasons_and_no_cuda_init() -> None:
    infos = {i.name: i for i in list_providers()}
    assert infos["mock"].available and infos["mock"].priority is None
    assert not infos["ascend"].available and "torch_npu is not installed" in infos["ascend"].reason
    assert not infos["kunlun"].available and "torch_xmlir" in infos["kunlun"].reason
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        assert not infos["cuda"].available and "cuda" in infos["cuda"].reason.lower()
    if not torch.cuda.is_initialized():  # (other tests in this process may have initialised it)
        list_providers()
        assert not torch.cuda.is_initialized(), "list_providers() must not initialise CUDA"
    assert [i.priority for i in list_providers() if i.priority is not None] == sorted(
        [i.priority for i in list_providers() if i.priority is not None], reverse=True
    )


def test_auto_and_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    monkeypatch.delenv("SAGELLM_BACKEND", raising=False)
    p = get_provider()
    assert p.name in ("cpu", "cuda")
    monkeypatch.setenv("SAGELLM_BACKEND", "mock")
    assert isinstance(get_provider("auto"), MockBackendProvider)
    assert get_provider("cpu").name == "cpu"  # explicit names are never overridden
    monkeypatch.setenv("SAGELLM_BACKEND", "nonsense")
    with pytest.raises(ProviderNotFoundError):
        get_provider()


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ProviderNotFoundError) as info:
        get_provider("tpu")
    msg = str(info.value)
    for name in ("cpu", "cuda", "ascend", "kunlun", "mock", "pytorch-cuda", "auto"):
        assert name in msg
    assert isinstance(info.value, ValueError)


def test_unavailable_vendor_names_what_to_install() -> None:
    with pytest.raises(UnavailableError, match=r"torch_npu is not installed.*install Huawei CANN and torch_npu"):
        get_provider("ascend")
    with pytest.raises(UnavailableError, match="torch_xmlir"):
        get_provider("kunlun")
    with pytest.raises(UnavailableError):
        get_provider("ascend_cann")


class EngineConfig:
    """What sagellm-core passes: attributes kind/device/device_ids (plus its own fields)."""

    def __init__(self, kind: str, device: str | None, device_ids: list[int] | None) -> None:
        self.kind, self.device, self.device_ids = kind, device, device_ids
        self.model_path = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"


def test_factories_accept_every_config_form() -> None:
    pytest.importorskip("torch")
    from sagellm_backend import create_cpu_backend, create_mock_backend

    for cfg in (None, {}, {"kind": "cpu", "device": "cpu", "device_ids": None}, EngineConfig("cpu", "cpu", None)):
        assert create_cpu_backend(cfg).device == "cpu"
    assert create_cpu_backend().device == "cpu"
    m = create_mock_backend(EngineConfig("mock", "mock:1", None))
    assert m.device == "mock:1"
    m = create_mock_backend({"kind": "mock", "device_ids": [2], "max_memory_mb": 8})
    assert m.device == "mock:2" and m.max_memory_mb == 8
    with pytest.raises(InvalidArgumentError, match="cpu devices"):
        create_cpu_backend(EngineConfig("cpu", "cuda:0", None))
    with pytest.raises(TypeError):
        create_cpu_backend("cpu")


def test_factory_with_pydantic_config() -> None:
    pydantic = pytest.importorskip("pydantic")
    pytest.importorskip("torch")

    class BackendConfig(pydantic.BaseModel):
        kind: str
        device: str | None = None
        device_ids: list[int] | None = None

    p = get_provider("cpu", BackendConfig(kind="cpu", device="cpu"))
    assert p.name == "cpu"
    from sagellm_backend import create_mock_backend

    assert create_mock_backend(BackendConfig(kind="mock", device_ids=[0])).device == "mock:0"


def test_third_party_entry_point_discovered(tmp_path: Path) -> None:
    pkg = tmp_path / "acme_backend"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent("""
        from sagellm_backend import MockBackendProvider, provider_factory

        class AcmeProvider(MockBackendProvider):
            name = "acme"

        @provider_factory(detect=lambda: (True, "acme board found"), priority=None)
        def create(config=None, **options):
            return AcmeProvider(**options)

        @provider_factory(detect=lambda: (False, "no acme-2 board on PCIe bus"), priority=5)
        def create_two(config=None, **options):
            raise AssertionError("never created")
    """)
    )
    dist = tmp_path / "acme_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nacme = acme_backend:create\nacme2 = acme_backend:create_two\n"
        "cpu = acme_backend:create\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        refresh_providers()
        infos = {i.name: i for i in list_providers()}
        assert infos["acme"].available and infos["acme"].source == "acme-backend"
        assert not infos["acme2"].available and infos["acme2"].reason == "no acme-2 board on PCIe bus"
        p = get_provider("acme", None, max_memory_mb=4)
        assert type(p).__name__ == "AcmeProvider" and p.max_memory_mb == 4
        with pytest.raises(UnavailableError, match="acme-2 board"):
            get_provider("acme2")
        assert provider_registry["cpu"].source == "builtin"  # a foreign 'cpu' cannot hijack ours
        assert any("ignored" in n for n in provider_registry["cpu"].notes)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("acme_backend", None)
        refresh_providers()
    assert "acme" not in provider_registry


def test_register_provider_at_runtime() -> None:
    sb.register_provider("unit-mock", lambda config=None, **kw: MockBackendProvider(**kw), aliases=["um"])
    try:
        assert get_provider("um", None, max_memory_mb=2).max_memory_mb == 2
        with pytest.raises(InvalidArgumentError, match="already registered"):
            sb.register_provider("unit-mock", MockBackendProvider)
        with pytest.raises(InvalidArgumentError):
            sb.register_provider("auto", MockBackendProvider)
        with pytest.raises(TypeError):
            sb.register_provider("bad", 42)  # type: ignore[arg-type]
    finally:
        sb.registry._registry._entries.pop("unit-mock", None)
        sb.registry._registry._aliases.pop("um", None)
