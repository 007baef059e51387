"""float8_e4m3fn and bfloat16 conversions against torch's casts and an independent brute-force reference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import sagellm_backend
from fp8_reference import ALL_CODES, Fp8Reference
from sagellm_backend.dtype_conversion import (
    FP8QuantizationParams,
    _decode_fp8_e4m3_torch,
    bfloat16_bits_to_float32_numpy,
    bfloat16_bits_to_float32_torch,
    compute_fp8_quantization_params_numpy,
    decode_fp8_e4m3_numpy,
    decode_fp8_e4m3_torch,
    encode_fp8_e4m3_numpy,
    float32_to_bfloat16_bits_numpy,
    float32_to_bfloat16_bits_torch,
    quantize_to_fp8_numpy,
    quantize_to_fp8_torch,
)
from sagellm_backend.errors import InvalidArgumentError, InvalidArgumentTypeError

torch = pytest.importorskip("torch")

E4M3 = Fp8Reference(torch.float8_e4m3fn, man_bits=3, bias=7, finite_codes=0x7F, max_value=448.0)
NAN_CODES = {0x7F, 0xFF}
torch_decode, torch_encode, reference_encode = E4M3.torch_decode, E4M3.torch_encode, E4M3.reference_encode
POSITIVE_FINITE = E4M3.positive_finite  # 0x00 .. 0x7E, increasing


def test_decode_all_256_codes_equals_torch() -> None:
    ours, ref = decode_fp8_e4m3_numpy(ALL_CODES), torch_decode(ALL_CODES)
    assert ours.dtype == np.float32 and ours.shape == (256,)
    assert np.array_equal(np.isnan(ours), np.isnan(ref))
    assert set(np.flatnonzero(np.isnan(ours)).tolist()) == NAN_CODES
    assert np.array_equal(ours, ref, equal_nan=True)
    assert np.array_equal(np.signbit(ours[~np.isnan(ours)]), np.signbit(ref[~np.isnan(ref)]))  # -0.0 at 0x80
    finite = [c for c in range(256) if c not in NAN_CODES]
    assert [float(ours[c]) for c in finite] == [E4M3.value_of(c) for c in finite]
    assert ours[0x7E] == 448.0 and ours[0xFE] == -448.0 and ours[0x01] == 2.0**-9 and ours[0x08] == 2.0**-6


def test_decode_torch_matches_numpy_shape_device_and_caches_the_table() -> None:
    codes = np.random.default_rng(0).integers(0, 256, size=(7, 33), dtype=np.uint8)
    t = torch.from_numpy(codes)
    out = _decode_fp8_e4m3_torch(t)
    assert out.dtype == torch.float32 and out.shape == (7, 33) and out.device == t.device
    assert np.array_equal(out.numpy(), decode_fp8_e4m3_numpy(codes), equal_nan=True)
    strided = t.t()  # non-contiguous input
    assert np.array_equal(decode_fp8_e4m3_torch(strided).numpy(), decode_fp8_e4m3_numpy(codes.T), equal_nan=True)
    scalar = _decode_fp8_e4m3_torch(torch.tensor(0x38, dtype=torch.uint8))
    assert scalar.shape == () and float(scalar) == 1.0
    from sagellm_backend.dtype_conversion import fp8_torch

    table = fp8_torch._table_for(torch.device("cpu"))
    _decode_fp8_e4m3_torch(t)
    assert fp8_torch._table_for(torch.device("cpu")) is table


def test_decode_accepts_wider_integer_arrays_in_range_and_rejects_the_rest() -> None:
    assert np.array_equal(decode_fp8_e4m3_numpy([0x38, 0x7E]), [1.0, 448.0])
    assert decode_fp8_e4m3_numpy(np.uint8(0x40)).shape == ()
    with pytest.raises(InvalidArgumentError, match=r"0\.\.255"):
        decode_fp8_e4m3_numpy(np.array([0, 256]))
    with pytest.raises(InvalidArgumentError):
        decode_fp8_e4m3_numpy(np.array([-1], dtype=np.int8))
    with pytest.raises(InvalidArgumentTypeError, match="uint8"):
        decode_fp8_e4m3_numpy(np.array([1.0]))
    with pytest.raises(InvalidArgumentTypeError):
        _decode_fp8_e4m3_torch(torch.zeros(3, dtype=torch.int32))
    with pytest.raises(InvalidArgumentTypeError):
        _decode_fp8_e4m3_torch(np.zeros(3, dtype=np.uint8))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------- encoding


def test_every_finite_code_round_trips() -> None:
    values = decode_fp8_e4m3_numpy(ALL_CODES)
    finite = ~np.isnan(values)
    assert np.array_equal(encode_fp8_e4m3_numpy(values[finite]), ALL_CODES[finite])  # 0x80 from -0.0 included


def test_spec_examples_nan_inf_and_signed_zero() -> None:
    x = np.array([1.0625, 1.1875, np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0, 448.0, -448.0], np.float32)
    assert encode_fp8_e4m3_numpy(x).tolist() == [0x38, 0x3A, 0x7E, 0xFE, 0x7F, 0xFF, 0x00, 0x80, 0x7E, 0xFE]
    assert decode_fp8_e4m3_numpy(np.array([0x38, 0x3A], np.uint8)).tolist() == [1.0, 1.25]


def test_all_midpoints_round_to_even_and_neighbours_round_to_nearest() -> None:
    vals = np.array([v for _, v in POSITIVE_FINITE], dtype=np.float64)
    mids = ((vals[:-1] + vals[1:]) / 2).astype(np.float32)  # exact in float32
    assert np.array_equal(mids.astype(np.float64), (vals[:-1] + vals[1:]) / 2)
    even = np.where(np.arange(0x7E) % 2 == 0, np.arange(0x7E), np.arange(1, 0x7F)).astype(np.uint8)
    assert np.array_equal(encode_fp8_e4m3_numpy(mids), even)
    assert np.array_equal(encode_fp8_e4m3_numpy(-mids), even | 0x80)
    below = np.nextafter(mids, np.float32(0))
    above = np.nextafter(mids, np.float32(np.inf))
    assert np.array_equal(encode_fp8_e4m3_numpy(below), np.arange(0x7E, dtype=np.uint8))
    assert np.array_equal(encode_fp8_e4m3_numpy(above), np.arange(1, 0x7F, dtype=np.uint8))
    for arr in (mids, -mids, below, above):  # torch agrees everywhere in range
        assert np.array_equal(encode_fp8_e4m3_numpy(arr), torch_encode(arr))


def test_tiny_values_round_to_zero_or_the_smallest_subnormal() -> None:
    half_sub = np.float32(2.0**-10)
    x = np.array([1e-30, -1e-30, half_sub, np.nextafter(half_sub, np.float32(1)), 2.0**-149, 3 * 2.0**-10], np.float32)
    assert encode_fp8_e4m3_numpy(x).tolist() == [0x00, 0x80, 0x00, 0x01, 0x00, 0x02]


def test_saturation_follows_the_spec_not_torch() -> None:
    big = np.array([448.1, 463.9, 464.0, 480.0, 1e6, 3.0e38, np.inf], np.float32)
    assert encode_fp8_e4m3_numpy(big).tolist() == [0x7E] * 7
    assert encode_fp8_e4m3_numpy(-big).tolist() == [0xFE] * 7


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 64), elements=st.floats(-448, 448, width=32)))
def test_random_in_range_values_equal_torch_and_the_reference(x: np.ndarray) -> None:
    ours = encode_fp8_e4m3_numpy(x)
    assert np.array_equal(ours, torch_encode(x))
    assert ours.tolist() == [reference_encode(v) for v in x.tolist()]


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 32), elements=st.floats(-(2.0**-5), 2.0**-5, width=32)))
def test_random_subnormal_range_values_equal_the_reference(x: np.ndarray) -> None:
    ours = encode_fp8_e4m3_numpy(x)
    assert ours.tolist() == [reference_encode(v) for v in x.tolist()]
    assert np.array_equal(ours, torch_encode(x))


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(np.float32, hnp.array_shapes(max_dims=3, max_side=9), elements=st.floats(width=32)),
    st.floats(1e-6, 1e6),
)
def test_torch_quantize_equals_numpy_quantize(x: np.ndarray, scale: float) -> None:
    ours = quantize_to_fp8_numpy(x, scale)
    got = quantize_to_fp8_torch(torch.from_numpy(x.copy()), FP8QuantizationParams(scale=scale))
    assert got.dtype == torch.uint8 and tuple(got.shape) == x.shape
    assert np.array_equal(got.numpy(), ours)
    with np.errstate(over="ignore"):
        quotient = (x / np.float32(scale)).reshape(-1)
    assert ours.reshape(-1).tolist() == [reference_encode(v) for v in quotient.tolist()]


# ------------------------------------------------------------------------------ scale and quantize


def test_scale_is_amax_over_448_and_the_maximum_maps_to_448() -> None:
    w = np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)
    params = compute_fp8_quantization_params_numpy(w)
    amax = float(np.abs(w.astype(np.float64)).max())
    assert params.amax == amax and params.scale == amax / 448.0 and isinstance(params.scale, float)
    codes = quantize_to_fp8_numpy(w, params)
    assert codes.dtype == np.uint8 and codes.shape == w.shape
    assert codes.reshape(-1)[np.abs(w).argmax()] in (0x7E, 0xFE)
    back = decode_fp8_e4m3_numpy(codes) * np.float32(params.scale)
    normal = np.abs(w) >= 2.0**-6 * params.scale
    assert np.all(np.abs(back - w)[normal] <= np.abs(w)[normal] * 2.0**-4 * 1.0001)  # half an ulp of 3 bits
    assert np.array_equal(np.asarray(quantize_to_fp8_numpy(w, params.scale)), codes)


def test_scale_edge_cases() -> None:
    assert compute_fp8_quantization_params_numpy(np.zeros((3, 3), np.float32)).scale == 1e-12
    assert compute_fp8_quantization_params_numpy(np.array([np.nan, np.nan])).scale == 1e-12
    assert compute_fp8_quantization_params_numpy(np.array([1e-20], np.float32)).scale == 1e-12
    p = compute_fp8_quantization_params_numpy(np.array([np.inf, -896.0, np.nan, 1.0], np.float32))
    assert p.amax == 896.0 and p.scale == 2.0
    assert quantize_to_fp8_numpy(np.array([np.inf, -896.0, np.nan, 1.0]), p).tolist() == [0x7E, 0xFE, 0x7F, 0x30]
    assert compute_fp8_quantization_params_numpy([[1.0, -4.48]]).scale == pytest.approx(0.01)
    zeros = np.zeros(5, np.float32)
    assert quantize_to_fp8_numpy(zeros, compute_fp8_quantization_params_numpy(zeros)).tolist() == [0] * 5
    assert compute_fp8_quantization_params_numpy(np.float16([2.0, -1.0])).amax == 2.0


@pytest.mark.parametrize(
    ("w", "err"),
    [
        (np.zeros((0, 4), np.float32), InvalidArgumentError),
        (np.array([1, 2, 3]), InvalidArgumentTypeError),
        (np.array([True]), InvalidArgumentTypeError),
        (np.array([1 + 2j]), InvalidArgumentTypeError),
        (np.array(["a"]), InvalidArgumentTypeError),
        ([[1.0], [2.0, 3.0]], InvalidArgumentTypeError),
    ],
)
def test_compute_params_rejects_bad_input(w: object, err: type[Exception]) -> None:
    with pytest.raises(err):
        compute_fp8_quantization_params_numpy(w)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), 1e-50, 1e39, "1", None, True])
def test_quantize_rejects_bad_scales(bad: object) -> None:
    with pytest.raises((InvalidArgumentError, InvalidArgumentTypeError)):
        quantize_to_fp8_numpy(np.ones(2, np.float32), bad)
    with pytest.raises((InvalidArgumentError, InvalidArgumentTypeError)):
        quantize_to_fp8_torch(torch.ones(2), bad)
    with pytest.raises((InvalidArgumentError, InvalidArgumentTypeError)):
        FP8QuantizationParams(scale=bad)  # type: ignore[arg-type]


def test_quantize_rejects_non_float_input() -> None:
    with pytest.raises(InvalidArgumentTypeError):
        quantize_to_fp8_numpy(np.arange(3), 1.0)
    with pytest.raises(InvalidArgumentTypeError):
        quantize_to_fp8_torch(torch.arange(3), 1.0)
    with pytest.raises(InvalidArgumentTypeError):
        quantize_to_fp8_torch(np.ones(3), 1.0)  # type: ignore[arg-type]


def test_engine_flow_on_a_linear_layer() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(48, 24)
    w = lin.weight.detach().numpy()
    params = compute_fp8_quantization_params_numpy(w)
    codes = torch.from_numpy(np.asarray(quantize_to_fp8_numpy(w, params), np.uint8))
    w_hat = (_decode_fp8_e4m3_torch(codes) * float(params.scale)).reshape(w.shape).to(torch.float32)
    x = torch.randn(5, 48)
    ref = torch.nn.functional.linear(x, lin.weight, lin.bias)
    got = torch.nn.functional.linear(x, w_hat, lin.bias)
    assert torch.allclose(got, ref, atol=0.05, rtol=0.05)
    torch_codes = (lin.weight.detach() / torch.tensor(params.scale, dtype=torch.float32)).to(torch.float8_e4m3fn)
    assert torch.equal(codes, torch_codes.view(torch.uint8))


# ------------------------------------------------------------------------------------------ bfloat16


ALL_BF16 = np.arange(65536, dtype=np.uint32).astype(np.uint16)


def test_bf16_all_bit_patterns() -> None:
    f32 = bfloat16_bits_to_float32_numpy(ALL_BF16)
    ref = torch.from_numpy(ALL_BF16.view(np.int16).copy()).view(torch.bfloat16).float().numpy()
    assert np.array_equal(f32.view(np.uint32), ref.view(np.uint32))  # exact, NaN payloads included
    back = float32_to_bfloat16_bits_numpy(f32)
    nan = np.isnan(f32)
    assert np.array_equal(back[~nan], ALL_BF16[~nan])
    assert np.array_equal(back[nan], ALL_BF16[nan] | 0x0040)  # quiet bit set, sign and payload kept
    assert np.array_equal(float32_to_bfloat16_bits_torch(torch.from_numpy(f32)).numpy(), back)
    wide = bfloat16_bits_to_float32_torch(torch.from_numpy(ALL_BF16.copy()))
    assert np.array_equal(wide.numpy().view(np.uint32), f32.view(np.uint32))


def _torch_bf16_bits(x: np.ndarray) -> np.ndarray:
    return torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.uint32, st.integers(1, 64)))
def test_bf16_random_bit_patterns_equal_torch(raw: np.ndarray) -> None:
    x = raw.view(np.float32)
    ours = float32_to_bfloat16_bits_numpy(x)
    ref = _torch_bf16_bits(x)
    nan = np.isnan(x)
    assert np.array_equal(ours[~nan], ref[~nan])
    assert np.all(np.isnan(bfloat16_bits_to_float32_numpy(ours[nan])))
    assert np.array_equal(float32_to_bfloat16_bits_torch(torch.from_numpy(x.copy())).numpy(), ours)


def test_bf16_ties_round_to_even_and_overflow_to_inf() -> None:
    ties = (np.arange(0, 4096, dtype=np.uint32) << np.uint32(16)) | np.uint32(0x8000)
    ties = ties[(ties & np.uint32(0x7F800000)) != np.uint32(0x7F800000)]  # no inf/NaN exponents
    x = ties.view(np.float32)
    expect = ((ties >> np.uint32(16)) + ((ties >> np.uint32(16)) & np.uint32(1))).astype(np.uint16)
    assert np.array_equal(float32_to_bfloat16_bits_numpy(x), expect)
    assert np.array_equal(float32_to_bfloat16_bits_numpy(x), _torch_bf16_bits(x))
    top = np.array([np.finfo(np.float32).max, -np.finfo(np.float32).max], np.float32)
    assert float32_to_bfloat16_bits_numpy(top).tolist() == [0x7F80, 0xFF80]


def test_bf16_rejects_bad_input() -> None:
    with pytest.raises(InvalidArgumentTypeError):
        float32_to_bfloat16_bits_numpy(np.arange(3))
    with pytest.raises(InvalidArgumentTypeError):
        bfloat16_bits_to_float32_numpy(np.ones(2))
    with pytest.raises(InvalidArgumentError):
        bfloat16_bits_to_float32_numpy(np.array([65536]))
    with pytest.raises(InvalidArgumentTypeError):
        float32_to_bfloat16_bits_torch(torch.arange(3))
    with pytest.raises(InvalidArgumentTypeError):
        bfloat16_bits_to_float32_torch(torch.zeros(2, dtype=torch.int32))


# --------------------------------------------------------------------------------------- import rules


def test_numpy_side_works_without_torch() -> None:
    src = str(Path(sagellm_backend.__file__).resolve().parents[1])
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from sagellm_backend.dtype_conversion import compute_fp8_quantization_params_numpy as c, "
        "quantize_to_fp8_numpy as q, decode_fp8_e4m3_numpy as d\n"
        "w = np.array([1.0, -2.0, 448.0], np.float32); p = c(w)\n"
        "print(q(w, p).tolist(), d(q(w, p)).tolist())"
    )
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[56, 192, 126] [1.0, -2.0, 448.0]"
