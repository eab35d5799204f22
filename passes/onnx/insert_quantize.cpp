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
// for nothing but its shape. "Before" and "after" below are positions in the
// graph's node list, the order the rewrite assumes the nodes run in.
//
// Buffers, not names. A saved value is a forward node's output read by a
// backward node. Flatten, Reshape, Squeeze, Unsqueeze and Identity (forward,
// default domain) return their data input's buffer in ONNX Runtime, so a
// saved value and the views of it that are saved too are one buffer (an
// alias class, named after the value the views lead back to) and get one
// decision: when a member is kept, the class is kept and its other members
// are reported as aliases; when several members are quantized, the first is
// quantized and the others are restored from its dequantized copy by Reshape
// (to a Shape taken in the forward part). A class's full-precision bytes are
// counted once, on its first row; a view of a graph input is held anyway.
//
// What is quantized: a float tensor (float32, float16, bfloat16: from
// value_info, graph inputs and outputs, and ONNX shape inference, which does
// not see into com.microsoft ops) of known rank 2 or more, when the policy
// asks for it. Kept at full precision, with the reason reported:
//  - at L0, everything (nothing is inserted);
//  - graph inputs and initializers (never saved values: they are held
//    anyway), values computed from initializers only (not through random
//    ops: RandomNormal, Dropout, ...), and graph outputs;
//  - values produced after the first backward node (they live inside the
//    backward part), and values read by the backward part with no forward
//    node between the producer and the first backward reader: quantizing
//    them saves nothing;
//  - values of unknown type or rank, non-float values (pooling indices,
//    shapes, masks), statistics (mean / inverse std outputs of
//    LayerNormalization, SimplifiedLayerNormalization, BatchNormalization,
//    com.microsoft BatchNormInternal, Skip(Simplified)LayerNormalization) and
//    vectors (rank 0 or 1), which are small and read multiplicatively;
//  - values whose samples are so small that codes and group metadata would
//    take as many bytes (a [batch, 10] logit at group size 256);
//  - values read inside a backward node's subgraph (not rewired);
//  - values read by com.microsoft LeakyReluGrad (its X input): the reader
//    uses them through their sign, is discontinuous there, and unbiased
//    rounding does not give an unbiased gradient (a small positive value
//    rounded to zero flips its mask); LeakyReluGrad also needs alpha·dY on
//    the negative side, so it keeps the whole value;
//  - at L1, everything but the data inputs of forward Conv / ConvTranspose.
// Readers that are not linear in the value (TanhGrad, SoftmaxGrad,
// SoftmaxCrossEntropyLossGrad's log-probabilities) read the quantized copy
// like the others and get a slightly biased gradient, as in the TorchScript
// path; the gradient is unbiased for readers linear in the value.
//
// Masks (L1 and up). com.microsoft ReluGrad(dY, X) computes dX = dY where
// X > 0, else 0 (NaN X gives 0). Its X is replaced by a bool mask computed in
// the forward part right after X's producer, and the reader by standard ops
// with the same result:
//   X_actnn_mask = Greater(X, zero)            (forward; one byte per value)
//   dX = Where(X_actnn_mask, dY, zero)         (was ReluGrad(dY, X))
// `zero` is a scalar Constant of X's type at the top of the graph (a float
// Constant then Cast for float16 / bfloat16). X's other backward readers
// then get the quantized copy as usual, and if none remain X is not saved at
// all. When X is kept whole anyway (a graph output, an alias of a kept
// value, a reason above), ReluGrad reads it as before and no mask is made.
// Masks need the default-domain opset 13 or later (bfloat16 Greater, Cast).
// ONNX bool is one byte: a packed 1-bit mask would need a com.actnn op.
//
// Each saved value gets one Quantize and one Dequantize however many backward
// readers it has; forward readers keep the original. Inserted names are
// `<v>_actnn_{codes,lo,scale,shape,dq,mask}` and nodes `<v>_actnn_{quantize,
// dequantize,...}`, suffixed `_1`, `_2`, ... on a clash with any name the
// model uses (value_info and subgraphs included). The node order stays
// topological. com.actnn (version 1) is added to opset_import when a Quantize
// is inserted (a model importing another com.actnn version is refused before
// anything changes); the inserted values get value_info. A graph that holds
// com.actnn nodes already is refused (its Dequantize outputs would look like
// saved float values and be quantized twice).
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
constexpr int64_t kMaskOpset = 13;  // bfloat16 Greater and Cast

std::string opName(const NodeProto& node) {
  const bool standard = node.domain().empty() || node.domain() == "ai.onnx";
  return standard ? node.op_type() : node.domain() + "::" + node.op_type();
}

// "node 'name' (domain::Op)", or for an unnamed node (ONNX text inputs have
// no names) "node #3 (domain::Op) defining a, b": its position and outputs.
std::string describe(const NodeProto& node, size_t index) {
  if (!node.name().empty()) return "node '" + node.name() + "' (" + opName(node) + ")";
  std::string what = "node #" + std::to_string(index) + " (" + opName(node) + ")", outputs;
  for (const auto& o : node.output())
    if (!o.empty()) outputs += (outputs.empty() ? "" : ", ") + o;
  return outputs.empty() ? what : what + " defining " + outputs;
}

bool isStandard(const NodeProto& node) { return node.domain().empty() || node.domain() == "ai.onnx"; }
bool isStandard(const NodeProto& node, const char* op) { return isStandard(node) && node.op_type() == op; }

// Ops that return (a view of) their first input's buffer in ONNX Runtime.
bool isView(const NodeProto& node) {
  static const std::set<std::string> views{"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity"};
  return isStandard(node) && views.count(node.op_type()) && node.input_size() > 0 && !node.input(0).empty();
}

// com.microsoft ReluGrad's X: read only through X > 0, so a mask can stand in.
bool isReluGradX(const NodeProto& node, int slot) {
  return node.domain() == "com.microsoft" && node.op_type() == "ReluGrad" && slot == 1 && node.input_size() == 2;
}

// Other readers that use input `slot` only through its sign, and need it whole.
bool readsSignOnly(const NodeProto& node, int slot) {
  return node.domain() == "com.microsoft" && slot == 1 &&
         (node.op_type() == "ReluGrad" || node.op_type() == "LeakyReluGrad");
}

// Ops whose output is not a function of their inputs (never "constant").
bool isRandom(const NodeProto& node) {
  static const std::set<std::string> random{"RandomNormal",     "RandomUniform", "RandomNormalLike",
                                            "RandomUniformLike", "Multinomial",  "Bernoulli",
                                            "Dropout",          "BitmaskDropout"};
  return random.count(node.op_type()) > 0;
}

// The mean / inverse-std (or variance) outputs of the normalization ops that
// have them; other outputs (SkipLayerNormalization's input + skip sum) are
// activations.
bool isStatistic(const NodeProto& producer, int output) {
  const std::string& op = producer.op_type();
  const bool ms = producer.domain() == "com.microsoft";
  if ((isStandard(producer) || ms) && op == "LayerNormalization") return output == 1 || output == 2;
  if ((isStandard(producer) || ms) && op == "SimplifiedLayerNormalization") return output == 1;
  if (isStandard(producer) && op == "BatchNormalization") return output >= 1 && output <= 4;
  if (ms && op == "BatchNormInternal") return output >= 1 && output <= 4;
  if (ms && (op == "SkipLayerNormalization" || op == "SkipSimplifiedLayerNormalization"))
    return output == 1 || output == 2;
  return false;
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

// Every name a graph and its subgraphs use: values, value_info, node names.
void collectNames(const GraphProto& graph, std::set<std::string>& out) {
  for (const auto* list : {&graph.input(), &graph.output(), &graph.value_info()})
    for (const auto& vi : *list) out.insert(vi.name());
  for (const auto& t : graph.initializer()) out.insert(t.name());
  for (const auto& node : graph.node()) {
    out.insert(node.name());
    out.insert(node.input().begin(), node.input().end());
    out.insert(node.output().begin(), node.output().end());
    for (const auto& attr : node.attribute()) {
      if (attr.has_g()) collectNames(attr.g(), out);
      for (const auto& g : attr.graphs()) collectNames(g, out);
    }
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

int64_t defaultOpset(const ::onnx::ModelProto& model) {
  for (const auto& o : model.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") return o.version();
  return 0;
}

class Rewriter {
 public:
  Rewriter(::onnx::ModelProto& model, const OnnxCompressionPolicy& policy)
      : model_(model), graph_(*model.mutable_graph()), policy_(policy) {}

  OnnxTrainingReport run(const std::vector<std::string>& seeds) {
    checkDomainVersion();
    indexGraph();
    splitBackward(seeds);
    findSaved();
    classify();
    report();
    rewrite();
    return std::move(report_);
  }

 private:
  enum class Action {
    kKeep,      // held at full precision
    kQuantize,  // Quantize after the producer, Dequantize before the first backward reader
    kAlias,     // a view of a kept value (or of a graph input): nothing to do
    kRestore,   // a view of a quantized value: Reshape of its dequantized copy
    kMaskOnly,  // only ReluGrad reads it: only its mask is saved
  };

  struct Saved {
    std::string value;
    int producer;
    int output;
    std::vector<std::pair<int, int>> readers;  // (backward node, input slot); slot -1: subgraph capture
    std::string root;                          // the value whose buffer it is (itself unless a view)
    int32_t elem = 0;
    const ::onnx::TypeProto* type = nullptr;
    std::optional<std::vector<int64_t>> static_shape;
    Action action = Action::kKeep;
    std::string reason;  // why it is kept (or what it is an alias of)
    bool mask = false;   // its ReluGrad readers read <v>_actnn_mask instead
    int rep = -1;        // kAlias / kRestore: the class member it shares a buffer with (index in saved_)
    std::string dq;      // kQuantize / kRestore: the name backward readers read
    int mask_row = -1;   // its mask's row in the report
  };

  // Refuse before anything changes: a com.actnn version this compiler does not write.
  void checkDomainVersion() {
    for (const auto& o : model_.opset_import())
      if (o.domain() == kActnnOnnxDomain && o.version() != kActnnOnnxOpsetVersion)
        throw OnnxTrainingError("the model imports " + std::string(kActnnOnnxDomain) + " version " +
                                std::to_string(o.version()) + "; this compiler writes version " +
                                std::to_string(kActnnOnnxOpsetVersion));
  }

  void indexGraph() {
    for (const auto& vi : graph_.input()) producer_[vi.name()] = kGraphLevel;
    for (const auto& t : graph_.initializer()) producer_[t.name()] = kGraphLevel;
    for (const auto& t : graph_.initializer()) constant_.insert(t.name());
    for (const auto& vi : graph_.input()) constant_.erase(vi.name());  // overridable
    for (const auto& vi : graph_.output()) graph_outputs_.insert(vi.name());
    collectNames(graph_, used_names_);
    used_names_.erase("");
    reads_.resize(graph_.node_size());
    for (int i = 0; i < graph_.node_size(); ++i) {
      const NodeProto& node = graph_.node(i);
      if (node.domain() == kActnnOnnxDomain)
        throw OnnxTrainingError(describe(node, i) + ": the graph is quantized already");
      // Names its subgraphs read from enclosing scopes are reads too (slot -1).
      std::set<std::string> captures;
      collectNodeCaptures(node, {}, captures);
      for (const auto& c : captures) {
        if (!producer_.count(c))
          throw OnnxTrainingError(describe(node, i) + " reads '" + c +
                                  "' in a subgraph, which no graph input, initializer or earlier node defines");
        reads_[i].push_back({c, -1});
      }
      for (int s = 0; s < node.input_size(); ++s) {
        const std::string& in = node.input(s);
        if (in.empty()) continue;
        if (!producer_.count(in))
          throw OnnxTrainingError(describe(node, i) + " reads '" + in +
                                  "', which no graph input, initializer or earlier node defines "
                                  "(is the graph topologically sorted?)");
        reads_[i].push_back({in, s});
      }
      for (const auto& out : node.output()) {
        if (out.empty()) continue;
        if (producer_.count(out))
          throw OnnxTrainingError(describe(node, i) + " defines '" + out + "', which is already defined");
        producer_[out] = i;
      }
      // Constant: computed from initializers only (Constant nodes included),
      // and not by a random op.
      const bool is_constant = !isRandom(node) && (!reads_[i].empty() || isStandard(node, "Constant")) &&
                               std::all_of(reads_[i].begin(), reads_[i].end(),
                                           [&](const auto& r) { return constant_.count(r.first) > 0; });
      if (is_constant)
        for (const auto& out : node.output()) constant_.insert(out);
    }
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
    first_backward_ = int(std::find(backward_.begin(), backward_.end(), true) - backward_.begin());
  }

  // The value whose buffer `v` is: follow forward views back to their source.
  std::string aliasRoot(std::string v) const {
    for (;;) {
      const int p = producer_.at(v);
      if (p == kGraphLevel || backward_[p] || !isView(graph_.node(p))) return v;
      v = graph_.node(p).input(0);
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
          Saved s;
          s.value = value;
          s.producer = p;
          s.output = int(std::find(prod.output().begin(), prod.output().end(), value) - prod.output().begin());
          s.root = aliasRoot(value);
          it = index.emplace(value, saved_.size()).first;
          saved_.push_back(std::move(s));
        }
        saved_[it->second].readers.push_back({i, slot});
      }
    }
    std::stable_sort(saved_.begin(), saved_.end(), [](const Saved& a, const Saved& b) {
      return std::tie(a.producer, a.output) < std::tie(b.producer, b.output);
    });
  }

  bool masked(const Saved& s, int reader, int slot) const { return s.mask && isReluGradX(graph_.node(reader), slot); }

  // Why `s` is held whole whatever reads it (a reason that no mask changes).
  std::string heldReason(const Saved& s) const {
    if (policy_.bits == 0) return "the level quantizes nothing";
    if (constant_.count(s.value)) return "computed from initializers only";
    if (graph_outputs_.count(s.value)) return "a graph output, held anyway";
    if (const auto o = output_roots_.find(s.root); o != output_roots_.end())
      return "the buffer of graph output '" + o->second + "' (a view), held anyway";
    if (s.producer > first_backward_) return "produced inside the backward part";
    int first = graph_.node_size();
    for (const auto& r : s.readers) first = std::min(first, r.first);
    bool forward_between = false;
    for (int i = s.producer + 1; i < first; ++i) forward_between = forward_between || !backward_[i];
    if (!forward_between) return "read by the backward part right after it is produced (nothing to save)";
    if (!s.type) return "type unknown";
    return "";
  }

  // Why `s`, read by `readers`, stays at full precision; empty when it is quantized.
  std::string keepReason(const Saved& s, const std::vector<std::pair<int, int>>& readers) const {
    const auto& t = s.type->tensor_type();
    if (!isFloat(t.elem_type())) return "not a float tensor";
    for (const auto& [reader, slot] : readers) {
      const NodeProto& node = graph_.node(reader);
      if (slot >= 0 && readsSignOnly(node, slot)) {
        std::string why = "read by " + opName(node) + ", which needs its exact sign";
        if (isReluGradX(node, slot)) why += " (a mask needs the default-domain opset " + std::to_string(kMaskOpset) + ")";
        return why;
      }
    }
    if (isStatistic(graph_.node(s.producer), s.output)) return "a normalization statistic";
    if (!t.has_shape()) return "rank unknown";
    const auto& shape = t.shape();
    if (shape.dim_size() <= 1) return "rank 0 or 1";
    std::vector<int64_t> one_sample{1};
    for (int k = 1; k < shape.dim_size(); ++k)
      if (shape.dim(k).has_dim_value()) one_sample.push_back(shape.dim(k).dim_value());
    if (int(one_sample.size()) == shape.dim_size()) {
      const ActnnPackedGeometry geo = actnnPackedGeometry(one_sample, policy_.bits, policy_.group_size);
      int64_t numel = 1;
      for (int64_t d : one_sample) numel *= d;
      if (geo.code_bytes + geo.meta_bytes >= numel * elemBytes(t.elem_type()))
        return "not smaller quantized (" + std::to_string(numel) + " values per sample)";
    }
    for (const auto& [reader, slot] : readers)
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

  // One decision per saved value, then one per alias class.
  void classify() {
    types_ = knownTypes(model_);
    for (const auto& o : graph_outputs_)
      if (producer_.count(o)) output_roots_.emplace(aliasRoot(o), o);
    const bool masks_allowed = policy_.bits > 0 && defaultOpset(model_) >= kMaskOpset;
    for (Saved& s : saved_) {
      const auto t = types_.find(s.value);
      if (t != types_.end()) {
        s.type = &t->second;
        s.elem = s.type->tensor_type().elem_type();
        if (s.type->tensor_type().has_shape()) {
          std::vector<int64_t> values;
          for (const auto& d : s.type->tensor_type().shape().dim())
            if (d.has_dim_value()) values.push_back(d.dim_value());
          if (int(values.size()) == s.type->tensor_type().shape().dim_size()) s.static_shape = values;
        }
      }
      s.reason = heldReason(s);
      if (!s.reason.empty()) continue;
      std::vector<std::pair<int, int>> others;  // readers but the ReluGrads a mask can serve
      for (const auto& [reader, slot] : s.readers) {
        const bool maskable = masks_allowed && isFloat(s.elem) && isReluGradX(graph_.node(reader), slot);
        s.mask = s.mask || maskable;
        if (!maskable) others.push_back({reader, slot});
      }
      if (others.empty()) {
        s.action = Action::kMaskOnly;
        continue;
      }
      s.reason = keepReason(s, others);
      if (s.reason.empty()) {
        s.action = Action::kQuantize;
      } else {
        s.mask = false;  // held whole: ReluGrad reads it as before
      }
    }

    // Alias classes, in producer order.
    std::map<std::string, std::vector<int>> classes;
    for (int i = 0; i < int(saved_.size()); ++i) classes[saved_[i].root].push_back(i);
    for (const auto& [root, members] : classes) {
      const bool of_input = producer_.at(root) == kGraphLevel;
      int kept = -1, quantized = -1;
      for (int m : members) {
        if (kept < 0 && saved_[m].action == Action::kKeep) kept = m;
        if (quantized < 0 && saved_[m].action == Action::kQuantize) quantized = m;
      }
      for (int m : members) {
        Saved& s = saved_[m];
        if (of_input) {
          s.action = Action::kAlias;
          s.mask = false;
          s.reason = "a view of graph input '" + root + "', held anyway";
        } else if (kept >= 0 && m != kept) {
          s.action = Action::kAlias;
          s.mask = false;
          s.rep = kept;
          s.reason = "a view of '" + saved_[kept].value + "' (the same buffer), which is kept";
        } else if (kept < 0 && quantized >= 0 && m != quantized && s.action == Action::kQuantize) {
          s.action = Action::kRestore;
          s.rep = quantized;
          s.reason = "a view of '" + saved_[quantized].value + "': Reshape of its dequantized copy";
        }
      }
    }
  }

  std::optional<int64_t> classBytes(const Saved& s) const {
    if (!s.static_shape || elemBytes(s.elem) == 0) return std::nullopt;
    int64_t numel = 1;
    for (int64_t d : *s.static_shape) numel *= d;
    return numel * elemBytes(s.elem);
  }

  // Dims as the report shows them ("8", "batch", "?"); unset when the rank is unknown.
  static std::optional<std::vector<std::string>> dims(const Saved& s) {
    if (!s.type || !s.type->tensor_type().has_shape()) return std::nullopt;
    std::vector<std::string> out;
    for (const auto& d : s.type->tensor_type().shape().dim())
      out.push_back(d.has_dim_value() ? std::to_string(d.dim_value()) : d.has_dim_param() ? d.dim_param() : "?");
    return out;
  }

  void report() {
    std::set<std::string> counted;  // alias classes whose full-precision bytes are counted
    for (Saved& s : saved_) {
      OnnxSavedValue row;
      row.producer = describe(graph_.node(s.producer), s.producer);
      row.dtype = s.type ? dtypeName(s.elem) : "?";
      row.shape = dims(s);
      const std::optional<int64_t> bytes = classBytes(s);
      const bool first_of_class = counted.insert(s.root).second;
      std::optional<int64_t> full = first_of_class ? bytes : std::optional<int64_t>(0);
      if (s.action != Action::kMaskOnly) {
        row.value = s.value;
        for (const auto& [reader, slot] : s.readers) {
          if (masked(s, reader, slot)) continue;
          const std::string r = describe(graph_.node(reader), reader);
          if (std::find(row.consumers.begin(), row.consumers.end(), r) == row.consumers.end())
            row.consumers.push_back(r);
        }
        row.quantized = s.action == Action::kQuantize;
        row.reason = row.quantized ? "quantized" : s.reason;
        switch (s.action) {
          case Action::kQuantize:
            row.action = "quantized";
            row.bits = policy_.bits;
            row.full_bytes = full;
            if (s.static_shape)
              row.stored_bytes = actnnPackedGeometry(*s.static_shape, policy_.bits, policy_.group_size).total();
            break;
          case Action::kKeep:
            row.action = "kept";
            row.bits = int(8 * elemBytes(s.elem));
            row.full_bytes = full;
            row.stored_bytes = bytes;
            break;
          case Action::kAlias:  // of a graph input (never counted: inputs are not saved values) or a kept value
            row.action = "alias";
            row.full_bytes = s.rep < 0 ? 0 : full;
            row.stored_bytes = 0;
            break;
          case Action::kRestore:  // stores the Shape its Reshape reads
            row.action = "alias";
            row.full_bytes = full;
            row.stored_bytes = 8 * int64_t(s.type->tensor_type().shape().dim_size());
            break;
          case Action::kMaskOnly:
            break;
        }
        full = 0;
        report_.saved.push_back(std::move(row));
      }
      if (!s.mask) continue;
      OnnxSavedValue mask;
      mask.value = s.value + "_actnn_mask";  // the name rewrite() gives it, unless taken
      mask.producer = "Greater(" + s.value + ", 0) after " + describe(graph_.node(s.producer), s.producer);
      for (const auto& [reader, slot] : s.readers)
        if (masked(s, reader, slot)) mask.consumers.push_back(describe(graph_.node(reader), reader) + " as Where");
      mask.dtype = "bool";
      mask.shape = dims(s);
      mask.action = "mask";
      mask.reason = "the sign of '" + s.value + "' for com.microsoft::ReluGrad, one byte per value";
      mask.bits = 8;
      mask.full_bytes = full;
      if (bytes) mask.stored_bytes = *bytes / elemBytes(s.elem);
      s.mask_row = int(report_.saved.size());
      report_.saved.push_back(std::move(mask));
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

  NodeProto makeNode(const std::string& op, const std::string& domain, const std::string& name,
                     const std::vector<std::string>& inputs, const std::vector<std::string>& outputs) {
    NodeProto n;
    n.set_name(fresh(name));
    n.set_op_type(op);
    if (!domain.empty()) n.set_domain(domain);
    for (const auto& i : inputs) n.add_input(i);
    for (const auto& o : outputs) n.add_output(o);
    return n;
  }

  void addValueInfo(const std::string& name, int32_t elem, const std::vector<::onnx::TensorShapeProto::Dimension>& dims) {
    auto* vi = graph_.add_value_info();
    vi->set_name(name);
    auto* t = vi->mutable_type()->mutable_tensor_type();
    t->set_elem_type(elem);
    auto* shape = t->mutable_shape();  // rank 0 when dims is empty
    for (const auto& d : dims) *shape->add_dim() = d;
  }

  void addValueInfo(const std::string& name, const ::onnx::TypeProto& type) {
    auto* vi = graph_.add_value_info();
    vi->set_name(name);
    *vi->mutable_type() = type;
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

  // A scalar zero of element type `elem`, made once by Constant nodes at the
  // top of the graph (a float Constant then Cast for the 16-bit types, which
  // ONNX text syntax cannot write as tensors).
  std::string zeroOf(int32_t elem, std::vector<NodeProto>& prelude) {
    auto it = zeros_.find(elem);
    if (it != zeros_.end()) return it->second;
    const std::string f32 = elem == TensorProto::FLOAT ? fresh("actnn_zero") : fresh("actnn_zero_f32");
    NodeProto c = makeNode("Constant", "", f32 + "_constant", {}, {f32});
    auto* a = c.add_attribute();
    a->set_name("value");
    a->set_type(::onnx::AttributeProto::TENSOR);
    a->mutable_t()->set_data_type(TensorProto::FLOAT);
    a->mutable_t()->add_float_data(0.0f);
    prelude.push_back(c);
    addValueInfo(f32, TensorProto::FLOAT, {});
    std::string zero = f32;
    if (elem != TensorProto::FLOAT) {
      zero = fresh(std::string("actnn_zero_") + (elem == TensorProto::FLOAT16 ? "f16" : "bf16"));
      NodeProto cast = makeNode("Cast", "", zero + "_cast", {f32}, {zero});
      setInt(cast, "to", elem);
      prelude.push_back(cast);
      addValueInfo(zero, elem, {});
    }
    return zeros_[elem] = zero;
  }

  // Inserts the nodes: Quantize after the producer, Dequantize before the
  // first backward reader of its class, Shape / Reshape for restored views,
  // Greater after the producer for masks; rewires the backward readers
  // (never forward ones).
  void rewrite() {
    std::map<int, std::vector<NodeProto>> after, before;
    std::vector<NodeProto> prelude;
    std::map<std::string, int> class_first;  // root -> first backward reader of its quantized or restored members
    for (const Saved& s : saved_) {
      if (s.action != Action::kQuantize && s.action != Action::kRestore) continue;
      int& first = class_first.emplace(s.root, graph_.node_size()).first->second;
      for (const auto& [reader, slot] : s.readers)
        if (!masked(s, reader, slot)) first = std::min(first, reader);
    }
    bool quantized = false;
    for (Saved& s : saved_) {
      if (s.action == Action::kQuantize) {
        quantized = true;
        const std::string codes = fresh(s.value + "_actnn_codes"), lo = fresh(s.value + "_actnn_lo"),
                          scale = fresh(s.value + "_actnn_scale"), shape = fresh(s.value + "_actnn_shape");
        s.dq = fresh(s.value + "_actnn_dq");
        NodeProto q = makeNode("Quantize", kActnnOnnxDomain, s.value + "_actnn_quantize", {s.value},
                               {codes, lo, scale, shape});
        setInt(q, "bits", policy_.bits);
        setInt(q, "group_size", policy_.group_size);
        after[s.producer].push_back(q);
        NodeProto dq = makeNode("Dequantize", kActnnOnnxDomain, s.value + "_actnn_dequantize",
                                {codes, lo, scale, shape}, {s.dq});
        setInt(dq, "bits", policy_.bits);
        setInt(dq, "group_size", policy_.group_size);
        setInt(dq, "to", s.elem);
        before[class_first.at(s.root)].push_back(dq);
        addValueInfo(s.dq, *s.type);
        addPackedValueInfo(s.elem, s.type->tensor_type().shape(), codes, lo, scale, shape);
      } else if (s.action == Action::kRestore) {
        // The representative comes first in producer order, so its copy exists.
        const std::string shape = fresh(s.value + "_actnn_view_shape");
        s.dq = fresh(s.value + "_actnn_dq");
        after[s.producer].push_back(makeNode("Shape", "", s.value + "_actnn_shape_of", {s.value}, {shape}));
        int first = graph_.node_size();
        for (const auto& [reader, slot] : s.readers) first = std::min(first, reader);
        NodeProto reshape = makeNode("Reshape", "", s.value + "_actnn_reshape", {saved_[s.rep].dq, shape}, {s.dq});
        if (defaultOpset(model_) >= 14) setInt(reshape, "allowzero", 1);
        before[first].push_back(reshape);
        addValueInfo(shape, TensorProto::INT64, {dimValue(s.type->tensor_type().shape().dim_size())});
        addValueInfo(s.dq, *s.type);
      }
      for (const auto& [reader, slot] : s.readers)
        if (!s.dq.empty() && !masked(s, reader, slot)) graph_.mutable_node(reader)->set_input(slot, s.dq);
      if (!s.mask) continue;
      const std::string zero = zeroOf(s.elem, prelude), mask = fresh(s.value + "_actnn_mask");
      report_.saved[s.mask_row].value = mask;
      after[s.producer].push_back(makeNode("Greater", "", s.value + "_actnn_sign", {s.value, zero}, {mask}));
      ::onnx::TypeProto type = *s.type;
      type.mutable_tensor_type()->set_elem_type(TensorProto::BOOL);
      addValueInfo(mask, type);
      for (const auto& [reader, slot] : s.readers) {
        if (!masked(s, reader, slot)) continue;
        NodeProto& relu_grad = *graph_.mutable_node(reader);  // ReluGrad(dY, X) -> Where(mask, dY, zero)
        const std::string dy = relu_grad.input(0);
        relu_grad.clear_domain();
        relu_grad.set_op_type("Where");
        relu_grad.clear_attribute();
        relu_grad.clear_input();
        for (const auto& in : {mask, dy, zero}) relu_grad.add_input(in);
      }
    }
    if (after.empty() && before.empty()) return;

    google::protobuf::RepeatedPtrField<NodeProto> nodes;
    for (auto& n : prelude) *nodes.Add() = std::move(n);
    for (int i = 0; i < graph_.node_size(); ++i) {
      for (auto& n : before[i]) *nodes.Add() = std::move(n);
      *nodes.Add() = graph_.node(i);
      for (auto& n : after[i]) *nodes.Add() = std::move(n);
    }
    graph_.mutable_node()->Swap(&nodes);
    if (quantized) declareDomain();
  }

  void declareDomain() {
    for (const auto& o : model_.opset_import())
      if (o.domain() == kActnnOnnxDomain) return;  // the version was checked first
    auto* o = model_.add_opset_import();
    o->set_domain(kActnnOnnxDomain);
    o->set_version(kActnnOnnxOpsetVersion);
  }

  ::onnx::ModelProto& model_;
  GraphProto& graph_;
  const OnnxCompressionPolicy& policy_;
  std::map<std::string, int> producer_;
  std::set<std::string> constant_, graph_outputs_, used_names_;
  std::map<std::string, std::string> output_roots_;  // alias class root -> a graph output in the class
  std::vector<std::vector<std::pair<std::string, int>>> reads_;
  std::vector<bool> backward_;
  int first_backward_ = 0;
  std::vector<Saved> saved_;
  std::map<std::string, ::onnx::TypeProto> types_;
  std::map<int32_t, std::string> zeros_;
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

// [8, "batch", 16]: static dims as numbers, symbolic ones as strings; null when the rank is unknown.
std::string jsonShape(const std::optional<std::vector<std::string>>& shape) {
  if (!shape) return "null";
  std::string out = "[";
  for (size_t i = 0; i < shape->size(); ++i) {
    const std::string& d = (*shape)[i];
    const bool number = !d.empty() && std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; });
    out += (i ? "," : "") + (number ? d : jsonString(d));
  }
  return out + "]";
}

std::string jsonBytes(const std::optional<int64_t>& bytes) { return bytes ? std::to_string(*bytes) : "null"; }

struct Totals {
  int64_t quantized = 0, masks = 0, aliases = 0, full = 0, stored = 0, dynamic = 0;
};

Totals totals(const OnnxTrainingReport& report) {
  Totals t;
  for (const auto& r : report.saved) {
    t.quantized += r.action == "quantized";
    t.masks += r.action == "mask";
    t.aliases += r.action == "alias";
    if (!r.full_bytes || !r.stored_bytes) {
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
  return std::any_of(saved.begin(), saved.end(),
                     [](const OnnxSavedValue& s) { return s.action == "quantized" || s.action == "mask"; });
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
                "saved set: %zu values (%lld quantized, %lld masks, %lld aliases) between %lld forward and %lld "
                "backward nodes; %lld bytes at full precision, %lld stored",
                report.saved.size(), (long long)t.quantized, (long long)t.masks, (long long)t.aliases,
                (long long)report.forward_nodes, (long long)report.backward_nodes, (long long)t.full,
                (long long)t.stored);
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
    std::snprintf(line, sizeof(line), "%4zu  %-9s  %4s  %-8s  %-16s  %10s  %10s  ", i, r.action.c_str(),
                  r.bits ? std::to_string(r.bits).c_str() : "-", r.dtype.c_str(), shapeText(r.shape).c_str(),
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
       << ",\"consumers\":[" << readers << "],\"dtype\":" << jsonString(r.dtype) << ",\"shape\":" << jsonShape(r.shape)
       << ",\"action\":" << jsonString(r.action) << ",\"reason\":" << jsonString(r.reason) << ",\"bits\":" << r.bits
       << ",\"full_bytes\":" << jsonBytes(r.full_bytes) << ",\"stored_bytes\":" << jsonBytes(r.stored_bytes) << "}\n";
  }
  const Totals t = totals(report);
  char ratio[32];
  std::snprintf(ratio, sizeof(ratio), "%.4f", double(t.full) / double(std::max<int64_t>(t.stored, 1)));
  os << "{\"saved_values\":" << report.saved.size() << ",\"quantized\":" << t.quantized << ",\"masks\":" << t.masks
     << ",\"aliases\":" << t.aliases << ",\"forward_nodes\":" << report.forward_nodes
     << ",\"backward_nodes\":" << report.backward_nodes << ",\"full_bytes\":" << t.full
     << ",\"stored_bytes\":" << t.stored << ",\"ratio\":" << ratio << ",\"dynamic_values\":" << t.dynamic << "}\n";
  return os.str();
}

}  // namespace actnn
