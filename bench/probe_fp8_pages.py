"""The fp8 decode bench rows (64 x 4k, 4 x 32k; ``bench_fp8_decode``) at 16-, 32- and 64-token pages, each row with its
own copy ceiling and bf16 baseline (same page size) from the same call: whether larger pages, whose 64-token tiles
then lie in one page (its number read once per tile), take fp8 decode closer to the copy rate. The rounds visit every
page size in turn, twice, so a drift of the device shows as two values per point.

    PYTHONPATH=src python bench/probe_fp8_pages.py [--pages 16,32,64] [--rounds 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sagellm_backend.bench.paged_cases import CASES
from sagellm_backend.bench.paged_variants import bench_fp8_decode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", default="16,32,64")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    pages = [int(p) for p in args.pages.split(",")]
    rows: list[dict[str, Any]] = []
    head = ("case", "page", "ceiling", "bf16", "fp8 NHD", "fp8 HND", "x bf16", "% copy")
    print(f"{head[0]:<28} {head[1]:>4} " + " ".join(f"{h:>8}" for h in head[2:6]) + f" {head[6]:>6} {head[7]:>6}")
    for r in range(args.rounds):
        for case in CASES[:2]:
            for page in pages:
                row = bench_fp8_decode(case, "cuda", page_size=page)
                e = row.extra
                pct = 100 * e["fp8 KV read GB/s"] / e["copy GB/s (read + written)"]
                print(
                    f"{case.label:<28} {page:>4} {row.ceiling:>8.1f} {row.naive:>7.1f} {e['fp8 us, NHD pages']:>8.1f} "
                    f"{e['fp8 us, HND pages']:>8.1f} {e['speed-up over bf16']:>6.2f} {pct:>6.1f}",
                    flush=True,
                )
                rows.append({"round": r, "case": case.label, "page": page, "ceiling_us": row.ceiling,
                             "bf16_us": row.naive, "fp8_us": row.ours, "pct_of_copy": pct, "met": row.met,
                             **e})  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
