"""Package surface: no torch at import, the seed's examples verbatim, aliases, CLI without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import sagellm_backend

SRC = str(Path(sagellm_backend.__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
# Makes `import torch` (and torch_npu) fail in the child, as on a machine without them.
NO_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['torch_npu'] = None; "


def _py(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=timeout, cwd="/"
    )


def test_import_does_not_import_torch_or_vendor_sdks() -> None:
    out = _py(
        "import sys, sagellm_backend, sagellm_backend.base, sagellm_backend.providers, "
        "sagellm_backend.registry, sagellm_backend.testing, sagellm_backend.cli; "
        "print(sorted(m for m in ('torch','torch_npu','torch_xmlir','triton','psutil') if m in sys.modules))"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_seed_mock_example_verbatim() -> None:
    # The seed README's "Basic Backend Usage", exactly as written.
    from sagellm_backend import DType, MockBackendProvider

    # Create backend
    backend = MockBackendProvider(
        supported_dtypes=[DType.FP16, DType.BF16],
        has_collective=True,
    )

    # Query capabilities
    cap = backend.capability()
    print(cap.supported_dtypes)

    # Allocate KV block
    block = backend.kv_block_alloc(128, DType.FP16)
    assert cap.supported_dtypes == [DType.FP16, DType.BF16]
    assert block.num_tokens == 128 and block.nbytes == 128 * 22528  # TinyLlama geometry in fp16
    assert block.data.nbytes == block.nbytes


def test_seed_cpu_example() -> None:
    pytest.importorskip("torch")
    from sagellm_backend import CPUBackendProvider, DType

    backend = CPUBackendProvider()
    cap = backend.capability()
    block = backend.kv_block_alloc(128, DType.FP16)
    assert cap.device_type == "cpu" and block.data.numel() * 2 == block.nbytes == 128 * 22528


def test_seed_all_names_importable_without_torch() -> None:
    names = [
        "__version__",
        "BackendProvider",
        "Stream",
        "Event",
        "KVBlock",
        "CapabilityDescriptor",
        "DType",
        "KernelKind",
        "MockBackendProvider",
        "create_mock_backend",
        "CPUBackendProvider",
        "create_cpu_backend",
        "PyTorchCUDABackendProvider",
        "create_pytorch_cuda_backend",
        "PyTorchAscendBackendProvider",
        "create_pytorch_ascend_backend",
    ]
    code = (
        NO_TORCH + "import warnings; warnings.simplefilter('ignore'); import sagellm_backend as s; "
        f"missing=[n for n in {names!r} if not hasattr(s, n)]; "
        "from sagellm_backend.base import BackendProvider; print(missing)"
    )
    out = _py(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_deprecated_aliases_warn_and_resolve() -> None:
    with pytest.warns(FutureWarning, match="use sagellm_backend.CUDABackendProvider"):
        cls = sagellm_backend.PyTorchCUDABackendProvider
    assert cls is sagellm_backend.CUDABackendProvider
    with pytest.warns(FutureWarning):
        assert sagellm_backend.create_pytorch_ascend_backend is sagellm_backend.create_ascend_backend
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sagellm_backend.CPUBackendProvider  # current names never warn
    with pytest.raises(AttributeError):
        sagellm_backend.NoSuchThing  # noqa: B018


def test_all_is_explicit_and_resolvable() -> None:
    for name in sagellm_backend.__all__:
        assert hasattr(sagellm_backend, name), name
    assert len(set(sagellm_backend.__all__)) == len(sagellm_backend.__all__)


def test_info_json_without_torch() -> None:
    out = _py(NO_TORCH + "from sagellm_backend.cli import main; main(['info', '--json'])")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["version"] == sagellm_backend.__version__
    by_name = {p["name"]: p for p in info["providers"]}
    assert set(by_name) >= {"cpu", "cuda", "ascend", "kunlun", "mock"}
    assert not by_name["cpu"]["available"] and "torch is not installed" in by_name["cpu"]["reason"]
    assert not by_name["cuda"]["available"] and "torch" in by_name["cuda"]["reason"]
    assert by_name["mock"]["available"]
    assert info["selected"] is None and "get_provider('mock')" in info["selection_error"]
    attention = {f"{a['backend']}/{a['implementation']}": a for a in info["attention"]}
    assert set(attention) == {"sdpa/torch", "paged/triton", "paged/torch"}
    assert "torch" in attention["paged/torch"]["unavailable_reason"]


def test_info_cli_entry_points_run() -> None:
    pytest.importorskip("torch")
    out = subprocess.run(
        [sys.executable, "-m", "sagellm_backend", "info"], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert ("selected: cpu" in out.stdout or "selected: cuda" in out.stdout) and "supported_dtypes" in out.stdout
    triton_row = next(line for line in out.stdout.splitlines() if line.startswith("paged/triton"))
    assert "cuda" in triton_row and "powers of two 16..256" in triton_row
    js = subprocess.run(
        [sys.executable, "-m", "sagellm_backend", "info", "--json", "--provider", "mock"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    data = json.loads(js.stdout)
    assert data["selected"] == "mock" and data["capability"]["device_type"] == "mock"


def test_demo_runs_on_mock_and_cpu() -> None:
    for provider in ("mock", "cpu"):
        out = subprocess.run(
            [sys.executable, "-m", "sagellm_backend", "demo", "--provider", provider],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert "bit-exact: True" in out.stdout and "after free: num_blocks=0" in out.stdout


def test_check_cli_all_pass() -> None:
    for provider in ("mock", "cpu"):
        out = subprocess.run(
            [sys.executable, "-m", "sagellm_backend", "check", provider, "--json"],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        res = json.loads(out.stdout)
        assert res["counts"]["fail"] == 0 and res["counts"]["pass"] >= 24, res["counts"]


def test_version_is_in_the_engine_line() -> None:
    """pip keeps this project beside the engine: isagellm-core 0.5.4.26 requires >=0.5.4.1,<0.6.0 and the
    isagellm 0.5.4.70 CLI >=0.5.4.17,<0.6.0; the released backends go up to 0.5.4.17."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    version = Version(sagellm_backend.__version__)
    for required in (">=0.5.4.1,<0.6.0", ">=0.5.4.17,<0.6.0"):
        assert version in SpecifierSet(required), (version, required)
    assert version > Version("0.5.4.17")
    assert str(version) == sagellm_backend.__version__  # already normalised: the wheel's name and metadata agree
    out = _py("from sagellm_backend.cli import main; main(['--version'])")
    assert out.stdout.strip() == f"sagellm-backend {sagellm_backend.__version__}", out.stderr
