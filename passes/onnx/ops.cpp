// ONNX op -> ATen lowerings, one function per op, listed in opTable() at the
// bottom. Each reads its operands, attributes and (where the ATen op needs
// them) static shapes through NodeContext and emits ATen ops that the
// autodiff rules know, so an imported model trains like a scripted one.
//
// Conventions: axes are normalized against the operand's rank; ONNX padding
// lists [x1_begin, x2_begin, ..., x1_end, x2_end, ...] are symmetric padding
// for the ATen op when begin == end, and an explicit constant_pad_nd before it
// otherwise (with -inf for max pooling). Opset differences (attributes that
// became inputs in opsets 10, 11 and 13) are handled where they occur.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <ATen/ATen.h>

#include <torch/csrc/jit/ir/constants.h>

#include "actnn/passes/onnx_import.h"
#include "context.h"

namespace actnn {
namespace onnx {
namespace {

namespace aten = c10::aten;

int64_t normAxis(NodeContext& c, int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= rank)
    c.fail("axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
  return axis < 0 ? axis + rank : axis;
}

int64_t rankOf(NodeContext& c, size_t i, const std::string& what) {
  return static_cast<int64_t>(c.shapeOf(i, what).size());
}

bool isFloating(at::ScalarType t) { return at::isFloatingType(t); }

// ------------------------------------------------------------ pointwise

void unary(NodeContext& c, c10::Symbol kind) { c.setOutput(0, c.op(kind, {c.input(0)})); }

void binary(NodeContext& c, c10::Symbol kind) {
  Value* a = c.input(0);
  Value* b = c.input(1);
  if (kind == aten::div && !isFloating(c.dtypeOf(0))) {
    c.setOutput(0, c.op(aten::div, {a, b}, {NamedValue("rounding_mode", std::string("trunc"))}));
    return;
  }
  c.setOutput(0, c.op(kind, {a, b}));
}

void leakyRelu(NodeContext& c) { c.setOutput(0, c.op(aten::leaky_relu, {c.input(0), c.attrFloat("alpha", 0.01)})); }

void hardSigmoid(NodeContext& c) {
  const double alpha = c.attrFloat("alpha", 0.2), beta = c.attrFloat("beta", 0.5);
  if (std::abs(alpha - 1.0 / 6.0) < 1e-7 && beta == 0.5) {
    c.setOutput(0, c.op(aten::hardsigmoid, {c.input(0)}));
    return;
  }
  Value* y = c.op(aten::add, {c.op(aten::mul, {c.input(0), alpha}), beta});
  c.setOutput(0, c.op(aten::hardtanh, {y, 0.0, 1.0}));
}

void clip(NodeContext& c) {
  const double inf = std::numeric_limits<double>::infinity();
  double lo = -inf, hi = inf;
  if (c.opset() < 11) {
    lo = c.attrFloat("min", -inf);
    hi = c.attrFloat("max", inf);
  } else {
    if (c.hasInput(1)) lo = c.constantScalar(1, "Clip's min");
    if (c.hasInput(2)) hi = c.constantScalar(2, "Clip's max");
  }
  if (isFloating(c.dtypeOf(0))) {
    c.setOutput(0, c.op(aten::hardtanh, {c.input(0), lo, hi}));
    return;
  }
  // Integer clip (opset 12+): not differentiable; bounds read as integers
  // (through double, INT64_MAX would not survive).
  auto bound = [&](size_t i, const char* what) -> c10::IValue {
    if (!c.hasInput(i)) return c10::IValue();
    return c10::IValue(c.requireConstant(i, what).to(at::kLong).item<int64_t>());
  };
  c10::IValue min = bound(1, "Clip's min"), max = bound(2, "Clip's max");
  if (min.isNone() && max.isNone()) {
    c.setOutput(0, c.input(0));
    return;
  }
  c.setOutput(0, c.op(aten::clamp, {c.input(0), c.constant(min), c.constant(max)}));
}

void softmaxLike(NodeContext& c, c10::Symbol kind) {
  Value* x = c.input(0);
  const int64_t def = c.opset() < 13 ? 1 : -1;
  int64_t axis = c.attrInt("axis", def);
  if (c.opset() >= 13) {
    c.setOutput(0, c.op(kind, {x, axis, c.constant(c10::IValue())}));
    return;
  }
  // Opsets < 13 coerce the input to 2-D [prod(dims < axis), prod(dims >= axis)].
  Shape shape = c.shapeOf(0, "Softmax before opset 13 flattens at its axis");
  const int64_t rank = static_cast<int64_t>(shape.size());
  axis = normAxis(c, axis, rank);
  if (axis == rank - 1) {
    c.setOutput(0, c.op(kind, {x, int64_t{-1}, c.constant(c10::IValue())}));
    return;
  }
  int64_t outer = 1;
  for (int64_t i = 0; i < axis; ++i) outer *= shape[i];
  Value* flat = c.op(aten::reshape, {x, std::vector<int64_t>{outer, -1}});
  Value* y = c.op(kind, {flat, int64_t{1}, c.constant(c10::IValue())});
  c.setOutput(0, c.op(aten::reshape, {y, shape}));
}

void pow(NodeContext& c) {
  // A constant exponent (x^2 of a decomposed layer norm); a tensor one is
  // not differentiable by our rules.
  auto e = c.constantInput(1);
  if (!e || e->numel() != 1) c.unsupported("Pow with a non-constant or non-scalar exponent is not supported");
  const at::ScalarType t = c.dtypeOf(0);
  Value* y = isFloating(e->scalar_type()) ? c.op(aten::pow, {c.input(0), e->item<double>()})
                                          : c.op(aten::pow, {c.input(0), e->item<int64_t>()});
  if (!isFloating(t)) y = c.op(aten::to, {y, static_cast<int64_t>(t), false, false});
  c.setOutput(0, y);
}

void where(NodeContext& c) { c.setOutput(0, c.op(aten::where, {c.input(0), c.input(1), c.input(2)})); }

// ------------------------------------------------------------ linear algebra

void gemm(NodeContext& c) {
  const double alpha = c.attrFloat("alpha", 1.0), beta = c.attrFloat("beta", 1.0);
  const bool trans_a = c.attrInt("transA", 0) != 0, trans_b = c.attrInt("transB", 0) != 0;
  Value* a = c.input(0);
  Value* b = c.input(1);
  const bool has_c = c.hasInput(2);
  // aten::linear's bias is a vector of the output features (its derivative
  // rule sums to [N]); any other C broadcast goes through mm + add.
  bool vector_c = !has_c;
  if (has_c) {
    auto cs = c.maybeShapeOf(2);
    auto bs = c.maybeShapeOf(1);
    vector_c = cs && bs && cs->size() == 1 && bs->size() == 2 && (*cs)[0] == (*bs)[0];
  }
  if (alpha == 1.0 && (beta == 1.0 || !has_c) && !trans_a && trans_b && vector_c) {
    c.setOutput(0, c.op(aten::linear, {a, b, has_c ? c.input(2) : c.constant(c10::IValue())}));
    return;
  }
  if (trans_a) a = c.op(aten::t, {a});
  if (trans_b) b = c.op(aten::t, {b});
  Value* y = c.op(aten::mm, {a, b});
  const bool integral = !isFloating(c.dtypeOf(0));
  auto scaled = [&](Value* v, double factor) {
    if (factor == 1.0) return v;
    if (integral && factor != std::floor(factor)) c.unsupported("Gemm on integers with a fractional alpha or beta");
    return integral ? c.op(aten::mul, {v, static_cast<int64_t>(factor)}) : c.op(aten::mul, {v, factor});
  };
  y = scaled(y, alpha);
  if (has_c) {
    Value* bias = scaled(c.input(2), beta);
    y = c.op(aten::add, {y, bias});
  }
  c.setOutput(0, y);
}

// ------------------------------------------------------------ convolution and pooling

struct Window {
  std::vector<int64_t> kernel, strides, dilations, begin, end;
};

// Kernel, strides, dilations and padding of a conv/pool node over
// `spatial` dimensions, auto_pad resolved against the input's static shape.
Window window(NodeContext& c, int64_t spatial, std::vector<int64_t> kernel) {
  Window w;
  w.kernel = std::move(kernel);
  w.strides = c.attrInts("strides", std::vector<int64_t>(spatial, 1));
  w.dilations = c.attrInts("dilations", std::vector<int64_t>(spatial, 1));
  if (static_cast<int64_t>(w.kernel.size()) != spatial || static_cast<int64_t>(w.strides.size()) != spatial ||
      static_cast<int64_t>(w.dilations.size()) != spatial)
    c.fail("kernel_shape, strides and dilations must have " + std::to_string(spatial) + " entries");
  const std::string auto_pad = c.attrString("auto_pad", "NOTSET");
  if (auto_pad == "NOTSET") {
    auto pads = c.attrInts("pads", std::vector<int64_t>(2 * spatial, 0));
    if (static_cast<int64_t>(pads.size()) != 2 * spatial)
      c.fail("pads must have " + std::to_string(2 * spatial) + " entries");
    w.begin.assign(pads.begin(), pads.begin() + spatial);
    w.end.assign(pads.begin() + spatial, pads.end());
  } else if (auto_pad == "VALID") {
    w.begin.assign(spatial, 0);
    w.end.assign(spatial, 0);
  } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    Shape shape = c.shapeOf(0, "auto_pad " + auto_pad + " pads from the input size");
    for (int64_t i = 0; i < spatial; ++i) {
      const int64_t in = shape[2 + i], s = w.strides[i];
      const int64_t out = (in + s - 1) / s;
      const int64_t total = std::max<int64_t>((out - 1) * s + (w.kernel[i] - 1) * w.dilations[i] + 1 - in, 0);
      const int64_t small = total / 2, large = total - small;
      w.begin.push_back(auto_pad == "SAME_UPPER" ? small : large);
      w.end.push_back(auto_pad == "SAME_UPPER" ? large : small);
    }
  } else {
    c.fail("auto_pad '" + auto_pad + "' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID");
  }
  return w;
}

// Makes the padding symmetric: the excess of end over begin (or begin over
// end) is padded explicitly with `value`; returns the symmetric widths. Pools
// (`pool`) pad explicitly also where ATen's limit of half the kernel would be
// exceeded.
std::vector<int64_t> symmetricPadding(NodeContext& c, Value*& x, const Window& w, double value, bool pool = false) {
  const size_t spatial = w.begin.size();
  std::vector<int64_t> sym(spatial), extra;  // extra: ATen order, last dim first
  bool explicit_pad = false;
  for (size_t i = 0; i < spatial; ++i) {
    sym[i] = std::min(w.begin[i], w.end[i]);
    if (pool && sym[i] > w.kernel[i] / 2) sym[i] = 0;
  }
  for (size_t k = spatial; k-- > 0;) {
    extra.push_back(w.begin[k] - sym[k]);
    extra.push_back(w.end[k] - sym[k]);
    explicit_pad = explicit_pad || extra[extra.size() - 2] != 0 || extra.back() != 0;
  }
  if (explicit_pad) x = c.op(aten::constant_pad_nd, {x, extra, value});
  return sym;
}

// With ceil_mode, ATen drops a last window that would start in the end
// padding; ONNX before opset 19 keeps it. Pools whose output size would differ
// are refused rather than computed with a different shape than the model's.
void checkCeilMode(NodeContext& c, const Window& w, const std::vector<int64_t>& sym) {
  const Shape in = c.shapeOf(0, "pooling with ceil_mode compares ONNX's output size with ATen's");
  for (size_t i = 0; i < w.kernel.size(); ++i) {
    const int64_t size = in[2 + i], s = w.strides[i], eff = (w.kernel[i] - 1) * w.dilations[i] + 1;
    const int64_t padded_in = size + (w.begin[i] - sym[i]) + (w.end[i] - sym[i]);
    const int64_t onnx = (size + w.begin[i] + w.end[i] - eff + s - 1) / s + 1;
    int64_t aten_size = (padded_in + 2 * sym[i] - eff + s - 1) / s + 1;
    if ((aten_size - 1) * s >= padded_in + sym[i]) --aten_size;
    if (onnx != aten_size)
      c.unsupported("ceil_mode: ONNX gives " + std::to_string(onnx) + " outputs along spatial axis " +
                    std::to_string(i) + ", ATen's pooling " + std::to_string(aten_size) +
                    " (it drops a window that starts in the padding)");
  }
}

void conv(NodeContext& c) {
  Value* x = c.input(0);
  Shape wshape = c.shapeOf(1, "Conv's kernel size comes from the weight");
  const int64_t spatial = static_cast<int64_t>(wshape.size()) - 2;
  if (spatial < 1 || spatial > 3) c.unsupported("only 1-d, 2-d and 3-d convolutions are supported");
  Window w = window(c, spatial, c.attrInts("kernel_shape", Shape(wshape.begin() + 2, wshape.end())));
  auto padding = symmetricPadding(c, x, w, 0.0);
  Value* bias = c.hasInput(2) ? c.input(2) : c.constant(c10::IValue());
  c.setOutput(0, c.op(aten::convolution, {x, c.input(1), bias, w.strides, padding, w.dilations, false,
                                          std::vector<int64_t>(spatial, 0), c.attrInt("group", 1)}));
}

int64_t floorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

void convTranspose(NodeContext& c) {
  Shape wshape = c.shapeOf(1, "ConvTranspose's kernel size comes from the weight");
  const int64_t spatial = static_cast<int64_t>(wshape.size()) - 2;
  if (spatial < 1 || spatial > 3) c.unsupported("only 1-d, 2-d and 3-d transposed convolutions are supported");
  auto sized = [&](const char* name, std::vector<int64_t> v, int64_t n) {
    if (static_cast<int64_t>(v.size()) != n) c.fail(std::string(name) + " must have " + std::to_string(n) + " entries");
    return v;
  };
  const Shape kernel = sized("kernel_shape", c.attrInts("kernel_shape", Shape(wshape.begin() + 2, wshape.end())), spatial);
  const auto strides = sized("strides", c.attrInts("strides", std::vector<int64_t>(spatial, 1)), spatial);
  const auto dilations = sized("dilations", c.attrInts("dilations", std::vector<int64_t>(spatial, 1)), spatial);
  const auto output_padding =
      sized("output_padding", c.attrInts("output_padding", std::vector<int64_t>(spatial, 0)), spatial);
  const std::string auto_pad = c.attrString("auto_pad", "NOTSET");
  if (auto_pad != "NOTSET" && auto_pad != "VALID" && auto_pad != "SAME_UPPER" && auto_pad != "SAME_LOWER")
    c.fail("auto_pad '" + auto_pad + "' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID");
  // ONNX's padding: cropped from the full result (negative: zeros added).
  std::vector<int64_t> begin(spatial, 0), end(spatial, 0);
  if (c.hasAttr("output_shape") || auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    Shape in = c.shapeOf(0, "ConvTranspose with output_shape or auto_pad SAME pads from the input size");
    Shape out = c.attrInts("output_shape");
    if (out.empty())
      for (int64_t i = 0; i < spatial; ++i) out.push_back(in[2 + i] * strides[i]);
    if (static_cast<int64_t>(out.size()) == spatial + 2) out.erase(out.begin(), out.begin() + 2);
    out = sized("output_shape", out, spatial);
    for (int64_t i = 0; i < spatial; ++i) {
      const int64_t total = strides[i] * (in[2 + i] - 1) + output_padding[i] +
                            ((kernel[i] - 1) * dilations[i] + 1) - out[i];
      // Only SAME_UPPER puts the larger half at the end.
      end[i] = auto_pad == "SAME_UPPER" ? total - floorDiv(total, 2) : floorDiv(total, 2);
      begin[i] = total - end[i];
    }
  } else if (auto_pad == "NOTSET") {
    auto pads = sized("pads", c.attrInts("pads", std::vector<int64_t>(2 * spatial, 0)), 2 * spatial);
    begin.assign(pads.begin(), pads.begin() + spatial);
    end.assign(pads.begin() + spatial, pads.end());
  }
  const int64_t group = c.attrInt("group", 1);
  Value* none = c.constant(c10::IValue());
  // ATen's transposed convolution crops the same `padding` from both sides
  // and adds output_padding (< stride or dilation) at the end.
  bool aten_form = true;
  for (int64_t i = 0; i < spatial; ++i)
    aten_form = aten_form && begin[i] == end[i] && begin[i] >= 0 &&
                (output_padding[i] < strides[i] || output_padding[i] < dilations[i]);
  if (aten_form) {
    c.setOutput(0, c.op(aten::convolution, {c.input(0), c.input(1), c.hasInput(2) ? c.input(2) : none, strides, begin,
                                            dilations, true, output_padding, group}));
    return;
  }
  // Otherwise: the full result, then crop / zero-pad each side, then the bias.
  Value* y = c.op(aten::convolution, {c.input(0), c.input(1), none, strides, std::vector<int64_t>(spatial, 0),
                                      dilations, true, std::vector<int64_t>(spatial, 0), group});
  std::vector<int64_t> widths;  // ATen order: last dimension first
  for (int64_t k = spatial; k-- > 0;) {
    widths.push_back(-begin[k]);
    widths.push_back(output_padding[k] - end[k]);
  }
  y = c.op(aten::constant_pad_nd, {y, widths, 0.0});
  if (c.hasInput(2)) {
    std::vector<int64_t> bias_shape(spatial + 1, 1);
    bias_shape[0] = -1;
    y = c.op(aten::add, {y, c.op(aten::reshape, {c.input(2), bias_shape})});
  }
  c.setOutput(0, y);
}

void maxPool(NodeContext& c) {
  if (c.outputUsed(1)) c.unsupported("MaxPool's Indices output is not supported");
  if (c.attrInt("storage_order", 0) != 0) c.unsupported("MaxPool storage_order=1 is not supported");
  Shape kernel = c.attrInts("kernel_shape");
  const int64_t spatial = static_cast<int64_t>(kernel.size());
  if (spatial < 1 || spatial > 3) c.unsupported("only 1-d, 2-d and 3-d max pooling is supported");
  Window w = window(c, spatial, kernel);
  Value* x = c.input(0);
  const at::ScalarType dtype = c.dtypeOf(0);
  const bool integral = !isFloating(dtype);
  // ATen's CPU max pooling has no 8-bit kernels; 8- and 16-bit integers are
  // exact in float.
  if (integral) x = c.op(aten::to, {x, static_cast<int64_t>(at::kFloat), false, false});
  auto padding = symmetricPadding(c, x, w, -std::numeric_limits<double>::infinity(), /*pool=*/true);
  if (c.attrInt("ceil_mode", 0) != 0) checkCeilMode(c, w, padding);
  static const c10::Symbol kinds[] = {aten::max_pool1d, aten::max_pool2d, aten::max_pool3d};
  Value* y = c.op(kinds[spatial - 1], {x, w.kernel, w.strides, padding, w.dilations, c.attrInt("ceil_mode", 0) != 0});
  if (integral) y = c.op(aten::to, {y, static_cast<int64_t>(dtype), false, false});
  c.setOutput(0, y);
}

void averagePool(NodeContext& c) {
  Shape kernel = c.attrInts("kernel_shape");
  const int64_t spatial = static_cast<int64_t>(kernel.size());
  if (spatial < 1 || spatial > 3) c.unsupported("only 1-d, 2-d and 3-d average pooling is supported");
  Window w = window(c, spatial, kernel);
  for (int64_t d : w.dilations)
    if (d != 1) c.unsupported("AveragePool with dilations is not supported");
  const bool include_pad = c.attrInt("count_include_pad", 0) != 0;
  const bool ceil_mode = c.attrInt("ceil_mode", 0) != 0;
  auto pool = [&](Value* v, const std::vector<int64_t>& padding) {
    if (spatial == 1) return c.op(aten::avg_pool1d, {v, w.kernel, w.strides, padding, ceil_mode, true});
    return c.op(spatial == 2 ? aten::avg_pool2d : aten::avg_pool3d,
                {v, w.kernel, w.strides, padding, ceil_mode, true, c.constant(c10::IValue())});
  };
  Value* x = c.input(0);
  bool symmetric_within_limit = true;
  for (int64_t i = 0; i < spatial; ++i)
    symmetric_within_limit = symmetric_within_limit && w.begin[i] == w.end[i] && w.begin[i] <= w.kernel[i] / 2;
  if (symmetric_within_limit) {
    if (ceil_mode) checkCeilMode(c, w, w.begin);
    if (spatial == 1) {
      c.setOutput(0, c.op(aten::avg_pool1d, {x, w.kernel, w.strides, w.begin, ceil_mode, include_pad}));
      return;
    }
    c.setOutput(0, c.op(spatial == 2 ? aten::avg_pool2d : aten::avg_pool3d,
                        {x, w.kernel, w.strides, w.begin, ceil_mode, include_pad, c.constant(c10::IValue())}));
    return;
  }
  // Padding ATen's pooling cannot express: pad explicitly with zeros. Without
  // count_include_pad, divide the window sums by the number of real values in
  // each window (the same pooling over a padded tensor of ones, a constant).
  auto padding = symmetricPadding(c, x, w, 0.0, /*pool=*/true);
  if (ceil_mode) checkCeilMode(c, w, padding);
  Value* y = pool(x, padding);
  if (!include_pad) {
    Shape shape = c.shapeOf(0, "AveragePool with explicit padding counts the real values per window");
    Shape ones_shape(shape.size(), 1);
    std::copy(shape.begin() + 2, shape.end(), ones_shape.begin() + 2);
    Value* ones = c.constant(at::ones(ones_shape, at::TensorOptions(c.dtypeOf(0))));
    auto pad_ones = symmetricPadding(c, ones, w, 0.0, /*pool=*/true);
    y = c.op(aten::div, {y, pool(ones, pad_ones)});
  }
  c.setOutput(0, y);
}

void globalAveragePool(NodeContext& c) {
  const int64_t rank = rankOf(c, 0, "GlobalAveragePool averages every dimension after the channels");
  if (rank <= 2) {  // no spatial dimensions: the input itself
    c.setOutput(0, c.input(0));
    return;
  }
  std::vector<int64_t> dims;
  for (int64_t d = 2; d < rank; ++d) dims.push_back(d);
  c.setOutput(0, c.op(aten::mean, {c.input(0), dims, true}));
}

// ------------------------------------------------------------ normalization and dropout

bool isModuleState(Value* v) { return v->node()->kind() == c10::prim::GetAttr; }

void batchNorm(NodeContext& c) {
  const double eps = c.attrFloat("epsilon", 1e-5), momentum = c.attrFloat("momentum", 0.9);
  // Opsets 9-13: training is the five-output form (an omitted output has an
  // empty name).
  bool named_statistics = false;
  for (size_t i = 1; i < c.numOutputs(); ++i) named_statistics = named_statistics || !c.proto().output(i).empty();
  const bool training = c.opset() >= 14 ? c.attrInt("training_mode", 0) != 0 : named_statistics;
  Value* x = c.input(0);
  Value* none = c.constant(c10::IValue());
  if (!training) {
    c.setOutput(0, c.op(aten::batch_norm, {x, c.input(1), c.input(2), c.input(3), c.input(4), false, 0.0, eps, true}));
    return;
  }
  if (c.outputUsed(3) || c.outputUsed(4))
    c.unsupported("BatchNormalization's saved_mean / saved_var outputs (opsets 9-13) are not supported");
  const bool stats_used = c.outputUsed(1) || c.outputUsed(2);
  if (!stats_used && isModuleState(c.input(3)) && isModuleState(c.input(4))) {
    // Buffers of the imported module: updated in place, as torch.nn.BatchNorm does.
    c.setOutput(0, c.op(aten::batch_norm, {x, c.input(1), c.input(2), c.input(3), c.input(4), true,
                                           1.0 - momentum, eps, true}));
    return;
  }
  c.setOutput(0, c.op(aten::batch_norm, {x, c.input(1), c.input(2), none, none, true, 0.0, eps, true}));
  if (!stats_used) return;
  // running = input * momentum + current * (1 - momentum), biased variance.
  const int64_t rank = rankOf(c, 0, "BatchNormalization's statistics reduce all but the channel dimension");
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < rank; ++d) dims.push_back(d);
  Value* mean = c.op(aten::mean, {x, dims, false});
  Value* var = c.op(aten::var, {x, dims, false, false});
  auto running = [&](size_t input, Value* current) {
    return c.op(aten::add, {c.op(aten::mul, {c.input(input), momentum}), c.op(aten::mul, {current, 1.0 - momentum})});
  };
  c.setOutput(1, running(3, mean));
  c.setOutput(2, running(4, var));
}

void layerNorm(NodeContext& c) {
  if (c.hasAttr("stash_type") && c.attrInt("stash_type", 1) != 1)
    c.unsupported("LayerNormalization with stash_type other than float is not supported");
  Shape shape = c.shapeOf(0, "LayerNormalization normalizes the dimensions from its axis on");
  const int64_t rank = static_cast<int64_t>(shape.size());
  const int64_t axis = normAxis(c, c.attrInt("axis", -1), rank);
  Shape normalized(shape.begin() + axis, shape.end());
  // ATen takes a weight and bias of the normalized shape; ONNX broadcasts.
  auto matching = [&](size_t i) {
    Value* v = c.input(i);
    auto s = c.maybeShapeOf(i);
    return s && *s == normalized ? v : c.op(aten::expand, {v, normalized});
  };
  Value* bias = c.hasInput(2) ? matching(2) : c.constant(c10::IValue());
  const double eps = c.attrFloat("epsilon", 1e-5);
  if (!c.outputUsed(1) && !c.outputUsed(2)) {
    c.setOutput(0, c.op(aten::layer_norm, {c.input(0), normalized, matching(1), bias, eps, true}));
    return;
  }
  // Mean and InvStdDev too: native_layer_norm's, shaped as ONNX's
  // [d0, ..., d(axis-1), 1, ..., 1].
  Value* triple = c.op(aten::native_layer_norm, {c.input(0), normalized, matching(1), bias, eps});
  auto* unpack = c.graph().insertNode(c.graph().createTupleUnpack(triple));
  Shape stat_shape(shape.begin(), shape.begin() + axis);
  stat_shape.resize(rank, 1);
  c.setOutput(0, unpack->output(0));
  c.setOutput(1, c.op(aten::reshape, {unpack->output(1), stat_shape}));
  c.setOutput(2, c.op(aten::reshape, {unpack->output(2), stat_shape}));
}

void dropout(NodeContext& c) {
  Value* x = c.input(0);
  double ratio = 0.5;
  bool training = false;
  if (c.opset() >= 12) {
    if (c.hasInput(1)) ratio = c.constantScalar(1, "Dropout's ratio");
    if (c.hasInput(2)) training = c.constantScalar(2, "Dropout's training_mode") != 0;
  }  // before opset 12 Dropout is the identity outside training frameworks
  if (!training || ratio == 0.0) {
    c.setOutput(0, x);
    if (c.outputUsed(1)) {
      // The mask is bool from opset 10 on, the input's type before.
      const at::ScalarType mask_type = c.opset() < 10 ? c.dtypeOf(0) : at::kBool;
      c.setOutput(1, c.op(aten::ones_like, {x}, {NamedValue("dtype", c10::IValue(static_cast<int64_t>(mask_type)))}));
    }
    return;
  }
  if (c.outputUsed(1)) {
    Value* pair = c.op(aten::native_dropout, {x, ratio, true});
    auto* unpack = c.graph().insertNode(c.graph().createTupleUnpack(pair));
    c.setOutput(0, unpack->output(0));
    c.setOutput(1, unpack->output(1));
    return;
  }
  c.setOutput(0, c.op(aten::dropout, {x, ratio, true}));
}

// ------------------------------------------------------------ reductions

void reduceMean(NodeContext& c) {
  const bool keep = c.attrInt("keepdims", 1) != 0;
  std::vector<int64_t> axes = c.attrInts("axes");
  if (axes.empty()) {
    const int64_t rank = rankOf(c, 0, "ReduceMean over all axes");
    axes.resize(rank);
    std::iota(axes.begin(), axes.end(), 0);
  }
  c.setOutput(0, c.op(aten::mean, {c.input(0), axes, keep}));
}

// ------------------------------------------------------------ shapes

void flatten(NodeContext& c) {
  const int64_t rank = rankOf(c, 0, "Flatten's axis is relative to the rank");
  int64_t axis = c.attrInt("axis", 1);
  if (axis < 0) axis += rank;
  if (axis < 0 || axis > rank) c.fail("axis " + std::to_string(axis) + " is out of range");
  Value* x = c.input(0);
  if (axis == 0 || axis == rank) {
    c.setOutput(0, c.op(aten::reshape, {x, axis == 0 ? std::vector<int64_t>{1, -1} : std::vector<int64_t>{-1, 1}}));
    return;
  }
  if (axis < rank - 1) x = c.op(aten::flatten, {x, axis, int64_t{-1}});
  if (axis > 1) x = c.op(aten::flatten, {x, int64_t{0}, axis - 1});
  c.setOutput(0, x);
}

void reshape(NodeContext& c) {
  std::vector<int64_t> shape = c.constantInts(1, "Reshape's shape");
  const bool allow_zero = c.attrInt("allowzero", 0) != 0;
  Value* x = c.input(0);
  if (!allow_zero) {
    auto in = c.maybeShapeOf(0);
    bool dynamic = false;
    for (size_t i = 0; i < shape.size(); ++i) {
      if (shape[i] != 0) continue;
      if (in && i < in->size()) shape[i] = (*in)[i];
      else dynamic = true;
    }
    if (dynamic) {
      std::vector<Value*> sizes;
      for (size_t i = 0; i < shape.size(); ++i)
        sizes.push_back(shape[i] == 0 ? c.op(aten::size, {x, static_cast<int64_t>(i)}) : c.constant(shape[i]));
      Value* list = c.graph().insertNode(c.graph().createList(c10::IntType::get(), sizes))->output();
      c.setOutput(0, c.op(aten::reshape, {x, list}));
      return;
    }
  }
  c.setOutput(0, c.op(aten::reshape, {x, shape}));
}

void transpose(NodeContext& c) {
  std::vector<int64_t> perm = c.attrInts("perm");
  if (perm.empty()) {
    const int64_t rank = rankOf(c, 0, "Transpose without perm reverses the dimensions");
    for (int64_t d = rank - 1; d >= 0; --d) perm.push_back(d);
  }
  c.setOutput(0, c.op(aten::permute, {c.input(0), perm}));
}

void concat(NodeContext& c) {
  std::vector<Value*> parts;
  for (size_t i = 0; i < c.numInputs(); ++i)
    if (c.hasInput(i)) parts.push_back(c.input(i));
  if (!c.hasAttr("axis")) c.fail("Concat needs an axis attribute");
  c.setOutput(0, c.op(aten::cat, {c.list(parts), c.attrInt("axis", 0)}));
}

void split(NodeContext& c) {
  Shape shape = c.shapeOf(0, "Split needs the size of the split axis");
  const int64_t axis = normAxis(c, c.attrInt("axis", 0), static_cast<int64_t>(shape.size()));
  std::vector<int64_t> sizes = c.opset() >= 13 ? (c.hasInput(1) ? c.constantInts(1, "Split's split") : Shape{})
                                                : c.attrInts("split");
  const int64_t n = static_cast<int64_t>(c.numOutputs());
  if (sizes.empty()) {
    if (shape[axis] % n != 0)
      c.fail("cannot split a dimension of " + std::to_string(shape[axis]) + " into " + std::to_string(n) + " equal parts");
    sizes.assign(n, shape[axis] / n);
  }
  if (static_cast<int64_t>(sizes.size()) != n) c.fail("split has " + std::to_string(sizes.size()) + " sizes for " + std::to_string(n) + " outputs");
  Value* parts = c.op(aten::split_with_sizes, {c.input(0), sizes, axis});
  auto* unpack = c.graph().insertNode(c.graph().createListUnpack(parts, n));
  for (int64_t i = 0; i < n; ++i) c.setOutput(i, unpack->output(i));
}

void slice(NodeContext& c) {
  std::vector<int64_t> starts, ends, axes, steps;
  if (c.opset() < 10) {
    starts = c.attrInts("starts");
    ends = c.attrInts("ends");
    axes = c.attrInts("axes");
  } else {
    starts = c.constantInts(1, "Slice's starts");
    ends = c.constantInts(2, "Slice's ends");
    if (c.hasInput(3)) axes = c.constantInts(3, "Slice's axes");
    if (c.hasInput(4)) steps = c.constantInts(4, "Slice's steps");
  }
  if (axes.empty())
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
    c.fail("starts, ends, axes and steps must have the same length");
  Value* x = c.input(0);
  auto shape = c.maybeShapeOf(0);
  const int64_t rank = shape ? static_cast<int64_t>(shape->size()) : rankOf(c, 0, "Slice's axes");
  for (size_t i = 0; i < starts.size(); ++i) {
    if (steps[i] <= 0) c.unsupported("Slice with a negative or zero step is not supported");
    // aten::slice reads a start of INT64_MAX as "from the beginning".
    const int64_t start = std::min(starts[i], std::numeric_limits<int64_t>::max() - 1);
    x = c.op(aten::slice, {x, normAxis(c, axes[i], rank), start, ends[i], steps[i]});
  }
  c.setOutput(0, x);
}

// Indices that may count from the end (-size..size-1) made non-negative, as
// int64 (aten::gather's index type): folded when constant (and checked
// against the axis size), a where() otherwise.
Value* wrapIndices(NodeContext& c, size_t i, int64_t size) {
  if (auto idx = c.constantInput(i)) {
    at::Tensor t = idx->to(at::kLong);
    t = at::where(t < 0, t + size, t);
    if (t.numel() > 0 && ((t < 0).any().item<bool>() || (t >= size).any().item<bool>()))
      c.fail("an index is out of range for an axis of size " + std::to_string(size));
    return c.constant(t);
  }
  Value* t = c.op(aten::to, {c.input(i), static_cast<int64_t>(at::kLong), false, false});
  return c.op(aten::where, {c.op(aten::lt, {t, int64_t{0}}), c.op(aten::add, {t, size}), t});
}

// GatherElements: out[i][j][k] = data[index[i][j][k]][j][k] along `axis`
// (aten::gather; its rule scatters the gradient back with accumulation).
void gatherElements(NodeContext& c) {
  Shape shape = c.shapeOf(0, "GatherElements normalizes negative indices by the axis size");
  const int64_t axis = normAxis(c, c.attrInt("axis", 0), static_cast<int64_t>(shape.size()));
  c.setOutput(0, c.op(aten::gather, {c.input(0), axis, wrapIndices(c, 1, shape[axis])}));
}

// CumSum along a constant axis; `reverse` sums from the end, `exclusive`
// leaves each element out of its own sum (the operand shifted by one along
// the axis, a zero first).
void cumSum(NodeContext& c) {
  const std::vector<int64_t> axis_operand = c.constantInts(1, "CumSum's axis");
  if (axis_operand.size() != 1)
    c.fail("CumSum's axis must hold one value, it has " + std::to_string(axis_operand.size()));
  Shape shape = c.shapeOf(0, "CumSum's axis is normalized against the operand's rank");
  const int64_t rank = static_cast<int64_t>(shape.size());
  const int64_t axis = normAxis(c, axis_operand[0], rank);
  const std::vector<int64_t> dims{axis};
  Value* x = c.input(0);
  if (c.attrInt("reverse", 0)) x = c.op(aten::flip, {x, dims});
  if (c.attrInt("exclusive", 0) && shape[axis] > 0) {
    x = c.op(aten::narrow, {x, axis, int64_t{0}, shape[axis] - 1});
    std::vector<int64_t> pads(2 * (rank - axis), 0);  // last dimension first
    pads[pads.size() - 2] = 1;
    x = c.op(aten::constant_pad_nd, {x, pads, 0.0});
  }
  Value* y = c.op(aten::cumsum, {x, axis});
  if (c.attrInt("reverse", 0)) y = c.op(aten::flip, {y, dims});
  c.setOutput(0, y);
}

// Trilu: the upper (default) or lower triangle, diagonal k (input 1, 0 when
// absent) and above / below; batched over the leading dimensions.
void trilu(NodeContext& c) {
  int64_t k = 0;
  if (c.hasInput(1)) {
    const std::vector<int64_t> ks = c.constantInts(1, "Trilu's k");
    if (ks.size() != 1) c.fail("Trilu's k must hold one value, it has " + std::to_string(ks.size()));
    k = ks[0];
  }
  c.setOutput(0, c.op(c.attrInt("upper", 1) ? aten::triu : aten::tril, {c.input(0), k}));
}

// Range(start, limit, delta): 0-d operands of one type; constant operands
// (the usual case: sizes) are evaluated at import like every all-constant op.
void range(NodeContext& c) {
  std::vector<NamedValue> bounds;
  for (size_t i = 0; i < 3; ++i) {
    if (auto shape = c.maybeShapeOf(i); shape && !shape->empty())
      c.fail("Range's operand " + std::to_string(i) + " must be a scalar (rank 0), it has rank " +
             std::to_string(shape->size()));
    bounds.emplace_back(c.op(aten::item, {c.input(i)}));
  }
  c.setOutput(0, c.op(aten::arange, bounds, {NamedValue("dtype", static_cast<int64_t>(c.dtypeOf(0)))}));
}

// Mod: fmod=0 is integer modulo whose result takes the divisor's sign
// (aten::remainder, Python's %); fmod=1 takes the dividend's (aten::fmod, C's
// fmod), which ONNX requires for floating-point operands.
void mod(NodeContext& c) {
  const bool fmod = c.attrInt("fmod", 0) != 0;
  if (!fmod && isFloating(c.dtypeOf(0))) c.fail("Mod of floating-point operands needs fmod=1");
  c.setOutput(0, c.op(fmod ? aten::fmod : aten::remainder, {c.input(0), c.input(1)}));
}

void gather(NodeContext& c) {
  Shape shape = c.shapeOf(0, "Gather normalizes negative indices by the axis size");
  const int64_t axis = normAxis(c, c.attrInt("axis", 0), static_cast<int64_t>(shape.size()));
  Value* x = c.input(0);
  Value* index = wrapIndices(c, 1, shape[axis]);
  Shape ishape;
  if (auto i = torch::jit::toIValue(index)) {
    if (i->toTensor().dim() == 0) {
      c.setOutput(0, c.op(aten::select, {x, axis, i->toTensor().item<int64_t>()}));
      return;
    }
    ishape = i->toTensor().sizes().vec();
  } else {
    ishape = c.shapeOf(1, "Gather with run-time indices reshapes to the indices' shape");
  }
  // index_select takes a vector of indices (and rejects anything out of
  // range at run time); the result is reshaped to the indices' shape.
  Value* picked = c.op(aten::index_select, {x, axis, c.op(aten::reshape, {index, std::vector<int64_t>{-1}})});
  Shape out(shape.begin(), shape.begin() + axis);
  out.insert(out.end(), ishape.begin(), ishape.end());
  out.insert(out.end(), shape.begin() + axis + 1, shape.end());
  c.setOutput(0, c.op(aten::reshape, {picked, out}));
}

std::vector<int64_t> axesOperand(NodeContext& c, const std::string& op) {
  if (c.opset() < 13) return c.attrInts("axes");
  return c.hasInput(1) ? c.constantInts(1, op + "'s axes") : std::vector<int64_t>{};
}

void squeeze(NodeContext& c) {
  std::vector<int64_t> axes = axesOperand(c, "Squeeze");
  Value* x = c.input(0);
  if (axes.empty()) {
    c.setOutput(0, c.op(aten::squeeze, {x}));
    return;
  }
  const int64_t rank = rankOf(c, 0, "Squeeze's axes are relative to the rank");
  for (int64_t& a : axes) a = normAxis(c, a, rank);
  std::sort(axes.rbegin(), axes.rend());
  for (int64_t a : axes) x = c.op(aten::squeeze, {x, a});
  c.setOutput(0, x);
}

void unsqueeze(NodeContext& c) {
  std::vector<int64_t> axes = axesOperand(c, "Unsqueeze");
  if (axes.empty()) c.fail("Unsqueeze needs axes");
  // Axes count in the result. All of one sign need no rank: non-negative ones
  // inserted in ascending order, negative ones from -1 down, each lands where
  // the result has it (exporters' Unsqueeze often follows a Reshape whose
  // output shape ONNX shape inference lost).
  const bool all_non_negative = std::all_of(axes.begin(), axes.end(), [](int64_t a) { return a >= 0; });
  const bool all_negative = std::all_of(axes.begin(), axes.end(), [](int64_t a) { return a < 0; });
  if ((all_non_negative || all_negative) && !c.maybeShapeOf(0)) {
    std::set<int64_t> distinct(axes.begin(), axes.end());
    if (distinct.size() != axes.size()) c.fail("Unsqueeze's axes repeat an axis");
    if (all_negative) std::sort(axes.rbegin(), axes.rend());
    else std::sort(axes.begin(), axes.end());
    Value* x = c.input(0);
    for (int64_t a : axes) x = c.op(aten::unsqueeze, {x, a});
    c.setOutput(0, x);
    return;
  }
  const int64_t out_rank = rankOf(c, 0, "Unsqueeze's axes are relative to the result's rank") +
                           static_cast<int64_t>(axes.size());
  for (int64_t& a : axes) a = normAxis(c, a, out_rank);
  std::sort(axes.begin(), axes.end());
  Value* x = c.input(0);
  for (int64_t a : axes) x = c.op(aten::unsqueeze, {x, a});
  c.setOutput(0, x);
}

void expand(NodeContext& c) {
  // Bidirectional broadcast: a 1 in `shape` keeps the input's size (-1 for
  // aten::expand), extra input dimensions are kept too.
  std::vector<int64_t> shape = c.constantInts(1, "Expand's shape");
  const int64_t rank = rankOf(c, 0, "Expand broadcasts against the input's rank");
  const int64_t n = std::max<int64_t>(rank, static_cast<int64_t>(shape.size()));
  std::vector<int64_t> target(n, -1);
  for (int64_t i = 0; i < static_cast<int64_t>(shape.size()); ++i) {
    const int64_t pos = n - static_cast<int64_t>(shape.size()) + i;
    const bool over_input = pos >= n - rank;
    target[pos] = (shape[i] == 1 && over_input) ? -1 : shape[i];
  }
  c.setOutput(0, c.op(aten::expand, {c.input(0), target}));
}

void pad(NodeContext& c) {
  const std::string mode = c.attrString("mode", "constant");
  if (mode != "constant") c.unsupported("Pad mode '" + mode + "' is not supported (only 'constant')");
  std::vector<int64_t> pads;
  double value = 0.0;
  if (c.opset() < 11) {
    pads = c.attrInts("pads");
    value = c.attrFloat("value", 0.0);
  } else {
    pads = c.constantInts(1, "Pad's pads");
    if (c.hasInput(2)) value = c.constantScalar(2, "Pad's constant_value");
    if (c.hasInput(3)) c.unsupported("Pad's axes input is not supported");
  }
  const size_t rank = pads.size() / 2;
  std::vector<int64_t> aten_pads;
  for (size_t k = rank; k-- > 0;) {
    aten_pads.push_back(pads[k]);
    aten_pads.push_back(pads[k + rank]);
  }
  c.setOutput(0, c.op(aten::constant_pad_nd, {c.input(0), aten_pads, value}));
}

// ------------------------------------------------------------ constants and casts

void identity(NodeContext& c) { c.setOutput(0, c.input(0)); }

void constant(NodeContext& c) {
  at::Tensor t;
  if (const auto* proto = c.attrTensor("value")) {
    t = toTensor(*proto, c.where());
  } else if (c.hasAttr("value_float")) {
    t = at::scalar_tensor(c.attrFloat("value_float", 0), at::kFloat);
  } else if (c.hasAttr("value_int")) {
    t = at::scalar_tensor(c.attrInt("value_int", 0), at::kLong);
  } else if (c.hasAttr("value_ints")) {
    auto v = c.attrInts("value_ints");
    t = at::tensor(v, at::kLong);
  } else if (c.hasAttr("value_floats")) {
    for (const auto& a : c.proto().attribute())
      if (a.name() == "value_floats") t = at::tensor(std::vector<float>(a.floats().begin(), a.floats().end()));
  } else {
    c.unsupported("Constant without value, value_float(s) or value_int(s) (sparse or string) is not supported");
  }
  c.setOutput(0, c.constant(t));
}

void shape(NodeContext& c) {
  Shape s = c.shapeOf(0, "Shape is evaluated at import");
  const int64_t rank = static_cast<int64_t>(s.size());
  int64_t start = c.attrInt("start", 0), end = c.attrInt("end", rank);
  auto clampAxis = [&](int64_t a) { return std::min(std::max<int64_t>(a < 0 ? a + rank : a, 0), rank); };
  start = clampAxis(start);
  end = clampAxis(end);
  Shape part(s.begin() + start, s.begin() + std::max(start, end));
  c.setOutput(0, c.constant(at::tensor(part, at::kLong)));
}

void cast(NodeContext& c) {
  const at::ScalarType to = scalarTypeOf(static_cast<int32_t>(c.attrInt("to", 0)), c.where() + ": Cast's to");
  c.setOutput(0, c.op(aten::to, {c.input(0), static_cast<int64_t>(to), false, false}));
}

void constantOfShape(NodeContext& c) {
  std::vector<int64_t> shape = c.constantInts(0, "ConstantOfShape's shape");
  at::Tensor value = at::zeros({1}, at::kFloat);
  if (const auto* proto = c.attrTensor("value")) value = toTensor(*proto, c.where());
  c.setOutput(0, c.constant(value.reshape({-1})[0].expand(shape).contiguous()));
}

}  // namespace

const std::map<std::string, OpLowering>& opTable() {
  static const std::map<std::string, OpLowering> table = [] {
    std::map<std::string, OpLowering> t;
    auto un = [](c10::Symbol k) { return [k](NodeContext& c) { unary(c, k); }; };
    auto bin = [](c10::Symbol k) { return [k](NodeContext& c) { binary(c, k); }; };
    t["Add"] = {bin(aten::add)};
    t["Sub"] = {bin(aten::sub)};
    t["Mul"] = {bin(aten::mul)};
    t["Div"] = {bin(aten::div)};
    t["Relu"] = {un(aten::relu)};
    t["Sigmoid"] = {un(aten::sigmoid)};
    t["Tanh"] = {un(aten::tanh)};
    t["Erf"] = {un(aten::erf)};
    t["Sqrt"] = {un(aten::sqrt)};
    t["Not"] = {un(aten::logical_not)};
    t["Floor"] = {un(aten::floor)};
    t["Ceil"] = {un(aten::ceil)};
    t["Equal"] = {bin(aten::eq)};
    t["Less"] = {bin(aten::lt)};
    t["Greater"] = {bin(aten::gt)};
    t["LessOrEqual"] = {bin(aten::le)};
    t["GreaterOrEqual"] = {bin(aten::ge)};
    t["And"] = {bin(aten::logical_and)};
    t["Or"] = {bin(aten::logical_or)};
    t["Xor"] = {bin(aten::logical_xor)};
    t["Neg"] = {un(aten::neg)};
    t["Abs"] = {un(aten::abs)};
    t["Exp"] = {un(aten::exp)};
    t["Log"] = {un(aten::log)};
    t["Reciprocal"] = {un(aten::reciprocal)};
    t["Sin"] = {un(aten::sin)};
    t["Cos"] = {un(aten::cos)};
    t["Pow"] = {pow};
    t["Where"] = {where};
    t["LayerNormalization"] = {layerNorm};
    t["HardSwish"] = {un(aten::hardswish)};
    t["LeakyRelu"] = {leakyRelu};
    t["HardSigmoid"] = {hardSigmoid};
    t["Clip"] = {clip, {1, 2}};
    t["Softmax"] = {[](NodeContext& c) { softmaxLike(c, aten::softmax); }};
    t["LogSoftmax"] = {[](NodeContext& c) { softmaxLike(c, aten::log_softmax); }};
    t["MatMul"] = {[](NodeContext& c) { c.setOutput(0, c.op(aten::matmul, {c.input(0), c.input(1)})); }};
    t["Gemm"] = {gemm};
    t["Conv"] = {conv};
    t["ConvTranspose"] = {convTranspose};
    t["MaxPool"] = {maxPool};
    t["AveragePool"] = {averagePool};
    t["GlobalAveragePool"] = {globalAveragePool};
    t["BatchNormalization"] = {batchNorm};
    t["Dropout"] = {dropout, {1, 2}, /*random=*/true};
    t["ReduceMean"] = {reduceMean};
    t["Flatten"] = {flatten};
    t["Reshape"] = {reshape, {1}};
    t["Transpose"] = {transpose};
    t["Concat"] = {concat};
    t["Split"] = {split, {1}};
    t["Slice"] = {slice, {1, 2, 3, 4}};
    t["Gather"] = {gather};
    t["Squeeze"] = {squeeze, {1}};
    t["Unsqueeze"] = {unsqueeze, {1}};
    t["Expand"] = {expand, {1}};
    t["Pad"] = {pad, {1, 2, 3}};
    t["Identity"] = {identity};
    t["Constant"] = {constant};
    t["Shape"] = {shape};
    t["Cast"] = {cast};
    t["ConstantOfShape"] = {constantOfShape, {0}};
    t["GatherElements"] = {gatherElements};
    t["CumSum"] = {cumSum, {1}};
    t["Trilu"] = {trilu, {1}};
    t["Range"] = {range};
    t["Mod"] = {mod};
    return t;
  }();
  return table;
}

}  // namespace onnx
}  // namespace actnn
