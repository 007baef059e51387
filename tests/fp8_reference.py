"""An fp8 format from its definition, for the conversion tests: torch's casts and an independent brute-force
encoder (nearest finite code, ties to the even code, saturating at the largest finite value)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

ALL_CODES = np.arange(256, dtype=np.uint8)


@dataclass(frozen=True)
class Fp8Reference:
    """One fp8 format.

    Attributes:
        torch_dtype: Its torch dtype (``torch.float8_e4m3fn`` / ``torch.float8_e5m2``).
        man_bits: Mantissa bits.
        bias: Exponent bias.
        finite_codes: Positive finite codes are ``0 .. finite_codes - 1``, increasing.
        max_value: The largest finite value.
    """

    torch_dtype: Any
    man_bits: int
    bias: int
    finite_codes: int
    max_value: float
    positive_finite: list[tuple[int, float]] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "positive_finite", [(c, self.value_of(c)) for c in range(self.finite_codes)])

    def value_of(self, code: int) -> float:
        """The value of a finite code, from the format definition."""
        sign = -1.0 if code & 0x80 else 1.0
        exp, man = (code & 0x7F) >> self.man_bits, code & ((1 << self.man_bits) - 1)
        if exp == 0:
            return sign * man * 2.0 ** (1 - self.bias - self.man_bits)
        return sign * (1 + man / (1 << self.man_bits)) * 2.0 ** (exp - self.bias)

    def reference_encode(self, x: float) -> int:
        """Brute force: nearest finite code, ties to the even code, saturation beyond the largest value."""
        if np.isnan(x):
            return 0xFF if np.signbit(x) else 0x7F
        sign = 0x80 if np.signbit(x) else 0
        mag = min(abs(float(x)), self.max_value)
        best = min(self.positive_finite, key=lambda cv: (abs(cv[1] - mag), cv[0] & 1))
        return best[0] | sign

    def torch_decode(self, codes: np.ndarray) -> np.ndarray:
        """torch's decode of ``codes`` (uint8) to float32."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(codes)).view(self.torch_dtype).float().numpy()

    def torch_encode(self, x: np.ndarray) -> np.ndarray:
        """torch's cast of ``x`` (float32) to the format's codes."""
        import torch

        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return t.to(self.torch_dtype).view(torch.uint8).numpy()
