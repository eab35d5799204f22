// Prints ONNX models in the text syntax ::onnx::OnnxParser reads (see
// onnx_text.h). Types, value infos and most attributes go through ONNX's own
// printers; what this file adds is the model header, node domains, graph
// attributes printed the same way, recursively, value_info (after the
// initializers in the `<...>` list, which ONNX 1.12's parser reads back),
// and every tensor and float value: initializers as `float[2] c = {1, 2}`
// (ONNX 1.12 prints them without the `=` its parser needs), TENSOR attributes
// as `float[2] {1, 2}`, FLOAT / FLOATS attributes, all with max_digits10
// significant digits (9 for float, 17 for double) so that they round-trip
// exactly (ONNX's printer uses 6). What the 1.12 parser cannot read back
// (float16 / bfloat16 tensors, non-finite or subnormal floats, external data) is refused
// with std::invalid_argument rather than printed wrong.
#include "actnn/passes/onnx_text.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "onnx/defs/printer.h"

namespace actnn {
namespace {

using ::onnx::TensorProto;

void printGraph(std::ostream& os, const ::onnx::GraphProto& graph, const std::string& indent);

template <typename List, typename Print>
void printList(std::ostream& os, const List& items, Print print) {
  const char* sep = "";
  for (const auto& item : items) {
    os << sep;
    print(item);
    sep = ", ";
  }
}

[[noreturn]] void unprintable(const std::string& what, const std::string& why) {
  throw std::invalid_argument("cannot write " + what + " in ONNX text syntax: " + why +
                              " (write the model as binary ONNX instead)");
}

constexpr int kFloatDigits = std::numeric_limits<float>::max_digits10;
constexpr int kDoubleDigits = std::numeric_limits<double>::max_digits10;

// A float or double with enough digits to read back the same value; as an
// attribute (`as_attribute`) it always has a '.' or an exponent, or the
// parser would read an INT.
std::string formatReal(double v, int digits, const std::string& what, bool as_attribute = false) {
  if (!std::isfinite(v)) unprintable(what, "it holds a non-finite value, which ONNX 1.12's parser cannot read");
  // The parser reads numbers with std::stof / std::stod, which throw on subnormal results.
  const bool subnormal = digits == kFloatDigits ? std::fpclassify(float(v)) == FP_SUBNORMAL
                                                : std::fpclassify(v) == FP_SUBNORMAL;
  if (subnormal) unprintable(what, "it holds a subnormal value, which ONNX 1.12's parser cannot read");
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*g", digits, v);
  std::string s = buf;
  if (as_attribute && s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

// The elements of a tensor in little-endian raw_data, or of its typed field.
template <typename T, typename Field>
std::vector<T> elements(const TensorProto& t, const Field& field) {
  if (!t.has_raw_data()) return std::vector<T>(field.begin(), field.end());
  std::vector<T> out(t.raw_data().size() / sizeof(T));
  std::memcpy(out.data(), t.raw_data().data(), out.size() * sizeof(T));
  return out;
}

template <typename T>
std::vector<std::string> asText(const std::vector<T>& values) {
  std::vector<std::string> out;
  for (const T& v : values) out.push_back(std::to_string(v));
  return out;
}

// A tensor's values as the parser reads them, one string each.
std::vector<std::string> tensorValues(const TensorProto& t, const std::string& what) {
  if (t.data_location() == TensorProto::EXTERNAL) unprintable(what, "its data is stored externally");
  std::vector<std::string> out;
  switch (t.data_type()) {
    case TensorProto::FLOAT:
      for (float v : elements<float>(t, t.float_data())) out.push_back(formatReal(v, kFloatDigits, what));
      return out;
    case TensorProto::DOUBLE:
      for (double v : elements<double>(t, t.double_data())) out.push_back(formatReal(v, kDoubleDigits, what));
      return out;
    case TensorProto::INT64: return asText(elements<int64_t>(t, t.int64_data()));
    case TensorProto::INT32: return asText(elements<int32_t>(t, t.int32_data()));
    case TensorProto::UINT32:
      if (t.has_raw_data()) return asText(elements<uint32_t>(t, t.uint64_data()));
      return asText(std::vector<uint64_t>(t.uint64_data().begin(), t.uint64_data().end()));
    case TensorProto::UINT64: return asText(elements<uint64_t>(t, t.uint64_data()));
    case TensorProto::INT16:
      if (t.has_raw_data()) return asText(elements<int16_t>(t, t.int32_data()));
      return asText(std::vector<int32_t>(t.int32_data().begin(), t.int32_data().end()));
    case TensorProto::UINT16:
      if (t.has_raw_data()) return asText(elements<uint16_t>(t, t.int32_data()));
      return asText(std::vector<int32_t>(t.int32_data().begin(), t.int32_data().end()));
    case TensorProto::INT8:
      if (t.has_raw_data()) {
        for (int8_t v : elements<int8_t>(t, t.int32_data())) out.push_back(std::to_string(int(v)));
        return out;
      }
      return asText(std::vector<int32_t>(t.int32_data().begin(), t.int32_data().end()));
    case TensorProto::UINT8:
    case TensorProto::BOOL:
      if (t.has_raw_data()) {
        for (uint8_t v : elements<uint8_t>(t, t.int32_data())) out.push_back(std::to_string(int(v)));
        return out;
      }
      return asText(std::vector<int32_t>(t.int32_data().begin(), t.int32_data().end()));
    case TensorProto::STRING:
      for (const auto& v : t.string_data()) {
        if (v.find_first_of("\"\\\n") != std::string::npos) unprintable(what, "a string holds a quote, backslash or newline");
        out.push_back("\"" + v + "\"");
      }
      return out;
    case TensorProto::FLOAT16:
    case TensorProto::BFLOAT16:
      unprintable(what, "ONNX 1.12's parser reads no float16 or bfloat16 tensors");
    default:
      unprintable(what, "element type " + std::to_string(t.data_type()) + " has no text form");
  }
}

// `float[2, 3]` (rank 0: `float`), as the parser reads a tensor's type.
void printTensorType(std::ostream& os, const TensorProto& t) {
  ::onnx::TypeProto type;
  type.mutable_tensor_type()->set_elem_type(t.data_type());
  auto* shape = type.mutable_tensor_type()->mutable_shape();  // rank 0 prints as `float`, not `float[]`
  for (int64_t d : t.dims()) shape->add_dim()->set_dim_value(d);
  os << type;
}

void printValues(std::ostream& os, const std::vector<std::string>& values) {
  os << "{";
  printList(os, values, [&](const std::string& v) { os << v; });
  os << "}";
}

void printInitializer(std::ostream& os, const TensorProto& t) {
  const std::vector<std::string> values = tensorValues(t, "initializer '" + t.name() + "'");
  printTensorType(os, t);
  os << " " << t.name() << " = ";
  printValues(os, values);
}

void printAttribute(std::ostream& os, const ::onnx::AttributeProto& attr, const std::string& indent) {
  using ::onnx::AttributeProto;
  const std::string what = "attribute '" + attr.name() + "'";
  switch (attr.type()) {
    case AttributeProto::GRAPH:
      os << attr.name() << " = ";
      return printGraph(os, attr.g(), indent + "  ");
    case AttributeProto::FLOAT:
      os << attr.name() << " = " << formatReal(attr.f(), kFloatDigits, what, true);
      return;
    case AttributeProto::FLOATS:
      os << attr.name() << " = [";
      printList(os, attr.floats(), [&](float v) { os << formatReal(v, kFloatDigits, what, true); });
      os << "]";
      return;
    case AttributeProto::TENSOR: {
      const std::vector<std::string> values = tensorValues(attr.t(), what);
      os << attr.name() << " = ";
      printTensorType(os, attr.t());
      os << " ";
      printValues(os, values);
      return;
    }
    default:
      os << attr;
  }
}

void printNode(std::ostream& os, const ::onnx::NodeProto& node, const std::string& indent) {
  os << indent;
  printList(os, node.output(), [&](const std::string& v) { os << v; });
  os << " = ";
  if (!node.domain().empty() && node.domain() != "ai.onnx") os << node.domain() << ".";
  os << node.op_type();
  if (node.attribute_size() > 0) {
    os << "<";
    printList(os, node.attribute(), [&](const ::onnx::AttributeProto& a) { printAttribute(os, a, indent); });
    os << ">";
  }
  os << "(";
  printList(os, node.input(), [&](const std::string& v) { os << v; });
  os << ")\n";
}

void printGraph(std::ostream& os, const ::onnx::GraphProto& graph, const std::string& indent) {
  os << graph.name() << " (";
  printList(os, graph.input(), [&](const ::onnx::ValueInfoProto& v) { os << v; });
  os << ") => (";
  printList(os, graph.output(), [&](const ::onnx::ValueInfoProto& v) { os << v; });
  os << ")";
  if (graph.initializer_size() > 0 || graph.value_info_size() > 0) {
    os << "\n" << indent << "  <";
    printList(os, graph.initializer(), [&](const TensorProto& t) { printInitializer(os, t); });
    if (graph.initializer_size() > 0 && graph.value_info_size() > 0) os << ", ";
    printList(os, graph.value_info(), [&](const ::onnx::ValueInfoProto& v) { os << v; });
    os << ">";
  }
  os << "\n" << indent << "{\n";
  for (const auto& node : graph.node()) printNode(os, node, indent + "  ");
  os << indent << "}";
}

}  // namespace

void printOnnxModel(std::ostream& os, const ::onnx::ModelProto& model) {
  os << "<\n  ir_version: " << model.ir_version() << ",\n  opset_import: [";
  printList(os, model.opset_import(), [&](const ::onnx::OperatorSetIdProto& o) {
    os << "\"" << o.domain() << "\" : " << o.version();
  });
  os << "]";
  if (!model.producer_name().empty()) os << ",\n  producer_name: \"" << model.producer_name() << "\"";
  os << "\n>\n";
  printGraph(os, model.graph(), "");
  os << "\n";
}

std::string onnxModelText(const ::onnx::ModelProto& model) {
  std::ostringstream os;
  printOnnxModel(os, model);
  return os.str();
}

}  // namespace actnn
