#include "actnn/runtime/packed.h"

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
  for (int64_t s : shape) n *= s;
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
  return p;
}

PackedActivation::State PackedActivation::state() const {
  return State{codes, lo, scale, shape, dtype, bits, group_size, seed, offset, dither, restore_dtype};
}

c10::intrusive_ptr<PackedActivation> PackedActivation::from_state(State s) {
  auto p = c10::make_intrusive<PackedActivation>(
      std::move(std::get<0>(s)), std::move(std::get<1>(s)), std::move(std::get<2>(s)),
      std::move(std::get<3>(s)), std::get<4>(s), std::move(std::get<5>(s)), std::get<6>(s));
  p->seed = std::get<7>(s);
  p->offset = std::get<8>(s);
  p->dither = std::get<9>(s);
  p->restore_dtype = std::get<10>(s);
  TORCH_CHECK(p->restore_dtype == -1 || p->restore_dtype == int64_t(c10::ScalarType::Double),
              "actnn.PackedActivation: invalid restore dtype code ", p->restore_dtype, " in serialized state");
  TORCH_CHECK(p->dtype >= 0 && p->dtype < int64_t(c10::ScalarType::NumOptions),
              "actnn.PackedActivation: invalid dtype code ", p->dtype, " in serialized state");
  check_packed_parts("actnn.PackedActivation (loading)", *p);
  return p;
}

}  // namespace actnn
