#include "actnn/runtime/packed.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "checks.h"

namespace actnn {

PackedActivation::PackedActivation(at::Tensor codes_, at::Tensor lo_, at::Tensor scale_,
                                   std::vector<int64_t> shape_, int64_t dtype_,
                                   std::vector<int64_t> bits_, int64_t group_size_)
    : codes(std::move(codes_)),
      lo(std::move(lo_)),
      scale(std::move(scale_)),
      shape(std::move(shape_)),
      dtype(dtype_),
      bits(std::move(bits_)),
      group_size(group_size_) {}

int64_t PackedActivation::nbytes() const {
  return codes.nbytes() + lo.nbytes() + scale.nbytes();
}

int64_t PackedActivation::original_nbytes() const {
  int64_t n = 1;
  for (int64_t s : original_shape()) n *= s;
  return n * int64_t(c10::elementSize(original_type()));
}

c10::intrusive_ptr<PackedActivation> PackedActivation::withParts(at::Tensor codes_, at::Tensor lo_,
                                                                at::Tensor scale_) const {
  auto p = c10::make_intrusive<PackedActivation>(std::move(codes_), std::move(lo_), std::move(scale_), shape, dtype,
                                                 bits, group_size);
  p->seed = seed;
  p->offset = offset;
  p->dither = dither;
  p->restore_dtype = restore_dtype;
  p->lower_triangle_of = lower_triangle_of;
  return p;
}

PackedActivation::State PackedActivation::state() const {
  return State{codes, lo, scale, shape, dtype, bits, group_size, seed, offset, dither, restore_dtype,
               lower_triangle_of};
}

c10::intrusive_ptr<PackedActivation> PackedActivation::from_state(State s) {
  auto p = c10::make_intrusive<PackedActivation>(
      std::move(std::get<0>(s)), std::move(std::get<1>(s)), std::move(std::get<2>(s)),
      std::move(std::get<3>(s)), std::get<4>(s), std::move(std::get<5>(s)), std::get<6>(s));
  p->seed = std::get<7>(s);
  p->offset = std::get<8>(s);
  p->dither = std::get<9>(s);
  p->restore_dtype = std::get<10>(s);
  p->lower_triangle_of = std::move(std::get<11>(s));
  if (!p->lower_triangle_of.empty()) {
    const auto& full = p->lower_triangle_of;
    bool valid = full.size() >= 3 && full[full.size() - 1] == full[full.size() - 2] && p->shape.size() == 2 &&
                 p->shape[0] == full[0];
    if (valid) {
      const int64_t t = full.back();
      int64_t m = t * (t + 1) / 2;
      for (size_t i = 1; i + 2 < full.size(); ++i) m *= full[i];
      valid = m == p->shape[1];
    }
    TORCH_CHECK(valid, "actnn.PackedActivation: packed shape ", c10::IntArrayRef(p->shape),
                " does not hold the lower triangles of shape ", c10::IntArrayRef(full), " in serialized state");
  }
  TORCH_CHECK(p->restore_dtype == -1 || p->restore_dtype == int64_t(c10::ScalarType::Double),
              "actnn.PackedActivation: invalid restore dtype code ", p->restore_dtype, " in serialized state");
  TORCH_CHECK(p->dtype >= 0 && p->dtype < int64_t(c10::ScalarType::NumOptions),
              "actnn.PackedActivation: invalid dtype code ", p->dtype, " in serialized state");
  check_packed_parts("actnn.PackedActivation (loading)", *p);
  return p;
}

namespace {

// [T, T] on x's device: true on and below the diagonal.
at::Tensor lowerMask(int64_t t, const at::Device& device) {
  return at::ones({t, t}, at::TensorOptions().dtype(at::kBool).device(device)).tril();
}

}  // namespace

bool strictUpperTriangleIsZero(const at::Tensor& x) {
  if (x.dim() < 3 || x.size(-1) != x.size(-2) || x.size(-1) < 2 || x.numel() == 0) return false;
  const int64_t t = x.size(-1);
  if (x.select(-2, 0).narrow(-1, 1, t - 1).ne(0).any().item<bool>()) return false;
  return !x.masked_select(lowerMask(t, x.device()).logical_not()).ne(0).any().item<bool>();
}

at::Tensor packLowerTriangle(const at::Tensor& x) {
  return x.masked_select(lowerMask(x.size(-1), x.device())).view({x.size(0), -1});
}

at::Tensor unpackLowerTriangle(const at::Tensor& values, at::IntArrayRef shape) {
  return at::zeros(shape, values.options()).masked_scatter_(lowerMask(shape.back(), values.device()), values);
}

}  // namespace actnn
