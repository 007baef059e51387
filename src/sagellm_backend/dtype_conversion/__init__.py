"""dtype conversions the engine needs: float8_e4m3fn weight quantization, float8_e5m2 (KV caches) and bfloat16 bits.

FP8 (``quantization='fp8'`` in the engine)::

    params = compute_fp8_quantization_params_numpy(w)        # scale = amax|w| / 448
    codes = quantize_to_fp8_numpy(w, params)                 # uint8, raw float8_e4m3fn bits
    w_hat = _decode_fp8_e4m3_torch(torch.from_numpy(codes)) * params.scale

``compute_fp8_quantization_params_numpy(w, dtype="float8_e5m2")`` gives parameters the quantizers honour
for float8_e5m2. Numerics (round to nearest even, saturation, NaN, inf and -0.0) are described in
:mod:`sagellm_backend.dtype_conversion.fp8`. Importing this package does not import torch; the
``*_torch`` functions import it when called.

Arrays of the ``*_numpy`` encoders and decoders: an encoder takes a floating-point array of any shape
(float64 is rounded to float32 first) and returns the raw bits in an unsigned integer array of that shape;
a decoder takes raw bits as an integer array of any shape and returns a new float32 array of that shape.
Anything else raises :class:`~sagellm_backend.errors.InvalidArgumentTypeError`, and a code outside the
format's range :class:`~sagellm_backend.errors.InvalidArgumentError`.
"""

from __future__ import annotations

# Each module's __all__ is the one list of its public names; this package re-exports them all.
from . import bf16, fp8, fp8_torch
from .bf16 import *  # noqa: F403
from .fp8 import *  # noqa: F403
from .fp8_torch import *  # noqa: F403

__all__: list[str] = []
__all__ += bf16.__all__
__all__ += fp8.__all__
__all__ += fp8_torch.__all__
