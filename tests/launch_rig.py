"""The stand-in for Triton's driver that the bound-launch tests share: with it, ``kernels.triton_launch`` treats CPU
tensors as it would CUDA ones (device 0, stream 7, specialised on dtype and 16-byte alignment), so a test replacing
a kernel's dispatcher and compiled launcher sees exactly the arguments a GPU launch would get."""

from __future__ import annotations

from typing import Any

import pytest


class StandInDriver:
    """The shape of ``triton.runtime.driver``: ``active`` answers device 0, stream 7."""

    class active:  # the shape of triton.runtime.driver.active
        @staticmethod
        def get_current_device() -> int:
            return 0

        @staticmethod
        def get_current_stream(device: int) -> int:
            return 7


def use_stand_in_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """Direct launches on, through :class:`StandInDriver`, with CPU tensors specialised as CUDA ones and an empty
    compiled-kernel table (all undone with ``monkeypatch``)."""
    import torch

    from sagellm_backend.kernels import triton_launch as tl

    def part(a: Any) -> Any:  # CPU tensors specialise as CUDA ones would
        if isinstance(a, torch.Tensor):
            return (a.dtype, 0, a.data_ptr() % 16 == 0)
        return (type(a), a)

    monkeypatch.setattr(tl, "driver", StandInDriver)
    monkeypatch.setattr(tl, "DIRECT", True)
    monkeypatch.setattr(tl, "_part", part)
    monkeypatch.setattr(tl, "_COMPILED", {})
