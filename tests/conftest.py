"""Shared fixtures. GPU tests are skipped with a reason naming what they need and what was found."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


def _cuda_state() -> tuple[int, str]:
    from sagellm_backend.providers.cuda import detect_cuda

    found = detect_cuda()
    return (found.device_count or 0) if found.available else 0, found.reason


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wants_gpu = [i for i in items if "gpu" in i.keywords or "multi_gpu" in i.keywords]
    if not wants_gpu:
        return
    count, reason = _cuda_state()
    for item in wants_gpu:
        if "multi_gpu" in item.keywords and count < 2:
            item.add_marker(pytest.mark.skip(reason=f"needs 2+ NVIDIA GPUs; found {count} ({reason})"))
        elif "gpu" in item.keywords and count < 1:
            item.add_marker(pytest.mark.skip(reason=f"needs an NVIDIA GPU and a CUDA torch; found none ({reason})"))


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mock():
    from sagellm_backend import MockBackendProvider

    p = MockBackendProvider(max_memory_mb=64, kv_geometry={"num_layers": 2, "num_kv_heads": 2, "head_dim": 8})
    yield p
    p.close()


@pytest.fixture
def cpu() -> Iterator[object]:
    from sagellm_backend import CPUBackendProvider

    p = CPUBackendProvider(kv_geometry={"num_layers": 2, "num_kv_heads": 2, "head_dim": 8})
    yield p
    p.close()
