"""End-to-end decode step of a Llama-3-8B-shaped stack: ours (eager, graphed) vs Hugging Face (eager, compiled) vs
the copy floor, tokens/s, all measured in one run.

    PYTHONPATH=src python3 bench/bench_decode_step.py --json out.json --plot out.png   # GPU: the issue's table
    PYTHONPATH=src python3 bench/bench_decode_step.py --device cpu --quick --json out.json   # tiny, seconds (CI)

Rows per case (batch x context): the floor = (bytes of weights + KV read per step) / device-to-device copy rate
(bytes read + written, measured here); ours eager (plan once per step, run per layer); ours graphed (one CUDA
graph per batch size, replayed after ``plan()`` with lengths, tables and slots changing every step); Hugging
Face ``LlamaModel`` + ``StaticCache`` + SDPA, eager and under ``torch.compile(mode="reduce-overhead")``. HF has one
length per batch, so mixed batches run padded to the longest. First calls (capture, compile) are their own rows.
A correctness figure compares one step of ours with HF on the same weights, inputs and KV (max |ours - hf| /
max |hf|), and each graphed case checks one replay against an eager step bit for bit.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decode_stack import BackendAttention, HFStack, OurStack, Shape, WrapperAttention, wrapper_class
from sagellm_backend import get_provider

FULL = Shape(hidden=4096, heads=32, kv_heads=8, head_dim=128, mlp=14336, layers=8, dtype=torch.bfloat16)
QUICK = Shape(hidden=64, heads=4, kv_heads=2, head_dim=16, mlp=128, layers=2, dtype=torch.float32)
# (name, batch, context, mixed): mixed draws each length uniformly from 1..context.
FULL_CASES = [("1x1k", 1, 1024, False), ("8x1k", 8, 1024, False), ("64x1k", 64, 1024, False),
              ("8x8k", 8, 8192, False), ("64 mixed<=8k", 64, 8192, True), ("1x8k", 1, 8192, False),
              ("64x8k", 64, 8192, False)]  # fmt: skip
QUICK_CASES = [("1x40", 1, 40, False), ("4 mixed<=60", 4, 60, True)]
IMPLS = ["floor", "ours eager", "ours eager, allocating", "ours graphed", "hf eager", "hf compiled"]


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def copy_rate(dev: torch.device, nbytes: int) -> float:
    """Device-to-device copy rate in bytes/s, counting bytes read and written."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync(dev)
    reps = 10
    t0 = time.perf_counter()
    for _ in range(reps):
        dst.copy_(src)
    sync(dev)
    return 2 * nbytes * reps / (time.perf_counter() - t0)


class Case:
    """One batch: lengths, block tables wide enough for every step, and the per-step metadata."""

    def __init__(self, name: str, batch: int, ctx: int, mixed: bool, pool: Any, shape: Shape, width: int,
                 max_steps: int, seed: int) -> None:  # fmt: skip
        rng = np.random.default_rng(seed)
        self.name, self.batch, self.ctx, self.mixed = name, batch, ctx, mixed
        self.lens = rng.integers(1, ctx + 1, batch) if mixed else np.full(batch, ctx)
        bs = shape.block_size
        self.tables = np.zeros((batch, width), dtype=np.int32)
        self.ids: list[int] = []
        for i, n in enumerate(self.lens):
            need = -(-(int(n) + max_steps + 1) // bs)
            ids = pool.allocate(need)
            self.ids += ids
            self.tables[i, :need] = rng.permutation(ids)  # scattered blocks, as a long-running engine has
        self.bs = bs

    def meta(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(context_lens, block_tables, slot_mapping)`` of decode step ``step``: every row's length, table and slot
        change from one step to the next."""
        order = np.roll(np.arange(self.batch), step)  # the batch is reordered every step, as engines do
        lens = (self.lens[order] + step).astype(np.int32)
        tables = self.tables[order]
        slots = tables[np.arange(self.batch), lens // self.bs].astype(np.int64) * self.bs + lens % self.bs
        return lens, tables, slots

    def kv_read_tokens(self, step: int) -> int:
        return int((self.lens + step + 1).sum())


class Rows:
    """Appends one case's rows to the report (and a line to stderr)."""

    def __init__(self, rows: list[dict[str, Any]], case: Case, floor: float) -> None:
        self.rows, self.case, self.floor = rows, case, floor

    def __call__(self, impl: str, tps: float | None, status: str = "ok", note: str = "", **extra: Any) -> None:
        c = self.case
        pct = None if tps is None or impl == "floor" else 100.0 * tps / self.floor
        self.rows.append(
            {
                "case": c.name,
                "batch": c.batch,
                "context": c.ctx,
                "mixed": c.mixed,
                "impl": impl,
                "tokens_per_s": tps,
                "pct_floor": pct,
                "status": status,
                "note": note,
                **extra,
            }
        )
        shown = "-" if tps is None else f"{tps:,.0f} tok/s"
        print(f"{c.name:>14} {impl:>13}: {shown} {status} {note}", file=sys.stderr, flush=True)  # fmt: skip


def timed(dev: torch.device, fn: Any, warmup: int, steps: int) -> float:
    """Seconds for ``steps`` calls of ``fn(i)`` after ``warmup`` calls."""
    for i in range(warmup):
        fn(i)
    sync(dev)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        fn(i)
    sync(dev)
    return time.perf_counter() - t0


def make_attention(ours: OurStack, max_batch: int, width: int, trusted: bool, rope_inside: bool = True) -> Any:
    cls, _ = wrapper_class()
    scales = ours.kv_scales
    if cls is None:
        return BackendAttention(ours.shape, ours.caches, ours.device, scales)
    cos_sin = ours.cos_sin if rope_inside else None
    return WrapperAttention(cls, ours.shape, ours.caches, ours.device, max_batch, width, trusted, cos_sin, scales)


def correctness(ours: OurStack, hf: HFStack, pool: Any, width: int, batch: int, ctx: int) -> dict[str, Any]:
    """One step of ours vs HF on the same weights, inputs and cached KV (uniform lengths)."""
    s, dev = ours.shape, ours.device
    case = Case("check", batch, ctx, False, pool, s, width, 1, seed=99)
    g = torch.Generator(device="cpu").manual_seed(7)
    cache = hf.new_cache(batch, ctx + 1)
    for layer in range(s.layers):
        keys = torch.randn(batch, s.kv_heads, ctx, s.head_dim, generator=g).to(device=dev, dtype=s.dtype)
        values = torch.randn(batch, s.kv_heads, ctx, s.head_dim, generator=g).to(device=dev, dtype=s.dtype)
        if s.kv_fp8 is not None:  # values an fp8 cache holds exactly (scale 1), so both stacks attend to the same
            keys, values = (t.to(s.kv_fp8).to(s.dtype) for t in (keys, values))
        hf.fill(cache, layer, keys, values)
        for i in range(batch):
            ours.write_kv(layer, case.tables, i, keys[i].transpose(0, 1), values[i].transpose(0, 1))
    x = torch.randn(batch, s.hidden, generator=g).to(device=dev, dtype=s.dtype)
    attn = make_attention(ours, batch, width, trusted=False)
    attn.begin_step(*case.meta(0))
    x0 = x.clone()
    with torch.no_grad():
        got = ours.step(x, attn).double()
        ours.reuse = False  # the same step allocating (it stores the same new K/V at the same slots again)
        try:
            same = bool(torch.equal(ours.step(x, attn).double(), got) and torch.equal(x, x0))
        finally:
            ours.reuse = True
        want = hf.step(hf.model, cache, x, ctx).double()
    pool.free(case.ids)
    err = float((got - want).abs().max() / want.abs().max())
    return {
        "batch": batch, "context": ctx, "max_rel_err": err, "dtype": str(s.dtype).removeprefix("torch."),
        "reuse_equals_allocating": same,
    }  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    dev = torch.device(args.device)
    shape = QUICK if args.quick else FULL
    if args.layers:
        shape = Shape(**{**shape.__dict__, "layers": args.layers})
    if args.kv_cache_dtype != "auto":
        shape = Shape(**{**shape.__dict__, "kv_cache_dtype": args.kv_cache_dtype})
    cases = QUICK_CASES if args.quick else [c for c in FULL_CASES if not args.cases or c[0] in args.cases]
    steps, warmup = args.steps, args.warmup
    max_steps = warmup + steps + 2
    max_ctx = max(c[2] for c in cases)
    width = -(-(max_ctx + max_steps + 1) // shape.block_size)
    max_batch = max(c[1] for c in cases)
    check_batch, check_ctx = (2, 37) if args.quick else (2, 1000)
    num_blocks = max_batch * width + check_batch * width + 1
    if dev.type == "cuda":
        provider = get_provider("cuda", device_id=dev.index or 0, kv_geometry=OurStack.geometry(shape))
        dev = torch.device(provider.device)
        torch.cuda.set_device(dev)  # graphs, streams and torch.compile use the current device
    else:
        provider = get_provider("cpu", kv_geometry=OurStack.geometry(shape))
    ours = OurStack(provider, shape, num_blocks, max_pos=max_ctx + max_steps + 2)
    hf = HFStack(ours)
    rate = copy_rate(dev, (16 << 20) if args.quick else (1 << 30))
    wrapper, wrapper_reason = wrapper_class()
    report: dict[str, Any] = {
        "machine": {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
                    "torch": torch.__version__, "transformers": __import__("transformers").__version__,
                    "python": platform.python_version()},
        "config": {**{k: str(v) for k, v in shape.__dict__.items()}, "steps": steps, "warmup": warmup,
                   "attention": "PagedAttentionWrapper" if wrapper else "PagedAttentionBackend.forward",
                   "trusted_plan": args.trusted, "kv_cache_dtype": shape.kv_cache_dtype,
                   "rope": "rotary_embedding kernel" if args.rope_outside else "inside the attention's run"},
        "copy_rate_gbps": rate / 1e9, "rows": [], "first_call": [],
    }  # fmt: skip
    report["correctness"] = correctness(ours, hf, ours.pool, width, check_batch, check_ctx)
    c = report["correctness"]
    print(f"correctness: max rel err ours vs HF = {c['max_rel_err']:.3e}; in-place step equal to the allocating one "
          f"and input kept: {c['reuse_equals_allocating']}", file=sys.stderr)  # fmt: skip
    use_compile = args.hf_compile == "on" or (args.hf_compile == "auto" and dev.type == "cuda" and not args.quick)
    compiled = None
    graphs: dict[int, tuple[Any, torch.Tensor, torch.Tensor, Any]] = {}
    for ci, (name, batch, ctx, mixed) in enumerate(cases):
        case = Case(name, batch, ctx, mixed, ours.pool, shape, width, max_steps, seed=ci)
        g = torch.Generator(device="cpu").manual_seed(ci)
        xs = [torch.randn(batch, shape.hidden, generator=g).to(dev, shape.dtype) for _ in range(4)]

        step_bytes = shape.weight_bytes + case.kv_read_tokens(warmup + steps // 2) * shape.kv_bytes_per_token()
        row = Rows(report["rows"], case, batch * rate / step_bytes)
        row("floor", row.floor, note=f"{step_bytes / 1e9:.3f} GB/step at {rate / 1e9:.0f} GB/s")

        # ours, eager: plan once per step, run per layer
        attn = make_attention(ours, max_batch, width, args.trusted, not args.rope_outside)

        def eager_step(i: int, attn: Any = attn, case: Case = case, xs: list[torch.Tensor] = xs) -> torch.Tensor:
            attn.begin_step(*case.meta(i))
            return ours.step(xs[i % len(xs)], attn)

        with torch.no_grad():
            secs = timed(dev, eager_step, warmup, steps)
            attend_us = attend_host_us(attn, shape, batch, dev)
        row(
            "ours eager",
            batch * steps / secs,
            note=f"attention {attend_us:.0f} us/call on the host",
            attend_us=attend_us,
        )
        ours.reuse = False  # the same step with every kernel returning new tensors: the baseline of the reuse
        try:
            with torch.no_grad():
                secs = timed(dev, eager_step, warmup, steps)
        finally:
            ours.reuse = True
        row("ours eager, allocating", batch * steps / secs, note="no in-place norms, no out= buffers")

        # ours, graphed: capture once per batch size, plan() then replay
        if dev.type != "cuda":
            row("ours graphed", None, "unavailable", "CUDA graphs need a CUDA device")
        elif wrapper is None:
            row("ours graphed", None, "unavailable", wrapper_reason)
        else:
            with torch.no_grad():
                if batch not in graphs:
                    t0 = time.perf_counter()
                    graphs[batch] = capture(ours, attn, case, xs[0], dev)
                    report["first_call"].append({"case": name, "what": "ours graph capture",
                                                 "seconds": time.perf_counter() - t0})  # fmt: skip
                graph, static_x, static_out, gattn = graphs[batch]

                def graphed_step(
                    i: int, g: Any = graph, a: Any = gattn, sx: torch.Tensor = static_x, c: Case = case,
                    xs: list[torch.Tensor] = xs,
                ) -> None:  # fmt: skip
                    a.begin_step(*c.meta(i))
                    sx.copy_(xs[i % len(xs)])
                    g.replay()

                secs = timed(dev, graphed_step, warmup, steps)
                plan_us = plan_cost_us(gattn, case, dev)
                i = warmup + steps
                graphed_step(i)
                replayed = static_out.clone()
                gattn.begin_step(*case.meta(i))
                same = bool(torch.equal(replayed, ours.step(xs[i % len(xs)], gattn)))
            row("ours graphed", batch * steps / secs, note=f"plan {plan_us:.0f} us/step", plan_us=plan_us,
                equals_eager=same)  # fmt: skip

        # Hugging Face, eager and compiled: one length per batch (padded to the longest)
        longest = int(case.lens.max())
        for impl in ("hf eager", "hf compiled"):
            if impl == "hf compiled" and not use_compile:
                row(impl, None, "skipped", "torch.compile off (--hf-compile, or --quick / cpu by default)")
                continue
            if impl == "hf compiled" and time.perf_counter() - t_start > args.time_budget:
                row(impl, None, "skipped", f"time budget {args.time_budget:.0f} s spent")
                continue
            cache = hf.new_cache(batch, longest + max_steps + 1)
            zeros = torch.zeros((), dtype=shape.dtype, device=dev).expand(
                batch, shape.kv_heads, longest, shape.head_dim
            )
            for layer in range(shape.layers):
                hf.fill(cache, layer, zeros, zeros)
            module = hf.model
            if impl == "hf compiled":
                if compiled is None:
                    cfg = torch._dynamo.config
                    setattr(cfg, "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit", 64)
                    compiled = torch.compile(hf.model, mode="reduce-overhead", fullgraph=False)
                module = compiled
                with torch.no_grad():
                    t0 = time.perf_counter()
                    hf.step(module, cache, xs[0], longest)
                    sync(dev)
                report["first_call"].append({"case": name, "what": "hf torch.compile (first call)",
                                             "seconds": time.perf_counter() - t0})  # fmt: skip
            start = longest + (1 if impl == "hf compiled" else 0)

            def hf_step(
                i: int, module: Any = module, cache: Any = cache, start: int = start, xs: list[torch.Tensor] = xs
            ) -> torch.Tensor:
                return hf.step(module, cache, xs[i % len(xs)], start + i).clone()

            with torch.no_grad():
                secs = timed(dev, hf_step, warmup, steps)
            row(impl, batch * steps / secs, note="padded to the longest" if mixed else "")
            del cache, hf_step, zeros
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        ours.pool.free(case.ids)
    report["elapsed_s"] = time.perf_counter() - t_start
    return report


def capture(ours: OurStack, attn: Any, case: Case, x: torch.Tensor, dev: torch.device) -> tuple[Any, ...]:
    """A CUDA graph of one step for ``case.batch`` sequences over the wrapper's persistent buffers."""
    static_x = x.clone()
    attn.begin_step(*case.meta(0))
    side = torch.cuda.Stream(dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        for _ in range(2):
            ours.step(static_x, attn)
    torch.cuda.current_stream(dev).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = ours.step(static_x, attn)
    return graph, static_x, static_out, attn


def attend_host_us(attn: Any, shape: Shape, batch: int, dev: torch.device) -> float:
    """Host microseconds of one layer's attention call (mean of 16 back-to-back calls, no sync between)."""
    q = torch.zeros(batch, shape.heads, shape.head_dim, dtype=shape.dtype, device=dev)
    kv = torch.zeros(batch, shape.kv_heads, shape.head_dim, dtype=shape.dtype, device=dev)
    attn.attend(0, q, kv, kv)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(16):
        attn.attend(0, q, kv, kv)
    elapsed = time.perf_counter() - t0
    sync(dev)
    return elapsed / 16 * 1e6


def plan_cost_us(attn: Any, case: Case, dev: torch.device) -> float:
    """Host microseconds of one ``plan`` (mean of 20)."""
    metas = [case.meta(i) for i in range(20)]
    sync(dev)
    t0 = time.perf_counter()
    for m in metas:
        attn.begin_step(*m)
    return (time.perf_counter() - t0) / len(metas) * 1e6


def markdown(report: dict[str, Any]) -> str:
    rows: dict[str, dict[str, Any]] = {}
    for r in report["rows"]:
        rows.setdefault(r["case"], {})[r["impl"]] = r
    head = "| batch x context | " + " | ".join(IMPLS) + " |"
    lines = [head, "|---" * (len(IMPLS) + 1) + "|"]
    for case, by in rows.items():
        cells = []
        for impl in IMPLS:
            r = by.get(impl)
            if r is None or r["tokens_per_s"] is None:
                cells.append(r["status"] if r else "-")
            elif impl == "floor":
                cells.append(f"{r['tokens_per_s']:,.0f}")
            else:
                cells.append(f"{r['tokens_per_s']:,.0f} ({r['pct_floor']:.0f} %)")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    first = ["| first call | what | seconds |", "|---|---|---|"] if report["first_call"] else []
    first += [f"| {f['case']} | {f['what']} | {f['seconds']:.2f} |" for f in report["first_call"]]
    c = report["correctness"]
    tail = [f"\ncorrectness: ours vs HF, one step, batch {c['batch']} x {c['context']}, {c['dtype']}: "
            f"max rel err {c['max_rel_err']:.2e}; copy rate {report['copy_rate_gbps']:.0f} GB/s"]  # fmt: skip
    kv = report["config"].get("kv_cache_dtype", "auto")
    if kv != "auto":
        tail.append(f"our KV cache: {kv} (the floor counts its bytes); the HF rows read a {c['dtype']} cache")
    return "\n".join(lines + (["", *first] if first else []) + tail)


def plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = markdown(report).split("\n\n")[0].splitlines()  # the main table: header, rule, one line per case
    head, *cells = ([c.strip() for c in line.strip("|").split("|")] for line in lines[:1] + lines[2:])
    fig, ax = plt.subplots(figsize=(14, 0.5 + 0.45 * (len(cells) + 1)))
    ax.axis("off")
    t = ax.table(cellText=cells, colLabels=head, loc="center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(9)
    t.scale(1, 1.4)
    m = report["machine"]
    ax.set_title(f"decode step, tokens/s (% of floor) - {m['device']}, torch {m['torch']}", fontsize=10)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny configuration (seconds on a CPU)")
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--plot", help="draw the table into this PNG")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per row (default 20; quick 3)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; quick 1)")
    ap.add_argument("--layers", type=int, default=0, help="override the layer count")
    ap.add_argument("--cases", nargs="*", help="case names to run (default all)")
    ap.add_argument("--trusted", action="store_true", help="plan(trusted=True): no validation sync per step")
    ap.add_argument(
        "--kv-cache-dtype",
        choices=["auto", "fp8_e4m3", "fp8_e5m2"],
        default="auto",
        help="our KV cache: the model dtype (auto) or fp8 (the floor counts fp8 KV bytes; the HF rows keep theirs)",
    )
    ap.add_argument("--rope-outside", action="store_true", help="RoPE as its own kernel, not inside the attention")
    ap.add_argument(
        "--decode-config",
        metavar="BN/WARPS/STAGES/MERGE",
        help="an experiment: this Triton decode configuration instead of the default for 16-bit caches",
    )
    ap.add_argument(
        "--long-splits",
        type=int,
        metavar="N",
        help="an experiment: DecodeConfig.long_splits=N in every default decode configuration (and workspace)",
    )
    ap.add_argument(
        "--hf-compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="the torch.compile rows (auto: on for CUDA without --quick)",
    )
    ap.add_argument(
        "--time-budget",
        type=float,
        default=240.0,
        help="compiled rows not started after this many seconds are skipped (each compiles for minutes)",
    )
    args = ap.parse_args(argv)
    args.steps = args.steps or (3 if args.quick else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device; use --device cpu")
    if args.decode_config:
        use_decode_config(args.decode_config)
    if args.long_splits is not None:
        use_long_splits(args.long_splits)
    report = run(args)
    text = markdown(report)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=_json_default))
    if args.plot:
        try:
            plot(report, args.plot)
        except ImportError as exc:
            print(f"--plot: matplotlib is not installed ({exc}); the JSON and the table above are complete.",
                  file=sys.stderr)  # fmt: skip
            return 1
    return 0


def use_decode_config(spec: str) -> None:
    """Make ``BN/WARPS/STAGES/MERGE`` the Triton decode configuration of 16-bit caches (fp8 keeps its own)."""
    from sagellm_backend.attention.triton_args import DecodeConfig

    bn, warps, stages, merge = (int(x) for x in spec.split("/"))
    chosen = DecodeConfig(block_n=bn, num_warps=warps, num_stages=stages, merge_width=merge)
    _patch_decode_config(lambda cfg, kv_fp8: cfg if kv_fp8 else chosen)


def use_long_splits(n: int) -> None:
    """Make ``long_splits=n`` part of every default decode configuration, the workspace's sizing included."""
    import dataclasses

    _patch_decode_config(lambda cfg, kv_fp8: dataclasses.replace(cfg, long_splits=n))


def _patch_decode_config(change: Callable[[Any, bool], Any]) -> None:
    """Replace the default decode configuration wherever it is looked up: the launch (``paged_triton``) and the
    workspace's sizing (``triton_args``), so that an experiment's configuration is also what the workspace holds.

    Args:
        change: Maps (the current default configuration, whether the cache is fp8) to the experiment's.
    """
    from sagellm_backend.attention import paged_triton, triton_args

    default = paged_triton.decode_config

    def chosen(head_dim: int, dtype: torch.dtype, group: int, *, kv_fp8: bool = False) -> Any:
        return change(default(head_dim, dtype, group, kv_fp8=kv_fp8), kv_fp8)

    paged_triton.decode_config = triton_args.decode_config = chosen  # type: ignore[assignment]  # the experiment


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, float) and math.isnan(o):
        return None
    raise TypeError(type(o).__name__)


if __name__ == "__main__":
    raise SystemExit(main())
