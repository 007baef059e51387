"""Hardware profiles: inspectors on this machine and on fake machines, profile (de)serialisation, the cache."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import sagellm_backend
from sagellm_backend.errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ProviderNotFoundError,
    UnavailableError,
)
from sagellm_backend.hardware import (
    DetectionLevel,
    HardwareProfile,
    LayerResult,
    ProfileCache,
    SystemView,
    TorchBuild,
    detect_profiles,
    get_inspector,
    list_supported_hardware,
)
from sagellm_backend.hardware import cache as cache_mod
from sagellm_backend.hardware import inspectors as inspectors_mod
from sagellm_backend.hardware.inspectors.base import AcceleratorInspector, FunctionalResult
from sagellm_backend.hardware.inspectors.vendors import CUDA
from sagellm_backend.registry import resolve_provider_name

ACCELERATORS = ["cuda", "rocm", "ascend", "kunlun", "musa"]
SRC = str(Path(sagellm_backend.__file__).resolve().parents[1])


class FakeSystem(SystemView):
    """A machine under ``root`` with chosen tools, environment, Python modules and torch build."""

    def __init__(
        self,
        root: Path,
        *,
        tools: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        modules: tuple[str, ...] = (),
        torch: TorchBuild | None = None,
        dists: dict[str, str] | None = None,
    ) -> None:
        super().__init__(root, which=lambda t: f"/usr/bin/{t}" if t in tools else None, env=env or {})
        self.modules, self._torch, self.dists = set(modules), torch, dists or {}

    def module_available(self, name: str) -> bool:
        return name in self.modules

    def torch_build(self) -> TorchBuild | None:
        return self._torch

    def distribution_version(self, name: str) -> str | None:
        return self.dists.get(name)


def put(root: Path, path: str, text: str = "") -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


CUDA_TORCH = TorchBuild("2.5.1+cu124", cuda="12.4")
ROCM_TORCH = TorchBuild("2.4.1+rocm6.1", hip="6.1.40091")
CPU_TORCH = TorchBuild("2.5.1+cpu")


def fake_nvidia(root: Path) -> None:
    for i in range(2):
        put(root, f"/dev/nvidia{i}")
        put(root, f"/proc/driver/nvidia/gpus/0000:{i}b:00.0/information", "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ: 1\n")
    put(root, "/dev/nvidiactl")
    put(root, "/dev/nvidia-uvm")
    put(
        root,
        "/proc/driver/nvidia/version",
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.15  Release Build  (dvs-builder@U16)\n",
    )


# ------------------------------------------------------------------------------------- this machine


def test_every_inspector_runs_on_this_machine() -> None:
    assert list_supported_hardware() == ["cpu", "cuda", "rocm", "ascend", "kunlun", "musa"]
    for functional in (False, True):
        profiles = detect_profiles(include_functional=functional)
        assert list(profiles) == list_supported_hardware()
        cpu = profiles["cpu"]
        assert cpu.is_usable() and cpu.device_count == 1 and len(cpu.device_names) == 1 and cpu.device_names[0]
        assert cpu.max_level == (DetectionLevel.FUNCTIONAL if functional else DetectionLevel.FRAMEWORK)
        for hw in ACCELERATORS:
            p = profiles[hw]
            assert p.hardware_type == hw
            assert p.is_usable() == (p.l0_physical.available and p.l1_driver.available and p.l2_framework.available)
            if not p.l0_physical.available:  # no such device here: never usable, with a reason and a way out
                assert not p.is_usable() and p.max_level == DetectionLevel.UNAVAILABLE
                assert p.l0_physical.message and p.l0_physical.suggestions
            assert p.l2_framework.suggestions, "the umbrella CLI reads l2_framework.suggestions[0]"
            json.dumps(p.to_dict())


def test_inspection_imports_no_torch_and_works_without_it() -> None:
    code = (
        "import sys\n{block}"
        "from sagellm_backend.hardware import detect_profiles\n"
        "ps = detect_profiles()\n"
        "cpu = ps['cpu']\n"
        "print(cpu.max_level.value, cpu.l2_framework.message.split()[0], sys.modules.get('torch') is not None)"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    for block, expect in (("", "framework torch False"), ("sys.modules['torch'] = None\n", "framework numpy False")):
        out = subprocess.run(
            [sys.executable, "-c", code.format(block=block)], capture_output=True, text=True, env=env, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == expect


# ----------------------------------------------------------------------------------- fake machines


def test_nvidia_levels(tmp_path: Path) -> None:
    fake_nvidia(tmp_path)
    full = get_inspector("cuda", system=FakeSystem(tmp_path, tools=("nvidia-smi",), torch=CUDA_TORCH)).get_profile()
    assert full.max_level == DetectionLevel.RUNTIME_ENV and full.is_usable()
    assert full.device_count == 2 and full.device_names == ["NVIDIA H100 80GB HBM3"] * 2
    assert full.driver_version == "550.54.15" and full.framework_version == "torch 2.5.1+cu124"
    assert full.l1_5_management_tools is not None and full.l1_5_management_tools.details["tools"] == {
        "nvidia-smi": "/usr/bin/nvidia-smi"
    }
    no_torch = get_inspector("nvidia", system=FakeSystem(tmp_path, tools=("nvidia-smi",))).get_profile()
    assert no_torch.max_level == DetectionLevel.DRIVER and not no_torch.is_usable()
    assert "not installed" in no_torch.l2_framework.message and no_torch.l2_framework.suggestions
    cpu_torch = get_inspector("cuda", system=FakeSystem(tmp_path, torch=CPU_TORCH)).get_profile()
    assert cpu_torch.max_level == DetectionLevel.DRIVER and "cpu build" in cpu_torch.l2_framework.message
    hidden = get_inspector("cuda", system=FakeSystem(tmp_path, torch=CUDA_TORCH, env={"CUDA_VISIBLE_DEVICES": ""}))
    p = hidden.get_profile()
    assert p.max_level == DetectionLevel.FRAMEWORK and p.l2_5_runtime_env is not None
    assert not p.l2_5_runtime_env.available and "CUDA_VISIBLE_DEVICES" in p.l2_5_runtime_env.suggestions[0]


def test_device_node_and_smi_alone_reach_driver_level(tmp_path: Path) -> None:
    put(tmp_path, "/dev/nvidia0")
    p = get_inspector("cuda", system=FakeSystem(tmp_path, tools=("nvidia-smi",))).get_profile()
    assert p.max_level == DetectionLevel.DRIVER and p.device_count == 1 and p.driver_version is None
    only_smi = get_inspector("cuda", system=FakeSystem(tmp_path / "empty", tools=("nvidia-smi",))).get_profile()
    assert only_smi.max_level == DetectionLevel.UNAVAILABLE and only_smi.l1_driver.available


def test_pci_functions_count_as_devices_with_class_filter(tmp_path: Path) -> None:
    for addr, vendor, cls in (
        ("0000:c1:00.0", "0x19e5", "0x120000"),  # Ascend NPU: processing accelerator
        ("0000:c2:00.0", "0x19e5", "0x120000"),
        ("0000:03:00.0", "0x19e5", "0x030000"),  # Huawei BMC display chip: not an NPU
        ("0000:05:00.0", "0x19e5", "0x020000"),  # Huawei NIC
        ("0000:3b:00.0", "0x10de", "0x030200"),  # NVIDIA 3D controller
    ):
        put(tmp_path, f"/sys/bus/pci/devices/{addr}/vendor", vendor + "\n")
        put(tmp_path, f"/sys/bus/pci/devices/{addr}/class", cls + "\n")
    ascend = get_inspector("ascend", system=FakeSystem(tmp_path)).get_profile()
    assert ascend.l0_physical.available and ascend.device_count == 2
    assert ascend.l0_physical.details["pci_functions"] == ["0000:c1:00.0", "0000:c2:00.0"]
    assert ascend.max_level == DetectionLevel.PHYSICAL  # no driver
    assert get_inspector("cuda", system=FakeSystem(tmp_path)).get_profile().device_count == 1
    assert not get_inspector("musa", system=FakeSystem(tmp_path)).get_profile().l0_physical.available


def test_ascend_levels(tmp_path: Path) -> None:
    for i in range(8):
        put(tmp_path, f"/dev/davinci{i}")
    put(tmp_path, "/dev/davinci_manager")
    put(tmp_path, "/usr/local/Ascend/driver/version.info", "Version=24.1.rc2\nascendhal_version=7.35.19\n")
    put(tmp_path, "/usr/local/sbin/npu-smi")  # off PATH: found through the fallback path
    kw = {"modules": ("torch_npu",), "torch": CPU_TORCH, "dists": {"torch-npu": "2.5.1"}}
    env = {"ASCEND_TOOLKIT_HOME": "/usr/local/Ascend/ascend-toolkit/latest", "ASCEND_RT_VISIBLE_DEVICES": "0,1"}
    p = get_inspector("npu", system=FakeSystem(tmp_path, env=env, **kw)).get_profile()  # type: ignore[arg-type]
    assert p.hardware_type == "ascend" and p.max_level == DetectionLevel.RUNTIME_ENV and p.device_count == 8
    assert p.driver_version == "24.1.rc2" and p.framework_version == "torch 2.5.1+cpu + torch_npu 2.5.1"
    assert p.l1_5_management_tools is not None and p.l1_5_management_tools.details["tools"] == {
        "npu-smi": "/usr/local/sbin/npu-smi"
    }
    no_env = get_inspector("ascend", system=FakeSystem(tmp_path, **kw)).get_profile()  # type: ignore[arg-type]
    assert no_env.max_level == DetectionLevel.FRAMEWORK and no_env.is_usable()
    assert no_env.l2_5_runtime_env is not None and "set_env.sh" in no_env.l2_5_runtime_env.suggestions[0]
    no_ext = get_inspector("ascend", system=FakeSystem(tmp_path, torch=CPU_TORCH)).get_profile()
    assert no_ext.max_level == DetectionLevel.DRIVER and "torch_npu is not installed" in no_ext.l2_framework.message


def fake_hygon(root: Path) -> FakeSystem:
    """A machine with one Hygon DCU (KFD node, hydcu driver, hy-smi) and a DTK build of torch."""
    put(root, "/dev/mkfd")
    put(root, "/sys/class/kfd/kfd/topology/nodes/1/gpu_id", "7\n")
    put(root, "/sys/module/hydcu/version", "6.3.13-V1.12.0a\n")
    return FakeSystem(root, tools=("hy-smi",), torch=TorchBuild("2.1.0+das.opt1.dtk24042"))  # ROCm by its version


def test_rocm_and_hygon_levels(tmp_path: Path) -> None:
    amd = tmp_path / "amd"
    put(amd, "/dev/kfd")
    topo = "/sys/class/kfd/kfd/topology/nodes"
    put(amd, f"{topo}/0/gpu_id", "0\n")  # the CPU node
    put(amd, f"{topo}/1/gpu_id", "53432\n")
    put(amd, f"{topo}/1/name", "gfx90a\n")
    put(amd, f"{topo}/10/gpu_id", "1234\n")
    put(amd, f"{topo}/10/name", "gfx90a\n")
    put(amd, "/sys/module/amdgpu/version", "6.7.0\n")
    p = get_inspector("amd", system=FakeSystem(amd, tools=("rocm-smi",), torch=ROCM_TORCH)).get_profile()
    assert p.hardware_type == "rocm" and p.max_level == DetectionLevel.RUNTIME_ENV
    assert p.device_count == 2 and p.device_names == ["gfx90a", "gfx90a"] and p.driver_version == "6.7.0"
    wrong_torch = get_inspector("rocm", system=FakeSystem(amd, torch=CUDA_TORCH)).get_profile()
    assert wrong_torch.max_level == DetectionLevel.DRIVER
    assert get_inspector("cuda", system=FakeSystem(amd, torch=ROCM_TORCH)).get_profile().max_level == (
        DetectionLevel.UNAVAILABLE
    )
    for alias in ("dcu", "haiguang", "hygon"):
        h = get_inspector(alias, system=fake_hygon(tmp_path / "hygon")).get_profile()
        assert h.max_level == DetectionLevel.RUNTIME_ENV and h.driver_version == "6.3.13-V1.12.0a"
    assert TorchBuild("2.6.0+rocm6.2").kind == "rocm" and TorchBuild("2.6.0+cu126").kind == "cuda"
    assert TorchBuild("2.6.0").kind == "cpu" and TorchBuild("2.6.0", cuda="12.6").kind == "cuda"


def test_kunlun_and_musa_levels(tmp_path: Path) -> None:
    put(tmp_path, "/dev/xpu0")
    put(tmp_path, "/dev/xpu1")
    put(tmp_path, "/dev/xpuctrl")
    k = get_inspector("kunlunxin", system=FakeSystem(tmp_path, modules=("torch_xmlir",), torch=CPU_TORCH))
    kp = k.get_profile()
    assert kp.hardware_type == "kunlun" and kp.max_level == DetectionLevel.RUNTIME_ENV and kp.device_count == 2
    hidden = FakeSystem(tmp_path, modules=("torch_xmlir",), torch=CPU_TORCH, env={"XPU_VISIBLE_DEVICES": "-1"})
    assert get_inspector("xpu", system=hidden).get_profile().max_level == DetectionLevel.FRAMEWORK
    mt = tmp_path / "musa"
    put(mt, "/dev/mtgpu.0")
    put(mt, "/dev/mtgpu1")
    put(mt, "/sys/module/mtgpu/version", "2.7.0\n")
    m = get_inspector("mthreads", system=FakeSystem(mt, modules=("torch_musa",), torch=CPU_TORCH)).get_profile()
    assert m.hardware_type == "musa" and m.max_level == DetectionLevel.RUNTIME_ENV
    assert m.device_count == 2 and m.driver_version == "2.7.0"
    assert get_inspector("musa", system=FakeSystem(mt)).get_profile().max_level == DetectionLevel.DRIVER


def test_functional_layer(tmp_path: Path) -> None:
    fake_nvidia(tmp_path)
    system = FakeSystem(tmp_path, torch=CUDA_TORCH)
    real = get_inspector("cuda", system=system).get_profile(include_functional=True)  # this torch has no CUDA
    assert real.l3_functional is not None and not real.l3_functional.available
    assert real.max_level == DetectionLevel.RUNTIME_ENV and real.device_count == 2
    works = dataclasses.replace(CUDA, functional=lambda: FunctionalResult(True, "ok", ["GPU A", "GPU B", "GPU C"]))
    p = AcceleratorInspector(works, system).get_profile(include_functional=True)
    assert p.max_level == DetectionLevel.FUNCTIONAL and p.device_names == ["GPU A", "GPU B", "GPU C"]
    assert p.device_count == 3
    no_fw = AcceleratorInspector(works, FakeSystem(tmp_path)).get_profile(include_functional=True)
    assert no_fw.l3_functional is not None and no_fw.l3_functional.message.startswith("not run")
    assert no_fw.max_level == DetectionLevel.DRIVER

    def boom() -> FunctionalResult:
        raise RuntimeError("driver/library version mismatch")

    broken = AcceleratorInspector(dataclasses.replace(CUDA, functional=boom), system).get_profile(True)
    assert broken.l3_functional is not None and "version mismatch" in broken.l3_functional.message
    assert broken.max_level == DetectionLevel.RUNTIME_ENV


def test_inspectors_never_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Exploding(FakeSystem):
        def list_dir(self, absolute: str) -> list[str]:
            raise PermissionError(13, "denied", absolute)

        def read_text(self, absolute: str) -> str | None:
            raise OSError("I/O error")

    for hw in list_supported_hardware():
        p = get_inspector(hw, system=Exploding(tmp_path, torch=CUDA_TORCH)).get_profile(include_functional=False)
        assert p.hardware_type == hw
        if hw != "cpu":
            assert not p.l0_physical.available and "PermissionError" in p.l0_physical.message

    def broken(system: object) -> object:
        raise RuntimeError("inspector exploded")

    monkeypatch.setitem(inspectors_mod._FACTORIES, "musa", broken)
    profiles = detect_profiles()
    assert profiles["musa"].max_level == DetectionLevel.UNAVAILABLE
    assert "inspector exploded" in profiles["musa"].l0_physical.message and profiles["cpu"].is_usable()


def test_import_surface_the_umbrella_uses() -> None:
    from sagellm_backend.hardware import ProfileCache as PC
    from sagellm_backend.hardware.inspectors import get_inspector as gi
    from sagellm_backend.hardware.inspectors import list_supported_hardware as ls
    from sagellm_backend.hardware.profile import HardwareProfile as HP

    assert (PC, gi, ls, HP) == (ProfileCache, get_inspector, list_supported_hardware, HardwareProfile)
    assert isinstance(gi("cpu").get_profile(include_functional=False), HP)


def test_get_inspector_names() -> None:
    for alias, canonical in {
        "dcu": "rocm",
        "haiguang": "rocm",
        "hygon": "rocm",
        "amd": "rocm",
        "mthreads": "musa",
        "npu": "ascend",
        "xpu": "kunlun",
        "kunlunxin": "kunlun",
        " CUDA ": "cuda",
    }.items():
        assert get_inspector(alias).hardware_type == canonical
    for bad in ("muxi", "metax", "tpu", ""):
        with pytest.raises(ProviderNotFoundError, match="cpu, cuda, rocm, ascend, kunlun, musa") as info:
            get_inspector(bad)
        assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidArgumentTypeError):
        get_inspector(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- profile


def test_detection_level_order_and_usability() -> None:
    order = [level.value for level in sorted(DetectionLevel, key=lambda level: level.rank)]
    assert order == ["unavailable", "physical", "driver", "framework", "runtime_env", "functional"]
    assert DetectionLevel.DRIVER < DetectionLevel.FRAMEWORK <= DetectionLevel.FRAMEWORK < DetectionLevel.FUNCTIONAL
    assert DetectionLevel.parse(" Functional ") is DetectionLevel.FUNCTIONAL
    with pytest.raises(InvalidArgumentError):
        DetectionLevel.parse("gpu")
    with pytest.raises(TypeError):
        _ = DetectionLevel.DRIVER < "framework"  # type: ignore[operator]
    layer = LayerResult(True, "ok")
    usable = {lvl: HardwareProfile("x", lvl, layer, layer, layer).is_usable() for lvl in DetectionLevel}
    assert [lvl.value for lvl, u in usable.items() if u] == ["framework", "runtime_env", "functional"]


def test_profile_round_trip_and_tolerant_validating_from_dict(tmp_path: Path) -> None:
    fake_nvidia(tmp_path)
    p = get_inspector("cuda", system=FakeSystem(tmp_path, tools=("nvidia-smi",), torch=CUDA_TORCH)).get_profile()
    data = json.loads(json.dumps(p.to_dict()))
    assert data["max_level"] == "runtime_env" and data["l3_functional"] is None
    assert HardwareProfile.from_dict(data) == p
    minimal = HardwareProfile.from_dict({"hardware_type": "cpu", "max_level": "framework", "extra": 1})
    assert minimal.is_usable() and minimal.device_count == 0 and minimal.l0_physical.message == "not recorded"
    for bad, err in (
        ([], InvalidArgumentTypeError),
        ({"hardware_type": ""}, InvalidArgumentError),
        ({"hardware_type": "cpu", "max_level": "warp"}, InvalidArgumentError),
        ({"hardware_type": "cpu", "device_count": -1}, InvalidArgumentError),
        ({"hardware_type": "cpu", "device_count": True}, InvalidArgumentTypeError),
        ({"hardware_type": "cpu", "device_names": "CPU"}, InvalidArgumentTypeError),
        ({"hardware_type": "cpu", "l1_driver": "yes"}, InvalidArgumentTypeError),
        ({"hardware_type": "cpu", "l0_physical": {"available": "yes"}}, InvalidArgumentTypeError),
        ({"hardware_type": "cpu", "l2_framework": {"available": True, "suggestions": [1]}}, InvalidArgumentTypeError),
        ({"hardware_type": "cpu", "driver_version": 550}, InvalidArgumentTypeError),
    ):
        with pytest.raises(err):
            HardwareProfile.from_dict(bad)


# --------------------------------------------------------------------------------------------- cache


def _profile(hw: str = "cpu", level: DetectionLevel = DetectionLevel.FRAMEWORK) -> HardwareProfile:
    layer = LayerResult(True, f"{hw} ok", {"n": 1}, ["next"])
    return HardwareProfile(hw, level, layer, layer, layer, device_count=1, device_names=[hw.upper()])


def test_cache_default_path_honours_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cache = ProfileCache()
    assert cache.cache_path == tmp_path / "home" / ".sagellm" / "hardware_profile.json"
    assert cache.load() == {} and cache.load_raw() == {} and cache.get("cpu") is None
    cache.update("cpu", _profile())
    assert cache.cache_path.is_file()  # parent directories created
    monkeypatch.setenv("HOME", str(tmp_path / "other"))
    assert ProfileCache().load() == {} and cache.get("cpu") == _profile("cpu").__class__.from_dict(_profile().to_dict())


def test_cache_round_trip_format_and_clear(tmp_path: Path) -> None:
    cache = ProfileCache(tmp_path / "c" / "profiles.json")
    cache.update("cpu", _profile("cpu"))
    cache.update("cuda", _profile("cuda", DetectionLevel.DRIVER))
    cache.update("cpu", _profile("cpu", DetectionLevel.FUNCTIONAL))  # replaces, keeps cuda
    loaded = cache.load()
    assert set(loaded) == {"cpu", "cuda"} and loaded["cpu"].max_level == DetectionLevel.FUNCTIONAL
    assert loaded["cuda"] == HardwareProfile.from_dict(_profile("cuda", DetectionLevel.DRIVER).to_dict())
    data = json.loads(cache.cache_path.read_text())
    assert set(data) == {"version", "detected_at", "profiles"} and data["version"] == "1.0"
    assert data["detected_at"].endswith("Z") and data["profiles"]["cuda"]["max_level"] == "driver"
    raw = cache.load_raw()
    assert raw["cuda"]["device_count"] == 1 and raw["cuda"]["device_names"] == ["CUDA"]
    cache.save({"rocm": _profile("rocm")})
    assert set(cache.load_raw()) == {"rocm"} and set(cache.load()) == {"rocm", "haiguang"}  # + the umbrella's name
    cache.clear()
    assert not cache.cache_path.exists() and cache.load() == {}
    cache.clear()  # idempotent


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2]",
        '"text"',
        json.dumps({"version": "0.9", "profiles": {"cpu": _profile().to_dict()}}),
        json.dumps({"version": "1.0", "profiles": ["cpu"]}),
        json.dumps({"profiles": {"cpu": _profile().to_dict()}}),
    ],
)
def test_cache_bad_files_read_as_empty(tmp_path: Path, content: str) -> None:
    path = tmp_path / "hardware_profile.json"
    path.write_text(content)
    assert ProfileCache(path).load() == {} and ProfileCache(path).load_raw() == {}


def test_cache_skips_bad_entries_and_binary_garbage(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    good = _profile().to_dict()
    path.write_text(json.dumps({"version": "1.0", "profiles": {"cpu": good, "cuda": {"max_level": "x"}, "z": 3}}))
    cache = ProfileCache(path)
    assert set(cache.load()) == {"cpu"} and set(cache.load_raw()) == {"cpu", "cuda"}
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert cache.load() == {}


def test_cache_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ProfileCache(tmp_path / "p.json")
    cache.update("cpu", _profile())
    before = cache.cache_path.read_bytes()

    def fail_dumps(*args: object, **kwargs: object) -> str:
        raise TypeError("Object of type Widget is not JSON serializable")

    monkeypatch.setattr(cache_mod.json, "dumps", fail_dumps)
    with pytest.raises(InvalidArgumentTypeError, match="JSON"):
        cache.update("cuda", _profile("cuda"))
    monkeypatch.undo()
    assert cache.cache_path.read_bytes() == before and os.listdir(tmp_path) == ["p.json"]

    def fail_replace(src: str, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_mod.os, "replace", fail_replace)
    with pytest.raises(UnavailableError, match="No space left"):
        cache.update("cuda", _profile("cuda"))
    monkeypatch.undo()
    assert cache.cache_path.read_bytes() == before and os.listdir(tmp_path) == ["p.json"]
    weird = _profile("cuda")
    weird.l0_physical.details["obj"] = object()
    with pytest.raises(InvalidArgumentTypeError):
        cache.update("cuda", weird)
    assert cache.cache_path.read_bytes() == before


def test_cache_rejects_bad_arguments(tmp_path: Path) -> None:
    cache = ProfileCache(tmp_path / "p.json")
    with pytest.raises(InvalidArgumentTypeError):
        ProfileCache(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentTypeError):
        cache.update("cpu", {"hardware_type": "cpu"})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        cache.update(" ", _profile())
    with pytest.raises(InvalidArgumentTypeError):
        cache.save({"cpu": "framework"})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgumentTypeError):
        cache.get(1)  # type: ignore[arg-type]
    assert not cache.cache_path.exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UnavailableError):
        ProfileCache(blocker / "sub" / "p.json").update("cpu", _profile())  # parent is a file


def test_concurrent_updates_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    names = [f"hw{i}" for i in range(16)]
    barrier = threading.Barrier(len(names))
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            barrier.wait()
            for _ in range(3):
                ProfileCache(path).update(name, _profile(name))  # a new cache object each time, as the umbrella does
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(ProfileCache(path).load()) == sorted(names)
    assert os.listdir(tmp_path) == ["p.json"]


# --------------------------------------------------------------------------- the umbrella's detect_backend


def umbrella_detect_backend() -> str:
    """The algorithm of engine-interface 0.5 section 6 (steps 1-3)."""
    try:
        profiles = ProfileCache().load()
        if not profiles:
            for hw in list_supported_hardware():
                ProfileCache().update(hw, get_inspector(hw).get_profile(include_functional=False))
            profiles = ProfileCache().load()
    except Exception as exc:
        raise RuntimeError(f"hardware detection failed: {exc}") from exc
    for key in ("ascend", "kunlun", "haiguang", "muxi", "cuda", "cpu"):
        p = profiles.get(key)
        if p is not None and p.max_level.value and p.is_usable():
            return key
    return "fallback"


def test_umbrella_detect_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    choice = umbrella_detect_backend()
    raw = ProfileCache().load_raw()
    assert sorted(raw) == sorted(list_supported_hardware())
    for hw, entry in raw.items():  # what the CLI reads
        assert isinstance(entry["max_level"], str) and isinstance(entry["device_count"], int)
        assert isinstance(entry["device_names"], list) and isinstance(entry["l1_driver"]["message"], str)
        assert entry["l2_framework"]["suggestions"], hw
    accelerators_present = any(ProfileCache().get(hw).l0_physical.available for hw in ACCELERATORS)  # type: ignore[union-attr]
    if not accelerators_present:
        assert choice == "cpu"
    assert umbrella_detect_backend() == choice  # second run reads the cache


def test_hardware_names_and_aliases_come_from_the_vendor_table() -> None:
    from sagellm_backend.hardware.inspectors import ALIASES
    from sagellm_backend.vendors import BUILTIN_VENDORS, load_vendor

    names = list_supported_hardware()
    assert set(names) == set(BUILTIN_VENDORS) - {"mock"} and names[0] == "cpu"
    expected = {a: n for n in names for a in (*load_vendor(n).aliases, *load_vendor(n).hardware_aliases)}
    assert expected == ALIASES
    for alias, name in expected.items():
        assert get_inspector(alias.upper()).hardware_type == name
    assert not set(ALIASES) & set(names), "an alias may never be a vendor's name"


def test_umbrella_finds_a_hygon_dcu_under_its_name_haiguang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The umbrella looks up ``haiguang``; the profile is stored as ``rocm``; the engine then asks for ``haiguang``."""
    monkeypatch.setenv("HOME", str(tmp_path))
    system = fake_hygon(tmp_path / "machine")
    for hw in list_supported_hardware():
        ProfileCache().update(hw, get_inspector(hw, system=system).get_profile(include_functional=False))
    assert "haiguang" not in ProfileCache().load_raw()  # the file holds each profile once
    profiles = ProfileCache().load()
    assert profiles["haiguang"] is profiles["rocm"] and profiles["rocm"].hardware_type == "rocm"
    assert ProfileCache().get("haiguang") == profiles["rocm"]
    assert umbrella_detect_backend() == "haiguang"
    assert resolve_provider_name("haiguang") == "rocm"  # what the engine's get_provider(backend_type) resolves
    # an entry stored under the umbrella's name itself wins; without a rocm profile there is no haiguang one
    ProfileCache().update("haiguang", HardwareProfile.unavailable("haiguang", "stored by hand"))
    assert ProfileCache().load()["haiguang"].hardware_type == "haiguang"
    ProfileCache().save({"cpu": _profile("cpu")})
    assert set(ProfileCache().load()) == {"cpu"} and umbrella_detect_backend() == "cpu"
