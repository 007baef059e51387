"""Sweep decode launch configurations for an fp8 KV cache and for a sliding window, on one GPU.

    python bench/tune_fp8_window.py [--out DIR] [--no-window]

FP8 (e4m3, per-tensor scales) on both decode cases of :data:`CASES`: (BLOCK_N, warps, stages) x split counts x
the dots in bf16 (cache converted) or fp16 (``DecodeConfig.fp8_f16_dot``),
in fp8 KV-read GB/s, beside the bf16 default of the same case and a device copy of the fp8 bytes (read +
written). Sliding window: 4 x 32k keys with a 4k window against the same 4k keys decoded as a context, for the
same configurations. Prints one line per point and writes ``tune_fp8_window.json`` with ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sagellm_backend.attention import paged_triton as pt
from sagellm_backend.attention.kv_quant import fp8_dtype, quantize
from sagellm_backend.bench.paged_cases import CASES, HEAD_DIM, HKV, PAGE, PagedCase, build_case, time_cuda
from sagellm_backend.kernels import triton_launch

CONFIGS = [(64, 4, 2), (64, 4, 3), (128, 4, 2), (128, 4, 3), (128, 8, 3), (256, 8, 2)]
FP8_CONFIGS = [(64, 4, 2), (128, 4, 1), (128, 4, 2), (256, 8, 2)]
SPLITS: list[int | None] = [None, 16, 32]
FP8_SPLITS: list[int | None] = [None, 32]
# --wide: the dots in fp16 only (the v_asm points first), more tiles/warps/stages and split counts (one launch per
# point).
# (block_n, warps, stages, early_v): early_v loads each value tile before the key tile's dot.
WIDE_CONFIGS = [
    (128, 4, 1, False), (128, 4, 1, True), (128, 4, 2, False), (128, 4, 2, True), (128, 8, 1, True),
    (128, 8, 2, False), (256, 4, 1, True), (256, 8, 1, True), (64, 4, 1, True), (64, 4, 3, False),
]  # fmt: skip
# With --wide: (block_n, warps, stages, maxnreg) points whose register cap lets 3 or 4 programs share an SM (ptxas on
# sm_90 gives the uncapped 128/4/x kernels 204-207 registers: 2 programs per SM).
MAXNREG_CONFIGS = [(128, 4, 2, 168), (128, 4, 1, 168), (128, 4, 2, 128), (64, 4, 2, 128)]
# With --wide: (block_n, warps, stages) points with the value tiles converted by inline assembly (fp8_v_asm; ptxas on
# sm_90: 128/4/2 drops from 204 to 139 registers, 64/4/2 from 141 to 96, and no byte-wide loads from shared memory).
ASM_CONFIGS = [(128, 4, 2), (128, 4, 1), (64, 4, 2), (64, 4, 3), (128, 8, 2), (256, 8, 2), (128, 4, 3)]
WIDE_SPLITS: list[int | None] = [None, 8, 32]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--no-window", action="store_true", help="only the fp8 sweep")
    ap.add_argument("--wide", action="store_true", help="the wider fp16-dot fp8 grid (WIDE_CONFIGS x WIDE_SPLITS)")
    ap.add_argument(
        "--quick", action="store_true", help="with --wide: the v_asm points and three others, default splits"
    )
    args = ap.parse_args()
    rows: list[dict[str, object]] = []
    for case in (c for c in CASES if c.kind == "decode"):
        t = build_case(case, "cuda")
        q, kc, vc, bt, lens, scale = (t[k] for k in ("q", "kc", "vc", "bt", "seq_lens", "scale"))
        fp8 = fp8_dtype("fp8_e4m3")
        ks, vs = (c.float().abs().amax().reshape(1) / torch.finfo(fp8).max for c in (kc, vc))
        n = kc.shape[0]
        k8, v8 = (
            quantize(c.reshape(-1, HKV, HEAD_DIM), s, fp8).view(n, PAGE, HKV, HEAD_DIM) for c, s in ((kc, ks), (vc, vs))
        )
        read = case.work() / 2
        src = torch.empty(int(read), dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)
        copy_s = time_cuda(lambda: dst.copy_(src))
        bf16_s = time_cuda(lambda: pt.paged_decode(q, kc, vc, bt, lens, scale))
        print(f"{case.label}: copy {2 * read / copy_s / 1e9:.0f} GB/s (r+w); bf16 default {1e6 * bf16_s:.1f} us")
        base = pt.paged_decode(q, k8, v8, bt, lens, scale, k_scale=ks, v_scale=vs).float()
        f16_cfg = pt.DecodeConfig(fp8_f16_dot=True)
        f16_out = pt.paged_decode(q, k8, v8, bt, lens, scale, cfg=f16_cfg, k_scale=ks, v_scale=vs).float()
        print(f"  fp8 bf16 dots vs fp16 dots: max abs diff {float((base - f16_out).abs().max()):.2e}")
        dflt = time_cuda(lambda: pt.paged_decode(q, k8, v8, bt, lens, scale, k_scale=ks, v_scale=vs))
        rows.append({"case": case.label, "kind": "fp8 default", "us": 1e6 * dflt, "gbps": read / dflt / 1e9,
                     "x_bf16": bf16_s / dflt, "copy_fraction": copy_s / (2 * dflt)})  # fmt: skip
        print(f"  fp8 default: {1e6 * dflt:.1f} us, {read / dflt / 1e9:.0f} GB/s "
              f"({100 * copy_s / (2 * dflt):.0f} % of the copy rate), {bf16_s / dflt:.2f}x bf16")  # fmt: skip
        asm = [((*c, False, None, True), True) for c in ASM_CONFIGS]
        wide = [((*c, None, False), True) for c in WIDE_CONFIGS] + [
            ((b, w, st, False, r, False), True) for b, w, st, r in MAXNREG_CONFIGS
        ]
        if args.quick:
            wide = wide[2:4] + wide[len(WIDE_CONFIGS) : len(WIDE_CONFIGS) + 1]
        grid = asm + wide if args.wide else [((*c, False, None, False), f) for c in FP8_CONFIGS for f in (False, True)]
        for (bn, warps, stages, early, maxnreg, v_asm), f16 in grid:
            cfg = pt.DecodeConfig(
                block_n=bn, num_warps=warps, num_stages=stages, fp8_f16_dot=f16, early_v=early, maxnreg=maxnreg,
                fp8_v_asm=v_asm,
            )  # fmt: skip
            for splits in ([None] if args.quick else WIDE_SPLITS) if args.wide else FP8_SPLITS:
                tag = (f"fp8 {bn}/{warps}/{stages}{' early_v' if early else ''}{' v_asm' if v_asm else ''}"
                       f"{f' maxnreg={maxnreg}' if maxnreg else ''} f16={f16} splits={splits}")  # fmt: skip
                seen = set(triton_launch._COMPILED)
                try:
                    sec = time_cuda(
                        lambda: pt.paged_decode(
                            q, k8, v8, bt, lens, scale, cfg=cfg, splits=splits, k_scale=ks, v_scale=vs
                        )
                    )
                except Exception as exc:  # a configuration that does not compile is a row of the sweep, not a stop
                    print(f"  {tag}: {type(exc).__name__}: {str(exc)[:80]}")
                    continue
                got = pt.paged_decode(q, k8, v8, bt, lens, scale, cfg=cfg, splits=splits, k_scale=ks, v_scale=vs)
                diff = float((got.float() - (f16_out if f16 else base)).abs().max())  # same dots: rounding only
                row = {"case": case.label, "kind": "fp8", "block_n": bn, "warps": warps, "stages": stages,
                       "early_v": early, "maxnreg": maxnreg, "v_asm": v_asm, "f16": f16, "splits": splits,
                       "us": 1e6 * sec, "gbps": read / sec / 1e9, "x_bf16": bf16_s / sec,
                       "max_abs_diff": diff}  # fmt: skip
                rows.append(row)
                print(f"  {tag}: {1e6 * sec:.1f} us, {read / sec / 1e9:.0f} GB/s, "
                      f"{bf16_s / sec:.2f}x bf16, max abs diff {diff:.1e}{_registers(seen)}")  # fmt: skip
    if not args.no_window:
        rows += _window_sweep()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "tune_fp8_window.json").write_text(json.dumps(rows, indent=1))


def _registers(seen: set[object]) -> str:
    """Registers and spills of the decode kernels compiled since ``seen`` (Triton's compiled-kernel facts)."""
    facts = [
        f"{getattr(k, 'n_regs', '?')} regs/{getattr(k, 'n_spills', '?')} spills"
        for key, (k, *_) in list(triton_launch._COMPILED.items())
        if key not in seen
    ]
    return f" [{', '.join(facts)}]" if facts else ""


def _window_sweep() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    context, window = 32768, 4096
    t = build_case(PagedCase("decode", 4, 1, context), "cuda")
    q, kc, vc, bt, lens, scale = (t[k] for k in ("q", "kc", "vc", "bt", "seq_lens", "scale"))
    tail_bt = bt[:, (context - window) // PAGE :].contiguous()
    tail_lens = lens.clone().fill_(window)
    ceil_s = time_cuda(lambda: pt.paged_decode(q, kc, vc, tail_bt, tail_lens, scale))
    print(f"window: 4k context default {1e6 * ceil_s:.1f} us")
    for bn, warps, stages in CONFIGS:
        cfg = pt.DecodeConfig(block_n=bn, num_warps=warps, num_stages=stages)
        for splits in SPLITS:
            try:
                sec = time_cuda(
                    lambda: pt.paged_decode(q, kc, vc, bt, lens, scale, cfg=cfg, splits=splits, sliding_window=window)
                )
                ctx = time_cuda(lambda: pt.paged_decode(q, kc, vc, tail_bt, tail_lens, scale, cfg=cfg, splits=splits))
            except Exception as exc:  # as above
                print(f"  window {bn}/{warps}/{stages} splits={splits}: {type(exc).__name__}: {str(exc)[:80]}")
                continue
            rows.append({"case": "4x32k window 4k", "kind": "window", "block_n": bn, "warps": warps,
                         "stages": stages, "splits": splits, "us": 1e6 * sec, "ctx_us": 1e6 * ctx,
                         "x_ceiling": sec / ceil_s})  # fmt: skip
            print(f"  window {bn}/{warps}/{stages} splits={splits}: {1e6 * sec:.1f} us (same cfg as context: "
                  f"{1e6 * ctx:.1f} us), {sec / ceil_s:.2f}x the default 4k context")  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
