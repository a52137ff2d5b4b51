"""The nnz model zoo in PyTorch: the reference for tests/test_zoo_torch.c and bench/.

Each model mirrors src/nn/zoo.c node for node. PyTorch computes in NCHW; nnz in
NHWC. The only place where that shows in the numbers is flatten: we permute to
NHWC before flattening so that fc1's weight (OUT, H*W*C) has nnz's column order.

Every model exposes nnz_params(): [(nnz_name, torch_tensor, kind)] in the
order the nodes are built, where kind is one of
  "conv_weight"  torch (OC, IC/g, KH, KW)  <-> nnz (OC, KH, KW, IC/g)
  "linear_weight" (OUT, IN), same layout in both
  "bias", "bn_weight" (gamma), "bn_bias" (beta)
and nnz_buffers(): [(nnz_name, tensor)] of the BN running statistics.
"""
import torch
import torch.nn as nn

ZOO_NAMES = ("mlp", "lenet5", "vgg8", "mbv2-tiny")
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


class FlattenNHWC(nn.Module):
    """nnz's flatten: (N,C,H,W) -> (N, H*W*C) in (h, w, c) order."""

    def forward(self, x):
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        return x.reshape(x.shape[0], -1)


def _bn(c):
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class ZooModel(nn.Module):
    """Holds the named layers; subclasses define forward()."""

    def __init__(self):
        super().__init__()
        self._order = []  # (nnz node name, module) in build order
        self.recorder = None  # observes every activation and max pool (make_fixtures.py)
        self.pins = None      # forced decisions {src: ...} (make_fixtures.py --check-f32)

    # Every ReLU/ReLU6 and max pool goes through these two, keyed by the nnz
    # node that feeds the activation (the pool follows that activation).
    def act(self, x, src, hi=float("inf")):
        if self.recorder is not None:
            self.recorder.act(src, x, hi)
        if self.pins is not None and src in self.pins.acts:
            return self.pins.act(src, x, hi)
        # relu6 = hardtanh(0, 6): its gradient passes where 0 < x < 6, as nnz's
        return nn.functional.hardtanh(x, 0.0, hi) if hi != float("inf") else torch.relu(x)

    def pool(self, x, src):
        y, idx = nn.functional.max_pool2d(x, 2, 2, return_indices=True)
        if self.recorder is not None:
            self.recorder.pool(src, x, idx)
        if self.pins is not None and src in self.pins.pools:
            return self.pins.pool(src, x, idx)
        return y

    def add(self, nnz_name, module):
        self.add_module(nnz_name.replace(".", "_"), module)
        self._order.append((nnz_name, module))
        return module

    def nnz_params(self):
        out = []
        for name, mod in self._order:
            if isinstance(mod, nn.Conv2d):
                out.append((name + ".weight", mod.weight, "conv_weight"))
                if mod.bias is not None:
                    out.append((name + ".bias", mod.bias, "bias"))
            elif isinstance(mod, nn.Linear):
                out.append((name + ".weight", mod.weight, "linear_weight"))
                if mod.bias is not None:
                    out.append((name + ".bias", mod.bias, "bias"))
            elif isinstance(mod, nn.BatchNorm2d):
                out.append((name + ".weight", mod.weight, "bn_weight"))
                out.append((name + ".bias", mod.bias, "bn_bias"))
        return out

    def nnz_buffers(self):
        out = []
        for name, mod in self._order:
            if isinstance(mod, nn.BatchNorm2d):
                out.append((name + ".running_mean", mod.running_mean))
                out.append((name + ".running_var", mod.running_var))
        return out

    def fan_in(self, nnz_param_name):
        """fan_in of the layer owning a parameter: conv KH*KW*IC/g, linear IN."""
        node = nnz_param_name.rsplit(".", 1)[0]
        mod = dict(self._order)[node]
        if isinstance(mod, nn.Conv2d):
            return mod.weight.shape[1] * mod.weight.shape[2] * mod.weight.shape[3]
        if isinstance(mod, nn.Linear):
            return mod.weight.shape[1]
        raise ValueError(f"{nnz_param_name}: batch norm has no fan_in")


class MLP(ZooModel):
    def __init__(self, in_hwc=(28, 28, 1), num_classes=10):
        super().__init__()
        h, w, c = in_hwc
        self.flatten = FlattenNHWC()
        self.add("fc1", nn.Linear(h * w * c, 1024))
        self.add("fc2", nn.Linear(1024, 1024))
        self.add("fc3", nn.Linear(1024, num_classes))

    def forward(self, x):
        x = self.flatten(x)
        x = self.act(self.fc1(x), "fc1")
        x = self.act(self.fc2(x), "fc2")
        return self.fc3(x)


class LeNet5(ZooModel):
    def __init__(self, in_hwc=(28, 28, 1), num_classes=10):
        super().__init__()
        h, w, c = in_hwc
        self.add("conv1", nn.Conv2d(c, 32, 5, padding=2))
        self.add("conv2", nn.Conv2d(32, 64, 5, padding=2))
        self.flatten = FlattenNHWC()
        self.add("fc1", nn.Linear((h // 4) * (w // 4) * 64, 512))
        self.add("fc2", nn.Linear(512, num_classes))

    def forward(self, x):
        x = self.pool(self.act(self.conv1(x), "conv1"), "conv1")
        x = self.pool(self.act(self.conv2(x), "conv2"), "conv2")
        x = self.flatten(x)
        x = self.act(self.fc1(x), "fc1")
        return self.fc2(x)


class VGG8(ZooModel):
    def __init__(self, in_hwc=(28, 28, 1), num_classes=10):
        super().__init__()
        h, w, c = in_hwc
        widths = [64, 64, 128, 128, 256, 256]
        prev = c
        self.convs = []
        for i, oc in enumerate(widths, 1):
            conv = self.add(f"conv{i}", nn.Conv2d(prev, oc, 3, padding=1, bias=False))
            bn = self.add(f"bn{i}", _bn(oc))
            self.convs.append((conv, bn))
            prev = oc
        for _ in range(3):  # three 2x2 pools, floor mode: 28 -> 14 -> 7 -> 3
            h, w = h // 2, w // 2
        self.flatten = FlattenNHWC()
        self.add("fc1", nn.Linear(h * w * prev, 256))
        self.add("fc2", nn.Linear(256, num_classes))

    def forward(self, x):
        for i, (conv, bn) in enumerate(self.convs, 1):
            x = self.act(bn(conv(x)), f"bn{i}")
            if i % 2 == 0:
                x = self.pool(x, f"bn{i}")
        x = self.flatten(x)
        x = self.act(self.fc1(x), "fc1")
        return self.fc2(x)


MBV2_TINY_BLOCKS = ((16, 16, 1, 1), (16, 24, 2, 6), (24, 24, 1, 6), (24, 32, 2, 6), (32, 32, 1, 6), (32, 64, 1, 6))


class MBV2Tiny(ZooModel):
    def __init__(self, in_hwc=(28, 28, 1), num_classes=10):
        super().__init__()
        c = in_hwc[2]
        self.stem = (self.add("stem.conv", nn.Conv2d(c, 16, 3, 1, 1, bias=False)), self.add("stem.bn", _bn(16)))
        self.blocks = []
        for i, (cin, cout, stride, expand) in enumerate(MBV2_TINY_BLOCKS):
            hidden = cin * expand
            p = f"blocks.{i}."
            layers = (
                self.add(p + "pw1", nn.Conv2d(cin, hidden, 1, bias=False)),
                self.add(p + "bn1", _bn(hidden)),
                self.add(p + "dw", nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)),
                self.add(p + "bn2", _bn(hidden)),
                self.add(p + "pw2", nn.Conv2d(hidden, cout, 1, bias=False)),
                self.add(p + "bn3", _bn(cout)),
            )
            self.blocks.append((layers, stride == 1 and cin == cout))
        self.head = (self.add("head.conv", nn.Conv2d(64, 256, 1, bias=False)), self.add("head.bn", _bn(256)))
        self.add("fc", nn.Linear(256, num_classes))

    def forward(self, x):
        x = self.act(self.stem[1](self.stem[0](x)), "stem.bn", 6.0)
        for i, ((pw1, bn1, dw, bn2, pw2, bn3), residual) in enumerate(self.blocks):
            y = self.act(bn1(pw1(x)), f"blocks.{i}.bn1", 6.0)
            y = self.act(bn2(dw(y)), f"blocks.{i}.bn2", 6.0)
            y = bn3(pw2(y))
            x = x + y if residual else y
        x = self.act(self.head[1](self.head[0](x)), "head.bn", 6.0)
        x = x.mean(dim=(2, 3))
        return self.fc(x)


def build(name, in_hwc=(28, 28, 1), num_classes=10):
    classes = {"mlp": MLP, "lenet5": LeNet5, "vgg8": VGG8, "mbv2-tiny": MBV2Tiny}
    if name not in classes:
        raise ValueError(f"unknown zoo model '{name}'; choose one of {', '.join(ZOO_NAMES)}")
    return classes[name](in_hwc, num_classes)


def nnz_to_torch(kind, t):
    """A parameter in nnz layout -> PyTorch layout."""
    return t.permute(0, 3, 1, 2).contiguous() if kind == "conv_weight" else t


def torch_to_nnz(kind, t):
    return t.permute(0, 2, 3, 1).contiguous() if kind == "conv_weight" else t


def nnz_shape(kind, torch_shape):
    if kind == "conv_weight":
        oc, icg, kh, kw = torch_shape
        return (oc, kh, kw, icg)
    return tuple(torch_shape)


if __name__ == "__main__":
    for n in ZOO_NAMES:
        m = build(n)
        print(n, sum(p.numel() for p in m.parameters()), "parameters,",
              sum(b.numel() for _, b in m.nnz_buffers()), "buffer values")
