// insert-quantize (ONNX training graphs): store the values that the backward
// part of an ONNX training graph reads from its forward part quantized, with
// com.actnn::Quantize right after the producer and one com.actnn::Dequantize
// right before the first backward reader (docs/onnx-actnn-ops.md).
//
//   p = AveragePool(r)                      p = AveragePool(r)
//   c = Conv(p, w)                          p_actnn_codes, p_actnn_lo, p_actnn_scale, p_actnn_shape
//   ...                                        = com.actnn.Quantize<bits = 2, group_size = 256>(p)
//   dp, dw, db =                            c = Conv(p, w)
//     com.microsoft.ConvGrad(dc, p, w)      ...
//                                           p_actnn_dq = com.actnn.Dequantize<bits = 2, group_size = 256,
//                                                          to = 1>(p_actnn_codes, p_actnn_lo, ...)
//                                           dp, dw, db = com.microsoft.ConvGrad(dc, p_actnn_dq, w)
//
// Forward and backward. The backward part is every node that depends,
// through its inputs or values its subgraphs capture, on a gradient seed; the
// forward part is every other node. A gradient seed is a graph input or
// initializer named `<v>_grad` where `<v>` is a node output: ONNX Runtime's
// gradient builder names the gradient of v `v_grad`, and its training
// artifacts hold d loss / d loss as the initializer `<loss>_grad` (ORTModule-
// style graphs take `output_grad` as an input). The caller may name the seeds
// instead. Nodes the gradient builder emits that read forward values only
// (`/Flatten_Grad/Shape_0`) are forward by this rule, which is what they are:
// they can run as soon as their inputs exist, and what they hand to the
// backward part (a shape) is a saved value of its own. Splitting by "ancestors
// of the loss" instead would call them backward and save their float input
// for nothing but its shape.
//
// What is quantized. A saved value is a forward node's output read by a
// backward node. It is quantized when the policy asks for it and it is a
// float tensor (float32, float16, bfloat16: from value_info, graph inputs and
// outputs, and ONNX shape inference, which does not see into com.microsoft
// ops) of rank 2 or more. Kept at full precision, with the reason reported:
//  - graph inputs and initializers (never saved values: they are held anyway)
//    and values computed from initializers only;
//  - graph outputs (held anyway), values of unknown type, non-float values
//    (pooling indices, shapes, masks);
//  - values a backward reader uses only through their sign (com.microsoft
//    ReluGrad / LeakyReluGrad's second input): the reader is discontinuous
//    there, so unbiased rounding does not give an unbiased gradient (a small
//    positive value rounded to zero flips its mask). The whole value is kept,
//    since that reader holds it anyway. Relu backward written with standard
//    ops, Where(Greater(x, 0), dy, 0), needs no rule: Greater reads forward
//    values only, so it is forward and the backward part reads its bool;
//  - statistics (outputs after the first of *Normalization / BatchNormInternal)
//    and vectors (rank 0 or 1), which are small and read multiplicatively;
//  - values whose samples are so small that codes and group metadata would
//    take as many bytes (a [batch, 10] logit at group size 256);
//  - values read inside a backward node's subgraph (not rewired);
//  - at L1, everything but the data inputs of forward Conv / ConvTranspose.
// Each saved value gets one Quantize and one Dequantize however many backward
// readers it has; forward readers keep the original. Inserted names are
// `<v>_actnn_{codes,lo,scale,shape,dq}` and nodes `<v>_actnn_{quantize,
// dequantize}`, suffixed `_1`, `_2`, ... on a clash. The node order stays
// topological. com.actnn (version 1) is added to opset_import when a node is
// inserted; the inserted values get value_info. A graph that holds com.actnn
// nodes already is refused (its Dequantize outputs would look like saved
// float values and be quantized twice).
#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "actnn/passes/onnx_actnn_ops.h"
#include "actnn/passes/onnx_training.h"
#include "onnx/shape_inference/implementation.h"

namespace actnn {
namespace {

using ::onnx::GraphProto;
using ::onnx::NodeProto;
using ::onnx::TensorProto;

constexpr int kGraphLevel = -1;  // "producer" of graph inputs and initializers

std::string opName(const NodeProto& node) {
  const bool standard = node.domain().empty() || node.domain() == "ai.onnx";
  return standard ? node.op_type() : node.domain() + "::" + node.op_type();
}

// "'name' (domain::Op)", or for an unnamed node (ONNX text inputs have no
// names) "node #3 (domain::Op) defining v", its position and first output.
std::string describe(const NodeProto& node, size_t index) {
  if (!node.name().empty()) return "'" + node.name() + "' (" + opName(node) + ")";
  std::string what = "node #" + std::to_string(index) + " (" + opName(node) + ")";
  return node.output_size() > 0 ? what + " defining " + node.output(0) : what;
}

bool isStandard(const NodeProto& node, const char* op) {
  return (node.domain().empty() || node.domain() == "ai.onnx") && node.op_type() == op;
}

// Readers that use input `slot` only through its sign. (A comparison of
// forward values is itself forward, so the backward part reads its bool.)
bool readsOnlySign(const NodeProto& node, int slot) {
  return node.domain() == "com.microsoft" && slot == 1 &&
         (node.op_type() == "ReluGrad" || node.op_type() == "LeakyReluGrad");
}

bool isStatistic(const NodeProto& producer, int output) {
  const std::string& op = producer.op_type();
  const auto endsWith = [&](const std::string& tail) {
    return op.size() >= tail.size() && op.compare(op.size() - tail.size(), tail.size(), tail) == 0;
  };
  return output >= 1 && (endsWith("Normalization") || endsWith("NormInternal"));
}

// Names a node's subgraphs read from enclosing scopes.
void collectCaptures(const GraphProto& graph, std::set<std::string> defined, std::set<std::string>& out);

void collectNodeCaptures(const NodeProto& node, const std::set<std::string>& defined, std::set<std::string>& out) {
  for (const auto& attr : node.attribute()) {
    if (attr.has_g()) collectCaptures(attr.g(), defined, out);
    for (const auto& g : attr.graphs()) collectCaptures(g, defined, out);
  }
}

void collectCaptures(const GraphProto& graph, std::set<std::string> defined, std::set<std::string>& out) {
  for (const auto& v : graph.input()) defined.insert(v.name());
  for (const auto& t : graph.initializer()) defined.insert(t.name());
  for (const auto& node : graph.node()) {
    for (const auto& in : node.input())
      if (!in.empty() && !defined.count(in)) out.insert(in);
    collectNodeCaptures(node, defined, out);
    for (const auto& o : node.output()) defined.insert(o);
  }
}

const char* dtypeName(int32_t elem) {
  switch (elem) {
    case TensorProto::FLOAT: return "float32";
    case TensorProto::FLOAT16: return "float16";
    case TensorProto::BFLOAT16: return "bfloat16";
    case TensorProto::DOUBLE: return "float64";
    case TensorProto::INT64: return "int64";
    case TensorProto::INT32: return "int32";
    case TensorProto::INT16: return "int16";
    case TensorProto::INT8: return "int8";
    case TensorProto::UINT8: return "uint8";
    case TensorProto::BOOL: return "bool";
    default: return "other";
  }
}

int64_t elemBytes(int32_t elem) {
  switch (elem) {
    case TensorProto::DOUBLE: case TensorProto::INT64: case TensorProto::UINT64: return 8;
    case TensorProto::FLOAT: case TensorProto::INT32: case TensorProto::UINT32: return 4;
    case TensorProto::FLOAT16: case TensorProto::BFLOAT16: case TensorProto::INT16: case TensorProto::UINT16: return 2;
    case TensorProto::INT8: case TensorProto::UINT8: case TensorProto::BOOL: return 1;
    default: return 0;
  }
}

bool isFloat(int32_t elem) {
  return elem == TensorProto::FLOAT || elem == TensorProto::FLOAT16 || elem == TensorProto::BFLOAT16;
}

// Tensor types of every value shape inference (on a copy) or the model declares.
std::map<std::string, ::onnx::TypeProto> knownTypes(const ::onnx::ModelProto& model) {
  ::onnx::ModelProto inferred = model;
  try {
    ::onnx::shape_inference::InferShapes(inferred);
  } catch (const std::exception&) {
    inferred = model;  // types then come from the declarations alone
  }
  std::map<std::string, ::onnx::TypeProto> types;
  const GraphProto& g = inferred.graph();
  for (const auto* list : {&g.input(), &g.output(), &g.value_info()})
    for (const auto& vi : *list)
      if (vi.type().has_tensor_type() && vi.type().tensor_type().elem_type() != 0) types[vi.name()] = vi.type();
  return types;
}

class Rewriter {
 public:
  Rewriter(::onnx::ModelProto& model, const OnnxCompressionPolicy& policy)
      : model_(model), graph_(*model.mutable_graph()), policy_(policy) {}

  OnnxTrainingReport run(const std::vector<std::string>& seeds) {
    indexGraph();
    splitBackward(seeds);
    findSaved();
    classify();
    rewrite();
    return std::move(report_);
  }

 private:
  struct Saved {
    std::string value;
    int producer;
    int output;
    std::vector<std::pair<int, int>> readers;  // (backward node, input slot); slot -1: subgraph capture
    bool quantize = false;
    int32_t elem = 0;
    std::optional<std::vector<int64_t>> static_shape;
  };

  void indexGraph() {
    for (const auto& vi : graph_.input()) producer_[vi.name()] = kGraphLevel;
    for (const auto& t : graph_.initializer()) producer_[t.name()] = kGraphLevel;
    for (const auto& t : graph_.initializer()) constant_.insert(t.name());
    for (const auto& vi : graph_.input()) constant_.erase(vi.name());  // overridable
    for (const auto& vi : graph_.output()) graph_outputs_.insert(vi.name());
    for (const auto& n : graph_.node()) used_names_.insert(n.name());
    reads_.resize(graph_.node_size());
    for (int i = 0; i < graph_.node_size(); ++i) {
      const NodeProto& node = graph_.node(i);
      if (node.domain() == kActnnOnnxDomain)
        throw OnnxTrainingError("node " + describe(node, i) + ": the graph is quantized already");
      // Names its subgraphs read from enclosing scopes are reads too (slot -1).
      std::set<std::string> captures;
      collectNodeCaptures(node, {}, captures);
      for (const auto& c : captures) {
        if (!producer_.count(c))
          throw OnnxTrainingError("node " + describe(node, i) + " reads '" + c +
                                  "' in a subgraph, which no graph input, initializer or earlier node defines");
        reads_[i].push_back({c, -1});
      }
      for (int s = 0; s < node.input_size(); ++s) {
        const std::string& in = node.input(s);
        if (in.empty()) continue;
        if (!producer_.count(in))
          throw OnnxTrainingError("node " + describe(node, i) + " reads '" + in +
                                  "', which no graph input, initializer or earlier node defines "
                                  "(is the graph topologically sorted?)");
        reads_[i].push_back({in, s});
      }
      for (const auto& out : node.output()) {
        if (out.empty()) continue;
        if (producer_.count(out))
          throw OnnxTrainingError("node " + describe(node, i) + " defines '" + out + "', which is already defined");
        producer_[out] = i;
      }
      const bool is_constant = std::all_of(reads_[i].begin(), reads_[i].end(),
                                           [&](const auto& r) { return constant_.count(r.first) > 0; });
      if (is_constant)
        for (const auto& out : node.output()) constant_.insert(out);
    }
    for (const auto& [name, p] : producer_) used_names_.insert(name);
  }

  void splitBackward(const std::vector<std::string>& explicit_seeds) {
    std::set<std::string> tainted;
    if (!explicit_seeds.empty()) {
      for (const auto& s : explicit_seeds) {
        if (!producer_.count(s)) throw OnnxTrainingError("gradient seed '" + s + "' is not a value of the graph");
        tainted.insert(s);
      }
    } else {
      const std::string suffix = "_grad";
      for (const auto& [name, p] : producer_) {
        if (p != kGraphLevel || name.size() <= suffix.size() ||
            name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
          continue;
        const auto of = producer_.find(name.substr(0, name.size() - suffix.size()));
        if (of != producer_.end() && of->second != kGraphLevel) tainted.insert(name);
      }
      if (tainted.empty())
        throw OnnxTrainingError(
            "graph '" + graph_.name() + "' has no backward part: no graph input or initializer is a gradient "
            "seed named '<value>_grad' after a value the graph computes (ONNX Runtime training artifacts "
            "hold '<loss>_grad')");
    }
    backward_.assign(graph_.node_size(), false);
    for (int i = 0; i < graph_.node_size(); ++i) {
      const NodeProto& node = graph_.node(i);
      bool b = std::any_of(node.output().begin(), node.output().end(),
                           [&](const std::string& o) { return tainted.count(o) > 0; });
      for (const auto& r : reads_[i]) b = b || tainted.count(r.first) > 0;
      if (!b) continue;
      backward_[i] = true;
      for (const auto& out : node.output()) tainted.insert(out);
    }
    report_.backward_nodes = std::count(backward_.begin(), backward_.end(), true);
    report_.forward_nodes = graph_.node_size() - report_.backward_nodes;
    if (report_.backward_nodes == 0) {
      std::string names;
      for (const auto& s : tainted) names += (names.empty() ? "'" : ", '") + s + "'";
      throw OnnxTrainingError("graph '" + graph_.name() + "' has no backward part: no node reads the gradient seed " +
                              names);
    }
  }

  void findSaved() {
    std::map<std::string, size_t> index;
    for (int i = 0; i < graph_.node_size(); ++i) {
      if (!backward_[i]) continue;
      for (const auto& [value, slot] : reads_[i]) {
        const int p = producer_.at(value);
        if (p == kGraphLevel || backward_[p]) continue;
        auto it = index.find(value);
        if (it == index.end()) {
          const NodeProto& prod = graph_.node(p);
          const int out = int(std::find(prod.output().begin(), prod.output().end(), value) - prod.output().begin());
          it = index.emplace(value, saved_.size()).first;
          saved_.push_back(Saved{value, p, out, {}, false, 0, std::nullopt});
        }
        saved_[it->second].readers.push_back({i, slot});
      }
    }
    std::stable_sort(saved_.begin(), saved_.end(), [](const Saved& a, const Saved& b) {
      return std::tie(a.producer, a.output) < std::tie(b.producer, b.output);
    });
  }

  // Why `s` stays at full precision; empty when it is quantized.
  std::string keepReason(const Saved& s, const ::onnx::TypeProto* type) {
    if (policy_.bits == 0) return "the level quantizes nothing";
    if (constant_.count(s.value)) return "computed from initializers only";
    if (graph_outputs_.count(s.value)) return "a graph output, held anyway";
    if (!type) return "type unknown";
    if (!isFloat(type->tensor_type().elem_type())) return "not a float tensor";
    for (const auto& [reader, slot] : s.readers) {
      const NodeProto& node = graph_.node(reader);
      if (slot >= 0 && readsOnlySign(node, slot)) return "read by " + opName(node) + ", which needs its exact sign";
    }
    if (isStatistic(graph_.node(s.producer), s.output)) return "a normalization statistic";
    if (type->tensor_type().has_shape()) {
      const auto& shape = type->tensor_type().shape();
      if (shape.dim_size() <= 1) return "rank 0 or 1";
      std::vector<int64_t> one_sample{1};
      for (int k = 1; k < shape.dim_size(); ++k)
        if (shape.dim(k).has_dim_value()) one_sample.push_back(shape.dim(k).dim_value());
      if (int(one_sample.size()) == shape.dim_size()) {
        const ActnnPackedGeometry geo = actnnPackedGeometry(one_sample, policy_.bits, policy_.group_size);
        int64_t numel = 1;
        for (int64_t d : one_sample) numel *= d;
        if (geo.code_bytes + geo.meta_bytes >= numel * elemBytes(type->tensor_type().elem_type()))
          return "not smaller quantized (" + std::to_string(numel) + " values per sample)";
      }
    }
    for (const auto& [reader, slot] : s.readers)
      if (slot < 0) return "read inside a subgraph of " + describe(graph_.node(reader), reader);
    if (policy_.only_conv_inputs) {
      bool conv_input = false;
      for (int i = 0; i < graph_.node_size(); ++i) {
        const NodeProto& n = graph_.node(i);
        conv_input = conv_input || (!backward_[i] && (isStandard(n, "Conv") || isStandard(n, "ConvTranspose")) &&
                                    n.input_size() > 0 && n.input(0) == s.value);
      }
      if (!conv_input) return "not a convolution input (only those at this level)";
    }
    return "";
  }

  void classify() {
    types_ = knownTypes(model_);
    for (Saved& s : saved_) {
      const auto t = types_.find(s.value);
      const ::onnx::TypeProto* type = t == types_.end() ? nullptr : &t->second;
      OnnxSavedValue row;
      row.value = s.value;
      row.producer = describe(graph_.node(s.producer), s.producer);
      for (const auto& [reader, slot] : s.readers) {
        const std::string r = describe(graph_.node(reader), reader);
        if (std::find(row.consumers.begin(), row.consumers.end(), r) == row.consumers.end())
          row.consumers.push_back(r);
      }
      row.dtype = "?";
      if (type) {
        s.elem = type->tensor_type().elem_type();
        row.dtype = dtypeName(s.elem);
        if (type->tensor_type().has_shape()) {
          std::vector<std::string> dims;
          std::vector<int64_t> values;
          for (const auto& d : type->tensor_type().shape().dim()) {
            dims.push_back(d.has_dim_value() ? std::to_string(d.dim_value()) : d.has_dim_param() ? d.dim_param() : "?");
            if (d.has_dim_value()) values.push_back(d.dim_value());
          }
          if (values.size() == dims.size()) s.static_shape = values;
          row.shape = dims;
        }
      }
      row.reason = keepReason(s, type);
      s.quantize = row.reason.empty();
      row.quantized = s.quantize;
      if (s.quantize) row.reason = "quantized";
      row.bits = s.quantize ? policy_.bits : int(8 * elemBytes(s.elem));
      if (s.static_shape && elemBytes(s.elem) > 0) {
        int64_t numel = 1;
        for (int64_t d : *s.static_shape) numel *= d;
        row.full_bytes = numel * elemBytes(s.elem);
        row.stored_bytes = s.quantize ? actnnPackedGeometry(*s.static_shape, policy_.bits, policy_.group_size).total()
                                      : *row.full_bytes;
      }
      report_.saved.push_back(std::move(row));
    }
  }

  std::string fresh(const std::string& base) {
    std::string name = base;
    for (int k = 1; used_names_.count(name); ++k) name = base + "_" + std::to_string(k);
    used_names_.insert(name);
    return name;
  }

  static void setInt(NodeProto& node, const char* name, int64_t value) {
    auto* a = node.add_attribute();
    a->set_name(name);
    a->set_type(::onnx::AttributeProto::INT);
    a->set_i(value);
  }

  void addValueInfo(const std::string& name, int32_t elem, const std::vector<::onnx::TensorShapeProto::Dimension>& dims) {
    auto* vi = graph_.add_value_info();
    vi->set_name(name);
    auto* t = vi->mutable_type()->mutable_tensor_type();
    t->set_elem_type(elem);
    for (const auto& d : dims) *t->mutable_shape()->add_dim() = d;
  }

  static ::onnx::TensorShapeProto::Dimension dimValue(int64_t v) {
    ::onnx::TensorShapeProto::Dimension d;
    d.set_dim_value(v);
    return d;
  }

  // Types of Quantize's outputs for an input of shape `in` (what the schema's
  // inference function derives), so that the model carries them.
  void addPackedValueInfo(int32_t elem, const ::onnx::TensorShapeProto& in, const std::string& codes,
                          const std::string& lo, const std::string& scale, const std::string& shape) {
    const int rank = in.dim_size(), first = rank >= 2 ? 1 : 0;
    const int32_t meta = elem == TensorProto::FLOAT16 ? TensorProto::FLOAT16 : TensorProto::BFLOAT16;
    addValueInfo(shape, TensorProto::INT64, {dimValue(rank)});
    const ::onnx::TensorShapeProto::Dimension samples = rank >= 2 ? in.dim(0) : dimValue(1);
    ::onnx::TensorShapeProto::Dimension row, groups;  // unknown unless D is static
    std::vector<int64_t> one_sample{1};
    for (int k = first; k < rank; ++k)
      if (in.dim(k).has_dim_value()) one_sample.push_back(in.dim(k).dim_value());
    if (int(one_sample.size()) == rank - first + 1) {
      const ActnnPackedGeometry geo = actnnPackedGeometry(one_sample, policy_.bits, policy_.group_size);
      groups = dimValue(geo.groups_per_sample);
      row = dimValue(geo.code_bytes);
    }
    addValueInfo(codes, TensorProto::UINT8, {samples, row});
    addValueInfo(lo, meta, {samples, groups});
    addValueInfo(scale, meta, {samples, groups});
  }

  // Quantize after the producer, Dequantize before the first backward reader;
  // the readers' inputs (never forward readers') then name the dequantized value.
  void rewrite() {
    std::map<int, std::vector<NodeProto>> after, before;
    for (const Saved& s : saved_) {
      if (!s.quantize) continue;
      const std::string codes = fresh(s.value + "_actnn_codes"), lo = fresh(s.value + "_actnn_lo"),
                        scale = fresh(s.value + "_actnn_scale"), shape = fresh(s.value + "_actnn_shape"),
                        restored = fresh(s.value + "_actnn_dq");
      NodeProto q;
      q.set_name(fresh(s.value + "_actnn_quantize"));
      q.set_domain(kActnnOnnxDomain);
      q.set_op_type("Quantize");
      q.add_input(s.value);
      for (const auto& o : {codes, lo, scale, shape}) q.add_output(o);
      setInt(q, "bits", policy_.bits);
      setInt(q, "group_size", policy_.group_size);
      after[s.producer].push_back(q);

      NodeProto dq;
      dq.set_name(fresh(s.value + "_actnn_dequantize"));
      dq.set_domain(kActnnOnnxDomain);
      dq.set_op_type("Dequantize");
      for (const auto& i : {codes, lo, scale, shape}) dq.add_input(i);
      dq.add_output(restored);
      setInt(dq, "bits", policy_.bits);
      setInt(dq, "group_size", policy_.group_size);
      setInt(dq, "to", s.elem);
      int first = graph_.node_size();
      for (const auto& [reader, slot] : s.readers) {
        first = std::min(first, reader);
        graph_.mutable_node(reader)->set_input(slot, restored);
      }
      before[first].push_back(dq);

      const auto& type = types_.at(s.value);
      auto* vi = graph_.add_value_info();
      vi->set_name(restored);
      *vi->mutable_type() = type;
      if (type.tensor_type().has_shape()) addPackedValueInfo(s.elem, type.tensor_type().shape(), codes, lo, scale, shape);
    }
    if (after.empty()) return;

    google::protobuf::RepeatedPtrField<NodeProto> nodes;
    for (int i = 0; i < graph_.node_size(); ++i) {
      for (auto& n : before[i]) *nodes.Add() = std::move(n);
      *nodes.Add() = graph_.node(i);
      for (auto& n : after[i]) *nodes.Add() = std::move(n);
    }
    graph_.mutable_node()->Swap(&nodes);
    declareDomain();
  }

  void declareDomain() {
    for (const auto& o : model_.opset_import()) {
      if (o.domain() != kActnnOnnxDomain) continue;
      if (o.version() != kActnnOnnxOpsetVersion)
        throw OnnxTrainingError("the model imports " + std::string(kActnnOnnxDomain) + " version " +
                                std::to_string(o.version()) + "; this compiler writes version " +
                                std::to_string(kActnnOnnxOpsetVersion));
      return;
    }
    auto* o = model_.add_opset_import();
    o->set_domain(kActnnOnnxDomain);
    o->set_version(kActnnOnnxOpsetVersion);
  }

  ::onnx::ModelProto& model_;
  GraphProto& graph_;
  const OnnxCompressionPolicy& policy_;
  std::map<std::string, int> producer_;
  std::set<std::string> constant_, graph_outputs_, used_names_;
  std::vector<std::vector<std::pair<std::string, int>>> reads_;
  std::vector<bool> backward_;
  std::vector<Saved> saved_;
  std::map<std::string, ::onnx::TypeProto> types_;
  OnnxTrainingReport report_;
};

std::string shapeText(const std::optional<std::vector<std::string>>& shape) {
  if (!shape) return "?";
  if (shape->empty()) return "scalar";
  std::string s;
  for (size_t i = 0; i < shape->size(); ++i) s += (i ? "x" : "") + (*shape)[i];
  return s;
}

std::string jsonString(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string jsonBytes(const std::optional<int64_t>& bytes) { return bytes ? std::to_string(*bytes) : "null"; }

struct Totals {
  int64_t quantized = 0, full = 0, stored = 0, dynamic = 0;
};

Totals totals(const OnnxTrainingReport& report) {
  Totals t;
  for (const auto& r : report.saved) {
    t.quantized += r.quantized;
    if (!r.full_bytes) {
      ++t.dynamic;
      continue;
    }
    t.full += *r.full_bytes;
    t.stored += *r.stored_bytes;
  }
  return t;
}

}  // namespace

OnnxCompressionPolicy onnxPolicyForLevel(const std::string& level) {
  OnnxCompressionPolicy p;
  if (level == "L0") p.bits = 0;
  else if (level == "L1") p.bits = 4, p.only_conv_inputs = true;
  else if (level == "L2") p.bits = 4;
  else if (level == "L3" || level == "L4" || level == "L5") p.bits = 2;
  else throw OnnxTrainingError("unknown level '" + level + "' (levels: L0..L5)");
  return p;
}

bool hasGradientSeed(const ::onnx::ModelProto& model) {
  const auto& g = model.graph();
  std::set<std::string> computed;
  for (const auto& node : g.node())
    for (const auto& out : node.output()) computed.insert(out);
  auto isSeed = [&](const std::string& name) {
    const std::string suffix = "_grad";
    return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
           computed.count(name.substr(0, name.size() - suffix.size())) > 0;
  };
  return std::any_of(g.input().begin(), g.input().end(), [&](const auto& v) { return isSeed(v.name()); }) ||
         std::any_of(g.initializer().begin(), g.initializer().end(), [&](const auto& t) { return isSeed(t.name()); });
}

bool OnnxTrainingReport::changed() const {
  return std::any_of(saved.begin(), saved.end(), [](const OnnxSavedValue& s) { return s.quantized; });
}

OnnxTrainingReport insertOnnxQuantize(::onnx::ModelProto& model, const OnnxCompressionPolicy& policy,
                                      const std::vector<std::string>& gradient_seeds) {
  const int b = policy.bits;
  if (b != 0 && b != 1 && b != 2 && b != 4 && b != 8)
    throw OnnxTrainingError("quantization width must be 1, 2, 4 or 8 bits (0: none), got " + std::to_string(b));
  if (policy.group_size <= 0 || policy.group_size % 32 != 0)
    throw OnnxTrainingError("group size must be a positive multiple of 32, got " + std::to_string(policy.group_size));
  registerActnnOnnxOps();
  return Rewriter(model, policy).run(gradient_seeds);
}

std::string formatOnnxTrainingReport(const OnnxTrainingReport& report) {
  const Totals t = totals(report);
  std::ostringstream os;
  char line[512];
  std::snprintf(line, sizeof(line),
                "saved set: %zu values (%lld quantized) between %lld forward and %lld backward nodes; "
                "%lld bytes at full precision, %lld stored",
                report.saved.size(), (long long)t.quantized, (long long)report.forward_nodes,
                (long long)report.backward_nodes, (long long)t.full, (long long)t.stored);
  os << line;
  if (t.stored > 0) {
    std::snprintf(line, sizeof(line), " (%.2fx)", double(t.full) / double(t.stored));
    os << line;
  }
  if (t.dynamic) os << "; " << t.dynamic << " with dynamic shapes not counted";
  os << "\n";
  std::snprintf(line, sizeof(line), "%4s  %-9s  %4s  %-8s  %-16s  %10s  %10s  %s\n", "#", "action", "bits", "dtype",
                "shape", "full", "stored", "value <- producer -> readers: why");
  os << line;
  for (size_t i = 0; i < report.saved.size(); ++i) {
    const auto& r = report.saved[i];
    std::string readers;
    for (const auto& c : r.consumers) readers += (readers.empty() ? "" : ", ") + c;
    std::snprintf(line, sizeof(line), "%4zu  %-9s  %4s  %-8s  %-16s  %10s  %10s  ", i,
                  r.quantized ? "quantized" : "kept", r.bits ? std::to_string(r.bits).c_str() : "-", r.dtype.c_str(), shapeText(r.shape).c_str(),
                  r.full_bytes ? std::to_string(*r.full_bytes).c_str() : "-",
                  r.stored_bytes ? std::to_string(*r.stored_bytes).c_str() : "-");
    os << line << r.value << " <- " << r.producer << " -> " << readers;
    if (!r.quantized) os << ": " << r.reason;
    os << "\n";
  }
  return os.str();
}

std::string formatOnnxTrainingReportJson(const OnnxTrainingReport& report) {
  std::ostringstream os;
  for (size_t i = 0; i < report.saved.size(); ++i) {
    const auto& r = report.saved[i];
    std::string readers;
    for (const auto& c : r.consumers) readers += (readers.empty() ? "" : ",") + jsonString(c);
    os << "{\"index\":" << i << ",\"value\":" << jsonString(r.value) << ",\"producer\":" << jsonString(r.producer)
       << ",\"consumers\":[" << readers << "],\"dtype\":" << jsonString(r.dtype)
       << ",\"shape\":" << jsonString(shapeText(r.shape))
       << ",\"action\":" << jsonString(r.quantized ? "quantized" : "kept") << ",\"reason\":" << jsonString(r.reason)
       << ",\"bits\":" << r.bits << ",\"full_bytes\":" << jsonBytes(r.full_bytes)
       << ",\"stored_bytes\":" << jsonBytes(r.stored_bytes) << "}\n";
  }
  const Totals t = totals(report);
  char ratio[32];
  std::snprintf(ratio, sizeof(ratio), "%.4f", double(t.full) / double(std::max<int64_t>(t.stored, 1)));
  os << "{\"saved_values\":" << report.saved.size() << ",\"quantized\":" << t.quantized
     << ",\"forward_nodes\":" << report.forward_nodes << ",\"backward_nodes\":" << report.backward_nodes
     << ",\"full_bytes\":" << t.full << ",\"stored_bytes\":" << t.stored << ",\"ratio\":" << ratio
     << ",\"dynamic_values\":" << t.dynamic << "}\n";
  return os.str();
}

}  // namespace actnn
