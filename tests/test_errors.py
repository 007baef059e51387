"""Typed errors carry protocol codes and the built-in base Python users expect."""

from __future__ import annotations

import pytest

from sagellm_backend import errors as E
from sagellm_backend.protocol import ErrorCode

CASES = [
    (E.InvalidArgumentError, ErrorCode.INVALID_ARGUMENT, ValueError),
    (E.InvalidArgumentTypeError, ErrorCode.INVALID_ARGUMENT, TypeError),
    (E.UnsupportedDTypeError, ErrorCode.INVALID_ARGUMENT, ValueError),
    (E.InvalidDeviceError, ErrorCode.INVALID_ARGUMENT, ValueError),
    (E.DeviceUnreachableError, ErrorCode.INVALID_ARGUMENT, ValueError),
    (E.BlockFreedError, ErrorCode.INVALID_ARGUMENT, ValueError),
    (E.ForeignBlockError, ErrorCode.INVALID_ARGUMENT, ValueError),
    (E.ProviderNotFoundError, ErrorCode.INVALID_ARGUMENT, ValueError),
    (E.ResourceExhaustedError, ErrorCode.RESOURCE_EXHAUSTED, MemoryError),
    (E.UnavailableError, ErrorCode.UNAVAILABLE, RuntimeError),
    (E.UnsupportedOperationError, ErrorCode.NOT_IMPLEMENTED, NotImplementedError),
    (E.KVTransferError, ErrorCode.KV_TRANSFER_FAILED, RuntimeError),
    (E.StreamError, ErrorCode.KV_TRANSFER_FAILED, RuntimeError),
    (E.StreamTimeoutError, ErrorCode.DEADLINE_EXCEEDED, TimeoutError),
    (E.CommTimeoutError, ErrorCode.COMM_TIMEOUT, TimeoutError),
    (E.CommGroupError, ErrorCode.COMM_GROUP_INVALID, RuntimeError),
    (E.CollectiveError, ErrorCode.COMM_COLLECTIVE_FAILED, RuntimeError),
    (E.KernelNotFoundError, ErrorCode.OPERATOR_NOT_FOUND, KeyError),
]


@pytest.mark.parametrize(("cls", "code", "builtin"), CASES, ids=[c[0].__name__ for c in CASES])
def test_error_codes_and_bases(cls: type[E.BackendError], code: ErrorCode, builtin: type) -> None:
    err = cls("what was wrong; found x; fix: do y", extra=1)
    assert isinstance(err, E.BackendError) and isinstance(err, builtin)
    assert err.code is code and err.details == {"extra": 1}
    assert str(err) == "what was wrong; found x; fix: do y"  # no KeyError quoting
    d = err.to_dict()
    assert d["code"] == code.value and d["type"] == cls.__name__
    with pytest.raises(builtin):
        raise err


def test_code_override() -> None:
    assert E.BackendError("x", code=ErrorCode.DEADLINE_EXCEEDED).code is ErrorCode.DEADLINE_EXCEEDED
