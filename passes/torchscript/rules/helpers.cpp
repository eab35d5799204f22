// Derivative helpers written in TorchScript, for rules whose backward needs a
// loop or a branch on runtime ranks. Compiled once; a rule inlines a
// helper's graph into B (RuleContext::helper).
#include "actnn/passes/ir_builder.h"
#include "rules.h"

namespace actnn {
namespace rules {
namespace {

const char* kSource = R"TS(
def reduce_shape(sizes: List[int], dims: List[int]) -> List[int]:
    rank = len(sizes)
    shape: List[int] = []
    for i in range(rank):
        reduced = len(dims) == 0
        for d in dims:
            if d == i or d + rank == i:
                reduced = True
        if reduced:
            shape.append(1)
        else:
            shape.append(sizes[i])
    return shape

def spatial_sizes(sizes: List[int]) -> List[int]:
    return sizes[2:]

def scale_at(scale_factors: Optional[List[float]], i: int) -> Optional[float]:
    if scale_factors is None:
        return None
    return scale_factors[i]

def add_optional_grads(a: Optional[Tensor], b: Optional[Tensor]) -> Optional[Tensor]:
    if a is None:
        return b
    if b is None:
        return a
    return a + b

def add_grad_lists(a: List[Tensor], b: List[Tensor]) -> List[Tensor]:
    out: List[Tensor] = []
    for i in range(len(a)):
        out.append(a[i] + b[i])
    return out

def select_reduction_backward(grad: Tensor, dim: int, indices: Tensor, sizes: List[int], keepdim: bool) -> Tensor:
    if not keepdim and len(sizes) > 0:
        grad = grad.unsqueeze(dim)
        indices = indices.unsqueeze(dim)
    return torch.zeros(sizes, dtype=grad.dtype, device=grad.device).scatter(dim, indices, grad)

def evenly_distribute_backward(grad: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(grad.dtype)
    return m * (grad / m.sum())

def cumsum_backward(grad: Tensor, dim: int) -> Tensor:
    return grad.flip([dim]).cumsum(dim).flip([dim])

def unsqueeze_reduced(t: Tensor, rank: int, dims: List[int], keepdim: bool) -> Tensor:
    if keepdim or len(dims) == 0:
        return t
    normalized: List[int] = []
    for d in dims:
        normalized.append(d + rank if d < 0 else d)
    normalized.sort()
    for d in normalized:
        t = t.unsqueeze(d)
    return t

def norm_backward(grad: Tensor, self: Tensor, p: float, result: Tensor, dims: List[int], keepdim: bool) -> Tensor:
    grad = unsqueeze_reduced(grad, self.dim(), dims, keepdim)
    result = unsqueeze_reduced(result, self.dim(), dims, keepdim)
    if p == 0.0:
        return torch.zeros_like(self)
    if p == 1.0:
        return self.sgn() * grad
    if p > 1.0e308 or p < -1.0e308:
        # The largest (p = inf) or smallest (-inf) |x| of the input as B sees
        # it (decoded, at compressed levels), not `result`: a rounded input
        # may not reach it exactly.
        if len(dims) == 0:
            top = self.abs().max() if p > 0 else self.abs().min()
        else:
            top = self.abs().amax(dims, True) if p > 0 else self.abs().amin(dims, True)
        mask = (self.abs() == top).to(grad.dtype)
        if len(dims) == 0:
            count = mask.sum()
        else:
            count = mask.sum(dims, True)
        return self.sgn() * mask * (grad / count)
    scale = grad / result.pow(p - 1.0)
    scale = scale.masked_fill(result == 0, 0.0)
    if p == 2.0:
        return self * scale
    # sgn(x) |x|^(p-1), as autograd: no 0 * inf at x = 0 for p < 2
    out = self.sgn() * self.abs().pow(p - 1.0) * scale
    if p < 1.0:
        out = out.masked_fill(self == 0, 0.0)
    return out

def l2_norm_backward(grad: Tensor, self: Tensor, inverse: Tensor, dims: List[int], keepdim: bool) -> Tensor:
    grad = unsqueeze_reduced(grad, self.dim(), dims, keepdim)
    inverse = unsqueeze_reduced(inverse, self.dim(), dims, keepdim)
    return self * (grad * inverse)

def repeat_interleave_backward(grad: Tensor, sizes: List[int], repeats: int, dim: Optional[int]) -> Tensor:
    if dim is None:
        return grad.reshape([-1, repeats]).sum(1).reshape(sizes)
    d = dim
    if d < 0:
        d = d + len(sizes)
    shape: List[int] = []
    for i in range(len(sizes)):
        shape.append(sizes[i])
        if i == d:
            shape.append(repeats)
    if len(sizes) == 0:
        shape = [1, repeats]
    return grad.reshape(shape).sum(d + 1).reshape(sizes)

def pad_circular_backward(grad: Tensor, pad: List[int]) -> Tensor:
    for i in range(len(pad) // 2):
        dim = grad.dim() - 1 - i
        left = pad[2 * i]
        right = pad[2 * i + 1]
        size = grad.size(dim) - left - right
        core = grad.narrow(dim, left, size)
        if left > 0:
            core = torch.cat([core.narrow(dim, 0, size - left),
                              core.narrow(dim, size - left, left) + grad.narrow(dim, 0, left)], dim)
        if right > 0:
            core = torch.cat([core.narrow(dim, 0, right) + grad.narrow(dim, left + size, right),
                              core.narrow(dim, right, size - right)], dim)
        grad = core
    return grad

def grid_sampler_input_grad(grad: Tensor, input: Tensor, grid: Tensor, interpolation: int, padding: int, align_corners: bool) -> Tensor:
    if input.dim() == 4:
        return torch.grid_sampler_2d_backward(grad, input, grid, interpolation, padding, align_corners, [True, False])[0]
    return torch.grid_sampler_3d_backward(grad, input, grid, interpolation, padding, align_corners, [True, False])[0]

def grid_sampler_grid_grad(grad: Tensor, input: Tensor, grid: Tensor, interpolation: int, padding: int, align_corners: bool) -> Tensor:
    if input.dim() == 4:
        return torch.grid_sampler_2d_backward(grad, input, grid, interpolation, padding, align_corners, [False, True])[1]
    return torch.grid_sampler_3d_backward(grad, input, grid, interpolation, padding, align_corners, [False, True])[1]

def roll_backward(grad: Tensor, shifts: List[int], dims: List[int]) -> Tensor:
    back: List[int] = []
    for s in shifts:
        back.append(-s)
    return torch.roll(grad, back, dims)

def pad_backward(grad: Tensor, pad: List[int]) -> Tensor:
    back: List[int] = []
    for p in pad:
        back.append(-p)
    return torch.constant_pad_nd(grad, back, 0.0)

def sum_backward(grad: Tensor, sizes: List[int], dims: List[int], keepdim: bool) -> Tensor:
    if not keepdim:
        grad = grad.reshape(reduce_shape(sizes, dims))
    return grad.expand(sizes)

def mean_backward(grad: Tensor, sizes: List[int], dims: List[int], keepdim: bool) -> Tensor:
    count = 1
    rank = len(sizes)
    for i in range(rank):
        reduced = len(dims) == 0
        for d in dims:
            if d == i or d + rank == i:
                reduced = True
        if reduced:
            count = count * sizes[i]
    return sum_backward(grad, sizes, dims, keepdim) / count

def permute_backward(grad: Tensor, dims: List[int]) -> Tensor:
    n = len(dims)
    inverse: List[int] = [0] * n
    for i in range(n):
        d = dims[i]
        if d < 0:
            d = d + n
        inverse[d] = i
    return grad.permute(inverse)

def slice_backward(grad: Tensor, sizes: List[int], dim: int, start: Optional[int], end: Optional[int], step: int) -> Tensor:
    s = 0
    if start is not None:
        s = start
    e = 9223372036854775807
    if end is not None:
        e = end
    return torch.slice_backward(grad, sizes, dim, s, e, step)

def linear_weight_grad(grad: Tensor, input: Tensor) -> Tensor:
    if input.dim() == 1:
        return grad.unsqueeze(1) * input.unsqueeze(0)
    return grad.reshape(-1, grad.size(-1)).t().mm(input.reshape(-1, input.size(-1)))

def linear_bias_grad(grad: Tensor) -> Tensor:
    if grad.dim() == 1:
        return grad
    return grad.reshape(-1, grad.size(-1)).sum(0)

def matmul_grad_self(grad: Tensor, self: Tensor, other: Tensor) -> Tensor:
    if self.dim() == 1 and other.dim() == 1:
        return grad * other
    a = self
    if self.dim() == 1:
        a = self.unsqueeze(0)
        grad = grad.unsqueeze(-2)
    b = other
    if other.dim() == 1:
        b = other.unsqueeze(-1)
        grad = grad.unsqueeze(-1)
    ga = grad.matmul(b.transpose(-1, -2)).sum_to_size(a.size())
    return ga.reshape(self.size())

def matmul_grad_other(grad: Tensor, self: Tensor, other: Tensor) -> Tensor:
    if self.dim() == 1 and other.dim() == 1:
        return grad * self
    if self.dim() >= 3 and other.dim() == 2:
        # (..., n, k) @ (k, m): one mm over the folded leading dimensions,
        # as ATen's matmul computes it, not a (..., k, m) product summed
        # afterwards (120 MB for ViT-B's qkv projection at batch 2).
        return self.reshape(-1, self.size(-1)).t().mm(grad.reshape(-1, grad.size(-1)))
    a = self
    if self.dim() == 1:
        a = self.unsqueeze(0)
        grad = grad.unsqueeze(-2)
    b = other
    if other.dim() == 1:
        b = other.unsqueeze(-1)
        grad = grad.unsqueeze(-1)
    gb = a.transpose(-1, -2).matmul(grad).sum_to_size(b.size())
    return gb.reshape(other.size())

def group_norm_hxw(sizes: List[int]) -> int:
    hxw = 1
    for i in range(2, len(sizes)):
        hxw = hxw * sizes[i]
    return hxw

# (N, C, d1, ..., dk) -> (N, d1, ..., dk, C); (C) and (N, C) stay.
def nll_loss_nd_perm(sizes: List[int]) -> List[int]:
    perm: List[int] = [0]
    for i in range(2, len(sizes)):
        perm.append(i)
    if len(sizes) > 1:
        perm.append(1)
    return perm

# The permuted scores as (rows, C).
def nll_loss_nd_rows(sizes: List[int]) -> List[int]:
    if len(sizes) == 1:
        return [1, sizes[0]]
    rows = sizes[0]
    for i in range(2, len(sizes)):
        rows = rows * sizes[i]
    return [rows, sizes[1]]

# The loss has the target's shape unreduced (reduction 0), else none.
def nll_loss_nd_result(target_sizes: List[int], reduction: int) -> List[int]:
    if reduction == 0:
        return target_sizes
    empty: List[int] = []
    return empty

def dropout_scale(p: float) -> float:
    if p == 1.0:
        return 0.0
    return 1.0 / (1.0 - p)

# Training-mode feature dropout (Dropout1d/2d/3d), drawing what ATen draws:
# one Bernoulli(1 - p) per (sample, channel), scaled by 1 / (1 - p). The noise
# is 0 or 1, so scaling by the reciprocal gives ATen's division's bits.
def feature_dropout_train(x: Tensor, p: float) -> Tensor:
    sizes: List[int] = [x.size(0), x.size(1)]
    for i in range(2, x.dim()):
        sizes.append(1)
    noise = torch.empty(sizes, dtype=x.dtype, device=x.device)
    noise.bernoulli_(1.0 - p)
    return x * (noise * dropout_scale(p))
)TS";

}  // namespace

std::shared_ptr<Graph> helperGraph(const std::string& name) { return scriptHelperGraph(kSource, name); }

}  // namespace rules
}  // namespace actnn
