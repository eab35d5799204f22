"""Conformance of actnn's kernels with docs/onnx-actnn-ops.md.

Usage: python3 tests/python/onnx_ops_conformance.py build/lib/libactnn_runtime.so

Compares, bit for bit, the numpy reference in actnn_onnx_ops_reference.py (written from the
doc alone) with actnn::quantize_groups(x, [bits], G, seed, 0) -> (codes, lo, scale) and
actnn::dequantize_groups(codes, lo, scale, [bits], shape, dtype, G) -> Y on CPU (and on
CUDA too when torch sees a GPU). Exits non-zero on any mismatch.

Mapping to the doc's outputs: the runtime's `codes` is the doc's [N, P*G*b/8] `codes`
flattened row-major; `lo` / `scale` are [N, P] tensors of the metadata dtype (bfloat16 or
float16) whose bits are the doc's fields; `shape` is x.shape.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import actnn_onnx_ops_reference as ref  # noqa: E402

TO = {torch.float32: 1, torch.float16: 10, torch.bfloat16: 16}
NAME = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


# --------------------------------------------------------------------------------------
# torch <-> numpy bit views
# --------------------------------------------------------------------------------------

def u16(t):
    """bits of a 16-bit tensor as a numpy uint16 array."""
    return t.detach().cpu().contiguous().view(torch.int16).numpy().view(np.uint16)


def from_np(a, dtype):
    """numpy array in the reference's representation -> torch tensor of dtype."""
    if dtype == torch.bfloat16:
        return torch.from_numpy(np.ascontiguousarray(a, np.uint16).view(np.int16)).view(torch.bfloat16)
    if dtype == torch.float16 and np.asarray(a).dtype == np.uint16:  # float16 bits
        return torch.from_numpy(np.ascontiguousarray(a).view(np.float16))
    return torch.from_numpy(np.ascontiguousarray(a))


def to_np(t):
    """torch tensor -> numpy array in the reference's representation."""
    if t.dtype == torch.bfloat16:
        return u16(t)
    return t.detach().cpu().contiguous().numpy()


def out_bits(a):
    a = np.ascontiguousarray(a)
    if a.dtype == np.float32:
        return a.view(np.uint32)
    if a.dtype == np.float16:
        return a.view(np.uint16)
    return a.astype(np.uint16)


# --------------------------------------------------------------------------------------
# Random inputs
# --------------------------------------------------------------------------------------

F32_SPECIALS = np.array([0.0, -0.0, 1.0, -1.0, 1e-45, -1e-45, 1.17549435e-38, 3.4028235e38,
                         -3.4028235e38, 1.0000001, 0.1, -123.456, 65504.0, 6.1e-5, 5.96e-8],
                        np.float32)


def random_finite_f32(rng, size):
    """finite float32 values drawn from random bit patterns (any exponent)."""
    while True:
        b = rng.integers(0, 2 ** 32, size=size, dtype=np.uint64).astype(np.uint32)
        f = b.view(np.float32)
        if np.all(np.isfinite(f)):
            return f
        bad = ~np.isfinite(f)
        b[bad] &= np.uint32(0xBFFFFFFF)  # clear the top exponent bit: finite


def base_values(rng, n, kind):
    if kind == "normal":
        return rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3)
    if kind == "offset":
        return rng.uniform(-1, 1) * 10.0 ** rng.uniform(0, 6) + rng.standard_normal(n)
    if kind == "positive":
        return np.abs(rng.standard_normal(n)) * 10.0 ** rng.uniform(-4, 4)
    if kind == "integers":
        return rng.integers(-4, 5, size=n).astype(np.float64)
    if kind == "tiny":
        return rng.standard_normal(n) * 1e-39
    if kind == "tiny16":
        return rng.standard_normal(n) * 1e-6
    if kind == "huge":
        return rng.uniform(-3.4e38, 3.4e38, size=n)
    if kind == "huge_positive":
        return rng.uniform(1e38, 3.4e38, size=n)
    if kind == "bits":
        return random_finite_f32(rng, n).astype(np.float64)
    raise ValueError(kind)


KINDS_F32 = ["normal", "offset", "positive", "integers", "tiny", "huge", "huge_positive", "bits"]
KINDS_F16 = ["normal", "offset", "positive", "integers", "tiny16"]


def make_input(rng, shape, G, dtype):
    """numpy array (reference representation) of the given shape and torch dtype, with
    some groups made constant / non-finite / edge-valued."""
    N, D, P = ref.geometry(shape, G)
    kinds = KINDS_F16 if dtype == torch.float16 else KINDS_F32
    flat = base_values(rng, N * D, kinds[rng.integers(len(kinds))]).reshape(N, D) if N * D else \
        np.zeros((N, D))
    flat = flat.astype(np.float32)
    if dtype == torch.float16:
        flat = np.clip(flat, -65504, 65504)
    for n in range(N):
        for g in range(P):
            a, b = g * G, min((g + 1) * G, D)
            r = rng.random()
            if r < 0.10:  # constant, arbitrary value
                c = random_finite_f32(rng, 1)[0] if dtype == torch.float32 else \
                    np.float32(rng.standard_normal() * 100)
                flat[n, a:b] = c
            elif r < 0.14:  # constant from the specials
                flat[n, a:b] = F32_SPECIALS[rng.integers(len(F32_SPECIALS))]
            elif r < 0.18:  # zeros of mixed sign
                flat[n, a:b] = np.where(rng.random(b - a) < 0.5, np.float32(0.0), np.float32(-0.0))
            elif r < 0.20:  # all -0
                flat[n, a:b] = np.float32(-0.0)
            elif r < 0.25:  # NaN / Inf somewhere
                k = rng.integers(1, 4)
                idx = rng.integers(a, b, size=k)
                flat[n, idx] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), size=k)
            elif r < 0.28:  # one outlier in a constant group
                flat[n, a:b] = np.float32(rng.standard_normal())
                flat[n, rng.integers(a, b)] = np.float32(rng.standard_normal() * 1e3)
            elif r < 0.31:  # signed zeros and a value
                flat[n, a:b] = np.where(rng.random(b - a) < 0.5, np.float32(0.0), np.float32(-0.0))
                flat[n, rng.integers(a, b)] = np.float32(rng.standard_normal())
            elif r < 0.33:  # specials mixed in
                k = min(b - a, 4)
                idx = rng.integers(a, b, size=k)
                flat[n, idx] = rng.choice(F32_SPECIALS, size=k)
    with np.errstate(over="ignore"):
        if dtype == torch.float32:
            x = flat.astype(np.float32)
        elif dtype == torch.float16:
            x = flat.astype(np.float16)
        else:  # bfloat16: round to nearest even through torch
            x = u16(torch.from_numpy(flat).to(torch.bfloat16))
    return x.reshape(shape)


# --------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------

class Stats:
    def __init__(self):
        self.cases = 0
        self.values = 0
        self.failures = []
        self.nan_payload_diffs = 0
        self.plus_zero_to_minus_zero = 0

    def fail(self, what, detail):
        self.failures.append((what, detail))
        if len(self.failures) <= 25:
            print("MISMATCH", what, detail)


def first_diff(a, b):
    a = np.asarray(a).reshape(-1)
    b = np.asarray(b).reshape(-1)
    if a.shape != b.shape:
        return "shape %s vs %s" % (a.shape, b.shape)
    i = np.nonzero(a != b)[0]
    return "%d differ, first at %d: ref %s runtime %s" % (
        len(i), i[0], hex(int(a[i[0]])), hex(int(b[i[0]])))


def check_case(stats, device, x_np, dtype, shape, bits, G, seed):
    what = "%s %s dev=%s shape=%s b=%d G=%d seed=%d" % ("quantize", NAME[dtype], device,
                                                         list(shape), bits, G, seed)
    stats.cases += 1
    stats.values += int(np.prod(shape, dtype=np.int64))
    N, D, P = ref.geometry(shape, G)
    # Reference
    codes_r, lo_r, sc_r, shape_r = ref.quantize(x_np, bits, G, seed=seed, dtype=NAME[dtype])
    # Runtime
    x_t = from_np(x_np, dtype).reshape(shape).to(device)
    codes_t, lo_t, sc_t = torch.ops.actnn.quantize_groups(x_t, [bits], G, seed, 0)
    codes_t_np = codes_t.cpu().numpy()
    ok = True
    if codes_t.dtype != torch.uint8 or codes_t_np.size != codes_r.size:
        stats.fail(what, "codes: runtime %s %s, reference %s" % (codes_t.dtype, tuple(codes_t.shape),
                                                                 codes_r.shape))
        return
    meta = torch.float16 if dtype == torch.float16 else torch.bfloat16
    for name, r, t in (("lo", lo_r, lo_t), ("scale", sc_r, sc_t)):
        if t.dtype != meta or tuple(t.shape) != r.shape:
            stats.fail(what, "%s: runtime %s %s, reference [N, P] = %s" % (name, t.dtype, tuple(t.shape),
                                                                           r.shape))
            return
    if not np.array_equal(codes_r.reshape(-1), codes_t_np.reshape(-1)):
        stats.fail(what, "codes " + first_diff(codes_r, codes_t_np)); ok = False
    if not np.array_equal(lo_r.reshape(-1), u16(lo_t).reshape(-1)):
        stats.fail(what, "lo " + first_diff(lo_r, u16(lo_t))); ok = False
    if not np.array_equal(sc_r.reshape(-1), u16(sc_t).reshape(-1)):
        stats.fail(what, "scale " + first_diff(sc_r, u16(sc_t))); ok = False
    if list(shape_r) != list(shape):
        stats.fail(what, "shape"); ok = False

    # Dequantize: reference on the reference's fields vs runtime on the runtime's fields, and
    # runtime on the reference's fields (tests Dequantize on its own).
    y_r = ref.dequantize(codes_r, lo_r, sc_r, shape_r, bits, G, TO[dtype])
    y_t = torch.ops.actnn.dequantize_groups(codes_t, lo_t, sc_t, [bits], list(shape), dtype, G)
    y_t2 = torch.ops.actnn.dequantize_groups(
        torch.from_numpy(codes_r.reshape(-1).copy()).to(device),
        from_np(lo_r, meta).to(device), from_np(sc_r, meta).to(device),
        [bits], list(shape), dtype, G)
    dwhat = what.replace("quantize", "dequantize", 1)
    for label, y in (("own fields", y_t), ("reference fields", y_t2)):
        if tuple(y.shape) != tuple(shape) or y.dtype != dtype:
            stats.fail(dwhat, "%s: Y is %s %s" % (label, y.dtype, tuple(y.shape))); continue
        a, b = out_bits(y_r), out_bits(to_np(y))
        if not np.array_equal(a, b):
            stats.fail(dwhat, label + " " + first_diff(a, b)); ok = False
    # Constant float32 groups round-trip bit for bit (doc, Quantize step 2), except that a
    # group mixing -0 and +0 is stored as the constant -0, so its +0 come back as -0.
    if dtype == torch.float32 and N * D > 0:
        split = ((sc_r & np.uint16(0x8000)) != 0)[:, np.arange(D) // G]
        xb = x_np.reshape(N, D).view(np.uint32)
        yb = out_bits(to_np(y_t)).reshape(N, D)
        zero_to_neg = (xb == 0) & (yb == 0x80000000)
        if np.any(split & (xb != yb) & ~zero_to_neg):
            stats.fail(what, "constant float32 group does not round-trip"); ok = False
        stats.plus_zero_to_minus_zero += int(np.count_nonzero(split & zero_to_neg))
    return ok


def is_nan_bits(a, dtype):
    """NaN mask of output bits of the given torch dtype."""
    if dtype == torch.float32:
        return (a & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    inf = 0x7C00 if dtype == torch.float16 else 0x7F80
    return (a & np.uint16(0x7FFF)) > np.uint16(inf)


def check_dequantize_random_fields(stats, device, rng, dtype, shape, bits, G, odd_fields=False):
    """Dequantize on arbitrary fields (not produced by Quantize): random codes, finite lo,
    positive scale of every magnitude; for bfloat16 metadata also split-form groups."""
    N, D, P = ref.geometry(shape, G)
    stats.cases += 1
    stats.values += N * D
    meta = torch.float16 if dtype == torch.float16 else torch.bfloat16
    codes = rng.integers(0, 256, size=(N, P * G * bits // 8), dtype=np.uint64).astype(np.uint8)
    if meta == torch.float16:
        lo = rng.integers(0, 0x10000, size=(N, P), dtype=np.uint64).astype(np.uint16)
        lo = np.where((lo & 0x7C00) == 0x7C00, lo & np.uint16(0xBBFF), lo).astype(np.uint16)
        sc = rng.integers(0, 0x7C00, size=(N, P), dtype=np.uint64).astype(np.uint16)
    else:
        lo = rng.integers(0, 0x10000, size=(N, P), dtype=np.uint64).astype(np.uint16)
        lo = np.where((lo & 0x7F80) == 0x7F80, lo & np.uint16(0xBF7F), lo).astype(np.uint16)
        sc = rng.integers(0, 0x7F80, size=(N, P), dtype=np.uint64).astype(np.uint16)
        split = rng.random((N, P)) < 0.2  # split form (bfloat16 metadata only)
        sc = np.where(split, sc | np.uint16(0x8000), sc).astype(np.uint16)
    zero = rng.random((N, P)) < 0.1
    sc = np.where(zero, np.uint16(0), sc).astype(np.uint16)
    if odd_fields:  # fields Quantize never writes: non-finite lo / scale, float16 negative scale
        specials = np.array([0x7C00, 0xFC00, 0x7E00, 0x8000] if meta == torch.float16 else
                            [0x7F80, 0xFF80, 0x7FC0, 0x8000], np.uint16)
        pick = rng.random((N, P)) < 0.2
        lo = np.where(pick, rng.choice(specials, size=(N, P)), lo).astype(np.uint16)
        pick = rng.random((N, P)) < 0.2
        sc = np.where(pick, rng.choice(specials, size=(N, P)), sc).astype(np.uint16)
        if meta == torch.float16:
            neg = rng.random((N, P)) < 0.2
            sc = np.where(neg, sc | np.uint16(0x8000), sc).astype(np.uint16)
    what = "dequantize(random%s fields) %s dev=%s shape=%s b=%d G=%d" % (
        " odd" if odd_fields else "", NAME[dtype], device, list(shape), bits, G)
    y_r = ref.dequantize(codes, lo, sc, shape, bits, G, TO[dtype])
    y_t = torch.ops.actnn.dequantize_groups(
        torch.from_numpy(codes.reshape(-1).copy()).to(device), from_np(lo, meta).to(device),
        from_np(sc, meta).to(device), [bits], list(shape), dtype, G)
    a, b = out_bits(y_r), out_bits(to_np(y_t))
    if odd_fields:
        # With fields Quantize never writes (a NaN `lo` combined with an infinite 1/S, ...) a
        # result can be a NaN computed from NaN operands; IEEE 754 leaves the sign and payload
        # of such a NaN open (x86 and numpy differ), and the doc only says "NaN stays NaN".
        both_nan = is_nan_bits(a, dtype) & is_nan_bits(b, dtype)
        stats.nan_payload_diffs += int(np.count_nonzero(both_nan & (a != b)))
        b = np.where(both_nan, a, b)
    if not np.array_equal(a, b):
        i = int(np.nonzero(a.reshape(-1) != b.reshape(-1))[0][0])
        n, j = divmod(i, D)
        q = int(ref.unpack(codes[n:n + 1], bits, D)[0, j])
        stats.fail(what, "%s (lo 0x%04x scale 0x%04x q %d)" % (first_diff(a, b), lo[n, j // G],
                                                               sc[n, j // G], q))


SHAPES = [(), (0,), (1,), (5,), (300,), (1000,), (0, 7), (3, 0), (2, 0, 4), (1, 1), (7, 33),
          (3, 5, 7), (5, 100), (1, 300), (4, 257), (2, 3, 129), (9, 64), (3, 512), (6, 2, 3, 50),
          (2, 640), (11, 1), (3, 255), (2, 1024), (1, 7, 7, 13), (17, 3)]
SEEDS = [0, 1, 12345, 0x123456789ABCDEF0, -1, 2 ** 63 - 1, 0xFFFFFFFF, 1 << 32]


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    torch.ops.load_library(sys.argv[1])
    rng = np.random.default_rng(20240607)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    stats = Stats()
    dtypes = [torch.float32, torch.float16, torch.bfloat16]
    for device in devices:
        for dtype in dtypes:
            for shape in SHAPES:
                for G in (32, 64, 96, 128, 256):
                    for bits in (1, 2, 4, 8):
                        for seed in rng.choice(SEEDS, size=2, replace=False):
                            x = make_input(rng, shape, G, dtype)
                            check_case(stats, device, x, dtype, shape, bits, G, int(seed))
                        if N_D_nonempty(shape):
                            check_dequantize_random_fields(stats, device, rng, dtype, shape, bits, G)
                            check_dequantize_random_fields(stats, device, rng, dtype, shape, bits, G,
                                                           odd_fields=True)
        # Groups [0, r, r, ...] whose (x - lo) * S rounds one ulp above qmax (lo = 0,
        # range = r, S = qmax / r rounded up to a bfloat16 value): at b = 8 adding u can then
        # reach 256, which Quantize's min(qmax, .) must clamp.
        for bits, r in ((2, 4.359654e-06), (4, 1.7112661e-05), (8, 0.00033834708)):
            x = np.full((64, 256), np.float32(r), np.float32)
            x[:, 0] = 0
            for seed in range(8):
                check_case(stats, device, x, torch.float32, x.shape, bits, 256, seed)
        # Same input, every seed: the seed is used and the codes differ between seeds.
        x = make_input(rng, (4, 300), 128, torch.float32)
        for seed in SEEDS:
            check_case(stats, device, x, torch.float32, (4, 300), 2, 128, seed)
    print("onnx_ops_conformance: %d cases, %d values compared on %s; %d mismatches"
          % (stats.cases, stats.values, "+".join(devices), len(stats.failures)))
    print("  (%d +0 values of constant groups mixing -0 and +0 came back as -0, as the doc says)"
          % stats.plus_zero_to_minus_zero)
    if stats.nan_payload_diffs:
        print("  (%d NaN results from fields Quantize never writes differ only in NaN sign/payload;"
              " not counted)" % stats.nan_payload_diffs)
    return 1 if stats.failures else 0


def N_D_nonempty(shape):
    N, D = ref.samples(shape)
    return N > 0 and D > 0


if __name__ == "__main__":
    sys.exit(main())
