"""dtype conversions the engine needs: float8_e4m3fn weight quantization, float8_e5m2 (KV caches) and bfloat16 bits.

FP8 (``quantization='fp8'`` in the engine)::

    params = compute_fp8_quantization_params_numpy(w)        # scale = amax|w| / 448
    codes = quantize_to_fp8_numpy(w, params)                 # uint8, raw float8_e4m3fn bits
    w_hat = _decode_fp8_e4m3_torch(torch.from_numpy(codes)) * params.scale

``compute_fp8_quantization_params_numpy(w, dtype="float8_e5m2")`` gives parameters the quantizers honour
for float8_e5m2. Numerics (round to nearest even, saturation, NaN, inf and -0.0) are described in
:mod:`sagellm_backend.dtype_conversion.fp8`. Importing this package does not import torch; the
``*_torch`` functions import it when called.
"""

from __future__ import annotations

from .bf16 import (
    bfloat16_bits_to_float32_numpy,
    bfloat16_bits_to_float32_torch,
    float32_to_bfloat16_bits_numpy,
    float32_to_bfloat16_bits_torch,
)
from .fp8 import (
    FP8_E4M3_MAX,
    FP8_E5M2_MAX,
    FP8_FORMATS,
    FP8_MIN_SCALE,
    FP8Format,
    FP8QuantizationParams,
    compute_fp8_quantization_params_numpy,
    decode_fp8_e4m3_numpy,
    decode_fp8_e5m2_numpy,
    encode_fp8_e4m3_numpy,
    encode_fp8_e5m2_numpy,
    fp8_decode_table,
    fp8_e4m3_decode_table,
    fp8_format,
    quantize_to_fp8_numpy,
)
from .fp8_torch import (
    _decode_fp8_e4m3_torch,
    clear_decode_tables,
    decode_fp8_e4m3_torch,
    decode_fp8_e5m2_torch,
    quantize_to_fp8_torch,
)

__all__ = [
    "FP8_E4M3_MAX",
    "FP8_E5M2_MAX",
    "FP8_FORMATS",
    "FP8_MIN_SCALE",
    "FP8Format",
    "FP8QuantizationParams",
    "_decode_fp8_e4m3_torch",
    "bfloat16_bits_to_float32_numpy",
    "bfloat16_bits_to_float32_torch",
    "clear_decode_tables",
    "compute_fp8_quantization_params_numpy",
    "decode_fp8_e4m3_numpy",
    "decode_fp8_e4m3_torch",
    "decode_fp8_e5m2_numpy",
    "decode_fp8_e5m2_torch",
    "encode_fp8_e4m3_numpy",
    "encode_fp8_e5m2_numpy",
    "float32_to_bfloat16_bits_numpy",
    "float32_to_bfloat16_bits_torch",
    "fp8_decode_table",
    "fp8_e4m3_decode_table",
    "fp8_format",
    "quantize_to_fp8_numpy",
    "quantize_to_fp8_torch",
]
