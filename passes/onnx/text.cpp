// Prints ONNX models in the text syntax ::onnx::OnnxParser reads (see
// onnx_text.h). Types and attributes go through ONNX's own printers; what
// this file adds is the model header, node domains, graph attributes printed
// the same way, recursively, and initializers as `float[2] c = {1, 2}` (ONNX
// 1.12 prints them without the `=` its parser needs). Initializers of types
// the parser reads from int32_data (bool, 8/16-bit integers, float16,
// bfloat16) and held as raw bytes fall back to ONNX's printer, which does not
// parse back.
#include "actnn/passes/onnx_text.h"

#include <sstream>

#include "onnx/defs/printer.h"
#include "onnx/defs/tensor_proto_util.h"

namespace actnn {
namespace {

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

template <typename T>
void printValues(std::ostream& os, const std::vector<T>& values) {
  os << "{";
  printList(os, values, [&](const T& v) { os << v; });
  os << "}";
}

void printInitializer(std::ostream& os, const ::onnx::TensorProto& t) {
  using ::onnx::TensorProto;
  const bool in_int32_data = t.data_type() != TensorProto::FLOAT && t.data_type() != TensorProto::DOUBLE &&
                             t.data_type() != TensorProto::INT64 && t.data_type() != TensorProto::STRING &&
                             t.data_type() != TensorProto::UINT32 && t.data_type() != TensorProto::UINT64;
  if (in_int32_data && t.data_type() != TensorProto::INT32 && t.has_raw_data()) {
    os << t;
    return;
  }
  ::onnx::TypeProto type;
  type.mutable_tensor_type()->set_elem_type(t.data_type());
  auto* shape = type.mutable_tensor_type()->mutable_shape();  // rank 0 prints as `float`, not `float[]`
  for (int64_t d : t.dims()) shape->add_dim()->set_dim_value(d);
  os << type << " " << t.name() << " = ";
  switch (t.data_type()) {
    case TensorProto::FLOAT: return printValues(os, ::onnx::ParseData<float>(&t));
    case TensorProto::DOUBLE: return printValues(os, ::onnx::ParseData<double>(&t));
    case TensorProto::INT64: return printValues(os, ::onnx::ParseData<int64_t>(&t));
    case TensorProto::INT32: return printValues(os, ::onnx::ParseData<int32_t>(&t));
    default:
      if (in_int32_data) return printValues(os, std::vector<int32_t>(t.int32_data().begin(), t.int32_data().end()));
      os << "{}";
  }
}

void printAttribute(std::ostream& os, const ::onnx::AttributeProto& attr, const std::string& indent) {
  if (attr.type() == ::onnx::AttributeProto::GRAPH) {
    os << attr.name() << " = ";
    printGraph(os, attr.g(), indent + "  ");
  } else {
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
  if (graph.initializer_size() > 0) {
    os << "\n" << indent << "  <";
    printList(os, graph.initializer(), [&](const ::onnx::TensorProto& t) { printInitializer(os, t); });
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
