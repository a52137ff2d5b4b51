#!/usr/bin/env python3
"""Formats nnz_bench_spmm JSON lines as markdown: one row per shape x kernel x format, one
column per sparsity, each cell "speedup over dense (actual GFLOP/s)"; speedups use the
medians (time_ms, dense_ms), or the minima with --min.

  build/nnz_bench_spmm | tee spmm.jsonl; python3 bench/spmm_table.py spmm.jsonl [--min]
"""
import argparse
import json

ap = argparse.ArgumentParser()
ap.add_argument("jsonl")
ap.add_argument("--min", action="store_true", help="use the fastest of the runs, not the median")
args = ap.parse_args()

rows, sparsities = {}, []
with open(args.jsonl) as f:
    for line in f:
        line = line.strip()
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        if d.get("bench") != "spmm":
            continue
        key = (d["shape"], d["M"], d["N"], d["K"], d["kernel"], d["format"], d["block"])
        t, td = (d["time_min_ms"], d["dense_min_ms"]) if args.min else (d["time_ms"], d["dense_ms"])
        actual = d["gflops_actual"] * d["time_ms"] / t
        rows.setdefault(key, {})[d["sparsity"]] = (td / t, actual, td)
        if d["sparsity"] not in sparsities:
            sparsities.append(d["sparsity"])
sparsities.sort()
print("| shape (M, N, K) | kernel | format | " + " | ".join(f"{s:.0%}" for s in sparsities) + " | dense GFLOP/s (best) |")
print("|---|---|---|" + "---|" * len(sparsities) + "---|")
for key, cells in rows.items():
    shape, M, N, K, kernel, fmt, block = key
    name = "csr" if fmt == "csr" else f"bsr {block}"
    out = []
    for s in sparsities:
        c = cells.get(s)
        out.append("—" if c is None else f"{c[0]:.2f}× ({c[1]:.0f})")
    td = min(c[2] for c in cells.values())
    dense = 2.0 * M * N * K / (td * 1e-3) * 1e-9
    print(f"| {shape} ({M}, {N}, {K}) | {kernel} | {name} | " + " | ".join(out) + f" | {dense:.0f} |")
