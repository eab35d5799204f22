// What an op lowering sees while the ONNX importer (import.cpp) turns one
// ONNX node into ATen nodes of the TorchScript graph: the node's operands as
// graph values (constants where the importer knows them), its attributes with
// the ONNX defaults, static shapes from ONNX shape inference, and errors that
// name the node. The lowerings themselves are in ops.cpp, one function per
// ONNX op, listed in one table.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <c10/util/Optional.h>
#include <onnx/onnx_pb.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/ir/named_value.h>

namespace actnn {
namespace onnx {

using torch::jit::Graph;
using torch::jit::NamedValue;
using torch::jit::Value;
using Shape = std::vector<int64_t>;

class NodeContext {
 public:
  NodeContext(Graph& graph, const ::onnx::NodeProto& node, int64_t index, int64_t opset,
              const std::string& origin, std::function<Value*(const std::string&)> lookup,
              std::function<c10::optional<Shape>(const std::string&)> inferred_shape,
              std::function<c10::optional<at::ScalarType>(const std::string&)> inferred_dtype,
              std::function<bool(const std::string&)> is_used);

  const ::onnx::NodeProto& proto() const { return node_; }
  int64_t opset() const { return opset_; }
  Graph& graph() { return graph_; }

  // Operands. An empty name (an omitted optional input) reads as absent.
  size_t numInputs() const { return node_.input_size(); }
  bool hasInput(size_t i) const { return i < numInputs() && !node_.input(i).empty(); }
  Value* input(size_t i);  // throws when absent
  // The operand's value if it is a constant of the graph.
  c10::optional<at::Tensor> constantInput(size_t i);
  at::Tensor requireConstant(size_t i, const std::string& what);
  std::vector<int64_t> constantInts(size_t i, const std::string& what);
  double constantScalar(size_t i, const std::string& what);
  // The operand's static shape and element type (from a constant or from
  // ONNX shape inference).
  Shape shapeOf(size_t i, const std::string& what);
  c10::optional<Shape> maybeShapeOf(size_t i);
  at::ScalarType dtypeOf(size_t i);

  // Attributes (ONNX defaults when absent).
  bool hasAttr(const std::string& name) const;
  int64_t attrInt(const std::string& name, int64_t def) const;
  double attrFloat(const std::string& name, double def) const;
  std::string attrString(const std::string& name, const std::string& def) const;
  std::vector<int64_t> attrInts(const std::string& name, std::vector<int64_t> def = {}) const;
  const ::onnx::TensorProto* attrTensor(const std::string& name) const;

  // Results.
  size_t numOutputs() const { return node_.output_size(); }
  bool outputUsed(size_t i) const;  // named, and read by a node or a graph output
  void setOutput(size_t i, Value* v);
  Value* outputValue(size_t i) const;

  // Inserts `kind(args)` (schema matched like TorchScript source does).
  Value* op(c10::Symbol kind, const std::vector<NamedValue>& args, const std::vector<NamedValue>& kwargs = {});
  Value* constant(const c10::IValue& v);
  Value* list(const std::vector<Value*>& tensors);

  // Errors naming the node. `unsupported` is for valid models that use what
  // this importer does not implement.
  [[noreturn]] void fail(const std::string& message) const;
  [[noreturn]] void unsupported(const std::string& message) const;
  std::string where() const;

 private:
  Graph& graph_;
  const ::onnx::NodeProto& node_;
  int64_t index_, opset_;
  std::string origin_;
  std::function<Value*(const std::string&)> lookup_;
  std::function<c10::optional<Shape>(const std::string&)> inferred_shape_;
  std::function<c10::optional<at::ScalarType>(const std::string&)> inferred_dtype_;
  std::function<bool(const std::string&)> is_used_;
  std::vector<Value*> outputs_;
};

struct OpLowering {
  OpLowering() = default;
  OpLowering(std::function<void(NodeContext&)> fn, std::set<int> constants = {}, bool is_random = false)
      : lower(std::move(fn)), constant_inputs(std::move(constants)), random(is_random) {}

  std::function<void(NodeContext&)> lower;
  // Operand positions that must be constants (shapes, axes, bounds, ...): an
  // initializer read only at such positions is a constant, not a parameter.
  std::set<int> constant_inputs;
  // Random ops are never evaluated at import even when their operands are
  // constants.
  bool random = false;
};

// The table, keyed by ONNX op type (default domain).
const std::map<std::string, OpLowering>& opTable();

at::ScalarType scalarTypeOf(int32_t onnx_elem_type, const std::string& what);

}  // namespace onnx
}  // namespace actnn
