"""ROCm (AMD GPUs, Hygon DCUs) and MUSA (Moore Threads) without their hardware: detection here,
dtype rules, and the providers under stand-in SDKs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from sagellm_backend import (  # noqa: E402
    DType,
    MusaBackendProvider,
    RocmBackendProvider,
    UnavailableError,
    UnsupportedDTypeError,
    get_provider,
    list_providers,
)
from sagellm_backend.providers.cuda import detect_cuda  # noqa: E402
from sagellm_backend.registry import resolve_provider_name  # noqa: E402
from sagellm_backend.storage.movers.cuda import CudaRowCopier  # noqa: E402
from sagellm_backend.testing.pytest_suite import ConformanceSuite  # noqa: E402
from sagellm_backend.testing.standins import (  # noqa: E402
    StandInMusaProvider,
    StandInRocmProvider,
    musa_standin,
    rocm_standin,
)
from sagellm_backend.vendors import BUILTIN_VENDORS, load_vendor  # noqa: E402
from sagellm_backend.vendors.musa import MUSA, musa_native_dtypes  # noqa: E402
from sagellm_backend.vendors.rocm import ROCM, gfx_arch, rocm_native_dtypes  # noqa: E402

_BASE = {DType.FP32, DType.FP16, DType.INT8, DType.INT4}


def _infos() -> dict[str, object]:
    return {i.name: i for i in list_providers()}


def test_vendor_facts() -> None:
    assert (ROCM.device_type, ROCM.torch_module, ROCM.sdk_module) == ("cuda", "cuda", None)
    assert (ROCM.dist_backend, ROCM.graph_class, ROCM.fast_copy) == ("nccl", "CUDAGraph", True)
    assert ROCM.aliases == ("dcu", "hygon", "haiguang", "amd") and ROCM.priority == 95
    assert (MUSA.device_type, MUSA.torch_module, MUSA.sdk_module) == ("musa", "musa", "torch_musa")
    assert (MUSA.dist_backend, MUSA.graph_class, MUSA.fast_copy) == ("mccl", "MUSAGraph", False)
    assert MUSA.aliases == ("mthreads",) and MUSA.priority == 70
    assert ROCM.sources and MUSA.sources
    assert RocmBackendProvider.dist_backend == "nccl" and MusaBackendProvider.device_type == "musa"


@pytest.mark.parametrize(
    ("alias", "name"), [("DCU", "rocm"), ("hygon", "rocm"), ("Haiguang", "rocm"), ("amd", "rocm"), ("mthreads", "musa")]
)
def test_aliases_resolve(alias: str, name: str) -> None:
    assert resolve_provider_name(alias) == name


def test_unavailable_here_with_reasons() -> None:
    if getattr(torch.version, "hip", None):
        pytest.skip(f"this torch is a ROCm build (HIP {torch.version.hip})")
    infos = _infos()
    rocm, musa = infos["rocm"], infos["musa"]
    assert not rocm.available and "not a ROCm/HIP build (torch.version.hip is None)" in rocm.reason
    assert not musa.available and musa.reason.startswith("torch_musa is not installed")
    assert rocm.aliases == ("dcu", "hygon", "haiguang", "amd") and musa.aliases == ("mthreads",)


@pytest.mark.parametrize("name", ["rocm", "dcu", "hygon", "haiguang", "amd"])
def test_rocm_names_raise_with_what_to_install(name: str) -> None:
    if getattr(torch.version, "hip", None):
        pytest.skip("this torch is a ROCm build")
    with pytest.raises(
        UnavailableError, match=r"provider 'rocm' is not available here: .*ROCm build of torch.*Hygon DTK"
    ):
        get_provider(name)
    with pytest.raises(UnavailableError, match="not a ROCm/HIP build"):
        RocmBackendProvider()


@pytest.mark.parametrize("name", ["musa", "mthreads"])
def test_musa_names_raise_naming_torch_musa(name: str) -> None:
    with pytest.raises(UnavailableError, match=r"provider 'musa' is not available here: torch_musa is not installed"):
        get_provider(name)
    with pytest.raises(UnavailableError, match="torch_musa"):
        MusaBackendProvider()


def test_auto_never_picks_rocm_or_musa_without_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGELLM_BACKEND", raising=False)
    assert get_provider().name in ("cpu", "cuda")


# (gcnArchName, bf16, fp8): AMD documentation and Hygon's kernels, see docs/VENDORS.md
_ARCHS = [
    ("gfx906:sramecc+:xnack-", False, False),  # MI50/MI60; Hygon Z100
    ("gfx908:sramecc+:xnack-", True, False),  # MI100
    ("gfx90a:sramecc+:xnack-", True, False),  # MI200
    ("gfx942:sramecc+:xnack-", True, False),  # MI300: fp8 only as FNUZ
    ("gfx950:sramecc+:xnack-", True, True),  # MI350: OCP fp8
    ("gfx1030", False, False),  # RDNA2
    ("gfx1100", True, False),  # RDNA3 WMMA
    ("gfx1201", True, True),  # RDNA4: OCP fp8
    ("gfx926", False, False),  # Hygon K100
    ("gfx928", True, False),  # Hygon K100_AI
    ("gfx936", True, False),  # Hygon BW
    ("gfx938", True, False),
]


@pytest.mark.parametrize(("arch", "bf16", "fp8"), _ARCHS)
def test_rocm_dtype_rule(arch: str, bf16: bool, fp8: bool) -> None:
    dts = rocm_native_dtypes(arch)
    assert (DType.BF16 in dts) is bf16 and (DType.FP8 in dts) is fp8
    assert set(dts) >= _BASE


_ARCH_NAMES = st.from_regex(r"gfx(9[0-9a-f]{2}|1[0-2][0-9]{2})", fullmatch=True)
_FEATURES = st.lists(st.sampled_from(["sramecc+", "sramecc-", "xnack+", "xnack-"]), max_size=2)


@given(_ARCH_NAMES, _FEATURES)
def test_rocm_rule_properties(arch: str, features: list[str]) -> None:
    full = ":".join([arch, *features])
    dts = rocm_native_dtypes(full)
    assert gfx_arch(full) == arch and dts == rocm_native_dtypes(arch.upper())  # features, case ignored
    assert set(dts) >= _BASE and dts == [d for d in DType if d in dts]  # base set, protocol order
    assert DType.FP8 not in dts or DType.BF16 in dts  # every fp8 architecture also has bf16


@pytest.mark.parametrize(
    ("cap", "expected"),
    [
        ((2, 1), [DType.FP32, DType.FP16, DType.INT4]),  # QY1: MTT S80/S3000
        ((2, 2), [DType.FP32, DType.FP16, DType.BF16, DType.INT8, DType.INT4]),  # QY2: MTT S4000
        ((3, 1), list(DType)),
    ],
)
def test_musa_dtype_rule(cap: tuple[int, int], expected: list[DType]) -> None:
    assert musa_native_dtypes(cap) == expected


@given(st.tuples(st.integers(1, 4), st.integers(0, 9)), st.tuples(st.integers(1, 4), st.integers(0, 9)))
def test_musa_rule_is_monotonic(a: tuple[int, int], b: tuple[int, int]) -> None:
    lo, hi = sorted([a, b])
    assert set(musa_native_dtypes(lo)) <= set(musa_native_dtypes(hi))


def test_rocm_standin_auto_picks_rocm_and_cuda_steps_aside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGELLM_BACKEND", raising=False)
    real_props, real_hip = torch.cuda.get_device_properties, torch.version.hip
    with rocm_standin() as fake:
        infos = _infos()
        assert infos["rocm"].available and infos["rocm"].device_count == 2
        assert infos["rocm"].reason.startswith("2 device(s) via torch.cuda on ROCm (HIP 6.4.43482")
        assert not infos["cuda"].available and "is a ROCm/HIP build" in infos["cuda"].reason
        assert "use 'rocm'" in detect_cuda().reason
        p = get_provider("auto")
        assert isinstance(p, RocmBackendProvider) and p.name == "rocm" and p.device == "cuda:0"
        cap = p.capability()
        assert (cap.device_name, cap.device_type, cap.compute_capability) == ("AMD Instinct MI300X", "cuda", "gfx942")
        assert DType.BF16 in cap.supported_dtypes and DType.FP8 not in cap.supported_dtypes
        assert p.dist_backend == "nccl" and p.reachable_devices() == ["cuda:0", "cuda:1", "cpu"]
        p.clear_cache()
        assert fake.empty_cache_calls == 1
    assert torch.cuda.get_device_properties is real_props and torch.version.hip == real_hip


def test_rocm_standin_mi300_refuses_fp8_naming_fnuz() -> None:
    with rocm_standin(["AMD Instinct MI300X"]):
        p = StandInRocmProvider(0)
        with pytest.raises(UnsupportedDTypeError, match=r"gfx942\) computes fp8 only in the FNUZ encoding"):
            p.kv_block_alloc(8, DType.FP8)
        assert p.kv_block_alloc(8, DType.BF16).device == "cuda:0"


def test_rocm_standin_mi350_takes_fp8_and_mi50_refuses_bf16() -> None:
    with rocm_standin(["AMD Instinct MI355X"], "gfx950:sramecc+:xnack-"):
        blk = StandInRocmProvider(0).kv_block_alloc(8, DType.FP8)
        assert blk.device == "cuda:0"
    with rocm_standin(["AMD Instinct MI50"], "gfx906:sramecc+:xnack-"):
        p = StandInRocmProvider(0)
        with pytest.raises(UnsupportedDTypeError, match=r"cuda:0 \(AMD Instinct MI50\) is gfx906; use fp16"):
            p.kv_block_alloc(8, DType.BF16)


def test_hygon_dtk_build_through_dcu_alias() -> None:
    with rocm_standin(
        ["BW", "BW", "BW", "BW"], "gfx936", hip_version="6.3.26113", torch_version="2.9.0+das.opt1.dtk2604"
    ):
        assert "on Hygon DTK (HIP 6.3.26113" in _infos()["rocm"].reason
        p = get_provider("dcu", {"kind": "dcu", "device": "cuda:3"})
        assert isinstance(p, RocmBackendProvider) and p.device == "cuda:3"
        assert p.capability().compute_capability == "gfx936" and DType.BF16 in p.capability().supported_dtypes


def test_musa_standin_detection_devices_and_restore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGELLM_BACKEND", raising=False)
    with musa_standin() as fake:
        infos = _infos()
        assert infos["musa"].available and infos["musa"].reason.startswith("2 device(s) via torch.musa")
        assert get_provider("auto").name == ("cuda" if infos["cuda"].available else "musa")
        p = get_provider("mthreads", {"kind": "musa", "device": "musa:1"})
        assert isinstance(p, MusaBackendProvider) and p.device == "musa:1" and p.dist_backend == "mccl"
        assert p.reachable_devices() == ["musa:1", "musa:0", "cpu"]
        cap = p.capability()
        assert (cap.device_name, cap.device_type, cap.compute_capability) == ("MTT S4000", "musa", "2.2")
        assert DType.BF16 in cap.supported_dtypes and DType.FP8 not in cap.supported_dtypes
        p.clear_cache()
        assert fake.empty_cache_calls == 1
    assert not hasattr(torch, "musa") and "torch_musa" not in sys.modules


def test_musa_s80_refuses_bf16_with_fix() -> None:
    with musa_standin(["MTT S80"], capability=(2, 1)):
        p = StandInMusaProvider(0)
        with pytest.raises(UnsupportedDTypeError, match=r"MUSA architecture >= 2.2 \(MTT S4000\); .*has 2.1; use fp16"):
            p.kv_block_alloc(8, DType.BF16)
        assert p.kv_block_alloc(8, DType.FP16).device == "musa:0"


class _FakeTriton:
    """The two calls CudaRowCopier makes on the triton_copy module; fails on demand."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.calls = 0

    def word_view(self, t: object) -> tuple[object, int]:
        rows = t.reshape(t.shape[0], -1)  # type: ignore[attr-defined]
        return rows, rows.shape[1]

    def copy_words(self, s, src_idx, d, dst_idx, n, words, dst_off=0) -> None:  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.fail:
            raise RuntimeError("no AMDGPU target for gfx926 in this Triton")
        d[dst_idx[dst_off : dst_off + n]] = s[src_idx[:n]]


def test_triton_copier_falls_back_when_first_launch_fails() -> None:
    tc = _FakeTriton(fail=True)
    copier = CudaRowCopier(0, tc)
    src, dst = torch.arange(80.0).reshape(10, 8), torch.zeros(10, 8)
    s_ids, d_ids = torch.tensor([0, 2, 4, 6, 8]), torch.tensor([1, 3, 5, 7, 9])
    with pytest.warns(RuntimeWarning, match="use torch indexing from now on"):
        copier(src, s_ids, dst, d_ids)
    assert torch.equal(dst[d_ids], src[s_ids]) and "gfx926" in (copier.disabled or "")
    dst2 = torch.zeros(10, 8)
    copier(src, d_ids, dst2, s_ids)
    assert tc.calls == 1 and torch.equal(dst2[s_ids], src[d_ids])


def test_triton_copier_reraises_after_a_launch_succeeded() -> None:
    tc = _FakeTriton(fail=False)
    copier = CudaRowCopier(0, tc)
    src, dst = torch.arange(40.0).reshape(5, 8), torch.zeros(5, 8)
    ids = torch.tensor([4, 3, 2, 1, 0])
    copier(src, ids, dst, torch.arange(5))
    assert torch.equal(dst, src.flip(0))
    tc.fail = True
    with pytest.raises(RuntimeError, match="gfx926"):
        copier(src, ids, dst, torch.arange(5))
    assert copier.disabled is None


def test_pyproject_entry_points_cover_every_builtin_name() -> None:
    tomllib = pytest.importorskip("tomllib")
    path = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if not path.is_file():
        pytest.skip(f"no pyproject.toml at {path}")
    eps = tomllib.loads(path.read_text())["project"]["entry-points"]["sagellm.backends"]
    for name in BUILTIN_VENDORS:
        target = f"sagellm_backend.providers.{name}:create_{name}_backend"
        for key in (name, *load_vendor(name).aliases):
            assert eps.get(key) == target, f"pyproject entry point {key!r}: {eps.get(key)!r}, expected {target!r}"


@pytest.fixture
def _rocm():
    with rocm_standin():
        yield


@pytest.fixture
def _musa():
    with musa_standin():
        yield


@pytest.mark.usefixtures("_rocm")
class TestRocmStandInConformance(ConformanceSuite):
    @staticmethod
    def make_provider():
        return StandInRocmProvider(0)


@pytest.mark.usefixtures("_musa")
class TestMusaStandInConformance(ConformanceSuite):
    @staticmethod
    def make_provider():
        return StandInMusaProvider(0)
