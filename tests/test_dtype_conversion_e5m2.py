"""float8_e5m2 conversions against torch's casts and an independent brute-force reference (as the e4m3 tests)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fp8_reference import ALL_CODES, Fp8Reference
from sagellm_backend.dtype_conversion import (
    FP8_E5M2_MAX,
    FP8QuantizationParams,
    compute_fp8_quantization_params_numpy,
    decode_fp8_e4m3_numpy,
    decode_fp8_e5m2_numpy,
    decode_fp8_e5m2_torch,
    encode_fp8_e5m2_numpy,
    fp8_decode_table,
    quantize_to_fp8_numpy,
    quantize_to_fp8_torch,
)
from sagellm_backend.errors import InvalidArgumentError, InvalidArgumentTypeError

torch = pytest.importorskip("torch")

E5M2 = Fp8Reference(torch.float8_e5m2, man_bits=2, bias=15, finite_codes=0x7C, max_value=FP8_E5M2_MAX)
NAN_CODES = {0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF}
INF_CODES = {0x7C: np.inf, 0xFC: -np.inf}
torch_decode, torch_encode, reference_encode = E5M2.torch_decode, E5M2.torch_encode, E5M2.reference_encode
POSITIVE_FINITE = E5M2.positive_finite  # 0x00 .. 0x7B, increasing


def test_decode_all_256_codes_equals_torch_and_the_definition() -> None:
    ours, ref = decode_fp8_e5m2_numpy(ALL_CODES), torch_decode(ALL_CODES)
    assert ours.dtype == np.float32 and ours.shape == (256,)
    assert set(np.flatnonzero(np.isnan(ours)).tolist()) == NAN_CODES
    assert np.array_equal(ours, ref, equal_nan=True)
    assert np.array_equal(np.signbit(ours[~np.isnan(ours)]), np.signbit(ref[~np.isnan(ref)]))  # -0.0 at 0x80
    assert all(ours[c] == v for c, v in INF_CODES.items())
    finite = [c for c in range(256) if c not in NAN_CODES and c not in INF_CODES]
    assert [float(ours[c]) for c in finite] == [E5M2.value_of(c) for c in finite]
    assert ours[0x7B] == 57344.0 and ours[0x01] == 2.0**-16 and ours[0x04] == 2.0**-14
    assert fp8_decode_table("float8_e5m2") is fp8_decode_table("float8_e5m2")  # cached, read-only
    assert not fp8_decode_table("float8_e5m2").flags.writeable


def test_decode_torch_matches_numpy_and_rejects_non_uint8() -> None:
    codes = np.random.default_rng(0).integers(0, 256, size=(5, 17), dtype=np.uint8)
    out = decode_fp8_e5m2_torch(torch.from_numpy(codes).t())
    assert out.dtype == torch.float32 and np.array_equal(out.numpy(), decode_fp8_e5m2_numpy(codes.T), equal_nan=True)
    assert not np.array_equal(decode_fp8_e5m2_numpy(codes), decode_fp8_e4m3_numpy(codes), equal_nan=True)
    with pytest.raises(InvalidArgumentTypeError, match="float8_e5m2"):
        decode_fp8_e5m2_torch(torch.zeros(3, dtype=torch.int32))
    with pytest.raises(InvalidArgumentError, match=r"0\.\.255"):
        decode_fp8_e5m2_numpy(np.array([0, 256]))


def test_every_finite_code_round_trips() -> None:
    values = decode_fp8_e5m2_numpy(ALL_CODES)
    finite = np.isfinite(values)
    assert np.array_equal(encode_fp8_e5m2_numpy(values[finite]), ALL_CODES[finite])


def test_nan_inf_signed_zero_and_saturation() -> None:
    x = np.array([np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0, 57344.0, 61440.0, 1e6, -3e38, 1.125, 1.375], np.float32)
    assert encode_fp8_e5m2_numpy(x).tolist() == [0x7B, 0xFB, 0x7F, 0xFF, 0x00, 0x80, 0x7B, 0x7B, 0x7B, 0xFB, 0x3C, 0x3E]
    assert torch_encode(np.array([61440.0], np.float32)).tolist() == [0x7C]  # torch overflows to inf; we saturate


def test_all_midpoints_round_to_even_and_neighbours_round_to_nearest() -> None:
    vals = np.array([v for _, v in POSITIVE_FINITE], dtype=np.float64)
    mids = ((vals[:-1] + vals[1:]) / 2).astype(np.float32)
    assert np.array_equal(mids.astype(np.float64), (vals[:-1] + vals[1:]) / 2)  # exact in float32
    n = len(vals) - 1
    even = np.where(np.arange(n) % 2 == 0, np.arange(n), np.arange(1, n + 1)).astype(np.uint8)
    assert np.array_equal(encode_fp8_e5m2_numpy(mids), even)
    assert np.array_equal(encode_fp8_e5m2_numpy(-mids), even | 0x80)
    below, above = np.nextafter(mids, np.float32(0)), np.nextafter(mids, np.float32(np.inf))
    assert np.array_equal(encode_fp8_e5m2_numpy(below), np.arange(n, dtype=np.uint8))
    assert np.array_equal(encode_fp8_e5m2_numpy(above), np.arange(1, n + 1, dtype=np.uint8))
    for arr in (mids, -mids, below, above):
        assert np.array_equal(encode_fp8_e5m2_numpy(arr), torch_encode(arr))


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 64), elements=st.floats(-57344, 57344, width=32)))
def test_random_in_range_values_equal_torch_and_the_reference(x: np.ndarray) -> None:
    ours = encode_fp8_e5m2_numpy(x)
    assert np.array_equal(ours, torch_encode(x))
    assert ours.tolist() == [reference_encode(v) for v in x.tolist()]


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 32), elements=st.floats(-(2.0**-13), 2.0**-13, width=32)))
def test_random_subnormal_range_values_equal_the_reference(x: np.ndarray) -> None:
    ours = encode_fp8_e5m2_numpy(x)
    assert ours.tolist() == [reference_encode(v) for v in x.tolist()]
    assert np.array_equal(ours, torch_encode(x))


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(np.float32, hnp.array_shapes(max_dims=3, max_side=9), elements=st.floats(width=32)),
    st.floats(1e-6, 1e6),
)
def test_torch_quantize_equals_numpy_quantize(x: np.ndarray, scale: float) -> None:
    params = FP8QuantizationParams(scale=scale, fp8_max=FP8_E5M2_MAX, dtype="float8_e5m2")
    ours = quantize_to_fp8_numpy(x, params)
    got = quantize_to_fp8_torch(torch.from_numpy(x.copy()), params)
    assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), ours)
    with np.errstate(over="ignore"):
        quotient = (x / np.float32(scale)).reshape(-1)
    assert ours.reshape(-1).tolist() == [reference_encode(v) for v in quotient.tolist()]


def test_params_for_e5m2_and_bad_formats() -> None:
    w = np.random.default_rng(2).standard_normal((16, 8)).astype(np.float32)
    params = compute_fp8_quantization_params_numpy(w, dtype="float8_e5m2")
    assert params.dtype == "float8_e5m2" and params.fp8_max == 57344.0 and params.scale == params.amax / 57344.0
    codes = quantize_to_fp8_numpy(w, params)
    assert codes.reshape(-1)[np.abs(w).argmax()] in (0x7B, 0xFB)
    back = decode_fp8_e5m2_numpy(codes) * np.float32(params.scale)
    assert np.all(np.abs(back - w) <= np.abs(w) * 2.0**-3 + 2.0**-16 * params.scale)  # half an ulp of 2 bits
    with pytest.raises(InvalidArgumentError, match="unknown FP8 format"):
        compute_fp8_quantization_params_numpy(w, dtype="float8_e4m3fnuz")
    with pytest.raises(InvalidArgumentError, match="unknown FP8 format"):
        FP8QuantizationParams(scale=1.0, dtype="e5m2")
    with pytest.raises(InvalidArgumentError, match="saturates at 57344"):
        FP8QuantizationParams(scale=1.0, dtype="float8_e5m2")  # fp8_max left at e4m3's 448
