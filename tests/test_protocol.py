"""Protocol v0.1 types: names, values, order, and interop with a foreign str enum."""

from __future__ import annotations

import dataclasses
from enum import Enum

import pytest

from sagellm_backend import (
    CapabilityDescriptor,
    CollectiveOp,
    CommBackendType,
    Device,
    DType,
    ErrorCode,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidDeviceError,
    KernelKind,
    KVLayout,
    MockBackendProvider,
    ReduceOp,
    coerce_dtype,
    dtype_bits,
    format_device_str,
    normalize_device,
    parse_device_str,
)
from sagellm_backend import protocol as P


def test_enum_values_in_protocol_order() -> None:
    assert [d.value for d in DType] == ["fp32", "fp16", "bf16", "fp8", "int8", "int4"]
    assert [k.value for k in KernelKind] == ["matmul", "attention", "fusion", "layernorm", "softmax"]
    assert [e.value for e in ErrorCode][:9] == [
        "invalid_argument",
        "resource_exhausted",
        "unavailable",
        "deadline_exceeded",
        "not_implemented",
        "kv_transfer_failed",
        "comm_timeout",
        "comm_group_invalid",
        "distributed_runtime_error",
    ]
    assert [e.value for e in ErrorCode][9:] == [
        "comm_backend_not_supported",
        "comm_rank_mismatch",
        "comm_group_not_found",
        "comm_collective_failed",
        "comm_p2p_failed",
        "operator_not_found",
        "operator_registration_failed",
    ]
    assert [c.value for c in CollectiveOp] == [
        "all_reduce",
        "all_gather",
        "reduce_scatter",
        "broadcast",
        "reduce",
        "all_to_all",
        "barrier",
        "send",
        "recv",
    ]
    assert [r.value for r in ReduceOp] == ["sum", "max", "min", "prod", "band", "bor", "bxor", "avg"]
    assert [c.value for c in CommBackendType] == ["nccl", "hccl", "gloo", "mpi", "custom"]
    assert [k.value for k in KVLayout] == ["bshd", "bhsd"]
    for enum in (DType, KernelKind, ErrorCode, CollectiveOp, ReduceOp, CommBackendType, KVLayout):
        assert issubclass(enum, str) and issubclass(enum, Enum)


def test_capability_descriptor_fields_order_and_defaults() -> None:
    fs = dataclasses.fields(CapabilityDescriptor)
    assert [f.name for f in fs] == [
        "device_name",
        "device_type",
        "compute_capability",
        "total_memory_bytes",
        "available_memory_bytes",
        "supported_dtypes",
        "supported_kernels",
        "has_stream",
        "has_event",
        "has_collective",
        "has_graph_exec",
        "supported_collectives",
        "has_kv_block_copy",
        "has_kv_block_migrate",
        "max_memory_mb",
        "max_batch_size",
        "max_sequence_length",
    ]
    cap = CapabilityDescriptor()
    assert cap.device_name is None and cap.device_type == "unknown" and cap.supported_dtypes == []
    assert cap.has_stream is False and cap.max_memory_mb is None
    assert CapabilityDescriptor().supported_dtypes is not CapabilityDescriptor().supported_dtypes
    d = CapabilityDescriptor(supported_dtypes=[DType.FP16], supported_kernels=[KernelKind.MATMUL]).to_dict()
    assert d["supported_dtypes"] == ["fp16"] and d["supported_kernels"] == ["matmul"]
    assert list(d) == [f.name for f in fs]


# A stand-in for sagellm_protocol.DType: another str enum with the same names and values.
ForeignDType = Enum("DType", {m.name: m.value for m in DType}, type=str)  # type: ignore[misc]


def test_foreign_str_enum_interoperates() -> None:
    f16 = ForeignDType["FP16"]
    assert f16 == DType.FP16 and hash(f16) == hash(DType.FP16)
    assert f16 in {DType.FP16, DType.BF16} and DType.FP16 in {f16}
    assert coerce_dtype(f16) is DType.FP16 and DType(f16) is DType.FP16
    backend = MockBackendProvider(supported_dtypes=[ForeignDType["FP16"], DType.BF16])
    cap = backend.capability()
    assert ForeignDType["FP16"] in cap.supported_dtypes and cap.supports_dtype(ForeignDType["BF16"])
    block = backend.kv_block_alloc(16, ForeignDType["BF16"])
    assert block.dtype is DType.BF16


def test_coerce_dtype_errors() -> None:
    assert coerce_dtype("FP16") is DType.FP16
    with pytest.raises(InvalidArgumentError, match="'fp64' is not a DType"):
        coerce_dtype("fp64")
    with pytest.raises(InvalidArgumentTypeError, match="got float"):
        coerce_dtype(1.5)
    with pytest.raises(TypeError):
        coerce_dtype(None)


def test_dtype_bits() -> None:
    assert [dtype_bits(d) for d in DType] == [32, 16, 16, 8, 8, 4]
    assert dtype_bits("int4") == 4 and dtype_bits(ForeignDType["FP8"]) == 8


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("cpu", Device("cpu")),
        ("cuda", Device("cuda")),
        ("cuda:1", Device("cuda", 1)),
        (" CUDA:0 ", Device("cuda", 0)),
        ("npu:3", Device("npu", 3)),
        ("cpu:0", Device("cpu")),
        ("mock:1", Device("mock", 1)),
        (Device("xpu", 2), Device("xpu", 2)),
    ],
)
def test_normalize_device(value: object, expected: Device) -> None:
    assert normalize_device(value) == expected


def test_normalize_device_int_and_torch_device() -> None:
    torch = pytest.importorskip("torch")
    assert normalize_device(1, default_type="cuda") == Device("cuda", 1)
    assert normalize_device(0, default_type="cpu") == Device("cpu")
    assert normalize_device(torch.device("cpu")) == Device("cpu")
    assert normalize_device(torch.device("cuda", 2)) == Device("cuda", 2)
    assert str(normalize_device(torch.device("cuda"))) == "cuda"


@pytest.mark.parametrize(
    ("value", "err", "text"),
    [
        ("gpu", InvalidDeviceError, "did you mean cuda"),
        ("", InvalidDeviceError, "empty"),
        ("cuda:x", InvalidDeviceError, "not a non-negative integer"),
        ("cuda:-1", InvalidDeviceError, "index"),
        ("cpu:2", InvalidDeviceError, "one cpu device"),
        ("tpu:0", InvalidDeviceError, "unknown device type"),
        ("ascend:0", InvalidDeviceError, "did you mean npu"),
        (None, InvalidArgumentTypeError, "got NoneType"),
        (1.0, InvalidArgumentTypeError, "got float"),
        (True, InvalidArgumentTypeError, "bool"),
        (3, InvalidArgumentTypeError, "ambiguous"),
    ],
)
def test_normalize_device_errors(value: object, err: type[Exception], text: str) -> None:
    with pytest.raises(err, match=text) as info:
        normalize_device(value)
    assert "Expected" in str(info.value) or "Pass" in str(info.value)


@pytest.mark.parametrize(
    "value",
    ["mock:" + "9" * 5000, "cuda:" + "1" * 10, "npu:" + "7" * 100_000, "x" * 10_000 + ":0", "cuda:" + "٣" * 5000],
)
def test_normalize_device_huge_strings_are_typed_errors(value: str) -> None:
    """Python refuses int() of more than 4,300 digits with an untyped ValueError; messages stay short."""
    with pytest.raises(InvalidDeviceError, match="is not a valid device") as info:
        normalize_device(value)
    assert len(str(info.value)) < 500 and info.value.code.value == "invalid_argument"


def test_normalize_device_index_digit_limit() -> None:
    assert normalize_device("cuda:" + "9" * 9) == Device("cuda", 999_999_999)
    assert normalize_device("cuda:" + "0" * 20 + "5") == Device("cuda", 5)  # leading zeros are not digits of size
    assert normalize_device(999_999_999, default_type="npu") == Device("npu", 999_999_999)
    for value in (10**9, 10**5000):
        with pytest.raises(InvalidDeviceError, match="more than 9 digits") as info:
            normalize_device(value, default_type="cuda")
        assert len(str(info.value)) < 500
    with pytest.raises(InvalidArgumentTypeError, match="ambiguous"):
        normalize_device(10**5000)


def test_parse_and_format_device_str() -> None:
    assert parse_device_str("cuda:1") == ("cuda", 1)
    assert parse_device_str("cpu") == ("cpu", None)
    assert format_device_str("npu", 0) == "npu:0" and format_device_str("cpu") == "cpu"
    assert P.DEVICE_TYPE_CPU == "cpu" and P.DEVICE_TYPE_NPU == "npu" and P.DEVICE_TYPE_ASCEND == "ascend"
    assert P.DEVICE_TYPE_CUDA == "cuda" and P.DEVICE_TYPE_XPU == "xpu" and P.DEVICE_TYPE_ROCM == "rocm"
