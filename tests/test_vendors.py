"""Ascend and Kunlun without their hardware: vendor facts through stand-in SDKs."""

from __future__ import annotations

import importlib

import pytest

torch = pytest.importorskip("torch")

from sagellm_backend import (  # noqa: E402
    DType,
    UnavailableError,
    UnsupportedDTypeError,
    get_provider,
    list_providers,
)
from sagellm_backend.providers.cuda import detect_cuda  # noqa: E402
from sagellm_backend.testing.pytest_suite import ConformanceSuite  # noqa: E402
from sagellm_backend.testing.standins import (  # noqa: E402
    StandInAscendProvider,
    StandInKunlunProvider,
    ascend_standin,
    kunlun_standin,
)
from sagellm_backend.vendors import BUILTIN_VENDORS, load_vendor  # noqa: E402
from sagellm_backend.vendors.ascend import ASCEND as ASCEND_VENDOR  # noqa: E402
from sagellm_backend.vendors.ascend import AscendBackendProvider, ascend_native_dtypes  # noqa: E402
from sagellm_backend.vendors.kunlun import KUNLUN as KUNLUN_VENDOR  # noqa: E402
from sagellm_backend.vendors.kunlun import KunlunBackendProvider  # noqa: E402


def test_vendor_facts() -> None:
    a, k = ASCEND_VENDOR, KUNLUN_VENDOR
    assert (a.sdk_module, a.device_type, a.dist_backend) == ("torch_npu", "npu", "hccl")
    assert ASCEND_VENDOR.graph_class == "NPUGraph" and ASCEND_VENDOR.torch_module == "npu"
    assert (k.sdk_module, k.device_type, k.dist_backend) == ("torch_xmlir", "cuda", "nccl")
    assert AscendBackendProvider.dist_backend == "hccl" and KunlunBackendProvider.device_type == "cuda"
    assert ASCEND_VENDOR.sources and KUNLUN_VENDOR.sources


def test_without_hardware_they_are_unavailable_and_auto_skips_them() -> None:
    infos = {i.name: i for i in list_providers()}
    assert not infos["ascend"].available and not infos["kunlun"].available
    with pytest.raises(UnavailableError, match="pip install torch-npu"):
        AscendBackendProvider()
    with pytest.raises(UnavailableError, match="xpytorch"):
        get_provider("kunlun")
    assert get_provider().name in ("cpu", "cuda")


@pytest.mark.parametrize(
    ("soc", "bf16"),
    [
        ("Ascend910B4", True),
        ("Ascend910B1", True),
        ("Ascend910_9391", True),
        ("Ascend310P3", False),
        ("Ascend910A", False),
        ("Ascend910ProB", False),
    ],
)
def test_ascend_dtype_rule(soc: str, bf16: bool) -> None:
    dts = ascend_native_dtypes(soc)
    assert (DType.BF16 in dts) is bf16 and DType.FP8 not in dts and DType.FP16 in dts


def test_ascend_standin_detection_and_devices() -> None:
    with ascend_standin(["Ascend910B4", "Ascend910B4"]) as fake:
        infos = {i.name: i for i in list_providers()}
        assert infos["ascend"].available and infos["ascend"].device_count == 2
        p = get_provider("ascend_cann", {"kind": "ascend", "device": "npu:1"})
        assert isinstance(p, AscendBackendProvider) and p.device == "npu:1"
        assert p.reachable_devices() == ["npu:1", "npu:0", "cpu"]
        cap = p.capability()
        assert cap.device_name == "Ascend910B4" and cap.device_type == "npu" and DType.BF16 in cap.supported_dtypes
        p.clear_cache()
        assert fake.empty_cache_calls == 1
        with pytest.raises(ValueError, match="npu:5 does not exist"):
            StandInAscendProvider(5)
    assert not hasattr(torch, "npu"), "stand-in must restore torch"


def test_ascend_310p_refuses_bf16_with_fix() -> None:
    with ascend_standin(["Ascend310P3"]):
        p = StandInAscendProvider(0)
        with pytest.raises(UnsupportedDTypeError, match=r"Atlas A2/A3.*Ascend310P3; use fp16"):
            p.kv_block_alloc(8, DType.BF16)
        assert p.kv_block_alloc(8, DType.FP16).device == "npu:0"
        assert p.kv_block_alloc(8, DType.BF16, device="cpu").device == "cpu"  # host memory holds anything


def test_kunlun_standin_and_cuda_steps_aside(monkeypatch: pytest.MonkeyPatch) -> None:
    with kunlun_standin() as fake:
        infos = {i.name: i for i in list_providers()}
        assert infos["kunlun"].available and infos["kunlun"].reason.startswith("2 device(s) via torch.cuda")
        monkeypatch.setattr(torch.version, "cuda", "12.8")  # pretend a CUDA build: cuda must still step aside
        found = detect_cuda()
        assert not found.available and "use the 'kunlun' provider" in found.reason
        monkeypatch.undo()
        p = StandInKunlunProvider(1)
        assert p.device == "cuda:1" and p.dist_backend == "nccl"
        cap = p.capability()
        assert cap.device_name == "Kunlun3 P800"
        assert DType.BF16 in cap.supported_dtypes and DType.FP8 not in cap.supported_dtypes
        with pytest.raises(UnsupportedDTypeError, match="Kunlun3"):
            p.kv_block_alloc(4, DType.FP8)
        assert fake.device_count() == 2
    assert torch.cuda.is_available() is False or torch.version.cuda is not None


@pytest.fixture
def _ascend():
    with ascend_standin():
        yield


@pytest.fixture
def _kunlun():
    with kunlun_standin():
        yield


@pytest.mark.usefixtures("_ascend")
class TestAscendStandInConformance(ConformanceSuite):
    @staticmethod
    def make_provider():
        return StandInAscendProvider(0)


@pytest.mark.usefixtures("_kunlun")
class TestKunlunStandInConformance(ConformanceSuite):
    @staticmethod
    def make_provider():
        return StandInKunlunProvider(0)


@pytest.mark.parametrize("name", sorted(BUILTIN_VENDORS))
def test_each_factory_is_bound_to_the_class_declaring_its_spec(name: str) -> None:
    spec = load_vendor(name)
    cls = spec.load_class()
    assert cls.__dict__["vendor"] is spec and cls.name == name
    module, _, attr = spec.factory_path.partition(":")
    assert getattr(importlib.import_module(module), attr).provider_class is cls


def test_a_spec_without_a_bound_class_is_provider_not_found() -> None:
    from sagellm_backend.core.config import Availability
    from sagellm_backend.errors import ProviderNotFoundError
    from sagellm_backend.vendors.base import VendorSpec

    def absent() -> Availability:
        return Availability(False, "test")

    base = {"aliases": (), "device_type": "cpu", "torch_module": None, "sdk_module": None, "dist_backend": None}
    facts = {**base, "graph_class": None, "install_hint": "-", "priority": None, "detect": absent}
    for spec in (
        VendorSpec(name="nosuch", **facts),  # no providers.nosuch module
        VendorSpec(name="nosuch", provider_class="sagellm_backend.vendors.cuda:CUDA", **facts),  # not a class
        VendorSpec(name="nosuch", provider_class="sagellm_backend.vendors.cuda:Missing", **facts),
    ):
        with pytest.raises(ProviderNotFoundError, match="no provider class found for vendor 'nosuch'"):
            spec.load_class()
