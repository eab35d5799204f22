// Tests of the shared numeric header (quant_math.h) and the CUDA launch
// planning (launch.h): pure host code, no dispatcher.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "actnn/kernels/launch.h"
#include "actnn/kernels/quant_math.h"

namespace actnn {
namespace kernels {
namespace {

// Random123's tests/kat_vectors, the three "philox4x32 10" lines:
// counter (4 words), key (2 words), expected output (4 words).
TEST(Philox, MatchesRandom123KnownAnswers) {
  struct Kat {
    uint32_t ctr[4], key[2], out[4];
  };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& k : kats) {
    const Philox4 r = philox4x32_10(k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3], k.key[0], k.key[1]);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(r.v[i], k.out[i]) << "word " << i;
  }
}

TEST(Philox, BlockCounterLayout) {
  // philox_block puts the block index in the low counter words, the offset in
  // the high ones and the seed in the key.
  const uint64_t seed = 0x299f31d0a4093822ull, offset = 0x0370734413198a2eull,
                 k = 0x85a308d3243f6a88ull;
  const Philox4 r = philox_block(seed, offset, k);
  EXPECT_EQ(r.v[0], 0xd16cfe09u);
  EXPECT_EQ(r.v[3], 0x24126ea1u);
}

TEST(Philox, SixteenBitsPerValueInStreamOrder) {
  // Stream index e: half (e & 1) of word ((e >> 1) & 3) of block e >> 3.
  const Philox4 b{{0x11112222u, 0x33334444u, 0x55556666u, 0x77778888u}};
  const uint32_t expected[8] = {0x2222, 0x1111, 0x4444, 0x3333, 0x6666, 0x5555, 0x8888, 0x7777};
  for (uint64_t e = 0; e < 8; ++e) {
    EXPECT_EQ(random_bits16(b, e), expected[e]);
    EXPECT_EQ(random_bits16(b, 8 * 12345 + e), expected[e]);
  }
  EXPECT_EQ(uniform16(0), 0.0f);
  EXPECT_EQ(uniform16(0xffffu), 1.0f - std::ldexp(1.0f, -16));  // below 1, exact
  EXPECT_EQ(uniform16(0x8000u), 0.5f);
}

TEST(HalfConversions, EveryHalfMatchesC10) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float ours = half_to_float(uint16_t(h));
    const float ref = static_cast<float>(c10::Half(uint16_t(h), c10::Half::from_bits()));
    if (std::isnan(ref)) {
      EXPECT_TRUE(std::isnan(ours)) << h;
      continue;
    }
    ASSERT_EQ(float_bits(ours), float_bits(ref)) << "half bits " << h;
    // Every finite half round-trips through float exactly.
    ASSERT_EQ(float_to_half_rne(ours), uint16_t(h)) << "half bits " << h;
  }
}

TEST(HalfConversions, RoundToNearestEvenMatchesC10) {
  std::mt19937 rng(1);
  for (int i = 0; i < 2000000; ++i) {
    // Cover the whole float range, half's subnormals and overflow included.
    const float f = bits_float(rng());
    if (std::isnan(f)) continue;
    const uint16_t ref = c10::Half(f).x;
    ASSERT_EQ(float_to_half_rne(f), ref) << "float " << f << " bits " << float_bits(f);
  }
  EXPECT_EQ(float_to_half_rne(65520.0f), 0x7c00u);  // ties to infinity
  EXPECT_EQ(float_to_half_rne(65519.0f), 0x7bffu);
}

TEST(BFloat16Conversions, RoundToNearestEvenMatchesC10) {
  std::mt19937 rng(2);
  for (int i = 0; i < 2000000; ++i) {
    const float f = bits_float(rng());
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_bf16_rne(f), c10::BFloat16(f).x) << "float bits " << float_bits(f);
  }
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16_rne(std::nanf("")))));
}

// The next representable 16-bit value above `t` (bf16 or half share the
// sign-magnitude ordering).
uint16_t next_up(uint16_t t) {
  if (t == 0x8000u || t == 0) return 1;
  return (t & 0x8000u) ? uint16_t(t - 1) : uint16_t(t + 1);
}

TEST(BFloat16Conversions, DownAndTowardZeroAreTight) {
  std::mt19937 rng(3);
  for (int i = 0; i < 1000000; ++i) {
    const float f = bits_float(rng());
    if (!std::isfinite(f)) continue;
    // The largest bf16 not above f (a group's minimum).
    const uint16_t down = float_to_bf16_down(f);
    ASSERT_LE(bf16_to_float(down), f) << float_bits(f);
    ASSERT_GT(bf16_to_float(next_up(down)), f) << float_bits(f);
    // The largest finite value not above |f| (a group's scale).
    const float a = std::fabs(f);
    const uint16_t b = float_to_bf16_toward_zero_finite(a);
    ASSERT_LE(bf16_to_float(b), a);
    if (b != 0x7f7fu) {
      ASSERT_GT(bf16_to_float(next_up(b)), a);
    }
    const uint16_t h = float_to_half_toward_zero_finite(a);
    ASSERT_LE(half_to_float(h), a);
    if (h != 0x7bffu) {
      ASSERT_GT(half_to_float(next_up(h)), a) << float_bits(f);
    }
  }
}

TEST(TotalOrder, SignedZerosAreOrdered) {
  EXPECT_EQ(float_bits(min_total(0.0f, -0.0f)), 0x80000000u);
  EXPECT_EQ(float_bits(min_total(-0.0f, 0.0f)), 0x80000000u);
  EXPECT_EQ(float_bits(max_total(0.0f, -0.0f)), 0u);
  EXPECT_EQ(float_bits(max_total(-0.0f, 0.0f)), 0u);
  EXPECT_EQ(min_total(1.0f, 2.0f), 1.0f);
  EXPECT_EQ(max_total(1.0f, 2.0f), 2.0f);
}

TEST(EncodeGroup, ScaleKeepsEveryCodeInRange) {
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> d(-1000.0f, 1000.0f);
  for (int bits : {1, 2, 4, 8}) {
    for (int i = 0; i < 20000; ++i) {
      float a = d(rng), b = d(rng);
      if (a == b) continue;
      const float mn = std::min(a, b), mx = std::max(a, b);
      const GroupCode g = encode_group(mn, mx, true, bits, false, true);
      ASSERT_TRUE(g.stochastic);
      ASSERT_LE(g.lo, mn);
      // The largest value maps to at most 2^b - 1 before the random offset.
      ASSERT_LE(fmul(fsub(mx, g.lo), g.scale), float(max_code(bits)));
      // Worst-case u just below 1 still gives a valid code.
      ASSERT_LE(stochastic_code(mx, g, uniform16(0xffffu), max_code(bits)), max_code(bits));
    }
  }
}

TEST(EncodeGroup, ConstantFp32GroupsAreExact) {
  std::mt19937 rng(5);
  for (int i = 0; i < 200000; ++i) {
    const float c = bits_float(rng());
    if (!std::isfinite(c)) continue;
    const GroupCode g = encode_group(c, c, true, 2, false, true);
    ASSERT_FALSE(g.stochastic);
    const GroupDecode d = decode_group(g.lo_bits, g.scale_bits, false);
    ASSERT_EQ(float_bits(decode_value(g.fixed_code, d)), float_bits(c));
  }
}

TEST(EncodeGroup, NonFiniteAndOverflowingGroupsDecodeToNaN) {
  for (bool half : {false, true}) {
    const GroupCode g = encode_group(0.0f, 1.0f, /*finite=*/false, 4, half, !half);
    const GroupDecode d = decode_group(g.lo_bits, g.scale_bits, half);
    EXPECT_TRUE(std::isnan(decode_value(0, d)));
    EXPECT_TRUE(std::isnan(decode_value(15, d)));
  }
  // max - min overflows float: reported as NaN rather than as a wrong value.
  const GroupCode g = encode_group(-3e38f, 3e38f, true, 4, false, true);
  EXPECT_TRUE(std::isnan(decode_value(3, decode_group(g.lo_bits, g.scale_bits, false))));
}

TEST(BitStream, PackAndUnpackEveryWidth) {
  std::mt19937 rng(6);
  for (int w = 1; w <= 16; ++w) {
    for (int count = 1; count <= 8; ++count) {
      uint32_t v[8];
      for (int i = 0; i < count; ++i) v[i] = rng() & ((1u << w) - 1u);
      uint8_t out[17] = {};
      std::memset(out, 0xAB, sizeof out);
      pack8(v, count, w, out);
      const int nbytes = (count * w + 7) / 8;
      for (int i = 0; i < count; ++i) ASSERT_EQ(unpack_value(out, i, w), v[i]) << w << " " << i;
      EXPECT_EQ(out[nbytes], 0xAB) << "pack8 wrote past its run, w=" << w;
    }
  }
}

TEST(BitStream, IndexWidth) {
  EXPECT_EQ(index_width(1), 1);
  EXPECT_EQ(index_width(2), 1);
  EXPECT_EQ(index_width(3), 2);
  EXPECT_EQ(index_width(4), 2);
  EXPECT_EQ(index_width(9), 4);  // a 3x3 pooling window
  EXPECT_EQ(index_width(65536), 16);
}

TEST(LaunchPlan, MoreGroupsThanAGridDimensionHolds) {
  // 65535 blocks of 8 warps cover 524280 groups per pass; beyond that the
  // kernels loop (grid-stride) instead of asking for an impossible grid.
  const int64_t groups = kMaxBlocks * kWarpsPerBlock * 3 + 5;
  const LaunchPlan p = plan_groups(groups);
  EXPECT_EQ(p.blocks, kMaxBlocks);
  EXPECT_EQ(p.threads, 256);
  EXPECT_EQ(p.iterations, 4);
  EXPECT_GE(p.blocks * kWarpsPerBlock * p.iterations, groups);
  const LaunchPlan small = plan_groups(9);
  EXPECT_EQ(small.blocks, 2);
  EXPECT_EQ(small.iterations, 1);
  const LaunchPlan e = plan_elementwise(int64_t(1) << 40);
  EXPECT_EQ(e.blocks, kMaxBlocks);
  EXPECT_GE(e.blocks * 256 * e.iterations, int64_t(1) << 40);
  EXPECT_EQ(plan_groups(0).blocks, 1);
}

}  // namespace
}  // namespace kernels
}  // namespace actnn
