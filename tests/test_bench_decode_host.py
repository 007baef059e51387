"""The decode host-cost benchmark runs on CPU with a tiny case and reports what it measured."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")


def test_decode_host_cost_rows_on_cpu() -> None:
    from sagellm_backend.bench.decode_host import bench_decode_host_cost

    rows = bench_decode_host_cost("cpu", quick=True, cases=((2, 64), (3, 32)), heads=(4, 2, 16))
    assert [r.case for r in rows] == ["2 x 64, 4/2 heads, d 16", "3 x 32, 4/2 heads, d 16"]
    for r in rows:
        assert r.unit == "us/call" and not r.higher_is_better
        assert r.ours > 0 and r.naive is not None and r.naive > 0
        assert set(r.extra) == {
            "plan", "plan, device inputs", "plan, trusted", "forward, same metadata", "run, window + fp8 cache",
            "forward, same metadata, output=",
        }  # fmt: skip
        assert all(v > 0 for v in r.extra.values())
        assert r.met == (r.ours <= 25 and r.extra["forward, same metadata"] <= 25 and r.extra["plan"] <= 100)
