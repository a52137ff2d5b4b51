#!/usr/bin/env python3
"""Formats bench/results/*.jsonl (nnz bench --json lines and bench/torch_bench.py
lines) as a markdown table of images/s and nnz/PyTorch ratios, with the CPU.

  python3 bench/table.py bench/results/latest.jsonl [--command "bench/run-all build/nnz"]

nnz lines carry train_images_per_sec and infer_images_per_sec (bench/run-all adds
"impl":"nnz" and "model" when nnz leaves them out); PyTorch lines carry mode and
images_per_sec. Needs only the standard library.
"""
import argparse
import json
import platform
import sys

INTERESTING_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl",
                     "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_description():
    model, flags, cpus = "unknown CPU", set(), 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                    cpus += 1
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        model = platform.processor() or model
    shown = [f for f in INTERESTING_FLAGS if f in flags]
    return model, cpus, shown


def fmt(v):
    return "—" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.1f}")


def pct(a, peak):
    return "—" if a is None or not peak else f"{100 * a / peak:.0f}%"


def ratio(a, b):
    return "—" if a is None or not b else f"{a / b:.2f}x"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    ap.add_argument("--command", default=None, help="the command that produced the results, for the record")
    args = ap.parse_args()
    rows, order, meta = {}, [], {}
    with open(args.jsonl) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                print(f"table.py: {args.jsonl}:{n}: not JSON ({e}); skipped", file=sys.stderr)
                continue
            if r.get("impl") == "peak":
                meta["peak"] = r
                continue
            model = r.get("model")
            if model is None:
                continue
            if model not in rows:
                rows[model] = {}
                order.append(model)
            impl = str(r.get("impl", "nnz"))
            if "train_images_per_sec" in r or impl.startswith("nnz"):
                rows[model]["nnz_train"] = r.get("train_images_per_sec")
                rows[model]["nnz_infer"] = r.get("infer_images_per_sec")
                rows[model]["nnz_train_gf"] = r.get("train_gflops")
                rows[model]["nnz_infer_gf"] = r.get("infer_gflops")
                meta.setdefault("nnz", r)
            elif impl.startswith("pytorch") and r.get("mode") in ("train", "infer"):
                rows[model]["pt_" + r["mode"]] = r.get("images_per_sec")
                meta.setdefault("pytorch", r)
    model, cpus, flags = cpu_description()
    pt = meta.get("pytorch", {})
    batch = pt.get("batch", meta.get("nnz", {}).get("batch", "?"))
    threads = pt.get("threads", meta.get("nnz", {}).get("threads", "?"))
    print(f"CPU: {model} ({cpus} logical CPUs); flags: {' '.join(flags) or 'none of interest'}")
    print(f"batch {batch}, {threads} threads; peer: {pt.get('impl', 'PyTorch (not measured)')}; images/s, median of runs")
    cores = (meta.get("nnz", {}).get("openblas_core"), pt.get("openblas_core"))
    if any(cores):
        print(f"OpenBLAS kernels: nnz {cores[0] or '?'}, PyTorch {cores[1] or '?'} (OPENBLAS_CORETYPE)")
    if args.command:
        print(f"command: `{args.command}`")
    peak = meta.get("peak", {}).get("fp32_gflops")
    if peak:
        print(f"measured fp32 peak ({meta['peak'].get('isa')} FMA chains, {meta['peak'].get('threads')} threads): {peak:.0f} GFLOP/s")
    print()
    print("| model | nnz train | PyTorch train | nnz/PyTorch | nnz infer | PyTorch infer | nnz/PyTorch | nnz GFLOP/s train / infer | % of peak |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in order:
        r = rows[m]
        print(f"| {m} | {fmt(r.get('nnz_train'))} | {fmt(r.get('pt_train'))} | {ratio(r.get('nnz_train'), r.get('pt_train'))} "
              f"| {fmt(r.get('nnz_infer'))} | {fmt(r.get('pt_infer'))} | {ratio(r.get('nnz_infer'), r.get('pt_infer'))} "
              f"| {fmt(r.get('nnz_train_gf'))} / {fmt(r.get('nnz_infer_gf'))} | {pct(r.get('nnz_train_gf'), peak)} / {pct(r.get('nnz_infer_gf'), peak)} |")


if __name__ == "__main__":
    main()
