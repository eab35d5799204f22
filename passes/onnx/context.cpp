// NodeContext (see context.h) and the conversion of ONNX tensors and element
// types to ATen's.
#include <ATen/ATen.h>

#include "context.h"

#include <sstream>

#include <torch/csrc/jit/ir/constants.h>

#include "actnn/passes/onnx_import.h"

namespace actnn {
namespace onnx {

at::ScalarType scalarTypeOf(int32_t t, const std::string& what) {
  using TP = ::onnx::TensorProto;
  switch (t) {
    case TP::FLOAT: return at::kFloat;
    case TP::DOUBLE: return at::kDouble;
    case TP::FLOAT16: return at::kHalf;
    case TP::BFLOAT16: return at::kBFloat16;
    case TP::INT64: return at::kLong;
    case TP::INT32: return at::kInt;
    case TP::INT16: return at::kShort;
    case TP::INT8: return at::kChar;
    case TP::UINT8: return at::kByte;
    case TP::BOOL: return at::kBool;
    default: break;
  }
  throw UnsupportedError(what + ": ONNX element type " + TP::DataType_Name(t) +
                         " has no ATen equivalent this importer handles");
}

namespace {

// The typed values as a 1-d tensor of `dst_type`.
template <typename Src>
at::Tensor fromValues(const google::protobuf::RepeatedField<Src>& values, at::ScalarType src_type,
                      at::ScalarType dst_type) {
  std::vector<Src> copy(values.begin(), values.end());
  auto t = at::from_blob(copy.data(), {static_cast<int64_t>(copy.size())}, at::TensorOptions(src_type)).clone();
  return t.to(dst_type);
}

}  // namespace

at::Tensor toTensor(const ::onnx::TensorProto& proto, const std::string& what) {
  using TP = ::onnx::TensorProto;
  if (proto.data_location() == TP::EXTERNAL)
    throw UnsupportedError(what + ": tensor '" + proto.name() + "' keeps its data in an external file");
  const at::ScalarType type = scalarTypeOf(proto.data_type(), what + ": tensor '" + proto.name() + "'");
  std::vector<int64_t> dims(proto.dims().begin(), proto.dims().end());
  int64_t numel = 1;
  for (int64_t d : dims) numel *= d;
  at::Tensor t;
  if (proto.has_raw_data()) {
    const std::string& raw = proto.raw_data();
    const int64_t expect = numel * static_cast<int64_t>(c10::elementSize(type));
    if (static_cast<int64_t>(raw.size()) != expect)
      throw ImportError(what + ": tensor '" + proto.name() + "' has " + std::to_string(raw.size()) +
                        " bytes of raw data, its shape and type need " + std::to_string(expect));
    t = at::empty(dims, at::TensorOptions(type));
    if (expect > 0) std::memcpy(t.data_ptr(), raw.data(), raw.size());
  } else {
    switch (proto.data_type()) {
      case TP::FLOAT: t = fromValues(proto.float_data(), at::kFloat, type); break;
      case TP::DOUBLE: t = fromValues(proto.double_data(), at::kDouble, type); break;
      case TP::INT64: t = fromValues(proto.int64_data(), at::kLong, type); break;
      case TP::FLOAT16:
      case TP::BFLOAT16: {
        // 16-bit patterns stored one per int32.
        std::vector<int16_t> bits(proto.int32_data().begin(), proto.int32_data().end());
        t = at::from_blob(bits.data(), {static_cast<int64_t>(bits.size())}, at::kShort).clone().view(type);
        break;
      }
      default: t = fromValues(proto.int32_data(), at::kInt, type); break;
    }
    if (t.numel() != numel)
      throw ImportError(what + ": tensor '" + proto.name() + "' has " + std::to_string(t.numel()) +
                        " values, its shape needs " + std::to_string(numel));
    t = t.reshape(dims);
  }
  return t;
}

NodeContext::NodeContext(Graph& graph, const ::onnx::NodeProto& node, int64_t index, int64_t opset,
                         const std::string& origin, std::function<Value*(const std::string&)> lookup,
                         std::function<c10::optional<Shape>(const std::string&)> inferred_shape,
                         std::function<c10::optional<at::ScalarType>(const std::string&)> inferred_dtype,
                         std::function<bool(const std::string&)> is_used)
    : graph_(graph),
      node_(node),
      index_(index),
      opset_(opset),
      origin_(origin),
      lookup_(std::move(lookup)),
      inferred_shape_(std::move(inferred_shape)),
      inferred_dtype_(std::move(inferred_dtype)),
      is_used_(std::move(is_used)),
      outputs_(node.output_size(), nullptr) {}

std::string NodeContext::where() const {
  std::ostringstream out;
  out << origin_ << ": node " << index_;
  if (!node_.name().empty()) out << " '" << node_.name() << "'";
  out << " (op " << node_.op_type() << ", domain "
      << (node_.domain().empty() ? std::string("ai.onnx") : node_.domain()) << ", opset " << opset_ << ")";
  return out.str();
}

void NodeContext::fail(const std::string& message) const { throw ImportError(where() + ": " + message); }
void NodeContext::unsupported(const std::string& message) const {
  throw UnsupportedError(where() + ": " + message);
}

Value* NodeContext::input(size_t i) {
  if (!hasInput(i)) fail("input " + std::to_string(i) + " is required but absent");
  Value* v = lookup_(node_.input(i));
  if (!v) fail("input " + std::to_string(i) + " '" + node_.input(i) + "' is not defined by any earlier node, graph input or initializer");
  return v;
}

c10::optional<at::Tensor> NodeContext::constantInput(size_t i) {
  if (!hasInput(i)) return c10::nullopt;
  auto v = torch::jit::toIValue(input(i));
  if (!v || !v->isTensor()) return c10::nullopt;
  return v->toTensor();
}

at::Tensor NodeContext::requireConstant(size_t i, const std::string& what) {
  auto t = constantInput(i);
  if (!t)
    unsupported(what + " (input " + std::to_string(i) + " '" + (hasInput(i) ? node_.input(i) : "") +
                "') must be a constant or computable at import (dynamic shapes are not supported)");
  return *t;
}

std::vector<int64_t> NodeContext::constantInts(size_t i, const std::string& what) {
  at::Tensor t = requireConstant(i, what).to(at::kLong).contiguous().reshape({-1});
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

double NodeContext::constantScalar(size_t i, const std::string& what) {
  at::Tensor t = requireConstant(i, what);
  if (t.numel() != 1) fail(what + " must hold one value, it has " + std::to_string(t.numel()));
  return t.to(at::kDouble).item<double>();
}

c10::optional<Shape> NodeContext::maybeShapeOf(size_t i) {
  if (auto t = constantInput(i)) return t->sizes().vec();
  if (!hasInput(i)) return c10::nullopt;
  return inferred_shape_(node_.input(i));
}

Shape NodeContext::shapeOf(size_t i, const std::string& what) {
  auto s = maybeShapeOf(i);
  if (!s)
    unsupported("the shape of input " + std::to_string(i) + " '" + (hasInput(i) ? node_.input(i) : "") +
                "' is needed (" + what + ") but is not known: neither ONNX shape inference nor the import's own propagation found static sizes for it");
  return *s;
}

at::ScalarType NodeContext::dtypeOf(size_t i) {
  if (auto t = constantInput(i)) return t->scalar_type();
  if (auto t = inferred_dtype_(node_.input(i))) return *t;
  auto type = input(i)->type()->cast<c10::TensorType>();
  if (type && type->scalarType()) return *type->scalarType();
  unsupported("the element type of input " + std::to_string(i) + " is not known after ONNX shape inference");
}

namespace {
const ::onnx::AttributeProto* findAttr(const ::onnx::NodeProto& node, const std::string& name) {
  for (const auto& a : node.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}
}  // namespace

bool NodeContext::hasAttr(const std::string& name) const { return findAttr(node_, name) != nullptr; }

int64_t NodeContext::attrInt(const std::string& name, int64_t def) const {
  const auto* a = findAttr(node_, name);
  if (!a) return def;
  if (a->type() != ::onnx::AttributeProto::INT) fail("attribute '" + name + "' must be an int");
  return a->i();
}

double NodeContext::attrFloat(const std::string& name, double def) const {
  const auto* a = findAttr(node_, name);
  if (!a) return def;
  if (a->type() != ::onnx::AttributeProto::FLOAT) fail("attribute '" + name + "' must be a float");
  return a->f();
}

std::string NodeContext::attrString(const std::string& name, const std::string& def) const {
  const auto* a = findAttr(node_, name);
  if (!a) return def;
  if (a->type() != ::onnx::AttributeProto::STRING) fail("attribute '" + name + "' must be a string");
  return a->s();
}

std::vector<int64_t> NodeContext::attrInts(const std::string& name, std::vector<int64_t> def) const {
  const auto* a = findAttr(node_, name);
  if (!a) return def;
  if (a->type() != ::onnx::AttributeProto::INTS) fail("attribute '" + name + "' must be a list of ints");
  return std::vector<int64_t>(a->ints().begin(), a->ints().end());
}

const ::onnx::TensorProto* NodeContext::attrTensor(const std::string& name) const {
  const auto* a = findAttr(node_, name);
  if (!a) return nullptr;
  if (a->type() != ::onnx::AttributeProto::TENSOR) fail("attribute '" + name + "' must be a tensor");
  return &a->t();
}

bool NodeContext::outputUsed(size_t i) const {
  return i < numOutputs() && !node_.output(i).empty() && is_used_(node_.output(i));
}

void NodeContext::setOutput(size_t i, Value* v) {
  if (i >= outputs_.size()) return;  // an optional output the model does not name
  outputs_[i] = v;
}

Value* NodeContext::outputValue(size_t i) const { return i < outputs_.size() ? outputs_[i] : nullptr; }

Value* NodeContext::op(c10::Symbol kind, const std::vector<NamedValue>& args, const std::vector<NamedValue>& kwargs) {
  try {
    return graph_.insert(kind, args, kwargs);
  } catch (const std::exception& e) {
    // TorchScript's overload diagnostics list every schema; keep the summary.
    std::string what = e.what();
    what = what.substr(0, what.find("\nThe following variants"));
    while (!what.empty() && (what.back() == '\n' || what.back() == ' ')) what.pop_back();
    fail(std::string("lowering to ") + kind.toQualString() + " failed: " + what);
  }
}

Value* NodeContext::constant(const c10::IValue& v) { return graph_.insertConstant(v); }

Value* NodeContext::list(const std::vector<Value*>& tensors) {
  return graph_.insertNode(graph_.createList(c10::TensorType::get(), tensors))->output();
}

}  // namespace onnx
}  // namespace actnn
