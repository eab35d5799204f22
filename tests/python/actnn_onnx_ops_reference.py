"""Reference implementation of the com.actnn::Quantize / com.actnn::Dequantize ONNX ops.

Written from docs/onnx-actnn-ops.md alone (not from actnn's kernels), in numpy, so that
tests/python/onnx_ops_conformance.py can check the doc's claim that actnn's kernels are a
conforming, bit-exact implementation when the `seed` attribute is set.

Conventions:
  * float32 inputs are numpy float32 arrays, float16 inputs numpy float16 arrays, bfloat16
    inputs are numpy uint16 arrays holding the bfloat16 bits (pass dtype="bfloat16").
  * `lo` and `scale` are returned as uint16 arrays of bits (bfloat16 or float16 bits).
  * All arithmetic is numpy float32 (IEEE binary32, round-to-nearest-even, one rounding per
    operation; numpy never fuses a multiply and an add).
"""
import numpy as np

U32 = np.uint32
U64 = np.uint64
MASK32 = np.uint64(0xFFFFFFFF)

BF16_QNAN = 0x7FC0
F16_QNAN = 0x7E00
BF16_MAX = 0x7F7F
F16_MAX = 0x7BFF


# --------------------------------------------------------------------------------------
# Bit helpers
# --------------------------------------------------------------------------------------

def f32_bits(x):
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def bits_f32(b):
    return np.ascontiguousarray(b, dtype=np.uint32).view(np.float32)


def bf16_to_f32(b):
    """bfloat16 bits -> float32 (exact)."""
    return bits_f32(np.asarray(b, dtype=np.uint32) << U32(16))


def f16_bits_to_f32(b):
    return np.ascontiguousarray(b, dtype=np.uint16).view(np.float16).astype(np.float32)


def f32_to_bf16_down(x):
    """Largest bfloat16 <= x (x finite or infinite, not NaN)."""
    u = f32_bits(x)
    t = (u >> U32(16)).astype(np.uint32)
    inexact = (u & U32(0xFFFF)) != 0
    negative = (u & U32(0x80000000)) != 0
    # Truncation rounds toward zero: down for positives, up for negatives. For a negative
    # inexact value step one ulp away from zero (may reach -inf = 0xff80).
    t = np.where(inexact & negative, t + U32(1), t)
    return t.astype(np.uint16)


def f32_to_bf16_toward_zero_sat(x):
    """Positive float32 (possibly +inf) -> bfloat16 toward zero, saturating at 0x7f7f,
    +0 replaced by the smallest subnormal 0x0001."""
    t = (f32_bits(x) >> U32(16)).astype(np.uint32)
    t = np.where(t >= U32(0x7F80), U32(BF16_MAX), t)
    t = np.where(t == 0, U32(1), t)
    return t.astype(np.uint16)


def f32_to_f16_toward_zero_sat(x):
    """Positive float32 (possibly +inf) -> float16 toward zero, saturating at 0x7bff,
    +0 replaced by the smallest subnormal 0x0001."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        h = x.astype(np.float16)  # round to nearest even
    hb = h.view(np.uint16).astype(np.int32)
    # Nearest rounded up (or to +inf): step one ulp back toward zero.
    hb = np.where(h.astype(np.float32) > x, hb - 1, hb)
    hb = np.where(hb >= 0x7C00, F16_MAX, hb)
    hb = np.where(hb == 0, 1, hb)
    return hb.astype(np.uint16)


def f32_to_bf16_rne(x):
    """float32 -> bfloat16 bits, round to nearest even, NaN stays (quiet) NaN."""
    u = f32_bits(x).astype(np.uint64)
    rounded = ((u + U64(0x7FFF) + ((u >> U64(16)) & U64(1))) >> U64(16)).astype(np.uint16)
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    quiet = ((u >> U64(16)) | U64(0x0040)).astype(np.uint16)
    return np.where(nan, quiet, rounded)


# --------------------------------------------------------------------------------------
# Philox4x32-10
# --------------------------------------------------------------------------------------

PHILOX_M0 = U64(0xD2511F53)
PHILOX_M1 = U64(0xCD9E8D57)
PHILOX_W0 = U64(0x9E3779B9)
PHILOX_W1 = U64(0xBB67AE85)


def _mulhilo(a, m):
    p = a.astype(np.uint64) * m
    return (p >> U64(32)), (p & MASK32)


def philox4x32_10(c0, c1, c2, c3, seed):
    """Vectorised Philox4x32-10 on counter words (uint64 arrays holding 32-bit values),
    keyed by the 64-bit seed (key words: low, high 32 bits). Returns 4 words."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    k0 = U64(seed & 0xFFFFFFFF)
    k1 = U64(seed >> 32)
    c = [np.asarray(w, dtype=np.uint64) & MASK32 for w in (c0, c1, c2, c3)]
    for rnd in range(10):
        if rnd > 0:
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        hi0, lo0 = _mulhilo(c[0], PHILOX_M0)
        hi1, lo1 = _mulhilo(c[2], PHILOX_M1)
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
    return c


def philox_k16(e, seed):
    """The 16-bit noise integer k of stream index e (int64 array)."""
    e = np.asarray(e, dtype=np.uint64)
    block = e >> U64(3)
    words = philox4x32_10(block & MASK32, block >> U64(32), np.zeros_like(block),
                          np.zeros_like(block), seed)
    word_idx = (e >> U64(1)) & U64(3)
    w = np.choose(word_idx.astype(np.int64), words)
    half = e & U64(1)
    return ((w >> (U64(16) * half)) & U64(0xFFFF)).astype(np.uint32)


# --------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------

def samples(shape):
    shape = tuple(int(d) for d in shape)
    if len(shape) >= 2:
        n = shape[0]
        d = int(np.prod(shape[1:], dtype=np.int64))
    else:
        n = 1
        d = int(np.prod(shape, dtype=np.int64))
    return n, d


def geometry(shape, group_size):
    n, d = samples(shape)
    p = -(-d // group_size)
    return n, d, p


# --------------------------------------------------------------------------------------
# Quantize
# --------------------------------------------------------------------------------------

def quantize(x, bits, group_size=256, seed=None, dtype=None, noise_k=None):
    """com.actnn::Quantize. Returns (codes uint8 [N, P*G*b/8], lo uint16 bits [N, P],
    scale uint16 bits [N, P], shape int64 [r]).

    dtype: "float32", "float16" or "bfloat16" (default: from x; bfloat16 needs uint16 bits).
    seed: int (the `seed` attribute) or None; without a seed, noise_k may give the 16-bit
    integers (shape [N, P*G]); otherwise numpy's global generator is used.
    """
    assert bits in (1, 2, 4, 8)
    assert group_size > 0 and group_size % 32 == 0
    x = np.asarray(x)
    if dtype is None:
        dtype = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16"}[x.dtype]
    shape = np.array(x.shape, dtype=np.int64)
    G, b = group_size, bits
    qmax = np.float32(2 ** b - 1)
    N, D, P = geometry(x.shape, G)
    row_bytes = P * G * b // 8
    if N == 0 or P == 0:
        return (np.zeros((N, row_bytes), np.uint8), np.zeros((N, P), np.uint16),
                np.zeros((N, P), np.uint16), shape)

    # Exact conversion to binary32.
    if dtype == "float32":
        xf = x.astype(np.float32)
    elif dtype == "float16":
        xf = x.astype(np.float16).astype(np.float32)
    elif dtype == "bfloat16":
        xf = bf16_to_f32(x.astype(np.uint16))
    else:
        raise ValueError(dtype)
    meta_f16 = dtype == "float16"

    # [N, P, G] with padding; valid marks non-padding positions.
    flat = np.zeros((N, P * G), np.float32)
    flat[:, :D] = xf.reshape(N, D)
    valid = np.zeros((N, P * G), bool)
    valid[:, :D] = True
    v = flat.reshape(N, P, G)
    valid = valid.reshape(N, P, G)

    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        finite = np.all(np.isfinite(v) | ~valid, axis=2)
        vv = np.where(valid & np.isfinite(v), v, np.float32(np.inf))
        mn = vv.min(axis=2)
        vv = np.where(valid & np.isfinite(v), v, np.float32(-np.inf))
        mx = vv.max(axis=2)
        # Total order with -0 < +0: a group whose minimum is zero and that holds a -0 has
        # minimum -0 (the max's zero sign does not matter below).
        has_neg_zero = np.any(valid & (v == 0) & np.signbit(v), axis=2)
        mn = np.where((mn == 0) & has_neg_zero, np.float32(-0.0), mn).astype(np.float32)
        constant = finite & (mn == mx)
        normal = finite & ~constant

        lo = np.zeros((N, P), np.uint16)
        scale = np.zeros((N, P), np.uint16)
        codes = np.zeros((N, P, G), np.uint32)

        # --- normal groups ---
        if meta_f16:
            lo_n = mn.astype(np.float16).view(np.uint16)  # exact
            lo_f = lo_n.view(np.float16).astype(np.float32)
        elif dtype == "bfloat16":
            lo_n = (f32_bits(mn) >> U32(16)).astype(np.uint16)  # exact
            lo_f = bf16_to_f32(lo_n)
        else:
            lo_n = f32_to_bf16_down(mn)
            lo_f = bf16_to_f32(lo_n)
        rng = (mx - lo_f).astype(np.float32)
        too_wide = ~np.isfinite(lo_f) | ~np.isfinite(rng)
        nonfinite = ~finite | (normal & too_wide)
        normal = normal & ~too_wide
        s = (qmax / np.where(normal, rng, np.float32(1))).astype(np.float32)
        scale_n = f32_to_f16_toward_zero_sat(s) if meta_f16 else f32_to_bf16_toward_zero_sat(s)
        S = f16_bits_to_f32(scale_n) if meta_f16 else bf16_to_f32(scale_n)

        if seed is not None:
            e = (np.arange(N, dtype=np.int64)[:, None] * (P * G)
                 + np.arange(P * G, dtype=np.int64)[None, :])
            k = philox_k16(e, seed)
        elif noise_k is not None:
            k = np.asarray(noise_k, dtype=np.uint32)
        else:
            k = np.random.randint(0, 1 << 16, size=(N, P * G)).astype(np.uint32)
        u = (k.astype(np.float32) * np.float32(2.0 ** -16)).reshape(N, P, G)

        t = ((v - lo_f[:, :, None]) * S[:, :, None]).astype(np.float32)
        t = (t + u).astype(np.float32)
        q = np.minimum(qmax, np.floor(t))
        q = np.where(normal[:, :, None] & valid, q, 0).astype(np.uint32)
        codes = np.where(normal[:, :, None], q, codes)
        lo = np.where(normal, lo_n, lo)
        scale = np.where(normal, scale_n, scale)

        # --- constant groups ---
        if dtype == "float32":
            c = f32_bits(mn)
            lo_c = (c >> U32(16)).astype(np.uint16)
            scale_c = (U32(0x8000) | ((c >> U32(1)) & U32(0x7FFF))).astype(np.uint16)
            code_c = np.where(valid, (c & U32(1))[:, :, None], U32(0))
        else:
            lo_c = mn.astype(np.float16).view(np.uint16) if meta_f16 else \
                (f32_bits(mn) >> U32(16)).astype(np.uint16)
            scale_c = np.zeros_like(lo_c)
            code_c = np.zeros((N, P, G), np.uint32)
        lo = np.where(constant, lo_c, lo)
        scale = np.where(constant, scale_c, scale)
        codes = np.where(constant[:, :, None], code_c, codes)

        # --- non-finite groups ---
        lo = np.where(nonfinite, np.uint16(F16_QNAN if meta_f16 else BF16_QNAN), lo)
        scale = np.where(nonfinite, np.uint16(0), scale)
        codes = np.where(nonfinite[:, :, None], U32(0), codes)

    return pack(codes.reshape(N, P * G), b), lo.astype(np.uint16), scale.astype(np.uint16), shape


def pack(codes, bits):
    """[N, P*G] codes (< 2**bits) -> [N, P*G*bits/8] bytes, least significant bits first."""
    N, L = codes.shape
    per_byte = 8 // bits
    c = codes.astype(np.uint32).reshape(N, L // per_byte, per_byte)
    shifts = (np.arange(per_byte, dtype=np.uint32) * U32(bits))[None, None, :]
    return np.bitwise_or.reduce(c << shifts, axis=2).astype(np.uint8)


def unpack(codes, bits, count):
    """[N, bytes] -> [N, count] codes."""
    codes = np.asarray(codes, dtype=np.uint8)
    j = np.arange(count, dtype=np.int64)
    bit = j * bits
    byte = codes[:, bit // 8].astype(np.uint32)
    return (byte >> (bit % 8).astype(np.uint32)) & U32((1 << bits) - 1)


# --------------------------------------------------------------------------------------
# Dequantize
# --------------------------------------------------------------------------------------

def dequantize(codes, lo, scale, shape, bits, group_size=256, to=1):
    """com.actnn::Dequantize. `to`: 1 (float32), 10 (float16) or 16 (bfloat16).
    Returns Y: float32 / float16 array, or uint16 bfloat16 bits for to=16."""
    shape = tuple(int(d) for d in shape)
    G, b = group_size, bits
    N, D, P = geometry(shape, G)
    out_dtype = {1: np.float32, 10: np.float16, 16: np.uint16}[to]
    if N == 0 or D == 0:
        return np.zeros(shape, out_dtype)
    codes = np.asarray(codes, np.uint8).reshape(N, P * G * b // 8)
    lo = np.asarray(lo, np.uint16).reshape(N, P)
    scale = np.asarray(scale, np.uint16).reshape(N, P)
    meta_f16 = to == 10

    q = unpack(codes, b, D)                                   # [N, D] uint32
    g = np.arange(D) // G
    lo_b = lo[:, g].astype(np.uint32)                         # [N, D] bits
    sc_b = scale[:, g].astype(np.uint32)
    to_f32 = f16_bits_to_f32 if meta_f16 else bf16_to_f32
    lo_f = to_f32(lo_b.astype(np.uint16))
    S = to_f32(sc_b.astype(np.uint16))

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = (np.float32(1) / S).astype(np.float32)
        y = (q.astype(np.float32) * inv).astype(np.float32)
        y = (y + lo_f).astype(np.float32)
        y = np.where(sc_b == 0, lo_f, y)
        if not meta_f16:
            split = bits_f32((lo_b << U32(16)) | ((sc_b & U32(0x7FFF)) << U32(1)) | (q & U32(1)))
            y = np.where((sc_b & U32(0x8000)) != 0, split, y)
        y = y.astype(np.float32)

        if to == 1:
            out = y
        elif to == 10:
            out = y.astype(np.float16)
        else:
            out = f32_to_bf16_rne(y)
    return out.reshape(shape)
