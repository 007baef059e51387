"""The layered inspection every accelerator shares; vendors only supply facts (:class:`VendorFacts`).

Layers L0 to L2.5 read files, device nodes, PCI sysfs entries, ``PATH`` and package metadata: no
import of torch or a vendor SDK, no process started, nothing written. L3 (functional) imports torch
and the vendor extension and asks for the devices; it runs only when asked for and only when L2
passed. A layer whose check raises is reported as failed with the error; ``get_profile`` never raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ..profile import DetectionLevel, HardwareProfile, LayerResult
from ..system import SystemView

__all__ = ["AcceleratorInspector", "FunctionalResult", "HardwareInspector", "VendorFacts", "guarded", "max_level"]

DISPLAY_OR_ACCELERATOR = ("0x03", "0x12")  # PCI base classes: display controller, processing accelerator


@dataclass(frozen=True)
class FunctionalResult:
    """What torch reported about the devices.

    Attributes:
        available: torch saw at least one device.
        message: One line.
        device_names: Names in device order.
    """

    available: bool
    message: str
    device_names: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class VendorFacts:
    """Where one vendor's devices, driver, tools and torch extension show up.

    Attributes:
        hardware_type: Canonical name (``cuda``, ``ascend`` ...).
        label: Human name of the devices, e.g. ``"NVIDIA GPU"``.
        device_node_patterns: Regexes for per-device nodes in ``/dev`` (one node per device).
        node_hint: The device nodes as people write them, e.g. ``"/dev/nvidia0"``, for messages.
        control_nodes: Shared nodes that exist once the driver is loaded.
        pci_vendor_ids: PCI vendor IDs.
        pci_class_prefixes: PCI classes that count as devices.
        kernel_modules: Kernel module names (``/sys/module/<name>``).
        driver_version_files: ``(path, regex)``: the first group of the first match is the version.
        driver_paths: Directories a driver package installs (evidence of a driver).
        tools: ``(name, fallback paths)`` of management tools, looked up without running them.
        extension_module: Vendor torch extension (``torch_npu`` ...), or None for plain torch builds.
        extension_distribution: Its distribution name for the version.
        torch_build_kind: Required :attr:`TorchBuild.kind` (``cuda``/``rocm``), or None.
        visibility_env: Variables that select (or hide) devices.
        toolkit_env: Variables of which one must be set for the runtime environment, or ().
        toolkit_hint: How to set them up.
        install_hint: What to install for the framework layer.
        driver_hint: What to install or load for the driver layer.
        functional: L3 probe (imports torch); returns the devices torch sees.
    """

    hardware_type: str
    label: str
    device_node_patterns: tuple[str, ...]
    node_hint: str
    control_nodes: tuple[str, ...] = ()
    pci_vendor_ids: tuple[str, ...] = ()
    pci_class_prefixes: tuple[str, ...] = ()
    kernel_modules: tuple[str, ...] = ()
    driver_version_files: tuple[tuple[str, str], ...] = ()
    driver_paths: tuple[str, ...] = ()
    tools: tuple[tuple[str, tuple[str, ...]], ...] = ()
    extension_module: str | None = None
    extension_distribution: str | None = None
    torch_build_kind: str | None = None
    visibility_env: tuple[str, ...] = ()
    toolkit_env: tuple[str, ...] = ()
    toolkit_hint: str = ""
    install_hint: str
    driver_hint: str
    functional: Callable[[], FunctionalResult]


def guarded(name: str, check: Callable[[], LayerResult]) -> LayerResult:
    """Run one layer check; an unexpected error becomes a failed layer instead of propagating.

    Args:
        name: Layer name for the message.
        check: The check.

    Returns:
        The check's result, or a failed result naming the error.
    """
    try:
        return check()
    except Exception as exc:  # inspectors must never raise: report the failure instead
        return LayerResult(
            False,
            f"{name} check failed: {type(exc).__name__}: {exc}",
            {"error": type(exc).__name__},
            ["Report this error; the other layers were still checked."],
        )


def max_level(
    l0: LayerResult, l1: LayerResult, l2: LayerResult, l2_5: LayerResult | None, l3: LayerResult | None
) -> DetectionLevel:
    """Highest level reached with every layer below it passed.

    Args:
        l0: Physical layer.
        l1: Driver layer.
        l2: Framework layer.
        l2_5: Runtime-environment layer, if checked.
        l3: Functional layer, if checked.

    Returns:
        The level.
    """
    level = DetectionLevel.UNAVAILABLE
    for layer, reached in (
        (l0, DetectionLevel.PHYSICAL),
        (l1, DetectionLevel.DRIVER),
        (l2, DetectionLevel.FRAMEWORK),
    ):
        if not layer.available:
            return level
        level = reached
    if l3 is not None and l3.available:
        return DetectionLevel.FUNCTIONAL
    if l2_5 is not None and l2_5.available:
        return DetectionLevel.RUNTIME_ENV
    return level


class HardwareInspector:
    """Base of all inspectors: ``get_profile`` never raises.

    Args:
        system: The machine view (the real machine by default).
    """

    hardware_type = "unknown"

    def __init__(self, system: SystemView | None = None) -> None:
        self.system = system if system is not None else SystemView()

    def get_profile(self, include_functional: bool = False) -> HardwareProfile:
        """Inspect every layer.

        Args:
            include_functional: Also import torch and ask for the devices (L3).

        Returns:
            The profile.
        """
        raise NotImplementedError


class AcceleratorInspector(HardwareInspector):
    """Layered inspection driven by :class:`VendorFacts`.

    Args:
        facts: The vendor's facts.
        system: The machine view.
    """

    def __init__(self, facts: VendorFacts, system: SystemView | None = None) -> None:
        super().__init__(system)
        self.facts = facts
        self.hardware_type = facts.hardware_type

    def get_profile(self, include_functional: bool = False) -> HardwareProfile:
        """Inspect every layer (see the module docstring).

        Args:
            include_functional: Also import torch and the vendor extension and ask for the devices.

        Returns:
            The profile; ``device_count``/``device_names`` come from torch when L3 ran and passed.
        """
        f = self.facts
        l0 = guarded("physical", self._physical)
        l1 = guarded("driver", self._driver)
        tools = guarded("management tools", self._tools)
        l2 = guarded("framework", self._framework)
        l2_5 = guarded("runtime environment", self._runtime_env)
        l3 = None
        if include_functional:
            l3 = guarded("functional", self._functional) if l2.available else _skipped_functional(l2)
        count = int(l0.details.get("device_count", 0))
        names = [str(n) for n in l0.details.get("device_names", [])]
        if l3 is not None and l3.available:
            names = [str(n) for n in l3.details.get("device_names", [])]
            count = len(names)
        return HardwareProfile(
            hardware_type=f.hardware_type,
            max_level=max_level(l0, l1, l2, l2_5, l3),
            l0_physical=l0,
            l1_driver=l1,
            l2_framework=l2,
            l1_5_management_tools=tools,
            l2_5_runtime_env=l2_5,
            l3_functional=l3,
            device_count=count,
            device_names=names,
            driver_version=l1.details.get("driver_version"),
            framework_version=l2.details.get("framework_version"),
        )

    # --------------------------------------------------------------- L0

    def _device_nodes(self) -> list[str]:
        nodes: list[str] = []
        for pattern in self.facts.device_node_patterns:
            nodes.extend(n for n in self.system.device_nodes(pattern) if n not in nodes)
        return nodes

    def _device_names(self) -> list[str]:
        return []

    def _physical(self) -> LayerResult:
        f = self.facts
        nodes = self._device_nodes()
        pci = self.system.pci_functions(f.pci_vendor_ids, f.pci_class_prefixes) if f.pci_vendor_ids else []
        count = len(nodes) or len(pci)
        details: dict[str, object] = {
            "device_nodes": nodes,
            "pci_functions": pci,
            "device_count": count,
            "device_names": self._device_names(),
        }
        if count:
            found = []
            if nodes:
                found.append(f"{len(nodes)} device node(s) ({', '.join(nodes[:4])}{' ...' if len(nodes) > 4 else ''})")
            if pci:
                found.append(f"{len(pci)} PCI function(s) of vendor {'/'.join(f.pci_vendor_ids)}")
            return LayerResult(True, f"{f.label}: found {' and '.join(found)}", details)
        pci_note = f" and no PCI device of vendor {'/'.join(f.pci_vendor_ids)}" if f.pci_vendor_ids else ""
        return LayerResult(
            False,
            f"no {f.label}: no device node like {f.node_hint}{pci_note}",
            details,
            [
                f"Check that the {f.label} is installed and passed through to this machine or container "
                f"(device nodes like {f.node_hint}).",
            ],
        )

    # --------------------------------------------------------------- L1

    def _driver(self) -> LayerResult:
        f, s = self.facts, self.system
        modules = [m for m in f.kernel_modules if s.exists(f"/sys/module/{m}")]
        controls = [n for n in f.control_nodes if s.exists(n)]
        packages = [p for p in f.driver_paths if s.exists(p)]
        tools = [name for name, fallbacks in f.tools if s.which(name, fallbacks)]
        version = None
        for path, pattern in f.driver_version_files:
            text = s.read_text(path)
            match = re.search(pattern, text, re.MULTILINE) if text else None
            if match:
                version = match.group(1).strip()
                break
        details: dict[str, object] = {
            "kernel_modules": modules,
            "control_nodes": controls,
            "driver_paths": packages,
            "tools": tools,
            "driver_version": version,
        }
        evidence = [f"kernel module {m}" for m in modules] + controls + packages + tools
        if evidence or version:
            ver = f" {version}" if version else ""
            return LayerResult(
                True, f"{f.label} driver{ver} present ({', '.join(evidence) or 'version file'})", details
            )
        looked_for = [f"kernel module {m}" for m in f.kernel_modules] + list(f.control_nodes) + list(f.driver_paths)
        looked_for += [name for name, _ in f.tools]
        return LayerResult(
            False,
            f"no {f.label} driver: none of {', '.join(looked_for)} found",
            details,
            [f.driver_hint],
        )

    def _tools(self) -> LayerResult:
        found = {name: where for name, fallbacks in self.facts.tools if (where := self.system.which(name, fallbacks))}
        names = ", ".join(name for name, _ in self.facts.tools)
        if found:
            return LayerResult(True, f"found {', '.join(found)}", {"tools": found})
        return LayerResult(False, f"none of {names} found", {"tools": {}}, [self.facts.driver_hint])

    # --------------------------------------------------------------- L2

    def _framework(self) -> LayerResult:
        f, s = self.facts, self.system
        build = s.torch_build()
        details: dict[str, object] = {
            "torch_version": build.version if build else None,
            "torch_build": build.kind if build else None,
        }
        if build is None:
            return LayerResult(False, "torch is not installed", details, [f.install_hint])
        if f.torch_build_kind is not None and build.kind != f.torch_build_kind:
            return LayerResult(
                False,
                f"torch {build.version} is a {build.kind} build; {f.label} needs a {f.torch_build_kind} build",
                details,
                [f.install_hint],
            )
        framework = f"torch {build.version}"
        if f.extension_module is not None:
            if not s.module_available(f.extension_module):
                return LayerResult(
                    False,
                    f"torch {build.version} found but {f.extension_module} is not installed",
                    details,
                    [f.install_hint],
                )
            ext_version = s.distribution_version(f.extension_distribution or f.extension_module)
            details["extension_version"] = ext_version
            framework += f" + {f.extension_module}{' ' + ext_version if ext_version else ''}"
        details["framework_version"] = framework
        return LayerResult(
            True,
            f"{framework} installed",
            details,
            ["Confirm the devices answer: get_profile(include_functional=True) imports torch and lists them."],
        )

    # -------------------------------------------------------------- L2.5

    def _runtime_env(self) -> LayerResult:
        f, env = self.facts, self.system.env
        hidden = [v for v in f.visibility_env if v in env and env[v].strip().lower() in ("", "-1", "none", "void")]
        details: dict[str, object] = {v: env[v] for v in f.visibility_env if v in env}
        problems = [f"{v}={env[v]!r} hides every device" for v in hidden]
        suggestions = [f"Unset {v} or list the devices to use, e.g. {v}=0." for v in hidden]
        if f.toolkit_env:
            set_vars = [v for v in f.toolkit_env if env.get(v)]
            details["toolkit_env"] = {v: env[v] for v in set_vars}
            if not set_vars:
                problems.append(f"toolkit environment not set (none of {', '.join(f.toolkit_env)})")
                suggestions.append(f.toolkit_hint)
        if problems:
            return LayerResult(False, "; ".join(problems), details, suggestions)
        return LayerResult(True, "environment set up; no variable hides the devices", details)

    # ---------------------------------------------------------------- L3

    def _functional(self) -> LayerResult:
        result = self.facts.functional()
        details: dict[str, object] = {"device_names": list(result.device_names)}
        if result.available:
            return LayerResult(True, result.message, details)
        return LayerResult(False, result.message, details, [self.facts.driver_hint, self.facts.install_hint])


def _skipped_functional(l2: LayerResult) -> LayerResult:
    return LayerResult(
        False, f"not run: the framework layer failed ({l2.message})", {"device_names": []}, list(l2.suggestions)
    )
