"""Where each accelerator shows up on Linux, and torch's view of it (sources: docs/ENGINE_FP8_HARDWARE_NOTES.md).

* NVIDIA CUDA: ``/dev/nvidia<N>`` per GPU, ``/dev/nvidiactl``; module ``nvidia``; driver version in
  ``/sys/module/nvidia/version`` or ``/proc/driver/nvidia/version``; GPU models in
  ``/proc/driver/nvidia/gpus/<bus id>/information``; PCI vendor ``0x10de``; ``nvidia-smi``.
* AMD ROCm and Hygon DCU: ``/dev/kfd`` (Hygon also ``/dev/mkfd``); one KFD topology node per GPU
  with a non-zero ``gpu_id`` under ``/sys/class/kfd/kfd/topology/nodes``; modules ``amdgpu``,
  ``hydcu``/``hycu``; PCI vendors ``0x1002`` (AMD), ``0x1d94`` (Hygon); ``rocm-smi``, ``amd-smi``,
  ``hy-smi``; torch built for ROCm (``torch.version.hip``).
* Huawei Ascend: ``/dev/davinci<N>``, ``/dev/davinci_manager``, ``/dev/devmm_svm``, ``/dev/hisi_hdc``;
  ``/usr/local/Ascend/driver/version.info``; PCI vendor ``0x19e5`` class ``0x12`` (accelerators
  only: Huawei servers also carry a 0x19e5 BMC display chip); ``npu-smi``; ``torch_npu`` with the
  CANN toolkit environment (``set_env.sh``).
* Kunlunxin XPU: ``/dev/xpu<N>``, ``/dev/xpuctrl``; module ``kunlun``; ``xpu-smi``; ``torch_xmlir``.
* Moore Threads MUSA: ``/dev/mtgpu.<N>`` (some drivers ``/dev/mtgpu<N>``); module ``mtgpu``; PCI vendor
  ``0x1ed5``; ``mthreads-gmi``; ``torch_musa``.
"""

from __future__ import annotations

import importlib
import re

from .base import DISPLAY_OR_ACCELERATOR, AcceleratorInspector, FunctionalResult, VendorFacts

__all__ = ["ASCEND", "CUDA", "KUNLUN", "MUSA", "ROCM", "CudaInspector", "RocmInspector"]

_FIRST_TOKEN = r"^\s*(\S+)"


def _names_message(names: list[str]) -> str:
    shown = ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")
    return f"torch sees {len(names)} device(s): {shown}" if names else "torch sees no device"


def _torch_cuda_probe(expect: str) -> FunctionalResult:
    import torch

    kind = "rocm" if getattr(torch.version, "hip", None) else ("cuda" if torch.version.cuda else "cpu")
    if kind != expect:
        return FunctionalResult(False, f"torch {torch.__version__} is a {kind} build, not {expect}")
    if not torch.cuda.is_available():
        return FunctionalResult(False, f"torch {torch.__version__}: torch.cuda.is_available() is False")
    names = [str(torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]
    return FunctionalResult(bool(names), _names_message(names), names)


def _extension_probe(module: str, torch_attr: str) -> FunctionalResult:
    importlib.import_module(module)  # registers the device type with torch
    import torch

    accel = getattr(torch, torch_attr, None)
    if accel is None:
        return FunctionalResult(False, f"{module} imported but torch.{torch_attr} does not exist")
    if not accel.is_available():
        return FunctionalResult(False, f"{module} imported; torch.{torch_attr}.is_available() is False")
    names = [str(accel.get_device_name(i)) for i in range(int(accel.device_count()))]
    return FunctionalResult(bool(names), _names_message(names), names)


CUDA = VendorFacts(
    hardware_type="cuda",
    label="NVIDIA GPU",
    device_node_patterns=(r"nvidia\d+",),
    node_hint="/dev/nvidia0",
    control_nodes=("/dev/nvidiactl",),
    pci_vendor_ids=("0x10de",),
    pci_class_prefixes=("0x03",),
    kernel_modules=("nvidia",),
    driver_version_files=(
        ("/sys/module/nvidia/version", _FIRST_TOKEN),
        ("/proc/driver/nvidia/version", r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)"),
    ),
    driver_paths=("/proc/driver/nvidia",),
    tools=(("nvidia-smi", ("/usr/bin/nvidia-smi",)),),
    torch_build_kind="cuda",
    visibility_env=("CUDA_VISIBLE_DEVICES",),
    install_hint="Install a CUDA build of torch that matches the driver: https://pytorch.org/get-started/locally/",
    driver_hint="Install the NVIDIA driver; `nvidia-smi` should then list the GPUs.",
    functional=lambda: _torch_cuda_probe("cuda"),
)

ROCM = VendorFacts(
    hardware_type="rocm",
    label="AMD/Hygon GPU (ROCm)",
    device_node_patterns=(),
    node_hint="/dev/kfd",
    control_nodes=("/dev/kfd", "/dev/mkfd"),
    pci_vendor_ids=("0x1002", "0x1d94"),
    pci_class_prefixes=DISPLAY_OR_ACCELERATOR,
    kernel_modules=("amdgpu", "hydcu", "hycu"),
    driver_version_files=(
        ("/sys/module/hydcu/version", _FIRST_TOKEN),
        ("/sys/module/hycu/version", _FIRST_TOKEN),
        ("/sys/module/amdgpu/version", _FIRST_TOKEN),
    ),
    tools=(
        ("rocm-smi", ("/opt/rocm/bin/rocm-smi",)),
        ("amd-smi", ("/opt/rocm/bin/amd-smi",)),
        ("hy-smi", ("/opt/hyhal/bin/hy-smi",)),
    ),
    torch_build_kind="rocm",
    visibility_env=("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"),
    install_hint="Install a ROCm build of torch (https://pytorch.org/get-started/locally/); on Hygon DCU, DTK's.",
    driver_hint="Install the amdgpu (ROCm) or Hygon DCU driver; `rocm-smi` or `hy-smi` should then list the devices.",
    functional=lambda: _torch_cuda_probe("rocm"),
)

ASCEND = VendorFacts(
    hardware_type="ascend",
    label="Huawei Ascend NPU",
    device_node_patterns=(r"davinci\d+",),
    node_hint="/dev/davinci0",
    control_nodes=("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"),
    pci_vendor_ids=("0x19e5",),
    pci_class_prefixes=("0x12",),
    driver_version_files=(("/usr/local/Ascend/driver/version.info", r"^\s*Version\s*=\s*(\S+)"),),
    driver_paths=("/usr/local/Ascend/driver",),
    tools=(("npu-smi", ("/usr/local/sbin/npu-smi", "/usr/local/bin/npu-smi")),),
    extension_module="torch_npu",
    extension_distribution="torch-npu",
    visibility_env=("ASCEND_RT_VISIBLE_DEVICES",),
    toolkit_env=("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH"),
    toolkit_hint="Source the CANN toolkit environment: `source /usr/local/Ascend/ascend-toolkit/set_env.sh`.",
    install_hint="Install torch_npu matching torch and CANN: https://gitcode.com/Ascend/pytorch",
    driver_hint="Install the Ascend NPU driver and firmware; `npu-smi info` should then list the NPUs.",
    functional=lambda: _extension_probe("torch_npu", "npu"),
)

KUNLUN = VendorFacts(
    hardware_type="kunlun",
    label="Kunlunxin XPU",
    device_node_patterns=(r"xpu\d+",),
    node_hint="/dev/xpu0",
    control_nodes=("/dev/xpuctrl",),
    kernel_modules=("kunlun",),
    driver_version_files=(("/sys/module/kunlun/version", _FIRST_TOKEN),),
    tools=(("xpu-smi", ("/usr/local/bin/xpu-smi",)),),
    extension_module="torch_xmlir",
    visibility_env=("XPU_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"),
    install_hint="Install Kunlunxin XPyTorch (xpytorch-*.run from the Kunlunxin SDK), which provides torch_xmlir.",
    driver_hint="Install the Kunlunxin XPU driver (kunlun.ko); `xpu-smi` should then list the XPUs.",
    functional=lambda: _extension_probe("torch_xmlir", "cuda"),
)

MUSA = VendorFacts(
    hardware_type="musa",
    label="Moore Threads GPU (MUSA)",
    device_node_patterns=(r"mtgpu\.?\d+",),
    node_hint="/dev/mtgpu.0",
    pci_vendor_ids=("0x1ed5",),
    pci_class_prefixes=DISPLAY_OR_ACCELERATOR,
    kernel_modules=("mtgpu",),
    driver_version_files=(("/sys/module/mtgpu/version", _FIRST_TOKEN),),
    tools=(("mthreads-gmi", ("/usr/bin/mthreads-gmi",)),),
    extension_module="torch_musa",
    extension_distribution="torch_musa",
    visibility_env=("MUSA_VISIBLE_DEVICES",),
    install_hint="Install torch_musa with the MUSA toolkit: https://github.com/MooreThreads/torch_musa",
    driver_hint="Install the Moore Threads MUSA driver; `mthreads-gmi` should then list the GPUs.",
    functional=lambda: _extension_probe("torch_musa", "musa"),
)


class CudaInspector(AcceleratorInspector):
    """NVIDIA: GPU models from ``/proc/driver/nvidia/gpus/*/information``."""

    def _device_names(self) -> list[str]:
        names = []
        for bus_id in self.system.list_dir("/proc/driver/nvidia/gpus"):
            text = self.system.read_text(f"/proc/driver/nvidia/gpus/{bus_id}/information") or ""
            match = re.search(r"^Model:\s*(.+)$", text, re.MULTILINE)
            if match:
                names.append(match.group(1).strip())
        return names


class RocmInspector(AcceleratorInspector):
    """ROCm: one KFD topology node with a non-zero ``gpu_id`` per GPU (needs ``/dev/kfd`` or ``/dev/mkfd``)."""

    _TOPOLOGY = "/sys/class/kfd/kfd/topology/nodes"

    def _gpu_nodes(self) -> list[str]:
        if not (self.system.exists("/dev/kfd") or self.system.exists("/dev/mkfd")):
            return []
        nodes = []
        entries = self.system.list_dir(self._TOPOLOGY)
        for node in sorted(entries, key=lambda n: (0, int(n), "") if n.isdigit() else (1, 0, n)):
            gpu_id = (self.system.read_text(f"{self._TOPOLOGY}/{node}/gpu_id") or "0").strip()
            if gpu_id not in ("", "0"):
                nodes.append(f"{self._TOPOLOGY}/{node}")
        return nodes

    def _device_nodes(self) -> list[str]:
        return self._gpu_nodes()

    def _device_names(self) -> list[str]:
        names = []
        for node in self._gpu_nodes():
            name = (self.system.read_text(f"{node}/name") or "").strip()
            if name:
                names.append(name)
        return names
