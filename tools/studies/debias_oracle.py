"""Where debias-backward's residual bias comes from: batch-norm backward from a
2-bit rounded input, corrected with the rounding variance estimated as
step^2 / 6 per value (what the runtime did first), with the exact step^2 t (1 - t)
of each value (known only when quantizing), and with exact means per group
or per channel; and what the runtime does since: decoding with subtractive
dither (the uniform that rounded each value subtracted again), whose noise is
uniform with variance exactly step^2 / 12, corrected by that. One layer: the
input of ResNet-18's last batch norm (random weights, batch 8 at 64x64: M =
32 values per channel), a random dy, 2000 quantization seeds; bias and one
pass's standard deviation of the input gradient, relative to its norm.

    /usr/bin/python3 tools/studies/debias_oracle.py build/lib/libactnn_runtime.so
"""
import sys
import torch, torchvision

torch.ops.load_library(sys.argv[1] if len(sys.argv) > 1 else "build/lib/libactnn_runtime.so")
torch.set_num_threads(1)
torch.manual_seed(0)
model = torchvision.models.resnet18().train()
seen = {}
model.layer4[1].bn2.register_forward_hook(lambda mod, inp, out: seen.__setitem__("x", inp[0].detach().clone()))
model(torch.randn(8, 3, 64, 64))
x = seen["x"]
N, C = x.shape[:2]
M, D, G = x.numel() // C, x.numel() // N, 256
dy, w = torch.randn_like(x), torch.rand(C) + 0.5
mean, invstd = x.mean((0, 2, 3)), (x.var((0, 2, 3), unbiased=False) + 1e-5).rsqrt()
coeff = (w * invstd**3 / M).view(1, C, 1, 1).double()


def backward(xq, rounded):
    return torch.ops.actnn.batch_norm_backward(dy, xq, w, None, None, mean, invstd, True, 1e-5, [True] * 3, False,
                                               rounded)[0].double()


# The exact rounding variance of each value, from the group metadata.
_, lo, scale = torch.ops.actnn.quantize_groups(x, [2], G, 0, 0)
per_value = lambda t: t.float().repeat_interleave(G, 1)[:, :D].reshape(x.shape)
lo, scale = per_value(lo), per_value(scale)
v = (x - lo) * scale
t = v - v.floor()
var_exact = ((1 / scale) ** 2 * t * (1 - t)).double()
groups = torch.nn.functional.pad(var_exact.reshape(N, D), (0, (-D) % G)).reshape(N, -1, G)
counts = torch.tensor([min(G, D - g * G) for g in range(groups.shape[1])], dtype=torch.float64)
var_group = (groups.sum(2) / counts).repeat_interleave(G, 1)[:, :D].reshape(x.shape)
var_channel = var_exact.mean((0, 2, 3), keepdim=True).expand_as(x)

exact = backward(x, None)
K = 2000
corrections = ["none", "step^2 / 6", "exact per value", "exact per group", "exact per channel",
               "dithered, none", "dithered, step^2 / 12"]
sums = {c: torch.zeros_like(exact) for c in corrections}
squares = {c: 0.0 for c in corrections}
for k in range(K):
    p = torch.ops.actnn.quantize(x, [2], G, 100 + k, 0)
    xq = torch.ops.actnn.dequantize(p, None, None)
    plain = backward(xq, None)
    got = {"none": plain, "step^2 / 6": backward(xq, p)}
    for name, var in [("exact per value", var_exact), ("exact per group", var_group),
                      ("exact per channel", var_channel)]:
        got[name] = plain + dy.double() * var * coeff
    codes, lo_k, scale_k = torch.ops.actnn.quantize_groups(x, [2], G, 100 + k, 0)
    xd = torch.ops.actnn.dequantize_groups(codes, lo_k, scale_k, [2], list(x.shape), x.dtype, G, 100 + k, 0, True)
    dithered = backward(xd, None)
    got["dithered, none"] = dithered
    got["dithered, step^2 / 12"] = dithered + dy.double() * ((1 / scale) ** 2 / 12).double() * coeff
    for c in corrections:
        sums[c] += got[c]
        squares[c] += ((got[c] - exact) ** 2).sum().item()
norm = exact.norm().item()
for c in corrections:
    err = ((sums[c] / K - exact) ** 2).sum().item()
    trace = (squares[c] - K * err) / (K - 1)
    print(f"{c:18s} bias {max(err - trace / K, 0) ** 0.5 / norm:.4f}  std {trace ** 0.5 / norm:.4f}")
