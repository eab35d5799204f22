"""Scripts small nets that, together, exercise every derivative rule in
passes/torchscript/rules/ (the gradient-parity tests check that they do), into
TorchScript archives with random weights, in train mode. Next to each
OUTDIR/<name>.pt goes OUTDIR/<name>.inputs, one line per forward input:

    float 2x4x16      a float tensor of that shape (standard normal)
    long 8 5          an int64 tensor of shape 8, values in [0, 5)

and OUTDIR/small_nets.list names every net of NETS (the L0 parity set). The
nets of STAT_NETS, for the gradient statistics of the compressed levels, are
scripted the same way but not listed. Run with Debian's /usr/bin/python3:

    /usr/bin/python3 export_small_nets.py OUTDIR [NAME ...]
"""
import math
import os
import sys
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class Conv1d(nn.Module):
    """1-d convolutions: bias, no bias, strided, dilated, grouped, 1x1."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(4, 8, 3, padding=1)
        self.b = nn.Conv1d(8, 8, 3, stride=2, padding=2, dilation=2, groups=4, bias=False)
        self.c = nn.Conv1d(8, 6, 1)

    def forward(self, x):
        return self.c(F.relu(self.b(self.a(x))))


class Conv2d(nn.Module):
    """2-d convolutions: dilated depthwise without bias, grouped, rectangular."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=8, bias=False)
        self.c = nn.Conv2d(8, 4, (1, 3), padding=(0, 1), groups=2)

    def forward(self, x):
        return self.c(self.b(self.a(x)))


class Conv3d(nn.Module):
    """3-d convolutions and a 3-d transposed convolution."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv3d(2, 4, 3, padding=1)
        self.b = nn.Conv3d(4, 4, (1, 3, 3), stride=(1, 2, 2), padding=(0, 2, 2), dilation=(1, 2, 2),
                           groups=2, bias=False)
        self.up = nn.ConvTranspose3d(4, 2, 2, stride=2)

    def forward(self, x):
        return self.up(self.b(self.a(x)))


class ConvTranspose(nn.Module):
    """Transposed 1-d and 2-d convolutions: output padding, groups, dilation, no bias."""

    def __init__(self):
        super().__init__()
        self.t1 = nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1)
        self.t2 = nn.ConvTranspose2d(4, 8, 3, stride=2, padding=1, output_padding=1, groups=2, bias=False)
        self.t3 = nn.ConvTranspose2d(8, 2, 3, dilation=2)

    def forward(self, x, y):
        return self.t1(x), self.t3(self.t2(y))


class OnnxLowerings(nn.Module):
    """constant_pad_nd (positive, negative and asymmetric widths; F.pad), erf,
    index_select, a float64 round trip, where, pow, sqrt: the ops ONNX import
    lowers Pad, Erf, Gather, Cast, Where, Pow and Sqrt to."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.register_buffer("idx", torch.tensor([2, 0, 3, 3]))

    def forward(self, x):
        p = F.pad(torch.constant_pad_nd(x, [1, 2, 0, -1], 0.5), [1, 1])
        h = torch.erf(self.conv(p).to(torch.float64)).to(torch.float32)
        h = torch.where(h > 0, h, h * 0.5)
        h = torch.sqrt(h.pow(2) + 1.0)
        return torch.index_select(h, 1, self.idx)


class Residual(nn.Module):
    """Two residual blocks as ResNet's: one with a projection shortcut (1x1
    stride-2 conv + BN, computed after the main branch, so B's order-backward
    moves it) and one with an identity shortcut."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.conv1 = nn.Conv2d(8, 4, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.down = nn.Conv2d(8, 16, 1, stride=2, bias=False)
        self.down_bn = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)

    def forward(self, x):                  # x: (4, 3, 10, 10)
        h = F.relu(self.stem(x))
        main = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(h)))))
        h = F.relu(main + self.down_bn(self.down(h)))
        return F.relu(self.bn3(self.conv3(h)) + h)


class Linear(nn.Module):
    """linear on 3-d and 1-d inputs, addmm (broadcast bias, scaled and not),
    mm, bmm, baddbmm, t."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 5)
        self.fc1 = nn.Linear(6, 4)
        self.w = nn.Parameter(torch.randn(5, 4))
        self.b = nn.Parameter(torch.randn(4))

    def forward(self, x):
        h = self.fc(x)                     # (2, 3, 5)
        v = self.fc1(x[0, 0])              # a 1-d input
        m = h.reshape(6, 5)
        a = torch.addmm(self.b, m, self.w, beta=0.5, alpha=2.0)
        a1 = torch.addmm(self.b, m, self.w)
        mm = torch.mm(m, self.w)
        mt = torch.mm(self.w.t(), m.t())
        bm = torch.bmm(h, h.transpose(1, 2))
        bb = torch.baddbmm(bm, h, h.transpose(1, 2), beta=0.5, alpha=1.5)
        return a, a1, mm, mt, bb, v


class Matmul(nn.Module):
    """matmul in every rank combination, batch dimensions broadcast."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 4))
        self.v = nn.Parameter(torch.randn(6))
        self.u = nn.Parameter(torch.randn(3))
        self.z = nn.Parameter(torch.randn(4, 6, 5))

    def forward(self, x):                  # x: (2, 3, 6)
        a = torch.matmul(x, self.w)                         # 3-d @ 2-d
        b = torch.matmul(x, self.v)                         # 3-d @ 1-d
        c = torch.matmul(self.u, x)                         # 1-d @ 3-d
        d = torch.matmul(x[0, 1], self.v)                   # 1-d @ 1-d
        e = torch.matmul(self.w.transpose(0, 1), x.transpose(1, 2))  # 2-d @ 3-d
        f = x.unsqueeze(1) @ self.z                          # (2,1,3,6) @ (4,6,5)
        g = torch.matmul(x[1], self.w)                       # 2-d @ 2-d
        h = torch.matmul(x[0, 0], self.w)                    # 1-d @ 2-d
        return a, b, c, d, e, f, g, h


class Norm(nn.Module):
    """Batch norm 1d/2d/3d in training mode (affine or not, with or without
    running statistics), one in eval mode inside a training net, layer norm
    and group norm with and without affine parameters."""

    def __init__(self):
        super().__init__()
        self.bn1 = nn.BatchNorm1d(4)
        self.bn1_flat = nn.BatchNorm1d(4, momentum=0.3)
        self.bn2 = nn.BatchNorm2d(4)
        self.bn3 = nn.BatchNorm3d(2)
        self.bn_plain = nn.BatchNorm2d(4, affine=False)
        self.bn_nostats = nn.BatchNorm2d(4, track_running_stats=False)
        self.bn_eval = nn.BatchNorm2d(4)
        self.ln = nn.LayerNorm([6, 6])
        self.ln_plain = nn.LayerNorm(6, elementwise_affine=False)
        self.gn = nn.GroupNorm(2, 4)
        self.gn_plain = nn.GroupNorm(4, 4, affine=False)
        self.gn1 = nn.GroupNorm(2, 4)
        with torch.no_grad():
            for m in self.modules():
                if getattr(m, "weight", None) is not None:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_()
            self.bn_eval.running_mean.normal_()
            self.bn_eval.running_var.uniform_(0.5, 2.0)
        self.bn_eval.eval()

    def forward(self, x):                  # x: (4, 4, 6, 6)
        flat = x.flatten(2)
        return (self.bn1(flat), self.bn1_flat(x.mean((2, 3))), self.bn2(x),
                self.bn3(x.reshape(4, 2, 2, 6, 6)), self.bn_plain(x), self.bn_nostats(x),
                self.bn_eval(x), self.ln(x), self.ln_plain(x), self.gn(x), self.gn_plain(x),
                self.gn1(flat))


class Activations(nn.Module):
    """Every pointwise activation, in-place spellings included; inputs spread
    over [-6, 6] so each piecewise activation sees every piece."""

    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.relu6 = nn.ReLU6()
        self.act = nn.Hardswish()

    def forward(self, x):
        x = x * 3.0
        return (F.relu(x), self.relu(x * 1.0), self.relu6(x), F.relu6(x * 1.0, inplace=True),
                F.hardtanh(x, -0.5, 1.5), F.leaky_relu(x, 0.2), F.leaky_relu(x * 1.0, 0.1, inplace=True),
                F.gelu(x), F.gelu(x, approximate="tanh"), F.silu(x), torch.sigmoid(x), torch.tanh(x),
                self.act(x), F.hardsigmoid(x))


class Pool2d(nn.Module):
    """2-d max and average pooling (padding, ceil mode, indices, divisor),
    adaptive average (1x1 and not) and adaptive max pooling."""

    def forward(self, x):                  # x: (2, 3, 9, 9)
        m1 = F.max_pool2d(x, 3, 2, 1)
        m2 = F.max_pool2d(x, 2, ceil_mode=True)
        m3, _ = F.max_pool2d(x, 3, 2, return_indices=True)
        a1 = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
        a2 = F.avg_pool2d(x, 2, ceil_mode=True, divisor_override=3)
        g1 = F.adaptive_avg_pool2d(x, 1)
        g2 = F.adaptive_avg_pool2d(x, (3, 2))
        g3 = F.adaptive_max_pool2d(x, (2, 3))
        return m1, m2, m3, a1, a2, g1, g2, g3


class Pool1d(nn.Module):
    """1-d max, average and adaptive average pooling (ATen runs the 2-d ops on
    an unsqueezed input), batched and unbatched."""

    def forward(self, x):                  # x: (2, 4, 17)
        m1 = F.max_pool1d(x, 3, 2, 1)
        m2 = F.max_pool1d(x[0], 2, ceil_mode=True)
        a1 = F.avg_pool1d(x, 3, 2, 1, count_include_pad=False)
        a2 = F.avg_pool1d(x, 2)
        g1 = F.adaptive_avg_pool1d(x, 5)
        g2 = F.adaptive_avg_pool1d(x, 1)
        return m1, m2, a1, a2, g1, g2


class Pool3d(nn.Module):
    """3-d max, average, adaptive average and adaptive max pooling."""

    def forward(self, x):                  # x: (2, 2, 6, 6, 6)
        m1 = F.max_pool3d(x, 3, 2, 1)
        m2, _ = F.max_pool3d(x, 2, return_indices=True)
        a1 = F.avg_pool3d(x, 3, 2, 1, count_include_pad=False)
        a2 = F.avg_pool3d(x, 2)
        g1 = F.adaptive_avg_pool3d(x, 1)
        g2 = F.adaptive_avg_pool3d(x, (2, 3, 3))
        g3 = F.adaptive_max_pool3d(x, (2, 2, 2))
        return m1, m2, a1, a2, g1, g2, g3


class Reductions(nn.Module):
    """mean and sum over everything, over one or several dims, kept or not."""

    def forward(self, x) -> List[Tensor]:  # x: (2, 3, 4, 5)
        return [x.mean(), x.sum(), x.mean((1, 2), keepdim=True), x.sum(-1), x.sum([0, 2]), x.mean(1),
                torch.sum(x, dim=(1,), keepdim=True), x.sum(dtype=torch.float32)]


class Elementwise(nn.Module):
    """add / sub / rsub / mul / div with tensors (broadcast both ways) and
    scalars, alpha, neg, and an in-place add on an activation; a dict result.
    (TorchScript emits `1.0 - x` as neg + add and a tensor rsub as sub.)"""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(1, 3, 1))
        self.scale = nn.Parameter(torch.randn(4))

    def forward(self, x, y) -> Dict[str, Tensor]:  # x: (2, 3, 4), y: (3, 1)
        t = x * 2.0
        t.add_(y)
        return {
            "add": x + self.bias, "add_scalar": x + 1.5, "add_alpha": torch.add(x, y, alpha=2.0),
            "sub": x - y, "sub_alpha": torch.sub(x, self.bias, alpha=0.5), "sub_scalar": x - 2,
            "rsub_scalar": torch.rsub(x, 2.0, 0.5), "one_minus": 1.0 - x, "rsub": torch.rsub(x, y, alpha=3),
            "mul": x * self.scale,
            "mul_scalar": x * 3, "div": x / (y * y + 1.0), "div_scalar": x / 4.0, "neg": -x,
            "inplace": t, "div_param": self.scale / (x * x + 1.0),
        }


class Shapes(nn.Module):
    """cat, chunk, split (by size and by sizes), split_with_sizes, unbind, flatten, unflatten,
    view, reshape, permute, transpose, t, contiguous, clone, select, slice,
    expand, squeeze, unsqueeze; some pieces unused; a list result."""

    def forward(self, x) -> List[Tensor]:  # x: (2, 6, 4)
        a, b = torch.chunk(x, 2, dim=1)
        p, q = torch.split(x, 2, dim=2)
        u, v, w = x.split([1, 2, 3], dim=1)
        s0, s1 = torch.split_with_sizes(x, [3, 1], 2)
        r0, r1, r2, r3 = x.unbind(2)
        c = torch.cat([a, b * 2.0, p.transpose(1, 2).reshape(2, 3, 4)], dim=-1)
        e = x[:, :1].expand(2, 5, 4)
        return [c, u * 2.0, w, r0 + r3, r1, x.flatten(1), x.view(2, 3, 8).permute(2, 0, 1).contiguous(),
                x.transpose(0, 1).reshape(6, -1), x[:, 1], x[:, 1:5:2], x[..., 1:], e, x[:, :1].squeeze(1),
                x[:1].squeeze(), x.unsqueeze(0), x.unflatten(1, (2, 3)), x.clone(), x[0].t(), q, s0 * s1]


class Dropout(nn.Module):
    """dropout as a module, functional and in place; p = 0 and an eval-mode
    dropout are identities; channel-wise Dropout2d (feature_dropout), also
    with p = 1."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.drop = nn.Dropout(0.5)
        self.off = nn.Dropout(0.5)
        self.off.eval()
        self.channels = nn.Dropout2d(0.4)
        self.all = nn.Dropout2d(1.0)

    def forward(self, x):                  # x: (4, 16)
        h = self.fc(x)
        planes = h.view(4, 4, 2, 2)
        return (self.drop(h), F.dropout(h, 0.3, self.training), F.dropout(h * 1.0, 0.2, True, inplace=True),
                F.dropout(h, 0.0, True), self.off(h), self.channels(planes) * planes, self.all(planes))


class Softmax(nn.Module):
    def forward(self, x):                  # x: (3, 5, 7)
        return F.softmax(x, 1), F.log_softmax(x, -1), torch.softmax(x * 2.0, 0)


class CrossEntropy(nn.Module):
    """cross_entropy with mean, weighted sum and per-sample reduction
    (ignore_index), the loss computed inside forward."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 5)
        self.register_buffer("weight", torch.rand(5) + 0.5)

    def forward(self, x, target):          # x: (8, 6), target: (8,) in [0, 5)
        logits = self.fc(x)
        return (F.cross_entropy(logits, target),
                F.cross_entropy(logits, target, weight=self.weight, reduction="sum"),
                F.cross_entropy(logits, target, ignore_index=1, reduction="none"))


class CrossEntropyNd(nn.Module):
    """cross_entropy and nll_loss over (N, C, d1, ..., dk) scores: per pixel
    and per position, reduced and not."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.register_buffer("weight", torch.rand(4) + 0.5)

    def forward(self, x, target):          # x: (2, 3, 4, 5), target: (2, 4, 5) in [0, 4)
        scores = self.conv(x)
        seq = scores.flatten(2)            # (2, 4, 20)
        return (F.cross_entropy(scores, target),
                F.cross_entropy(scores, target, weight=self.weight, ignore_index=2, reduction="none"),
                F.nll_loss(F.log_softmax(seq, 1), target.flatten(1), reduction="sum"))


class NllLoss(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 5)
        self.register_buffer("weight", torch.rand(5) + 0.5)

    def forward(self, x, target):          # x: (8, 6), target: (8,) in [0, 5)
        logp = F.log_softmax(self.fc(x), 1)
        # aten::nll_loss, what F.nll_loss scripted to before aten::nll_loss_nd
        # (reduction 1 = mean, ignore_index -100).
        legacy = torch._C._nn.nll_loss(logp, target, None, 1, -100)
        return (F.nll_loss(logp, target) + F.nll_loss(logp, target, weight=self.weight, reduction="sum"),
                legacy, F.nll_loss(logp[0], target[0]))  # the last one unbatched


class MseLoss(nn.Module):
    """mse_loss against a target that requires grad too."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x, target):          # x: (4, 6), target: (4, 3)
        out = self.fc(x)
        return F.mse_loss(out, target), F.mse_loss(out, target, reduction="sum"), F.mse_loss(
            torch.tanh(out), target, reduction="none")


class Outputs(nn.Module):
    """A nested result: a tuple holding a tensor, a list and a dict."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 5)

    def forward(self, x) -> Tuple[Tensor, List[Tensor], Dict[str, Tensor]]:  # x: (3, 5)
        h = self.fc(x)
        return h, [torch.relu(h), h * 2.0], {"sig": torch.sigmoid(h), "mean": h.mean(0)}


class Upsample(nn.Module):
    """Every upsampling mode, through the ATen ops F.interpolate calls (which
    branches on the input's rank: compiled as it is, it needs shape
    specialization): nearest 1d/2d/3d, linear, bilinear, bicubic (aligned
    corners or not) and trilinear, by output size and by scale factor."""

    def forward(self, x):  # x: (2, 3, 4, 5)
        nn_ = torch._C._nn
        a = nn_.upsample_nearest2d(x, [7, 9], None)
        b = nn_.upsample_bilinear2d(x, None, False, [2.0, 1.5])
        c = nn_.upsample_bicubic2d(x, [6, 6], True, None)
        flat = x.flatten(2)                       # (2, 3, 20)
        d = nn_.upsample_nearest1d(flat, None, [1.5])
        e = nn_.upsample_linear1d(flat, [33], True, None)
        vol = x.unsqueeze(2).expand(2, 3, 2, 4, 5)  # (2, 3, 2, 4, 5)
        f = nn_.upsample_nearest3d(vol, [3, 5, 6], None)
        g = nn_.upsample_trilinear3d(vol, None, False, [1.5, 2.0, 1.0])
        return a.sum(), b * 0.5, c, d, e.tanh(), f.mean(1), g


class UpsamplePerDim(nn.Module):
    """The upsampling overloads with an explicit output size and one scale per
    dim (torch 2.x's F.interpolate calls them when given a size; 1.13's
    calls the `.vec` ones of Upsample), the 2-d and 3-d modes. Which overload
    an archive's positional call resolves to depends on the loading LibTorch
    (1.13 takes `.vec` where the arity allows: the 1-d ones here would be
    `.vec`; 2.x the per-dim ones, also for most of Upsample's calls)."""

    def forward(self, x):  # x: (2, 3, 4, 5)
        nn_ = torch._C._nn
        a = nn_.upsample_nearest2d(x, [4, 6], scales_h=None, scales_w=None)
        b = nn_.upsample_bilinear2d(x, [5, 5], False, scales_h=1.25, scales_w=None)
        vol = x.unsqueeze(2).expand(2, 3, 2, 4, 5)  # (2, 3, 2, 4, 5)
        d = nn_.upsample_trilinear3d(vol, [3, 5, 6], False, scales_d=None, scales_h=None, scales_w=None)
        g = nn_.upsample_nearest3d(vol, [3, 5, 6], scales_d=None, scales_h=None, scales_w=None)
        e = nn_.upsample_bicubic2d(x, [6, 7], True, scales_h=None, scales_w=None)
        return a.sum(), b * 0.5, d, e, g.mean(1)


class Indexing(nn.Module):
    """Advanced indexing (repeated indices sum their gradients; a leading
    full slice makes a None index; a parameter table looked up by a buffer, as
    Swin's relative position bias) and roll (Swin's shifted windows), by
    dims and flattened."""

    def __init__(self):
        super().__init__()
        self.register_buffer("rows", torch.tensor([0, 2, 2, 1]))
        self.register_buffer("lookup", torch.tensor([4, 0, 4, 1, 3, 3]))
        self.table = nn.Parameter(torch.randn(5, 3))

    def forward(self, x):  # x: (3, 4, 5)
        a = x[self.rows]                  # (4, 4, 5)
        b = x[:, self.rows]               # (3, 4, 5)
        c = torch.roll(x, [1, -2], [1, 2])
        d = torch.roll(x * 2.0, 2)
        e = self.table[self.lookup]       # (6, 3)
        return a.sum(0) + b.tanh().sum(0) - c.mean(0), d, e


class Containers(nn.Module):
    """Container attributes read in forward, folded at compile time: a
    ModuleDict iterated with a Dict[str, str] of the layers to return
    (torchvision's IntermediateLayerGetter), List[str] and List[int]
    attributes, a loop over a constant list, and a dict result built by item
    assignment (the segmentation models')."""

    def __init__(self):
        super().__init__()
        self.body = nn.ModuleDict({"stem": nn.Conv2d(3, 4, 3, padding=1), "mid": nn.Conv2d(4, 4, 3, padding=1),
                                   "top": nn.Conv2d(4, 6, 1)})
        self.return_layers: Dict[str, str] = {"mid": "aux", "top": "out"}
        self.heads: List[str] = ["out", "aux"]
        self.dims: List[int] = [2, 3]

    def forward(self, x) -> Dict[str, Tensor]:  # x: (2, 3, 6, 6)
        features: Dict[str, Tensor] = {}
        for name, layer in self.body.items():
            x = torch.relu(layer(x))
            if name in self.return_layers:
                features[self.return_layers[name]] = x
        result: Dict[str, Tensor] = {}
        for key in self.heads:
            result[key] = features[key].mean(self.dims)
        return result


class ViewWrites(nn.Module):
    """Writes through slices and selects of a copy, which canonicalize makes
    functional (slice_scatter, select_scatter): Swin V2's zeroed key bias
    (a parameter's clone), a filled row, a copied block of activations, and
    in-place arithmetic through a chain of views (MViT V2's
    `attn[:, :, 1:, 1:] += rel_pos`)."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(4, 12)

    def forward(self, x):  # x: (3, 4)
        bias = self.qkv.bias.clone()
        bias[4:8].zero_()
        g = F.linear(x, self.qkv.weight, bias) * 2.0
        g[1].fill_(0.5)
        g[0:2].copy_(torch.tanh(g[1:3] * 3.0))
        g[:, 1:3] += x[:, 0:2] * 0.5
        g[2][4:9].mul_(x[0, 0:1].exp())
        return g.sigmoid()


class PointwiseMath(nn.Module):
    """abs, log, exp, clamp (both bounds, one, none given), clamp_min, clamp_max,
    round, floor, ceil, trunc (zero gradient),
    maximum / minimum and max / min of two tensors (with broadcasting and
    ties), masked_fill by a scalar and by a tensor that requires grad; sin,
    cos, rsqrt, tril, triu, flip; the spellings of to() that name a device
    or another tensor."""

    def __init__(self):
        super().__init__()
        self.fill = nn.Parameter(torch.tensor(0.7))
        self.register_buffer("keep", torch.tensor([True, False, True, True, False, True]))

    def forward(self, x, y):  # x: (4, 6), y: (1, 6)
        a = x.abs() + torch.log(x * x + 0.5) * torch.exp(x * 0.3)
        b = torch.clamp(x, -0.5, 0.8) + torch.clamp(x, min=0.1) + torch.clamp(x, max=-0.2)
        c = torch.clamp_min(x * 2.0, 0.3) - torch.clamp_max(x, 0.4)
        tied = torch.round(x * 2.0) / 2.0           # ties with y's rounded values too
        d = torch.maximum(tied, torch.round(y * 2.0) / 2.0) + torch.minimum(x, y * 0.5)
        e = torch.max(x, y) - torch.min(x, y.tanh())
        f = x.masked_fill(x > 0.5, 1.5) + (x * 3.0).masked_fill(self.keep, self.fill)
        r = torch.floor(x) + torch.ceil(x * 2.0) * torch.trunc(x * 3.0) + x
        t = torch.sin(x) * torch.cos(x * 0.5) + torch.rsqrt(x * x + 1.0) + x.tril() + (x * 2.0).triu(1) + x.flip([-1])
        u = x.to(y) + x.to(x.device) + x.to(device=x.device, dtype=torch.float32) + x.to(x.device, torch.float32)
        return a, b * c, d + e, f, r, t, u


class Selections(nn.Module):
    """max / min along a dim (values and indices, keepdim or not) and over
    everything (ties share the gradient), cumsum (with a dtype too), norms:
    p = 2 over dims and over everything, 1, 3, inf, -inf, and 1.5 and 0.5
    over zeros, linalg.vector_norm, and F.normalize (a zero row included)."""

    def forward(self, x):  # x: (3, 4, 5)
        v, i = torch.max(x, 1)
        w, _ = torch.min(x * 2.0, -1, keepdim=True)
        tied = torch.round(x)
        m = torch.max(tied) + torch.min(x.tanh())
        cs = torch.cumsum(x, 2) + torch.cumsum(x * 0.5, 0, dtype=torch.float64).float()
        n2 = torch.norm(x, 2, [1, 2]) + x.norm() + torch.norm(x, 1, [0]).sum()
        n3 = torch.norm(x, 3.0, [2], keepdim=True).sum() + torch.norm(x, float("inf"), [1]).sum()
        lv = torch.linalg.vector_norm(x, 2.0, [0, 1]).sum()
        zero_row = torch.cat([x[0:1] * 0.0, x[1:]], 0)
        nz = F.normalize(zero_row, dim=2)
        odd = torch.norm(zero_row, 1.5, [2]) + torch.norm(zero_row, 0.5, [1]).sum() + torch.norm(x, float("-inf"), [1]).sum()
        return v * i.float(), w, m + n3 + lv, cs, n2, nz, odd


class GatherScatter(nn.Module):
    """gather, scatter_add, scatter (src and value), index_put (accumulating
    and not), embedding (a padding row, repeated ids), stack, tensor_split
    (sections and indices) and repeat_interleave (over a dim and flattened)."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(7, 3, padding_idx=2)
        self.register_buffer("index", torch.tensor([[0, 2, 1, 2], [3, 3, 0, 1], [1, 0, 0, 2]]))
        self.register_buffer("rows", torch.tensor([0, 2, 0]))
        self.register_buffer("ids", torch.tensor([[1, 2, 6], [6, 0, 1]]))

    def forward(self, x, y):  # x: (3, 4), y: (3, 4)
        a = torch.gather(x, 1, self.index)
        b = torch.scatter_add(x * 2.0, 1, self.index, y)
        c = torch.scatter(x, 1, self.index, y * 3.0) + torch.scatter(x.tanh(), 1, self.index[:, 0:3], 0.5)
        d = x.index_put([self.rows], y[0:3] * 0.5, accumulate=True)
        e = x.index_put([self.rows], y.sigmoid(), accumulate=False)
        f = self.table(self.ids) * 2.0
        g = torch.stack([x, y * 2.0, x * y], 1)
        p1, p2 = torch.tensor_split(x * 1.5, 2, dim=1)
        q1, q2, q3 = torch.tensor_split(y, [1, 3], dim=0)
        r = torch.repeat_interleave(x, 2, dim=1) + torch.repeat_interleave(y.flatten(), 2).reshape(3, 8)
        return a + b + c + d + e, f, g, p1.sum() + p2.mean() + q1.sum() * q3.sum() + q2.mean(), r


class PadsGrid(nn.Module):
    """F.pad's reflect (1-d, 2-d, 3-d), replicate (1-d, 2-d, 3-d) and circular (1-d,
    2-d) modes, grid_sample 2-d (bilinear, nearest; zeros, border) and 3-d,
    with the grid made from the input too, and adaptive average pooling 1-d."""

    def __init__(self):
        super().__init__()
        self.offset = nn.Linear(2, 2)

    def forward(self, x):  # x: (2, 3, 6, 7)
        a = F.pad(x, [2, 1, 1, 2], mode="reflect")
        b = F.pad(x.flatten(2), [3, 1], mode="reflect")
        c = F.pad(x, [1, 2, 2, 0], mode="replicate")
        d = F.pad(x.unsqueeze(2), [1, 1, 0, 2, 1, 0], mode="replicate")
        e = F.pad(x, [2, 3, 1, 1], mode="circular") + 0.0
        f = F.pad(x.flatten(2), [4, 2], mode="circular") + F.pad(x.flatten(2), [1, 5], mode="replicate")
        f3 = F.pad(x.unsqueeze(2).expand(2, 3, 3, 6, 7), [1, 2, 2, 1, 1, 1], mode="reflect")
        base = torch.stack(torch.meshgrid(torch.linspace(-1.0, 1.0, 5), torch.linspace(-1.0, 1.0, 4), indexing="ij"), -1)
        grid = torch.tanh(self.offset(base.unsqueeze(0).expand(2, 5, 4, 2) + x[:, 0, 0:5, 0:4].unsqueeze(-1)))
        g = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        h = F.grid_sample(x * 2.0, grid, mode="nearest", padding_mode="border", align_corners=True)
        vol = x.unsqueeze(2).expand(2, 3, 2, 6, 7)
        grid3 = torch.cat([grid, grid[..., 0:1]], -1).unsqueeze(1)
        i = F.grid_sample(vol, grid3, mode="bilinear", padding_mode="zeros", align_corners=False)
        j = F.adaptive_avg_pool1d(x.flatten(2), 5)
        return a.sum(), b, c * 2.0, d, e, f.tanh(), g + h, i, j, f3


class Branches(nn.Module):
    """Control flow on data, differentiated per branch (F records which
    branch ran, B runs that branch's backward): an `if` on a tensor's value
    whose branches save values of their own (batch norm's statistics, tanh's
    result), one of which reads an outside value the other does not, returns
    an outside value unchanged and nests a second data-dependent `if`."""

    def __init__(self):
        super().__init__()
        # No bias: batch norm's input gradient sums to zero per channel, so a
        # bias before it gets a gradient of rounding noise only.
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.scale = nn.Parameter(torch.randn(4, 1, 1))

    def forward(self, x, y):  # x: (2, 3, 6, 6), y: (2, 4, 6, 6)
        h = self.conv(x)
        if bool(x.mean() > 0):
            a = torch.tanh(self.bn(h)) * self.scale
            if bool(y.sum() > 0):
                a = a + torch.sigmoid(y)
            b = y
        else:
            a = h * h
            b = y * self.scale
        return a + b, torch.relu(a).sum()


class Fallback(nn.Module):
    """Nodes with no derivative rule, run under LibTorch autograd (the
    autograd fallback): einsum over a list of operands, logsumexp, cummax
    (a values/indices pair), an op whose result is a tensor list, and control
    flow on data that autodiff does not differentiate per branch: an `if`
    whose branches index that list, and a loop whose trip count is one (both
    branches are taken across the parity test's seeds)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 6)
        self.mix = nn.Parameter(torch.randn(6, 6))

    def forward(self, x):  # x: (4, 6)
        h = self.proj(x)
        a = torch.einsum("ij,jk->ik", [h, self.mix])
        b = torch.logsumexp(h * 2.0, dim=1)
        c, where = torch.cummax(h.tanh(), dim=0)
        parts = torch.tensor_split(h, 3, dim=1)
        if bool(x.sum() > 0):
            d = torch.relu(h) * 3.0 + parts[0].sum()
        else:
            d = h * h - parts[2].mean()
        e = x
        for i in range(int(x.abs().max().item() > 0) + 1):
            e = torch.sigmoid(e + h)
        return a.sum(1) + b, c + where.float() * 0.0, d, e * parts[1].sum()


# Transformers. Under PyTorch 2.x attention is F.scaled_dot_product_attention
# and RMSNorm F.rms_norm, as models written today call them (actnn's
# canonicalize decomposes both); Debian's torch 1.13 has neither, so there the
# same nets compute what those ops compute. Weights are initialized small
# (std 0.02, as GPT-2 and BERT do) so the logits are of a trained model's size.
HAS_SDPA = hasattr(F, "scaled_dot_product_attention")
HAS_RMS_NORM = hasattr(F, "rms_norm")

if HAS_SDPA:
    def attend(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], causal: bool) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
else:
    def attend(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], causal: bool) -> Tensor:
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.size(-1))
        if causal:
            keep = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool, device=q.device).tril()
            scores = scores.masked_fill(keep.logical_not(), float("-inf"))
        if mask is not None:
            scores = scores.masked_fill(mask.logical_not(), float("-inf"))
        return torch.matmul(torch.softmax(scores, -1), v)

if HAS_RMS_NORM:
    def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
        return F.rms_norm(x, [x.size(-1)], weight, eps)
else:
    def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def init_small(module):
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.normal_(p, std=0.02)


class GptBlock(nn.Module):
    """A GPT-2-style decoder: token and learned position embeddings, pre-norm
    causal self-attention, a GELU (tanh) MLP, a final LayerNorm and an LM
    head tied to the token embedding."""

    def __init__(self, vocab=32, dim=16, heads=4, seq=8):
        super().__init__()
        self.heads = heads
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(seq, dim)
        self.ln1, self.ln2, self.ln_f = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(4 * dim, dim)
        self.drop = nn.Dropout(0.1)
        init_small(self)

    def forward(self, ids):  # ids: (2, 8) in [0, 32)
        b, t = ids.size(0), ids.size(1)
        x = self.drop(self.tok(ids) + self.pos(torch.arange(t, device=ids.device)))
        q, k, v = self.qkv(self.ln1(x)).split(x.size(-1), dim=-1)
        q, k, v = [z.view(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v)]
        a = attend(q, k, v, None, True).transpose(1, 2).reshape(b, t, -1)
        x = x + self.drop(self.proj(a))
        x = x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh")))
        return F.linear(self.ln_f(x), self.tok.weight)


class LlamaBlock(nn.Module):
    """A Llama-style decoder: RMSNorm, rotary position embeddings (rotate_half:
    slicing, neg, cat; cos and sin of constant angles), grouped-query causal
    attention (two key/value heads for four query heads), a SwiGLU MLP, no
    biases, an untied LM head."""

    def __init__(self, vocab=32, dim=16, heads=4, kv_heads=2, seq=8):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.embed = nn.Embedding(vocab, dim)
        self.norm1 = nn.Parameter(torch.ones(dim))
        self.norm2 = nn.Parameter(torch.ones(dim))
        self.norm_f = nn.Parameter(torch.ones(dim))
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * kv_heads * self.head_dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)
        self.gate = nn.Linear(dim, 3 * dim, bias=False)
        self.up = nn.Linear(dim, 3 * dim, bias=False)
        self.down = nn.Linear(3 * dim, dim, bias=False)
        self.head = nn.Linear(dim, vocab, bias=False)
        inv = 1.0 / (10000.0 ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)
        init_small(self)

    def rotate(self, x, cos, sin):
        half = x.size(-1) // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    def forward(self, ids):  # ids: (2, 8) in [0, 32)
        b, t = ids.size(0), ids.size(1)
        angles = torch.arange(t, device=ids.device).float()[:, None] * self.inv_freq[None, :]
        angles = torch.cat([angles, angles], dim=-1)
        cos, sin = angles.cos(), angles.sin()
        x = self.embed(ids)
        h = rms_norm(x, self.norm1, 1e-6)
        q = self.q(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(h).view(b, t, 2 * self.kv_heads, self.head_dim).transpose(1, 2).chunk(2, dim=1)
        q, k = self.rotate(q, cos, sin), self.rotate(k, cos, sin)
        repeat = self.heads // self.kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        x = x + self.o(attend(q, k, v, None, True).transpose(1, 2).reshape(b, t, -1))
        h = rms_norm(x, self.norm2, 1e-6)
        x = x + self.down(F.silu(self.gate(h)) * self.up(h))
        return self.head(rms_norm(x, self.norm_f, 1e-6))


class BertBlock(nn.Module):
    """A BERT-style encoder: word, position and token-type embeddings with a
    LayerNorm, self-attention with a padding mask (token id 0 is padding),
    post-norm residuals, a GELU (erf) MLP and a masked-LM head (dense, GELU,
    LayerNorm, decoder tied to the word embedding)."""

    def __init__(self, vocab=32, dim=16, heads=4, seq=8):
        super().__init__()
        self.heads = heads
        self.word = nn.Embedding(vocab, dim, padding_idx=0)
        self.position = nn.Embedding(seq, dim)
        self.token_type = nn.Embedding(2, dim)
        self.ln_emb, self.ln1, self.ln2, self.ln_head = (nn.LayerNorm(dim) for _ in range(4))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(4 * dim, dim)
        self.dense = nn.Linear(dim, dim)
        self.bias = nn.Parameter(torch.zeros(vocab))
        init_small(self)

    def forward(self, ids, types):  # ids: (2, 8) in [0, 32); types: (2, 8) in [0, 2)
        b, t = ids.size(0), ids.size(1)
        x = self.word(ids) + self.position(torch.arange(t, device=ids.device)) + self.token_type(types)
        x = self.ln_emb(x)
        mask = (ids != 0)[:, None, None, :]
        q, k, v = self.qkv(x).split(x.size(-1), dim=-1)
        q, k, v = [z.view(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v)]
        x = self.ln1(x + self.proj(attend(q, k, v, mask, False).transpose(1, 2).reshape(b, t, -1)))
        x = self.ln2(x + self.out(F.gelu(self.fc(x))))
        h = self.ln_head(F.gelu(self.dense(x)))
        return F.linear(h, self.word.weight, self.bias)


# name -> (module class, forward inputs: ("float", shape) or ("long", shape, high))
NETS = {
    "conv1d": (Conv1d, [("float", (2, 4, 16))]),
    "branches": (Branches, [("float", (2, 3, 6, 6)), ("float", (2, 4, 6, 6))]),
    "conv2d": (Conv2d, [("float", (2, 3, 10, 10))]),
    "conv3d": (Conv3d, [("float", (2, 2, 6, 6, 6))]),
    "onnx_lowerings": (OnnxLowerings, [("float", (2, 3, 8, 8))]),
    "conv_transpose": (ConvTranspose, [("float", (2, 4, 8)), ("float", (2, 4, 5, 5))]),
    "residual": (Residual, [("float", (4, 3, 10, 10))]),
    "linear": (Linear, [("float", (2, 3, 6))]),
    "matmul": (Matmul, [("float", (2, 3, 6))]),
    "norm": (Norm, [("float", (4, 4, 6, 6))]),
    "activations": (Activations, [("float", (4, 64))]),
    "pool1d": (Pool1d, [("float", (2, 4, 17))]),
    "pool2d": (Pool2d, [("float", (2, 3, 9, 9))]),
    "pool3d": (Pool3d, [("float", (2, 2, 6, 6, 6))]),
    "reductions": (Reductions, [("float", (2, 3, 4, 5))]),
    "elementwise": (Elementwise, [("float", (2, 3, 4)), ("float", (3, 1))]),
    "shapes": (Shapes, [("float", (2, 6, 4))]),
    "dropout": (Dropout, [("float", (4, 16))]),
    "softmax": (Softmax, [("float", (3, 5, 7))]),
    "cross_entropy": (CrossEntropy, [("float", (8, 6)), ("long", (8,), 5)]),
    "cross_entropy_nd": (CrossEntropyNd, [("float", (2, 3, 4, 5)), ("long", (2, 4, 5), 4)]),
    "nll_loss": (NllLoss, [("float", (8, 6)), ("long", (8,), 5)]),
    "mse_loss": (MseLoss, [("float", (4, 6)), ("float", (4, 3))]),
    "outputs": (Outputs, [("float", (3, 5))]),
    "containers": (Containers, [("float", (2, 3, 6, 6))]),
    "upsample": (Upsample, [("float", (2, 3, 4, 5))]),
    "upsample_per_dim": (UpsamplePerDim, [("float", (2, 3, 4, 5))]),
    "indexing": (Indexing, [("float", (3, 4, 5))]),
    "view_writes": (ViewWrites, [("float", (3, 4))]),
    "pointwise_math": (PointwiseMath, [("float", (4, 6)), ("float", (1, 6))]),
    "selections": (Selections, [("float", (3, 4, 5))]),
    "gather_scatter": (GatherScatter, [("float", (3, 4)), ("float", (3, 4))]),
    "pads_grid": (PadsGrid, [("float", (2, 3, 6, 7))]),
    "fallback": (Fallback, [("float", (4, 6))]),
    "gpt_block": (GptBlock, [("long", (2, 8), 32)]),
    "llama_block": (LlamaBlock, [("long", (2, 8), 32)]),
    "bert_block": (BertBlock, [("long", (2, 8), 32), ("long", (2, 8), 2)]),
}


class StatsMasks(nn.Module):
    """Only masks and pooling indices on the input gradient's path: relu,
    max pooling (stride != kernel with padding, then the default stride),
    dropout, relu6, hardtanh and leaky_relu."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):                  # x: (4, 3, 32, 32)
        h = F.max_pool2d(F.relu(x * 2.0), 3, 2, 1)
        h = self.drop(F.max_pool2d(h, 2))  # kept values ~8 +- 2.4: every piece below is reached
        return F.leaky_relu(F.hardtanh(F.relu6(h - 6.0), 0.5, 4.5) - 2.0, 0.1)


class StatsConvNet(nn.Module):
    """No batch norm: conv -> relu -> conv -> relu -> global average -> linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):                  # x: (8, 3, 12, 12)
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


class StatsLinear(nn.Module):
    """One linear layer whose input is an activation (x * 2), so it is saved
    and, at L2 and L3 (not L1: no convolution), quantized."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(640, 16, bias=False)

    def forward(self, x):                  # x: (8, 640)
        return self.fc(x * 2.0)


# Nets for the gradient statistics of compressed levels
# (tests/unit/compression_gradients_test.cpp), not part of the L0 parity set.
class StatsNorms(nn.Module):
    """Batch norm over few values per channel (M = 8 x 6 x 6 and 8 x 3 x 3
    at gradient_bias_test's batch of 8, where the square of the rounding noise
    is a large part of BN backward's sum), then group norm and SiLU: the
    readers debias-backward corrects."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):                  # x: (8, 3, 6, 6)
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = F.silu(self.gn(self.conv3(h)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


class StatsTransformer(nn.Module):
    """A transformer block's nonlinear readers: layer norm, GELU, softmax,
    tanh and sigmoid, each reading a quantized activation."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.ln = nn.LayerNorm(32)
        self.fc2 = nn.Linear(32, 32)
        self.fc3 = nn.Linear(32, 10)

    def forward(self, x):                  # x: (4, 2, 16, 16), 32 tokens of 16 per sample
        h = self.fc2(F.gelu(self.ln(self.fc1(x))))
        h = torch.softmax(h, -1) * torch.tanh(h) + torch.sigmoid(h * 2.0)
        return self.fc3(h.mean([1, 2]))


class StatsAttention(nn.Module):
    """Causal self-attention, as in a GPT block after some training: scores
    scaled up so rows are peaked; most of a softmax row is a masked zero or
    negligible, so its values sit on a quantization level."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(16, 10)

    def forward(self, x):                  # x: (4, 32, 16), 32 tokens of 16 per sample
        q, k, v = self.qkv(x).split(16, dim=-1)
        scores = torch.matmul(q, k.transpose(-2, -1)) * 3.0
        keep = torch.ones(32, 32, dtype=torch.bool).tril()
        attn = torch.softmax(scores.masked_fill(keep.logical_not(), float("-inf")), -1)
        return self.proj(torch.matmul(attn, v).mean(1))


STAT_NETS = {
    "stats_norms": (StatsNorms, [("float", (4, 3, 6, 6))]),
    "stats_transformer": (StatsTransformer, [("float", (4, 2, 16, 16))]),
    "stats_attention": (StatsAttention, [("float", (4, 32, 16))]),
    "stats_masks": (StatsMasks, [("float", (4, 3, 32, 32))]),
    "stats_convnet": (StatsConvNet, [("float", (8, 3, 12, 12))]),
    "stats_linear": (StatsLinear, [("float", (8, 640))]),
}


def spec_line(spec):
    shape = "x".join(str(d) for d in spec[1])
    return " ".join([spec[0], shape] + [str(s) for s in spec[2:]])


def write(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def main():
    out = sys.argv[1]
    every = {**NETS, **STAT_NETS}
    names = sys.argv[2:] or list(every)
    os.makedirs(out, exist_ok=True)
    # Always re-exported (a second or two in all), so an edited net never
    # leaves a stale archive behind.
    for name in names:
        cls, inputs = every[name]
        torch.manual_seed(sum(map(ord, name)))
        model = cls()  # in train mode, but for the submodules a net puts in eval mode
        scripted = torch.jit.script(model)
        path = os.path.join(out, name + ".pt")
        scripted.save(path + ".tmp")
        os.replace(path + ".tmp", path)
        write(os.path.join(out, name + ".inputs"), "".join(spec_line(s) + "\n" for s in inputs))
    # The parity nets only: SmallNets.EveryExportedNetIsTested reads this list.
    write(os.path.join(out, "small_nets.list"), "".join(n + "\n" for n in NETS))
    print("scripted", len(names), "small nets into", out, flush=True)


if __name__ == "__main__":
    main()
