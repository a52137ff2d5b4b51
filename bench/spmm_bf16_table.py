#!/usr/bin/env python3
"""Formats nnz_bench_spmm_bf16 JSON lines as markdown: one row per kernel x block x sparsity.
Columns: the bf16 kernel's path; its median time; its actual GFLOP/s (2*kept*M) and effective
GFLOP/s (2*M*N*K) from the median; nnz fp32 BSR's effective GFLOP/s; oneDNN dense bf16's
GFLOP/s; the speed-ups of the bf16 kernel over oneDNN dense bf16 and over nnz fp32 BSR, each
as "median ratio · fastest-run ratio".

  build/nnz_bench_spmm_bf16 --threads 1 --reps 9 --bwd > spmm_bf16.jsonl
  python3 bench/spmm_bf16_table.py spmm_bf16.jsonl
"""
import json
import sys

print("| kernel | block | sparsity | path | bf16 BSR ms | bf16 actual GFLOP/s | bf16 effective GFLOP/s "
      "| fp32 BSR effective GFLOP/s | oneDNN dense bf16 GFLOP/s | bf16 BSR vs oneDNN dense bf16 "
      "| bf16 BSR vs fp32 BSR |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
with open(sys.argv[1]) as f:
    for line in f:
        line = line.strip()
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        if d.get("bench") != "spmm_bf16":
            continue
        b = max(d["bf16_bsr_min_ms"], 1e-9)
        print(f"| {d['kernel']} | {d['block']} | {d['sparsity']:.0%} | {d['path']} | {d['bf16_bsr_ms']:.3f} "
              f"| {d['bf16_bsr_gflops_actual']:.0f} | {d['bf16_bsr_gflops_effective']:.0f} "
              f"| {d['fp32_bsr_gflops_effective']:.0f} | {d['onednn_bf16_gflops']:.0f} "
              f"| {d['bf16_bsr_vs_onednn_dense']:.2f}× · {d['onednn_bf16_dense_min_ms'] / b:.2f}× "
              f"| {d['bf16_bsr_vs_fp32_bsr']:.2f}× · {d['fp32_bsr_min_ms'] / b:.2f}× |")
