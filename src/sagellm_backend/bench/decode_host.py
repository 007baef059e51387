"""Host cost of one decode step's attention: what the engine's thread spends per call before the kernels run.

Per case (batch x context, 32/8 heads, head 128, 16-token blocks): ``PagedAttentionWrapper.run`` (ours; also
with a sliding window over an fp8 cache),
``PagedAttentionBackend.forward`` with the step's metadata reused across layers (also into a caller's ``output``),
``forward`` with metadata
rebuilt by ``PagedAttentionMetadataBuilder`` every step (the baseline), and ``plan()`` with host inputs
(validated on the host) and with device inputs (one sync); beside them one plain torch op (``torch.add`` into a
buffer), what any launch costs this host. Each call is timed alone, the device idle before it, so the time is the
host's (on CUDA the kernels run after the call returns). The calls of every case are timed in the same rounds, each
round taking some samples of every call of every case in turn, so a slow spell of a shared host falls on every row
and every case alike; the median of all a call's samples is reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from .harness import Result

__all__ = ["DECODE_HOST_CASES", "bench_decode_host_cost", "median_us_in_rounds"]

#: ``(batch, context)`` cases, as in issue 22's table.
DECODE_HOST_CASES: tuple[tuple[int, int], ...] = ((1, 1024), (8, 2048), (64, 2048))


#: Rounds the samples of each call are spread over.
ROUNDS = 5


def _sample(fn: Callable[[], Any], reps: int, sync: Callable[[], None], into: list[float]) -> None:
    """Append ``reps`` host times (seconds) of ``fn``, each after the device has gone idle."""
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        into.append(time.perf_counter() - t0)
    sync()


def median_us_in_rounds(
    steps: dict[str, Callable[[], Any]], reps: int, sync: Callable[[], None], rounds: int = ROUNDS
) -> dict[str, float]:
    """Median host microseconds per call of each step, its ``reps`` samples taken over ``rounds`` rounds that
    visit every step in turn (each step called 3 times untimed first: compile, memos, fast paths).

    Args:
        steps: Name -> call.
        reps: Samples per step in all, rounded to a multiple of ``rounds`` (at least one per round).
        sync: Waits for the device to go idle.
        rounds: Rounds the samples are spread over (>= 1).

    Returns:
        Name -> median microseconds.

    Raises:
        ValueError: ``rounds`` < 1.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    for fn in steps.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    per_round = max(reps // rounds, 1)
    for _ in range(rounds):
        for name, fn in steps.items():
            _sample(fn, per_round, sync, times[name])
    return {name: statistics.median(t) * 1e6 for name, t in times.items()}


def bench_decode_host_cost(
    device: str = "cuda", quick: bool = False, *, cases: tuple[tuple[int, int], ...] = DECODE_HOST_CASES,
    heads: tuple[int, int, int] = (32, 8, 128),
) -> list[Result]:  # fmt: skip
    """Host microseconds per attention call and per plan, for each ``(batch, context)`` case.

    Args:
        device: Where the tensors live (``"cuda"``; ``"cpu"`` times the torch ops' compute too).
        quick: Fewer repetitions.
        cases: ``(batch, context)`` pairs.
        heads: ``(query heads, KV heads, head dim)``.

    Returns:
        One row per case: ours = ``run``, baseline = ``forward`` with rebuilt metadata; extras for ``forward``
        with reused metadata and the plans.

    Raises:
        AssertionError: ``run`` and ``forward`` disagree on a case's step.
    """
    import torch

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    made = [_case_steps(device, batch, ctx, heads) for batch, ctx in cases]
    steps = {f"{i}|{name}": fn for i, (case_steps, _) in enumerate(made) for name, fn in case_steps.items()}
    us = median_us_in_rounds(steps, 30 if quick else 200, sync)
    rows = []
    for i, ((batch, ctx), (case_steps, check)) in enumerate(zip(cases, made)):
        check()
        mine = {name: us[f"{i}|{name}"] for name in case_steps}
        met = mine["run"] <= 25 and mine["forward, same metadata"] <= 25 and mine["plan"] <= 100
        rows.append(Result(
            "attention host cost", f"{batch} x {ctx}, {heads[0]}/{heads[1]} heads, d {heads[2]}", "us/call", None,
            mine["forward, metadata rebuilt"], mine["run"],
            extra={name: t for name, t in mine.items() if name not in ("run", "forward, metadata rebuilt")},
            target="run and forward <= 25 us/call, plan <= 100 us", met=met, higher_is_better=False,
        ))  # fmt: skip
    return rows


def _case_steps(
    device: str, batch: int, ctx: int, heads: tuple[int, int, int]
) -> tuple[dict[str, Callable[[], Any]], Callable[[], None]]:
    """The timed calls of one case of :func:`bench_decode_host_cost`, and a check that its ``run`` and ``forward``
    agree (to call after the timing)."""
    import torch

    from ..attention.builder import PagedAttentionMetadataBuilder
    from ..attention.paged import PagedAttentionBackend
    from ..attention.wrapper import PagedAttentionWrapper

    hq, hkv, d = heads
    bs = 16
    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    width = ctx // bs
    nb = batch * width + 1
    k_cache = torch.zeros(nb, bs, hkv, d, dtype=dtype, device=dev)
    cache = (k_cache, torch.zeros_like(k_cache))
    table_host = torch.randperm(nb - 1)[: batch * width].view(batch, width).to(torch.int32)
    table_dev = table_host.to(dev)
    ctx_list = [ctx - 1] * batch
    ctx_host = torch.tensor(ctx_list, dtype=torch.int32)
    slots_host = table_host[:, -1].to(torch.int64) * bs + (ctx - 1) % bs
    q = torch.randn(batch, hq, d, device=dev).to(dtype)
    k = torch.randn(batch, hkv, d, device=dev).to(dtype)
    v = torch.randn(batch, hkv, d, device=dev).to(dtype)  # distinct tensors, as an engine's QKV split gives
    out = torch.empty_like(q)
    wrapper = PagedAttentionWrapper(
        hq, hkv, d, block_size=bs, max_batch=batch, max_blocks_per_seq=width, device=dev, num_blocks=nb
    )
    variant = PagedAttentionWrapper(
        hq, hkv, d, block_size=bs, max_batch=batch, max_blocks_per_seq=width, device=dev, num_blocks=nb,
        sliding_window=max(ctx // 2, 1), kv_cache_dtype="fp8_e4m3",
    )  # fmt: skip
    k8 = torch.zeros(nb, bs, hkv, d, dtype=torch.float8_e4m3fn, device=dev)
    fp8_cache = (k8, torch.zeros_like(k8))
    k_one, v_one = torch.ones(1, device=dev), torch.ones(1, device=dev)
    backend = PagedAttentionBackend(bs)
    vbackend = PagedAttentionBackend(bs, sliding_window=max(ctx // 2, 1), kv_cache_dtype="fp8_e4m3")
    builder = PagedAttentionMetadataBuilder(bs, device=dev)
    md = builder.build_decode_metadata(ctx_list, table_dev)
    steps: dict[str, Callable[[], Any]] = {
        "torch op (reference)": lambda: torch.add(q, q, out=out),
        "plan": lambda: wrapper.plan(ctx_host, table_host, slots_host),
        "plan, device inputs": lambda: wrapper.plan(ctx_host.to(dev), table_dev, slots_host.to(dev)),
        "plan, trusted": lambda: wrapper.plan(ctx_host, table_host, slots_host, trusted=True),
        "run": lambda: wrapper.run(q, k, v, cache, out=out),
        "run, window + fp8 cache": lambda: variant.run(q, k, v, fp8_cache, out=out, k_scale=k_one, v_scale=v_one),
        "forward, same metadata": lambda: backend.forward(q, k, v, md, kv_cache=cache),
        "forward, same metadata, output=": lambda: backend.forward(q, k, v, md, kv_cache=cache, output=out),
        "forward, window + fp8 cache": lambda: vbackend.forward(
            q, k, v, md, kv_cache=fp8_cache, k_scale=k_one, v_scale=v_one
        ),
        "forward, metadata rebuilt": lambda: backend.forward(
            q, k, v, builder.build_decode_metadata(ctx_list, table_dev), kv_cache=cache
        ),
    }
    variant.plan(ctx_host, table_host, slots_host)

    def check() -> None:
        if not torch.equal(wrapper.run(q, k, v, cache), backend.forward(q, k, v, md, kv_cache=cache)):
            raise AssertionError(f"wrapper.run and forward disagree on the same step ({batch} x {ctx})")

    return steps, check
