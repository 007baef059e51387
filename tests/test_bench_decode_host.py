"""The decode host-cost benchmark runs on CPU with a tiny case and reports what it measured."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

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
            "forward, window + fp8 cache", "forward, same metadata, output=", "torch op (reference)",
        }  # fmt: skip
        assert all(v > 0 for v in r.extra.values())
        assert r.met == (r.ours <= 25 and r.extra["forward, same metadata"] <= 25 and r.extra["plan"] <= 100)


def test_median_in_rounds_visits_every_call_in_turn_and_reports_each_calls_median() -> None:
    from sagellm_backend.bench.decode_host import median_us_in_rounds

    order: list[str] = []
    syncs: list[int] = []
    steps: dict[str, Callable[[], Any]] = {name: partial(order.append, name) for name in ("a", "b")}
    us = median_us_in_rounds(steps, reps=6, sync=lambda: syncs.append(1), rounds=3)
    assert order[:6] == ["a"] * 3 + ["b"] * 3  # the untimed warm-up calls
    assert order[6:] == ["a", "a", "b", "b"] * 3  # then 3 rounds of 2 samples each, every call in turn
    assert len(syncs) == 12 + 6  # a sync before each sample and after each step's samples of a round
    assert set(us) == {"a", "b"} and all(0 < v < 1e5 for v in us.values())
    with pytest.raises(ValueError, match="rounds"):
        median_us_in_rounds(steps, reps=6, sync=lambda: None, rounds=0)


def test_every_case_is_timed_in_the_same_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cases' calls go through one ``median_us_in_rounds``: a slow spell of the host falls on every case."""
    from sagellm_backend.bench import decode_host

    calls: list[list[str]] = []
    real = decode_host.median_us_in_rounds

    def spy(steps: dict[str, Callable[[], Any]], reps: int, sync: Callable[[], None]) -> dict[str, float]:
        calls.append(list(steps))
        return real(steps, reps, sync)

    monkeypatch.setattr(decode_host, "median_us_in_rounds", spy)
    rows = decode_host.bench_decode_host_cost("cpu", quick=True, cases=((2, 64), (3, 32)), heads=(4, 2, 16))
    assert len(calls) == 1 and {"0|run", "1|run", "0|plan", "1|plan"} <= set(calls[0])
    assert len(calls[0]) == 2 * 10 and [r.case for r in rows] == ["2 x 64, 4/2 heads, d 16", "3 x 32, 4/2 heads, d 16"]
