#!/usr/bin/python3
"""Writes tests/fixtures/<model>_step.safetensors: one PyTorch training step of
each zoo model, the oracle of tests/test_zoo_torch.c.

Run with Debian's python3-torch:  /usr/bin/python3 tests/gen/make_fixtures.py [--check-f32]
(the fixtures are committed, so building and testing nnz needs no PyTorch).
--check-f32 also runs the step in float32 PyTorch the way the C test runs nnz
(decisions pinned, see below) and fails unless it passes the C test's tolerances.

Deterministic initial parameters (computed by both sides, never stored):
  Let P be the list of trainable parameters by nnz name, in build order
  (metadata "param_order", comma-separated), k the index of a parameter in P and
  j the flat index of an element in NNZ LAYOUT (conv weights (OC,KH,KW,IC/groups),
  linear weights (OUT,IN), vectors (C)). In double precision, evaluated exactly
  in this order, then rounded to float32:
    phase = 0.7*j + 1.3*k + 0.001*j*j            ((0.7*j + 1.3*k) + (0.001*j)*j)
    conv/linear weight and bias:  sin(phase) / sqrt(fan_in),
                                  fan_in = KH*KW*IC/groups (conv) or IN (linear)
    batch-norm gamma (".weight"): 1 + 0.1*sin(phase)
    batch-norm beta  (".bias"):   0.1*sin(phase)
    running_mean = 0, running_var = 1.
  The chirp term 0.001*j*j is there because sin(0.7*j + c) alone makes every
  weight matrix rank 2 (sin(a+b) = sin a cos b + cos a sin b): the channels of a
  layer become near-collinear, batch norm divides by tiny variances, and float32
  rounding is amplified (float32 PyTorch's logits drift 8e-5 from float64 on vgg8).

Inputs: x_u8 (8,28,28,1) NHWC bytes from torch.rand, x = x_u8 / 255 in float32
(exact on both sides); labels (8) U8.

The step (model in train mode) runs in float64 from those float32 values, so
the oracle carries no float32 rounding of its own:
  logits = model(x); loss = cross_entropy(logits, labels, label_smoothing=0.1) (mean);
  loss.backward();
  torch.optim.SGD(lr=0.1, momentum=0.9, nesterov=True), weight_decay=5e-4 on
  conv/linear weights only (biases and BN gamma/beta in a group with weight_decay=0).

Pinned decisions. A ReLU/ReLU6 input within float32 rounding of 0 (or 6), or
a max-pool window whose two largest inputs are that close, can go either way in
any float32 implementation; with ~2M activations in mbv2-tiny a few always do,
and each flip moves the gradients by ~1/sqrt(N*H*W) ~ 1% (measured: float32
PyTorch vs this oracle, 5e-2 on mbv2-tiny). The fixture therefore lists every
decision within delta = 1e-3 * rms(layer input) of its boundary (about 100x the
float32 forward error), with the float64 outcome, and the test imposes them on
nnz after its forward pass, before the backward:
  pin_act_idx/<src> I32 (k): flat NHWC indices into the output of the
     activation fed by node <src>; pin_act_val/<src> F32 (k): the value to write
     there (the float64 output, nudged strictly inside (0,6) when it passes).
  pin_pool/<src> I32 (k,2): [flat NHWC index into the output of the max pool that
     follows that activation, float64 argmax as a flat index into its input (H,W)].
  Metadata "act_srcs" and "pool_srcs" list every activation and pool by <src>.

Stored results (float32 unless said; parameters in nnz layout):
  logits (8,10); loss (1)
  for every parameter p with numel <= 4096:  grad/<p>, new/<p> (full; new = value after the step)
  for larger ones: grad_sampled/<p>, new_sampled/<p> (256 values at flat indices
  j_i = floor(i*numel/256), i = 0..255) and grad_stats/<p> F64 (3) = sum, sum of
  squares, sum of absolute values of the full gradient
  new/<bn>.running_mean, new/<bn>.running_var after the step.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_zoo  # noqa: E402

FORMAT_VERSION = "1"
BATCH = 8
IN_HWC = (28, 28, 1)
NUM_CLASSES = 10
LR, MOMENTUM, WEIGHT_DECAY, SMOOTHING = 0.1, 0.9, 5e-4, 0.1
FULL_MAX = 4096
SAMPLES = 256
PIN_REL = 1e-3
MAX_FILE_BYTES = 300 * 1024
INPUT_SEED = 20240601

# The C test's tolerances (tests/test_zoo_torch.c), checked here by --check-f32.
TOL_LOGITS = 1e-4   # max|d logits| / max|logits|, |d loss| / loss, running stats likewise
TOL_GRAD = 1e-3     # max|d grad| / max|grad| per tensor; sum within TOL_GRAD*sum|g|, L2 norm within TOL_GRAD
TOL_ZERO = 1e-6     # gradients zero in exact arithmetic: max|grad| <= TOL_ZERO * max over the model
TOL_NEW_ABS = 1e-6  # new: max|d new| <= TOL_GRAD*max|p0-new| + TOL_NEW_ABS*max|new|

FORMULA = ("element j (flat, nnz layout) of parameter k (index in param_order), in double then rounded to f32: "
           "phase = (0.7*j + 1.3*k) + (0.001*j)*j; conv/linear weight and bias = sin(phase)/sqrt(fan_in) "
           "(fan_in = KH*KW*IC/groups or IN); bn .weight = 1 + 0.1*sin(phase); bn .bias = 0.1*sin(phase); "
           "running_mean = 0, running_var = 1")


def formula_values(numel, k, kind, fan_in):
    # math.sin is libm's sin, the one the C test calls; same double operations in the same order
    s = np.array([math.sin(0.7 * j + 1.3 * k + 0.001 * j * j) for j in range(numel)], dtype=np.float64)
    if kind == "bn_weight":
        v = 1.0 + 0.1 * s
    elif kind == "bn_bias":
        v = 0.1 * s
    else:
        v = (1.0 / math.sqrt(fan_in)) * s
    return v.astype(np.float32)


def sample_indices(numel):
    return np.array([i * numel // SAMPLES for i in range(SAMPLES)], dtype=np.int64)


def nhwc_flat(t):
    """A (N,C,H,W) or (N,F) tensor as a flat array in nnz's NHWC order."""
    return (t.permute(0, 2, 3, 1) if t.dim() == 4 else t).reshape(-1)


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, np.ndarray). Contiguous data, 8-byte types first so every tensor is aligned."""
    dtype_names = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.int32): "I32",
                   np.dtype(np.uint8): "U8"}
    order = sorted(tensors, key=lambda nt: -nt[1].dtype.itemsize)  # stable: 8, 4, 1 bytes per element
    header, blobs, offset = {}, [], 0
    for name, arr in order:
        data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtype_names[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = metadata
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * ((-(8 + len(hjson))) % 8)  # data starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def make_inputs():
    g = torch.Generator().manual_seed(INPUT_SEED)
    x_u8 = torch.randint(0, 256, (BATCH,) + IN_HWC, generator=g, dtype=torch.int64).to(torch.uint8)
    labels = torch.randint(0, NUM_CLASSES, (BATCH,), generator=g, dtype=torch.int64)
    x = x_u8.to(torch.float32) / 255.0  # IEEE division, correctly rounded: the C test gets the same floats
    return x_u8, x, labels


class Recorder:
    """Collects, in the float64 run, the decisions that float32 could take the other way."""

    def __init__(self):
        self.acts, self.pools = {}, {}

    def act(self, src, x, hi):
        pre = nhwc_flat(x.detach()).double().numpy()
        delta = PIN_REL * math.sqrt(float(np.mean(pre * pre)))
        near = np.abs(pre) < delta
        if hi != float("inf"):
            near |= np.abs(pre - hi) < delta
        idx = np.nonzero(near)[0]
        out = np.clip(pre[idx], 0.0, hi).astype(np.float32)
        passes = (pre[idx] > 0) & (pre[idx] < hi)
        lo_ok = np.float32(1e-30)  # a normal float: survives flush-to-zero
        hi_ok = np.nextafter(np.float32(hi), np.float32(0)) if hi != float("inf") else np.float32(np.inf)
        out[passes] = np.clip(out[passes], lo_ok, hi_ok)
        self.acts[src] = (idx.astype(np.int32), out)

    def pool(self, src, x, idx):
        x = x.detach().double()
        n, c, h, w = x.shape
        oh, ow = idx.shape[2], idx.shape[3]
        win = x[:, :, :2 * oh, :2 * ow].reshape(n, c, oh, 2, ow, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, oh, ow, 4)
        top2 = win.topk(2, dim=-1).values
        delta = PIN_REL * math.sqrt(float((x * x).mean()))
        # windows whose max is 0 (all clipped by the ReLU before) pass no gradient whatever wins
        near = ((top2[..., 0] - top2[..., 1]) < delta) & (top2[..., 0] > 0)
        near_flat = nhwc_flat(near).numpy()
        arg_flat = nhwc_flat(idx).numpy()
        out_idx = np.nonzero(near_flat)[0]
        self.pools[src] = np.stack([out_idx, arg_flat[out_idx]], axis=1).astype(np.int32).reshape(-1, 2)


class _PinnedAct(torch.autograd.Function):
    """What the C test does to nnz: overwrite pinned outputs, then the gradient passes where 0 < out < hi."""

    @staticmethod
    def forward(ctx, x, idx, val, hi):
        y = F.hardtanh(x, 0.0, hi) if hi != float("inf") else torch.relu(x)
        yf = y.permute(0, 2, 3, 1).contiguous() if y.dim() == 4 else y.clone()
        flat = yf.view(-1)
        flat[idx] = val.to(y.dtype)
        y = yf.permute(0, 3, 1, 2).contiguous() if y.dim() == 4 else yf
        ctx.save_for_backward((y > 0) & (y < hi))
        return y

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask.to(g.dtype), None, None, None


class Pins:
    """Imposes the recorded float64 decisions at the pinned places only, as the C test does."""

    def __init__(self, rec):
        self.acts = {s: (torch.from_numpy(i).long(), torch.from_numpy(v)) for s, (i, v) in rec.acts.items()}
        self.pools = {s: torch.from_numpy(p).long() for s, p in rec.pools.items()}

    def act(self, src, x, hi):
        idx, val = self.acts[src]
        return _PinnedAct.apply(x, idx, val, hi)

    def pool(self, src, x, idx):
        n, c, h, w = x.shape
        idx_nhwc = idx.permute(0, 2, 3, 1).contiguous()
        pins = self.pools[src]
        idx_nhwc.view(-1)[pins[:, 0]] = pins[:, 1]
        idx = idx_nhwc.permute(0, 3, 1, 2)
        return x.reshape(n, c, h * w).gather(2, idx.reshape(n, c, -1)).reshape(idx.shape)


def one_step(name, x_nhwc, labels, dtype=torch.float64, recorder=None, pins=None):
    model = torch_zoo.build(name, IN_HWC, NUM_CLASSES)
    params = model.nnz_params()
    assert sum(p.numel() for _, p, _ in params) == sum(p.numel() for p in model.parameters()), name
    init = {}
    with torch.no_grad():
        for k, (pname, p, kind) in enumerate(params):
            fan_in = model.fan_in(pname) if kind in ("conv_weight", "linear_weight", "bias") else 0
            v = torch.from_numpy(formula_values(p.numel(), k, kind, fan_in)).reshape(torch_zoo.nnz_shape(kind, p.shape))
            init[pname] = v.numpy()
            p.copy_(torch_zoo.nnz_to_torch(kind, v))
        for bname, b in model.nnz_buffers():
            b.fill_(1.0 if bname.endswith("running_var") else 0.0)
    model = model.to(dtype)
    model.recorder, model.pins = recorder, pins
    model.train()
    decay = [p for _, p, kind in params if kind in ("conv_weight", "linear_weight")]
    no_decay = [p for _, p, kind in params if kind not in ("conv_weight", "linear_weight")]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": WEIGHT_DECAY},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=LR, momentum=MOMENTUM, nesterov=True)
    opt.zero_grad()
    logits = model(x_nhwc.to(dtype).permute(0, 3, 1, 2))
    loss = F.cross_entropy(logits, labels, label_smoothing=SMOOTHING)
    loss.backward()
    grads = {pname: torch_zoo.torch_to_nnz(kind, p.grad.detach().clone()) for pname, p, kind in params}
    opt.step()

    out = [("logits", logits.detach().numpy().astype(np.float32)),
           ("loss", np.array([loss.item()], dtype=np.float32))]
    for pname, p, kind in params:
        g = grads[pname].numpy()
        new = torch_zoo.torch_to_nnz(kind, p.detach()).numpy()
        if g.size <= FULL_MAX:
            out.append(("grad/" + pname, g.astype(np.float32)))
            out.append(("new/" + pname, new.astype(np.float32)))
        else:
            idx = sample_indices(g.size)
            out.append(("grad_sampled/" + pname, g.reshape(-1)[idx].astype(np.float32)))
            out.append(("new_sampled/" + pname, new.reshape(-1)[idx].astype(np.float32)))
            g64 = g.astype(np.float64)
            out.append(("grad_stats/" + pname,
                        np.array([g64.sum(), (g64 * g64).sum(), np.abs(g64).sum()], dtype=np.float64)))
    for bname, b in model.nnz_buffers():
        out.append(("new/" + bname, b.detach().numpy().astype(np.float32)))
    return out, [pname for pname, _, _ in params], init


def compare(ref, got, init):
    """The C test's comparison; returns {metric: worst error / tolerance} (pass <= 1)."""
    ref, got = dict(ref), dict(got)
    r64 = {k: v.astype(np.float64) for k, v in ref.items()}
    gmax = max(np.abs(v).max() for k, v in r64.items() if k.startswith(("grad/", "grad_sampled/")))
    worst = {}

    def note(metric, ratio):
        worst[metric] = max(worst.get(metric, 0.0), float(ratio))

    def maxrel(a, b):
        return np.abs(a.astype(np.float64) - b).max() / np.abs(b).max()

    note("logits", maxrel(got["logits"], r64["logits"]) / TOL_LOGITS)
    note("loss", maxrel(got["loss"], r64["loss"]) / TOL_LOGITS)
    for key, r in r64.items():
        kind, _, pname = key.partition("/")
        g = got[key].astype(np.float64)
        if kind in ("grad", "grad_sampled"):
            if np.abs(r).max() <= 1e-9 * gmax:  # zero in exact arithmetic (e.g. a BN beta feeding conv + BN)
                note("grad(zero)", np.abs(g).max() / (TOL_ZERO * gmax))
            else:
                note(kind, maxrel(g, r) / TOL_GRAD)
        elif kind == "grad_stats":
            note("grad_sum", abs(g[0] - r[0]) / (TOL_GRAD * r[2]))
            note("grad_norm", abs(math.sqrt(g[1]) - math.sqrt(r[1])) / (TOL_GRAD * math.sqrt(r[1])))
        elif kind in ("new", "new_sampled") and pname in init:
            p0 = init[pname].reshape(-1).astype(np.float64)
            if kind == "new_sampled":
                p0 = p0[sample_indices(p0.size)]
            r = r.reshape(-1)
            tol = TOL_GRAD * np.abs(p0 - r).max() + TOL_NEW_ABS * np.abs(r).max()
            note(kind, np.abs(g.reshape(-1) - r).max() / tol)
        elif kind == "new":
            note("running", maxrel(g, r) / TOL_LOGITS)
    return worst


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outdir = os.path.join(root, "fixtures")
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    x_u8, x, labels = make_inputs()
    failed = False
    for name in torch_zoo.ZOO_NAMES:
        rec = Recorder()
        results, order, init = one_step(name, x, labels, recorder=rec)
        tensors = [("x_u8", x_u8.numpy()), ("labels", labels.numpy().astype(np.uint8))] + results
        for src, (idx, val) in rec.acts.items():
            if len(idx):
                tensors += [("pin_act_idx/" + src, idx), ("pin_act_val/" + src, val)]
        for src, pins in rec.pools.items():
            if len(pins):
                tensors.append(("pin_pool/" + src, pins))
        meta = {
            "format": "nnz zoo step fixture",
            "version": FORMAT_VERSION,
            "model": name,
            "generator": f"tests/gen/make_fixtures.py, torch {torch.__version__}, float64 step",
            "param_order": ",".join(order),
            "init_formula": FORMULA,
            "input": f"x = x_u8 / 255 (f32), x_u8 (8,28,28,1) NHWC and labels from torch generator seed {INPUT_SEED}",
            "sample_rule": f"tensors with numel > {FULL_MAX}: grad_sampled/new_sampled hold {SAMPLES} values at "
                           f"flat nnz-layout indices j_i = floor(i*numel/{SAMPLES}), i = 0..{SAMPLES - 1}; "
                           "grad_stats = [sum, sum of squares, sum of |.|] of the full gradient (F64)",
            "step": f"train mode; cross_entropy(label_smoothing={SMOOTHING}, mean); "
                    f"SGD lr={LR} momentum={MOMENTUM} nesterov=True weight_decay={WEIGHT_DECAY} on conv/linear "
                    "weights only; BN eps=1e-5 momentum=0.1",
            "pins": f"decisions within {PIN_REL}*rms(input) of their boundary, float64 outcome; see make_fixtures.py",
            "act_srcs": ",".join(rec.acts),
            "pool_srcs": ",".join(rec.pools),
        }
        path = os.path.join(outdir, f"{name}_step.safetensors")
        write_safetensors(path, tensors, meta)
        size = os.path.getsize(path)
        npins = sum(len(i) for i, _ in rec.acts.values()) + sum(len(p) for p in rec.pools.values())
        print(f"{os.path.relpath(path, os.path.dirname(root))}: {size} bytes, {len(tensors)} tensors, "
              f"loss {float(dict(results)['loss'][0]):.6f}, {npins} pinned decisions")
        if size > MAX_FILE_BYTES:
            print(f"  over the {MAX_FILE_BYTES}-byte budget for committed fixtures")
            failed = True
        if "--check-f32" in sys.argv:
            got, _, _ = one_step(name, x, labels, torch.float32, pins=Pins(rec))
            worst = compare(results, got, init)
            print("  float32 PyTorch, pinned, error/tolerance:", ", ".join(f"{k} {v:.2g}" for k, v in worst.items()))
            got, _, _ = one_step(name, x, labels, torch.float32)
            worst_free = compare(results, got, init)
            print("  float32 PyTorch, unpinned:                ",
                  ", ".join(f"{k} {v:.2g}" for k, v in worst_free.items()))
            failed |= max(worst.values()) > 1
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
