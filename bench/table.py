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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    ap.add_argument("--command", default=None, help="the command that produced the results, for the record")
    args = ap.parse_args()
    # rows[model][field][round] = value; a file without rounds is one round
    rows, order, meta = {}, [], {}
    waits = {"nnz": {}, "pytorch": {}}
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
            rnd = r.get("round", 1)
            impl = str(r.get("impl", "nnz"))
            put = lambda field, v: rows[model].setdefault(field, {}).__setitem__(rnd, v)
            if "train_images_per_sec" in r or impl.startswith("nnz"):
                put("nnz_train", r.get("train_images_per_sec"))
                put("nnz_infer", r.get("infer_images_per_sec"))
                put("nnz_train_gf", r.get("train_gflops"))
                put("nnz_infer_gf", r.get("infer_gflops"))
                meta.setdefault("nnz", r)
                if r.get("omp_wait"):
                    waits["nnz"][r["omp_wait"]] = waits["nnz"].get(r["omp_wait"], 0) + 1
            elif impl.startswith("pytorch") and r.get("mode") in ("train", "infer"):
                put("pt_" + r["mode"], r.get("images_per_sec"))
                meta.setdefault("pytorch", r)
                if r.get("omp_wait"):
                    waits["pytorch"][r["omp_wait"]] = waits["pytorch"].get(r["omp_wait"], 0) + 1
    rounds = max((len(v) for fields in rows.values() for v in fields.values()), default=1)
    model, cpus, flags = cpu_description()
    pt = meta.get("pytorch", {})
    batch = pt.get("batch", meta.get("nnz", {}).get("batch", "?"))
    threads = pt.get("threads", meta.get("nnz", {}).get("threads", "?"))
    print(f"CPU: {model} ({cpus} logical CPUs); flags: {' '.join(flags) or 'none of interest'}")
    print(f"batch {batch}, {threads} threads; peer: {pt.get('impl', 'PyTorch (not measured)')}; images/s, median of runs")
    cores = (meta.get("nnz", {}).get("openblas_core"), pt.get("openblas_core"))
    if any(cores):
        print(f"OpenBLAS kernels: nnz {cores[0] or '?'}, PyTorch {cores[1] or '?'} (OPENBLAS_CORETYPE)")
    for who in ("nnz", "pytorch"):  # nnz picks its OpenMP wait per run, from the load it sees at start
        if waits[who]:
            print(f"OpenMP wait, {who}: " + "; ".join(f"{w} ({n} runs)" for w, n in waits[who].items()))
    if args.command:
        print(f"command: `{args.command}`")
    peak = meta.get("peak", {}).get("fp32_gflops")
    if peak:
        print(f"measured fp32 peak ({meta['peak'].get('isa')} FMA chains, {meta['peak'].get('threads')} threads): {peak:.0f} GFLOP/s")
    print()
    if rounds > 1:
        print(f"{rounds} rounds, each nnz then PyTorch, model by model: images/s are the medians of the rounds;"
              " a ratio is the median of the rounds' ratios, with their range")
    print()
    # GFLOP/s count the direct convolution's multiply-adds: where nnz runs Winograd (stride-1 3x3 and
    # 5x5 convs) it does fewer, so these are effective rates and may pass the peak
    print("(nnz GFLOP/s: effective, from the direct convolution's FLOPs; Winograd convs do 2.8-4x fewer)")
    print("| model | nnz train | PyTorch train | nnz/PyTorch | nnz infer | PyTorch infer | nnz/PyTorch | nnz GFLOP/s train / infer | % of peak |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in order:
        r = rows[m]
        med = lambda field: median(v for v in r.get(field, {}).values() if v is not None)
        print(f"| {m} | {fmt(med('nnz_train'))} | {fmt(med('pt_train'))} | {paired(r, 'nnz_train', 'pt_train')} "
              f"| {fmt(med('nnz_infer'))} | {fmt(med('pt_infer'))} | {paired(r, 'nnz_infer', 'pt_infer')} "
              f"| {fmt(med('nnz_train_gf'))} / {fmt(med('nnz_infer_gf'))} | {pct(med('nnz_train_gf'), peak)} / {pct(med('nnz_infer_gf'), peak)} |")


def median(values):
    v = sorted(values)
    return None if not v else (v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2)


def paired(r, a, b):
    """the median of the rounds' ratios a/b, with their range when there are several"""
    ra, rb = r.get(a, {}), r.get(b, {})
    ratios = [ra[k] / rb[k] for k in ra if ra[k] is not None and rb.get(k)]
    if not ratios:
        return "—"
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}x"
    return f"{median(ratios):.2f}x ({min(ratios):.2f}–{max(ratios):.2f})"


if __name__ == "__main__":
    main()
