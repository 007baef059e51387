"""The CPU inspector: always present, usable from ``framework`` (numpy alone runs the Mock/CPU core)."""

from __future__ import annotations

import os

from ..profile import DetectionLevel, HardwareProfile, LayerResult
from .base import HardwareInspector, guarded

__all__ = ["CpuInspector"]

_TORCH_HINT = "Install torch for the CPU provider: pip install 'torch>=2.4'"


def _torch_cpu_probe() -> LayerResult:
    import torch

    a = torch.ones(2, 2)
    value = float((a @ a).sum())
    if value != 8.0:
        return LayerResult(False, f"a 2x2 matmul on the CPU gave {value}, expected 8.0", {}, [_TORCH_HINT])
    return LayerResult(
        True, f"torch {torch.__version__} ran a matmul on the CPU", {"torch_threads": torch.get_num_threads()}
    )


class CpuInspector(HardwareInspector):
    """One device, named after the CPU model; ``functional`` when torch runs a matmul (if asked)."""

    hardware_type = "cpu"

    def get_profile(self, include_functional: bool = False) -> HardwareProfile:
        """Inspect the CPU.

        Args:
            include_functional: Also import torch and run a tiny matmul.

        Returns:
            The profile: ``framework`` (``functional`` when the probe ran and passed), 1 device.
        """
        try:
            name = self.system.cpu_model_name()
        except Exception:  # inspectors never raise; an unreadable model name is not fatal
            name = "CPU"
        cores = os.cpu_count() or 1
        l0 = LayerResult(True, f"{cores} logical CPU(s): {name}", {"logical_cpus": cores, "model_name": name})
        l1 = LayerResult(True, "the CPU needs no accelerator driver")
        l2 = guarded("framework", self._framework)
        l3 = guarded("functional", self._functional) if include_functional else None
        level = DetectionLevel.FUNCTIONAL if l3 is not None and l3.available else DetectionLevel.FRAMEWORK
        return HardwareProfile(
            hardware_type="cpu",
            max_level=level,
            l0_physical=l0,
            l1_driver=l1,
            l2_framework=l2,
            l3_functional=l3,
            device_count=1,
            device_names=[name],
            framework_version=l2.details.get("framework_version"),
        )

    def _framework(self) -> LayerResult:
        build = self.system.torch_build()
        numpy_version = self.system.distribution_version("numpy")
        if build is None:
            return LayerResult(
                True,
                f"numpy {numpy_version} (torch not installed: only the Mock provider and numpy paths run)",
                {"framework_version": f"numpy {numpy_version}", "torch_version": None},
                [_TORCH_HINT],
            )
        return LayerResult(
            True,
            f"torch {build.version} installed",
            {"framework_version": f"torch {build.version}", "torch_version": build.version},
            ["Confirm torch runs: get_profile(include_functional=True) runs a small matmul."],
        )

    def _functional(self) -> LayerResult:
        if self.system.torch_build() is None:
            return LayerResult(False, "torch is not installed", {}, [_TORCH_HINT])
        return _torch_cpu_probe()
