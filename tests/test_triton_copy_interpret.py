"""The batched block-copy kernel under TRITON_INTERPRET=1 (on CPU tensors): rows copied as asked,
destination indices read at an offset of one packed index tensor, and trusted indices that fall
outside the arena skipped instead of reading or writing out of bounds."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")
pytest.importorskip("torch")

_SCRIPT = """
import torch
from sagellm_backend.storage import triton_copy as tc

torch.manual_seed(0)
arena = torch.randint(0, 1 << 30, (8, 3, 16), dtype=torch.int32)
before = arena.clone()
s, words = tc.word_view(arena)
packed = torch.tensor([1, 2, 5, 6], dtype=torch.int32)  # src 1, 2 -> dst 5, 6
tc.copy_words(s, packed, s, packed, 2, words, dst_off=2)
assert torch.equal(arena[5], before[1]) and torch.equal(arena[6], before[2]), "copy"
assert torch.equal(arena[:5], before[:5]) and torch.equal(arena[7], before[7]), "others untouched"
snap = arena.clone()
tc.copy_words(s, torch.tensor([9, -1, 3]), s, torch.tensor([0, 1, 100]), 3, words)
assert torch.equal(arena, snap), "out-of-range pairs must be skipped"
print("ok")
"""


def test_copy_kernel_in_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
