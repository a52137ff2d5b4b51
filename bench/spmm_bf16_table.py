#!/usr/bin/env python3
"""Formats nnz_bench_spmm_bf16 JSON lines as markdown: one row per kernel x block x sparsity.
Columns: the bf16 kernel's path; its median time; its actual GFLOP/s (2*kept*M) and effective
GFLOP/s (2*M*N*K) from the median; nnz fp32 BSR's effective GFLOP/s; oneDNN dense bf16's
GFLOP/s; the speed-ups of the bf16 kernel over oneDNN dense bf16 and over nnz fp32 BSR, each
as "median ratio · fastest-run ratio".

  build/nnz_bench_spmm_bf16 --threads 1 --reps 9 --bwd [--wgrad] > spmm_bf16.jsonl
(--wgrad lines: a second table, the bf16 SDDMM against nnz's and oneDNN's dense bf16
weight-gradient GEMM and nnz's fp32 SDDMM)
  python3 bench/spmm_bf16_table.py spmm_bf16.jsonl
"""
import json
import sys

rows = []
with open(sys.argv[1]) as f:
    for line in f:
        line = line.strip()
        if line.startswith("{"):
            d = json.loads(line)
            if d.get("bench") == "spmm_bf16":
                rows.append(d)

print("| kernel | block | sparsity | path | bf16 BSR ms | bf16 actual GFLOP/s | bf16 effective GFLOP/s "
      "| fp32 BSR effective GFLOP/s | oneDNN dense bf16 GFLOP/s | bf16 BSR vs oneDNN dense bf16 "
      "| bf16 BSR vs fp32 BSR |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for d in rows:
    if d["kernel"] == "wgrad":
        continue
    b = max(d["bf16_bsr_min_ms"], 1e-9)
    print(f"| {d['kernel']} | {d['block']} | {d['sparsity']:.0%} | {d['path']} | {d['bf16_bsr_ms']:.3f} "
          f"| {d['bf16_bsr_gflops_actual']:.0f} | {d['bf16_bsr_gflops_effective']:.0f} "
          f"| {d['fp32_bsr_gflops_effective']:.0f} | {d['onednn_bf16_gflops']:.0f} "
          f"| {d['bf16_bsr_vs_onednn_dense']:.2f}× · {d['onednn_bf16_dense_min_ms'] / b:.2f}× "
          f"| {d['bf16_bsr_vs_fp32_bsr']:.2f}× · {d['fp32_bsr_min_ms'] / b:.2f}× |")

# --wgrad: the bf16 SDDMM against the dense bf16 weight-gradient GEMMs and the fp32 SDDMM
wg = [d for d in rows if d["kernel"] == "wgrad"]
if wg:
    print()
    print("| block | sparsity | path | bf16 SDDMM ms | actual GFLOP/s | effective GFLOP/s "
          "| nnz dense bf16 GFLOP/s | oneDNN dense bf16 GFLOP/s | vs nnz dense bf16 | vs oneDNN dense bf16 "
          "| vs fp32 SDDMM |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for d in wg:
        b = max(d["bf16_bsr_min_ms"], 1e-9)
        print(f"| {d['block']} | {d['sparsity']:.0%} | {d['path']} | {d['bf16_bsr_ms']:.3f} "
              f"| {d['bf16_bsr_gflops_actual']:.0f} | {d['bf16_bsr_gflops_effective']:.0f} "
              f"| {d['nnz_dense_bf16_gflops']:.0f} | {d['onednn_bf16_gflops']:.0f} "
              f"| {d['bf16_bsr_vs_nnz_dense']:.2f}× · {d['nnz_dense_bf16_min_ms'] / b:.2f}× "
              f"| {d['bf16_bsr_vs_onednn_dense']:.2f}× · {d['onednn_bf16_dense_min_ms'] / b:.2f}× "
              f"| {d['bf16_bsr_vs_fp32_bsr']:.2f}× · {d['fp32_bsr_min_ms'] / b:.2f}× |")
