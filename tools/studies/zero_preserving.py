"""Zero-preserving code vs value + separate mask, for ReLU outputs that a
convolution also reads (what insert-compression stores as a 1-bit mask for
relu's backward plus a quantized value for the convolution's).

A zero-preserving code keeps code 0 for "was exactly zero" (the mask comes
free) and spreads the positive values over codes 1..2^b-1 between the
group's smallest positive value and its maximum, unbiased among them. This
computes, exactly from the rounding positions, the total stochastic-rounding
variance sum(step^2 f (1-f)) of both codes over every ReLU output of
ResNet-18 (random weights, batch 8 at 112x112):

    /usr/bin/python3 tools/studies/zero_preserving.py
"""
import torch, torchvision, math
torch.manual_seed(0)
m = torchvision.models.resnet18().train()
acts = []
def hook(mod, inp, out): acts.append(out.detach().clone())
for mod in m.modules():
    if isinstance(mod, torch.nn.ReLU): mod.inplace = False; mod.register_forward_hook(hook)
m(torch.randn(8, 3, 112, 112))
G = 256
def groups(x):
    n = x.shape[0]; f = x.reshape(n, -1); d = f.shape[1]; p = (d + G - 1) // G
    f = torch.nn.functional.pad(f, (0, p * G - d), value=float('nan'))
    return f.reshape(n, p, G)
def var_standard(g, b):
    lo = torch.nan_to_num(g, nan=float('inf')).amin(2, keepdim=True); hi = torch.nan_to_num(g, nan=float('-inf')).amax(2, keepdim=True)
    step = (hi - lo) / (2**b - 1); t = (g - lo) / step.clamp_min(1e-30); f = t - t.floor()
    return torch.nansum(step**2 * f * (1 - f)).item()
def var_zero_preserving(g, b):
    pos = torch.where(g > 0, g, torch.tensor(float('nan')))
    lo = torch.nan_to_num(pos, nan=float('inf')).amin(2, keepdim=True); hi = torch.nan_to_num(pos, nan=float('-inf')).amax(2, keepdim=True)
    levels = 2**b - 2  # codes 1..2^b-1 for positive values
    step = (hi - lo) / max(levels, 1); t = (pos - lo) / step.clamp_min(1e-30); f = t - t.floor()
    v = step**2 * f * (1 - f)
    return torch.nansum(torch.where(torch.isfinite(v), v, torch.zeros_like(v))).item()
tot = {k: 0.0 for k in ["A2", "B2", "B4", "A4"]}; zeros = 0; n = 0
for a in acts:
    g = groups(a)
    tot["A2"] += var_standard(g, 2); tot["A4"] += var_standard(g, 4)
    tot["B2"] += var_zero_preserving(g, 2); tot["B4"] += var_zero_preserving(g, 4)
    zeros += (a == 0).sum().item(); n += a.numel()
print(f"ReLU outputs: {n} values, {100*zeros/n:.1f}% zeros")
print("bits/value: value+mask 2-bit = 3.125, zero-preserving 2-bit = 2.125, 4-bit = 4.125, value+mask 4-bit = 5.125")
for k in tot: print(k, f"{tot[k]:.4e}", f"ratio to A2 {tot[k]/tot['A2']:.3f}")
# At the memory of value + mask at 2 bits (3.125 bits per value), the
# zero-preserving code can give half the samples 4 bits and half 2 (widths
# are 1, 2, 4 or 8): 3 + 0.125 bits.
mix = (tot["B2"] + tot["B4"]) / 2
print(f"equal memory, 3.125 bits/value: value+mask 2-bit 1.000, zero-preserving 2/4-bit mix {mix / tot['A2']:.3f}")
