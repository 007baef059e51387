"""Where the time of one decode launch goes, program by program, on one GPU: the decode kernel traced (``TRACE``,
:func:`sagellm_backend.attention.triton_kernels.trace_point`) records per program its SM and the GPU's nanosecond
clock at its start, at the end of its keys, once its partial is counted and at its end (after the merge, for the
program that merges).

    PYTHONPATH=src python3 bench/probe_decode_trace.py [--json FILE] [--cases fp8x4x32k bf16x4x32k ...]

For each case the launch is the default one (as ``paged_decode`` makes it); the traced launch runs after warm-up
launches, several times, and the round with the shortest span is reported beside the untraced launch replayed from a
CUDA graph (``graph us``; the ceiling is the KV bytes at the rate of a device copy of the same run). Times are
microseconds from the first program's start:

- ``starts``: when programs start (median / max): how long placing the grid takes;
- ``keys done``: when programs finish their keys (min / median / max), and the median time a program walks keys;
- ``counted``: from the end of its keys to its partial counted (median), and when the last program is counted;
- ``end``: when the last program ends (after the merge), and the last merge's own time;
- ``per SM``: programs per SM (most / fewest) and the span of the SM that finished last.

The first program starts some time after the launch; the graph time less the traced span is that and the
launch itself (the clock ticks in 32 ns or coarser steps on some GPUs: read differences under a microsecond as
approximate).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sagellm_backend.attention import paged_triton as pt
from sagellm_backend.attention.kv_quant import fp8_dtype
from sagellm_backend.attention.triton_kernels import TRACE_FIELDS
from sagellm_backend.kernels.triton_launch import launch
from tune_decode_chunk import HKV, HQ, D, copy_us, fp8_caches, graph_us, head_major, tensors, workspace

#: name -> (cache kind, batch, context, block-table width in tokens)
CASES: dict[str, tuple[str, int, int, int]] = {
    "fp8x4x32k": ("fp8", 4, 32768, 32768),
    "bf16x4x32k": ("bf16", 4, 32768, 32768),
    "fp8x64x4k": ("fp8", 64, 4096, 4096),
    "bf16x1x1k": ("bf16", 1, 1024, 8448),
    "bf16x8x1k": ("bf16", 8, 1024, 8448),
}


def changes(spec: str) -> dict[str, Any]:
    """``'field=value,...'`` as DecodeConfig keywords (``'default'``: none)."""
    if spec == "default":
        return {}
    out: dict[str, Any] = {}
    for part in spec.split(","):
        key, value = part.split("=")
        flag = {"true": True, "false": False}.get(value.lower())
        out[key] = flag if flag is not None else float(value) if "." in value else int(value)
    return out


def summary(trace: torch.Tensor, used: torch.Tensor) -> dict[str, Any]:
    """The figures of one traced launch (``trace [programs, TRACE_FIELDS]``; rows of programs that held keys)."""
    t = trace[used].double()
    t0 = t[:, 0].min()
    start, keys, counted, end = ((t[:, i] - t0) / 1e3 for i in range(4))
    merged = t[:, 4] == 1
    sms = Counter(int(s) for s in t[:, 5].tolist())
    last_sm = int(t[int(end.argmax()), 5])
    on_last = t[:, 5] == last_sm

    def q(x: torch.Tensor) -> list[float]:
        v = sorted(x.tolist())
        return [round(v[0], 2), round(statistics.median(v), 2), round(v[-1], 2)]

    return {
        "programs": int(used.sum()),
        "starts": q(start),
        "keys_done": q(keys),
        "walk": q(keys - start),
        "counted_after_keys": q(counted - keys),
        "end": round(float(end.max()), 2),
        "merge": q((end - counted)[merged]) if bool(merged.any()) else None,
        "per_sm_most_fewest": [max(sms.values()), min(sms.values())],
        "sms_used": len(sms),
        "last_sm_span": q(end[on_last] - start[on_last]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--configs", nargs="*", default=["default"],
        help="DecodeConfig changes to trace, each 'default' or 'field=value,...' (ints, floats or true/false)",
    )  # fmt: skip
    ap.add_argument("--raw", type=Path, help="also save each case's fastest traced launch, one JSON file per case here")
    args = ap.parse_args()
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; choose from {list(CASES)}")
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    rows: list[dict[str, Any]] = []
    for name, spec in [(c, k) for c in args.cases for k in args.configs]:
        kind, batch, ctx, width = CASES[name]
        t = tensors(batch, ctx, width, torch.bfloat16)
        if kind == "fp8":
            k8, v8, ks, vs = fp8_caches(t, fp8_dtype("fp8_e4m3"))
            kc, vc, sc = head_major(k8), head_major(v8), {"k_scale": ks, "v_scale": vs}
        else:
            kc, vc, sc = t["kc"], t["vc"], {}
        ws = workspace(batch, splits=64)
        q, bt, lens, out = t["q"], t["bt"], t["lens"], t["out"]
        cfg = pt.decode_config(D, torch.bfloat16, HQ // HKV, kv_fp8=kind == "fp8")
        cfg = dataclasses.replace(cfg, **changes(spec))
        grid, a, kw = pt.decode_launch_args(q, kc, vc, bt, lens, D**-0.5, out, cfg=cfg, workspace=ws, **sc)
        n_prog = grid[0] * grid[1] * grid[2]
        trace = torch.full((n_prog, TRACE_FIELDS), -1, dtype=torch.int64, device="cuda")
        traced = {**kw, "TRACE": True, "trace_ptr": trace}

        def plain(grid: Any = grid, a: Any = a, kw: Any = kw) -> None:
            launch(pt.decode_kernel, grid)(*a, **kw)

        plain()
        ref = out.clone()
        graph = graph_us(plain)
        ceil = copy_us(batch * ctx * HKV * D * (2 if kind == "fp8" else 4))
        best: dict[str, Any] | None = None
        for _ in range(args.rounds + 2):
            trace.fill_(-1)
            launch(pt.decode_kernel, grid)(*a, **traced)
            torch.cuda.synchronize()
            used = trace[:, 3] >= 0  # programs past their span record only their start
            s = summary(trace.cpu(), used.cpu())
            if best is None or s["end"] < best["end"]:
                best = s
                raw = trace.cpu().tolist()
        assert best is not None
        same = bool(torch.equal(out, ref))
        row = {"case": name, "config": spec, "grid": list(grid), "graph_us": round(graph, 2),
               "ceiling_us": round(ceil, 2), "traced_equal": same, **best}  # fmt: skip
        rows.append(row)
        if args.raw:
            args.raw.mkdir(parents=True, exist_ok=True)
            (args.raw / f"{name}_{spec.replace('=', '').replace(',', '_')}.json").write_text(
                json.dumps({"grid": list(grid), "fields": int(TRACE_FIELDS), "rows": raw})
            )
        print(
            f"{name} ({spec}): grid {tuple(grid)}, {best['programs']} programs with keys; "
            f"graph {graph:.1f} us (ceiling {ceil:.1f}, {100 * ceil / graph:.1f} %); traced span {best['end']:.1f} us, "
            f"result equal {same}\n"
            f"  starts med/max {best['starts'][1]}/{best['starts'][2]} | keys done min/med/max {best['keys_done']} | "
            f"walk min/med/max {best['walk']}\n"
            f"  counted after keys min/med/max {best['counted_after_keys']} | merge min/med/max {best['merge']} | "
            f"per SM most/fewest {best['per_sm_most_fewest']} over {best['sms_used']} SMs | last SM's programs' "
            f"spans {best['last_sm_span']}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
