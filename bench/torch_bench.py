#!/usr/bin/python3
"""PyTorch's speed on the nnz zoo: the peer measured in the same run as `nnz bench`.

  /usr/bin/python3 bench/torch_bench.py [--model M ...] [--batch 128] [--threads 2] [--runs 5]
                                        [--precision fp32|bf16]

For each model (default: all of the zoo) and mode it prints one JSON line:
  {"impl":"pytorch-1.13","model":...,"mode":"train"|"infer","batch":128,"threads":2,"images_per_sec":...}
train = forward + backward + SGD step (momentum 0.9, Nesterov, weight decay 5e-4)
in train mode; infer = forward in eval mode under torch.no_grad(). Random
inputs (NCHW, PyTorch's native layout) and labels; warm-up iterations are not
timed; OpenBLAS and OpenMP get --threads too; images_per_sec is the median over
--runs timed runs of --min-time seconds or more each (iterations per run chosen
from the warm-up). --precision bf16 runs forward and loss under
torch.autocast("cpu", dtype=torch.bfloat16), PyTorch's CPU mixed precision (the
backward follows autocast's casts); a step that PyTorch cannot run prints
{"...","error": "..."} instead of a rate (1.13 has no bf16 backward for hardtanh,
i.e. ReLU6, so mbv2-tiny cannot train under autocast).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time


def _early_threads():
    """--threads, read before torch loads: OpenBLAS (PyTorch's BLAS on Debian, for
    nn.Linear) sizes its own thread pool from OPENBLAS_NUM_THREADS at load time and
    ignores torch.set_num_threads."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--threads", type=int, default=2)
    return str(max(1, p.parse_known_args()[0].threads))


os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = _early_threads()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "gen"))
import torch_zoo  # noqa: E402


def impl_name():
    major, minor = torch.__version__.split(".")[:2]
    return f"pytorch-{major}.{minor}"


def make_step(model, mode, x, y, bf16=False):
    def cast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    if mode == "infer":
        model.eval()

        def step():
            with torch.no_grad(), cast():
                model(x)
        return step
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with cast():
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return step


def measure(step, batch, runs, min_time, warmup):
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    per_iter = (time.perf_counter() - t0) / warmup
    iters = max(1, math.ceil(min_time / max(per_iter, 1e-9)))
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        rates.append(batch * iters / (time.perf_counter() - t0))
    return statistics.median(rates), iters


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", choices=torch_zoo.ZOO_NAMES,
                    help="zoo model (repeatable; default: all)")
    ap.add_argument("--mode", action="append", choices=("train", "infer"), help="default: both")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs; the median is reported")
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds per timed run, at least")
    ap.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="bf16: torch.autocast(cpu, bfloat16)")
    args = ap.parse_args()
    if args.batch < 1 or args.threads < 1 or args.runs < 1 or args.warmup < 1:
        ap.error("--batch, --threads, --runs and --warmup must be positive")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    h, w, c = 28, 28, 1
    for name in args.model or torch_zoo.ZOO_NAMES:
        for mode in args.mode or ("train", "infer"):
            model = torch_zoo.build(name, (h, w, c), 10)
            x = torch.rand(args.batch, c, h, w)
            y = torch.randint(0, 10, (args.batch,))
            rec = {"impl": impl_name(), "model": name, "mode": mode, "precision": args.precision,
                   "batch": args.batch, "threads": args.threads,
                   "openblas_core": os.environ.get("OPENBLAS_CORETYPE", "default"),
                   "omp_wait": os.environ.get("OMP_WAIT_POLICY") or
                   ("GOMP_SPINCOUNT=" + os.environ["GOMP_SPINCOUNT"] if "GOMP_SPINCOUNT" in os.environ
                    else "the OpenMP runtime's default")}
            try:
                step = make_step(model, mode, x, y, args.precision == "bf16")
                rate, iters = measure(step, args.batch, args.runs, args.min_time, args.warmup)
                rec.update({"images_per_sec": round(rate, 1), "runs": args.runs, "iters_per_run": iters})
            except RuntimeError as e:
                rec["error"] = str(e).split("\n")[0]
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
