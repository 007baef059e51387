"""A read-only view of the machine for the inspectors: files, device nodes, PCI, tools, packages.

Nothing here imports torch or a vendor SDK, starts a process, or writes anything. Every path is
resolved under ``root`` (``/`` normally), so tests can build a fake machine in a directory.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SystemView", "TorchBuild"]

_READ_LIMIT = 1 << 16


@dataclass(frozen=True)
class TorchBuild:
    """What the installed torch was built for, read from ``torch/version.py`` without importing torch.

    Attributes:
        version: ``torch.__version__``, e.g. ``"2.5.1+cu124"``.
        cuda: ``torch.version.cuda`` (``None`` on CPU and ROCm builds).
        hip: ``torch.version.hip`` (set on ROCm builds, Hygon DTK builds included).
    """

    version: str
    cuda: str | None = None
    hip: str | None = None

    @property
    def kind(self) -> str:
        """``"rocm"``, ``"cuda"`` or ``"cpu"``."""
        local = self.version.partition("+")[2].lower()
        if self.hip or local.startswith(("rocm", "das", "dtk")):
            return "rocm"
        if self.cuda or local.startswith("cu"):
            return "cuda"
        return "cpu"


def _parse_torch_version_py(text: str) -> TorchBuild | None:
    values: dict[str, object] = {}
    for node in ast.parse(text).body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        for target in targets:
            if isinstance(target, ast.Name) and isinstance(value, ast.Constant):
                values[target.id] = value.value
    version = values.get("__version__")
    if not isinstance(version, str):
        return None
    cuda, hip = values.get("cuda"), values.get("hip")
    return TorchBuild(version, cuda if isinstance(cuda, str) else None, hip if isinstance(hip, str) else None)


class SystemView:
    """Side-effect-free probes of the machine.

    Args:
        root: Directory that stands for ``/`` (tests pass a fake tree).
        which: Replacement for :func:`shutil.which`.
        env: Replacement for :data:`os.environ`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "/",
        *,
        which: Callable[[str], str | None] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        self._which = which if which is not None else shutil.which
        self.env: Mapping[str, str] = env if env is not None else os.environ

    # ------------------------------------------------------------------ files

    def path(self, absolute: str) -> Path:
        """Where ``absolute`` lives under :attr:`root`.

        Args:
            absolute: An absolute path such as ``/dev/nvidia0``.

        Returns:
            The path under root.
        """
        return self.root / absolute.lstrip("/")

    def exists(self, absolute: str) -> bool:
        """Whether the path exists (device nodes included).

        Args:
            absolute: An absolute path.

        Returns:
            True if it exists and can be stat'ed.
        """
        try:
            return self.path(absolute).exists()
        except OSError:
            return False

    def read_text(self, absolute: str) -> str | None:
        """The first 64 KiB of a text file, or ``None`` when it cannot be read.

        Args:
            absolute: An absolute path.

        Returns:
            The text, or None.
        """
        try:
            with open(self.path(absolute), encoding="utf-8", errors="replace") as fh:
                return fh.read(_READ_LIMIT)
        except (OSError, ValueError):
            return None

    def list_dir(self, absolute: str) -> list[str]:
        """Sorted entry names of a directory; ``[]`` when it is missing or unreadable.

        Args:
            absolute: An absolute path.

        Returns:
            The names.
        """
        try:
            return sorted(os.listdir(self.path(absolute)))
        except OSError:
            return []

    def device_nodes(self, pattern: str, directory: str = "/dev") -> list[str]:
        """Absolute paths of the entries of ``directory`` whose whole name matches ``pattern``.

        Args:
            pattern: A regular expression for the name (``r"nvidia\\d+"``).
            directory: Where to look.

        Returns:
            Paths sorted by the number in the name, then by name.
        """
        regex = re.compile(pattern)
        names = [n for n in self.list_dir(directory) if regex.fullmatch(n)]

        def key(name: str) -> tuple[int, str]:
            digits = re.findall(r"\d+", name)
            return (int(digits[-1]) if digits else -1, name)

        return [f"{directory.rstrip('/')}/{n}" for n in sorted(names, key=key)]

    def pci_functions(self, vendor_ids: Iterable[str], class_prefixes: Iterable[str]) -> list[str]:
        """PCI addresses of functions from ``vendor_ids`` whose class starts with one of ``class_prefixes``.

        Args:
            vendor_ids: E.g. ``["0x10de"]``.
            class_prefixes: E.g. ``["0x03", "0x12"]`` (display controllers, processing accelerators).

        Returns:
            Sorted addresses such as ``"0000:3b:00.0"``.
        """
        vendors = {v.lower() for v in vendor_ids}
        prefixes = tuple(p.lower() for p in class_prefixes)
        found = []
        for address in self.list_dir("/sys/bus/pci/devices"):
            vendor = (self.read_text(f"/sys/bus/pci/devices/{address}/vendor") or "").strip().lower()
            pci_class = (self.read_text(f"/sys/bus/pci/devices/{address}/class") or "").strip().lower()
            if vendor in vendors and pci_class.startswith(prefixes):
                found.append(address)
        return found

    def cpu_model_name(self) -> str:
        """The CPU model from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere).

        Returns:
            E.g. ``"AMD EPYC 9654 96-Core Processor"``; ``"CPU"`` when nothing says.
        """
        for line in (self.read_text("/proc/cpuinfo") or "").splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("model name", "hardware", "cpu model") and value.strip():
                return value.strip()
        return platform.processor() or platform.machine() or "CPU"

    # ------------------------------------------------------------ tools, env

    def which(self, tool: str, fallbacks: Iterable[str] = ()) -> str | None:
        """Where a command-line tool is: on ``PATH``, or at one of ``fallbacks``. Nothing is run.

        Args:
            tool: The command name.
            fallbacks: Absolute paths where vendors install it outside ``PATH``.

        Returns:
            The path, or None.
        """
        found = self._which(tool)
        if found:
            return found
        return next((p for p in fallbacks if self.exists(p)), None)

    # ---------------------------------------------------------------- python

    def module_available(self, name: str) -> bool:
        """Whether a top-level module is installed, found with ``importlib.util.find_spec`` (no import).

        Args:
            name: Module name.

        Returns:
            True if importable in principle.
        """
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # ValueError: sys.modules[name] is None or has no spec
            return False

    def distribution_version(self, name: str) -> str | None:
        """Installed version of a distribution (package metadata only).

        Args:
            name: Distribution name, e.g. ``"torch-npu"``.

        Returns:
            The version, or None.
        """
        try:
            return importlib.metadata.version(name)
        except (importlib.metadata.PackageNotFoundError, ValueError):
            return None

    def torch_build(self) -> TorchBuild | None:
        """What torch was built for; ``None`` when torch is not installed.

        Reads ``torch.version`` when torch is already imported, otherwise parses
        ``torch/version.py`` (never imports torch).

        Returns:
            The build, or None.
        """
        loaded = sys.modules.get("torch")
        version_mod = getattr(loaded, "version", None) if loaded is not None else None
        if version_mod is not None:
            version = getattr(loaded, "__version__", None)
            cuda, hip = getattr(version_mod, "cuda", None), getattr(version_mod, "hip", None)
            if isinstance(version, str):
                return TorchBuild(
                    version, cuda if isinstance(cuda, str) else None, hip if isinstance(hip, str) else None
                )
        try:
            spec = importlib.util.find_spec("torch")
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        for location in spec.submodule_search_locations:
            try:
                text = (Path(location) / "version.py").read_text(encoding="utf-8")
                build = _parse_torch_version_py(text)
            except (OSError, SyntaxError, ValueError):
                continue
            if build is not None:
                return build
        version = self.distribution_version("torch")
        return TorchBuild(version) if version else None
