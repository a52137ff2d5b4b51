#!/usr/bin/env python3
"""Formats nnz_bench_spmm JSON lines as markdown: one row per shape x kernel x format, one
column per sparsity. Each cell is "A× · B× (G)": A = dense time / sparse time from the
medians of the runs, B = the same from the fastest runs (what a quiet machine gives), G =
actual GFLOP/s (2*nnz*M) of the fastest sparse run.

  build/nnz_bench_spmm | tee spmm.jsonl; python3 bench/spmm_table.py spmm.jsonl
"""
import json
import sys

rows, sparsities = {}, []
with open(sys.argv[1]) as f:
    for line in f:
        line = line.strip()
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        if d.get("bench") != "spmm":
            continue
        key = (d["shape"], d["M"], d["N"], d["K"], d["kernel"], d["format"], d["block"])
        tmin = max(d["time_min_ms"], 1e-6)
        actual = d["gflops_actual"] * d["time_ms"] / tmin
        rows.setdefault(key, {})[d["sparsity"]] = (d["speedup_vs_dense"], d["dense_min_ms"] / tmin, actual,
                                                   d["dense_min_ms"])
        if d["sparsity"] not in sparsities:
            sparsities.append(d["sparsity"])
sparsities.sort()
print("| shape (M, N, K) | kernel | format | " + " | ".join(f"{s:.0%}" for s in sparsities) +
      " | dense GFLOP/s (fastest run) |")
print("|---|---|---|" + "---|" * len(sparsities) + "---|")
for key, cells in rows.items():
    shape, M, N, K, kernel, fmt, block = key
    name = "csr" if fmt == "csr" else f"bsr {block}"
    out = []
    for s in sparsities:
        c = cells.get(s)
        out.append("—" if c is None else f"{c[0]:.1f}× · {c[1]:.1f}× ({c[2]:.0f})")
    td = min(c[3] for c in cells.values())
    dense = 2.0 * M * N * K / (td * 1e-3) * 1e-9
    print(f"| {shape} ({M}, {N}, {K}) | {kernel} | {name} | " + " | ".join(out) + f" | {dense:.0f} |")
