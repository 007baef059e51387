# ruff: noqa: I001  (the seed README's import line is kept verbatim)
"""The seed README's usage examples, as written, plus what they now really do.

Run: python examples/seed_usage.py
"""

from __future__ import annotations

# --- Basic Backend Usage (verbatim from the seed README) ---------------------------------------
from sagellm_backend import MockBackendProvider, DType

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

# --- What the block is now: real memory -----------------------------------------------------------
print(f"{block!r}: {block.data.nbytes:,} bytes of {block.data.dtype} memory, shape {block.data.shape}")

# --- The CPU provider, as the engine layer creates it --------------------------------------------
from sagellm_backend import CPUBackendProvider, get_provider  # noqa: E402

cpu = CPUBackendProvider()
print(cpu.capability().device_name, [d.value for d in cpu.capability().supported_dtypes])
print(get_provider("cpu", {"kind": "cpu", "device": "cpu", "device_ids": None}))
