"""``DecodeConfig.pdl``: where a decode launch is a programmatic dependent launch, and the typed error where it is
asked for and cannot be (the kernel itself runs on the GPU: tests/gpu/test_paged_triton_gpu.py)."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from sagellm_backend.attention import triton_args  # noqa: E402
from sagellm_backend.attention.paged_triton import DecodeConfig, decode_config, decode_launch_args  # noqa: E402
from sagellm_backend.errors import UnsupportedOperationError  # noqa: E402

CUDA = torch.device("cuda")


@pytest.fixture
def capability(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The compute capability the stand-in GPU reports (settable), outside the interpreter and off ROCm."""
    cc = [(9, 0)]
    monkeypatch.setattr(triton_args, "_capability", lambda device: cc[0])
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(torch.version, "hip", None)
    return cc


def test_pdl_applies_from_compute_capability_9_on_nvidia(
    capability: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert triton_args.pdl_launch(None, CUDA) and triton_args.pdl_launch(True, CUDA)
    assert not triton_args.pdl_launch(False, CUDA)
    capability[0] = (8, 9)
    assert not triton_args.pdl_launch(None, CUDA)
    with pytest.raises(UnsupportedOperationError, match=r"compute capability 9\.0 .* on cuda.*pdl=False"):
        triton_args.pdl_launch(True, CUDA)
    capability[0] = (10, 0)
    monkeypatch.setattr(torch.version, "hip", "6.2")
    assert not triton_args.pdl_launch(None, CUDA)
    with pytest.raises(UnsupportedOperationError):
        triton_args.pdl_launch(True, CUDA)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not triton_args.pdl_launch(None, CUDA)
    with pytest.raises(UnsupportedOperationError, match="under TRITON_INTERPRET=1"):
        triton_args.pdl_launch(True, CUDA)


def test_decode_launch_carries_pdl_only_where_asked_and_applies(capability: list[tuple[int, int]]) -> None:
    q = torch.empty(2, 8, 16)
    cache = torch.empty(4, 16, 2, 16)
    table, lens = torch.zeros(2, 4, dtype=torch.int32), torch.ones(2, dtype=torch.int32)

    def kw(cfg: Any) -> dict[str, Any]:
        return decode_launch_args(q, cache, cache, table, lens, 0.25, q, cfg=cfg)[2]

    for cfg in (None, DecodeConfig(), DecodeConfig(pdl=None)):  # the default is off; None off a GPU is off
        got = kw(cfg)
        assert got["PDL"] is False and "launch_pdl" not in got
    assert decode_config(128, torch.bfloat16, 4).pdl is False
    assert decode_config(128, torch.bfloat16, 4, kv_fp8=True).pdl is False
    with pytest.raises(UnsupportedOperationError, match="on cpu"):  # asked for on a device without it
        kw(DecodeConfig(pdl=True))
