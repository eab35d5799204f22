// The ONNX training-graph rewrite (passes/onnx/insert_quantize.cpp) through
// its API: the rewritten model passes ONNX's checker and shape inference,
// backward readers (and only they) read the dequantized values, the node
// order stays topological, and names are fresh. Also on a real ONNX Runtime
// training artifact when tests/models/make_ort_training.py can make one
// (onnxruntime-training importable by ACTNN_ORT_PYTHON); skipped otherwise.
// No LibTorch: libonnx only.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <stdexcept>
#include <set>
#include <string>

#include "actnn/passes/onnx_actnn_ops.h"
#include "actnn/passes/onnx_text.h"
#include "actnn/passes/onnx_training.h"
#include "onnx/checker.h"
#include "onnx/defs/parser.h"
#include "onnx/shape_inference/implementation.h"

namespace {

using actnn::insertOnnxQuantize;
using actnn::onnxPolicyForLevel;

// Conv -> Relu -> AveragePool -> Conv -> Tanh -> loss, with a backward part
// in com.microsoft gradient ops seeded by the initializer loss_grad.
const char* kCnn = R"(
<ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
cnn (float[N,3,8,8] x, float[8,3,3,3] w1, float[16,8,3,3] w2, int64[N] labels)
    => (float loss, float[8,3,3,3] w1_grad, float[16,8,3,3] w2_grad)
  <float loss_grad = {1.0}>
{
  c1 = Conv<pads = [1, 1, 1, 1]>(x, w1)
  r1 = Relu(c1)
  p = AveragePool<kernel_shape = [2, 2], strides = [2, 2]>(r1)
  c2 = Conv<pads = [1, 1, 1, 1]>(p, w2)
  t = Tanh(c2)
  tshape = Shape(t)
  f = Flatten(t)
  loss, logp = SoftmaxCrossEntropyLoss(f, labels)
  df = com.microsoft.SoftmaxCrossEntropyLossGrad(loss_grad, logp, labels)
  dt = Reshape(df, tshape)
  dc2 = com.microsoft.TanhGrad(dt, t)
  dp, w2_grad, b2_grad = com.microsoft.ConvGrad(dc2, p, w2)
  dr1 = com.microsoft.AveragePoolGrad<kernel_shape = [2, 2], strides = [2, 2]>(dp)
  dc1 = com.microsoft.ReluGrad(dr1, r1)
  dx, w1_grad, b1_grad = com.microsoft.ConvGrad(dc1, x, w1)
}
)";

::onnx::ModelProto parse(const std::string& text) {
  ::onnx::ModelProto model;
  const auto status = ::onnx::OnnxParser::Parse(model, text.c_str());
  EXPECT_TRUE(status.IsOK()) << status.ErrorMessage();
  return model;
}

const ::onnx::NodeProto* producerOf(const ::onnx::GraphProto& g, const std::string& value) {
  for (const auto& n : g.node())
    for (const auto& o : n.output())
      if (o == value) return &n;
  return nullptr;
}

// Every input is defined by a graph input, an initializer or an earlier node.
void expectTopological(const ::onnx::GraphProto& g) {
  std::set<std::string> defined;
  for (const auto& v : g.input()) defined.insert(v.name());
  for (const auto& t : g.initializer()) defined.insert(t.name());
  for (const auto& n : g.node()) {
    for (const auto& in : n.input()) EXPECT_TRUE(in.empty() || defined.count(in)) << in << " read before defined";
    for (const auto& o : n.output()) defined.insert(o);
  }
}

std::vector<std::string> readersOf(const ::onnx::GraphProto& g, const std::string& value) {
  std::vector<std::string> out;
  for (const auto& n : g.node())
    for (const auto& in : n.input())
      if (in == value) out.push_back(n.output(0));
  return out;
}

TEST(OnnxTraining, L2PassesCheckerAndShapeInference) {
  ::onnx::ModelProto model = parse(kCnn);
  const auto report = insertOnnxQuantize(model, onnxPolicyForLevel("L2"));
  EXPECT_TRUE(report.changed());
  EXPECT_EQ(report.forward_nodes, 8);
  EXPECT_EQ(report.backward_nodes, 7);
  EXPECT_NO_THROW(::onnx::checker::check_model(model));

  ::onnx::shape_inference::InferShapes(model);
  std::map<std::string, ::onnx::TypeProto> types;
  for (const auto& vi : model.graph().value_info()) types[vi.name()] = vi.type();
  // t: [N, 16, 4, 4] = 256 values per sample, one group of 256 4-bit codes.
  const auto& codes = types.at("t_actnn_codes").tensor_type();
  EXPECT_EQ(codes.elem_type(), ::onnx::TensorProto::UINT8);
  ASSERT_EQ(codes.shape().dim_size(), 2);
  EXPECT_EQ(codes.shape().dim(0).dim_param(), "N");
  EXPECT_EQ(codes.shape().dim(1).dim_value(), 128);
  EXPECT_EQ(types.at("t_actnn_lo").tensor_type().elem_type(), ::onnx::TensorProto::BFLOAT16);
  EXPECT_EQ(types.at("t_actnn_dq").tensor_type().shape().dim_size(), 4);
}

TEST(OnnxTraining, BackwardReadersReadTheDequantizedValue) {
  ::onnx::ModelProto model = parse(kCnn);
  const auto report = insertOnnxQuantize(model, onnxPolicyForLevel("L3"));
  const ::onnx::GraphProto& g = model.graph();
  expectTopological(g);
  // Forward readers of t keep it; TanhGrad reads the copy.
  EXPECT_EQ(readersOf(g, "t"), (std::vector<std::string>{"t_actnn_codes", "tshape", "f"}));
  EXPECT_EQ(readersOf(g, "t_actnn_dq"), (std::vector<std::string>{"dc2"}));
  // Quantize follows its producer; Dequantize precedes its first reader.
  for (int i = 0; i < g.node_size(); ++i) {
    const auto& n = g.node(i);
    if (n.op_type() == "Quantize") {
      EXPECT_EQ(producerOf(g, n.input(0)), &g.node(i - 1));
    } else if (n.op_type() == "Dequantize") {
      EXPECT_EQ(readersOf(g, n.output(0)).front(), g.node(i + 1).output(0));
    }
  }
  // r1 (read by ReluGrad only) is saved as a mask; logp is read by the
  // backward part right after it is produced (nothing to save).
  std::map<std::string, std::set<std::string>> by_action;
  for (const auto& row : report.saved) by_action[row.action].insert(row.value);
  EXPECT_EQ(by_action["quantized"], (std::set<std::string>{"p", "t"}));
  EXPECT_EQ(by_action["kept"], (std::set<std::string>{"logp", "tshape"}));
  EXPECT_EQ(by_action["mask"], (std::set<std::string>{"r1_actnn_mask"}));
  for (const auto& row : report.saved) {
    if (row.value != "t") continue;
    EXPECT_EQ(row.bits, 2);
    EXPECT_EQ(row.shape, (std::vector<std::string>{"N", "16", "4", "4"}));
    EXPECT_FALSE(row.full_bytes);  // dynamic batch
  }
}

TEST(OnnxTraining, L1QuantizesConvolutionInputsOnly) {
  ::onnx::ModelProto model = parse(kCnn);
  const auto report = insertOnnxQuantize(model, onnxPolicyForLevel("L1"));
  int quantize = 0;
  for (const auto& n : model.graph().node())
    if (n.op_type() == "Quantize") {
      ++quantize;
      EXPECT_EQ(n.input(0), "p");
    }
  EXPECT_EQ(quantize, 1);
}

TEST(OnnxTraining, L0LeavesTheModelUnchanged) {
  ::onnx::ModelProto model = parse(kCnn);
  const std::string before = model.SerializeAsString();
  const auto report = insertOnnxQuantize(model, onnxPolicyForLevel("L0"));
  EXPECT_FALSE(report.changed());
  EXPECT_EQ(report.saved.size(), 5u);
  EXPECT_EQ(model.SerializeAsString(), before);
}

TEST(OnnxTraining, InsertedNamesAreFresh) {
  std::string text = kCnn;
  text.replace(text.find("  dt = Reshape"), 0, "  t_actnn_dq = Identity(df)\n");
  ::onnx::ModelProto model = parse(text);
  insertOnnxQuantize(model, onnxPolicyForLevel("L2"));
  EXPECT_EQ(readersOf(model.graph(), "t_actnn_dq_1"), (std::vector<std::string>{"dc2"}));
  EXPECT_NO_THROW(::onnx::checker::check_model(model));
}

TEST(OnnxTraining, ExplicitSeedsOverrideTheNamingRule) {
  std::string text = kCnn;
  for (size_t at; (at = text.find("loss_grad")) != std::string::npos;) text.replace(at, 9, "seed_one");
  ::onnx::ModelProto model = parse(text);
  EXPECT_THROW(insertOnnxQuantize(model, onnxPolicyForLevel("L2")), actnn::OnnxTrainingError);
  const auto report = insertOnnxQuantize(model, onnxPolicyForLevel("L2"), {"seed_one"});
  EXPECT_EQ(report.backward_nodes, 7);
}

TEST(OnnxTraining, ErrorsNameTheGraphOrNode) {
  ::onnx::ModelProto forward_only = parse(R"(
<ir_version: 8, opset_import: ["" : 17]>
fwd (float[4,8] x) => (float y) { y = ReduceSum<keepdims = 0>(x) }
)");
  try {
    insertOnnxQuantize(forward_only, onnxPolicyForLevel("L2"));
    FAIL() << "no error";
  } catch (const actnn::OnnxTrainingError& e) {
    EXPECT_NE(std::string(e.what()).find("graph 'fwd' has no backward part"), std::string::npos) << e.what();
  }
  ::onnx::ModelProto unsorted = parse(kCnn);
  unsorted.mutable_graph()->mutable_node()->SwapElements(0, 1);
  try {
    insertOnnxQuantize(unsorted, onnxPolicyForLevel("L2"));
    FAIL() << "no error";
  } catch (const actnn::OnnxTrainingError& e) {
    EXPECT_NE(std::string(e.what()).find("node #0 (Relu) defining r1 reads 'c1'"), std::string::npos) << e.what();
  }
  ::onnx::ModelProto model = parse(kCnn);
  EXPECT_THROW(insertOnnxQuantize(model, {3, 256, false}), actnn::OnnxTrainingError);
  EXPECT_THROW(insertOnnxQuantize(model, {2, 48, false}), actnn::OnnxTrainingError);
  insertOnnxQuantize(model, onnxPolicyForLevel("L2"));
  try {
    insertOnnxQuantize(model, onnxPolicyForLevel("L2"));
    FAIL() << "no error";
  } catch (const actnn::OnnxTrainingError& e) {
    EXPECT_NE(std::string(e.what()).find("'p_actnn_quantize' (com.actnn::Quantize): the graph is quantized already"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(onnxPolicyForLevel("L6"), actnn::OnnxTrainingError);
}

TEST(OnnxTraining, SchemasRejectBadAttributes) {
  actnn::registerActnnOnnxOps();
  ::onnx::ModelProto model = parse(R"(
<ir_version: 8, opset_import: ["" : 17, "com.actnn" : 1]>
q (float[4,64] x) => (uint8[4,48] c) { c, lo, s, sh = com.actnn.Quantize<bits = 3>(x) }
)");
  EXPECT_NO_THROW(::onnx::checker::check_model(model));  // attribute values are checked by inference
  ::onnx::ShapeInferenceOptions strict{true, 1, false};
  EXPECT_THROW(::onnx::shape_inference::InferShapes(model, ::onnx::OpSchemaRegistry::Instance(), strict),
               std::exception);
  ::onnx::ModelProto missing = parse(R"(
<ir_version: 8, opset_import: ["" : 17, "com.actnn" : 1]>
q (float[4,64] x) => (uint8[4,48] c) { c, lo, s, sh = com.actnn.Quantize(x) }
)");
  EXPECT_THROW(::onnx::checker::check_model(missing), ::onnx::checker::ValidationError);  // bits is required
}

std::map<std::string, const actnn::OnnxSavedValue*> rowsByValue(const actnn::OnnxTrainingReport& report) {
  std::map<std::string, const actnn::OnnxSavedValue*> rows;
  for (const auto& r : report.saved) rows[r.value] = &r;
  return rows;
}

int countOps(const ::onnx::GraphProto& g, const std::string& op) {
  int n = 0;
  for (const auto& node : g.node()) n += node.op_type() == op;
  return n;
}

// ReluGrad(dY, X) becomes Where(Greater(X, 0), dY, 0): the mask is made in
// the forward part, X's other backward reader (Gemm) reads its quantized
// copy, and a value only ReluGrad reads is not saved at all.
TEST(OnnxTraining, ReluGradReadsAMask) {
  const char* text = R"(
<ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
sign (float[4,256] x, float[256,256] w) => (float loss, float[256,256] w_grad)
  <float loss_grad = {1.0}>
{
  r = Relu(x)
  s = MatMul(r, w)
  u = Relu(s)
  loss = ReduceSum<keepdims = 0>(u)
  ushape = Shape(u)
  du = Expand(loss_grad, ushape)
  ds = com.microsoft.ReluGrad(du, u)
  w_grad = Gemm<transA = 1>(r, ds)
  dr = MatMul(ds, w)
  dx = com.microsoft.ReluGrad(dr, r)
}
)";
  ::onnx::ModelProto model = parse(text);
  const auto report = insertOnnxQuantize(model, onnxPolicyForLevel("L3"));
  const ::onnx::GraphProto& g = model.graph();
  expectTopological(g);
  EXPECT_NO_THROW(::onnx::checker::check_model(model));
  EXPECT_NO_THROW(::onnx::shape_inference::InferShapes(model));
  EXPECT_EQ(countOps(g, "ReluGrad"), 0);
  EXPECT_EQ(countOps(g, "Where"), 2);
  EXPECT_EQ(countOps(g, "Greater"), 2);
  const auto* ds = producerOf(g, "ds");
  ASSERT_NE(ds, nullptr);
  EXPECT_EQ(ds->op_type(), "Where");
  EXPECT_TRUE(ds->domain().empty());
  ASSERT_EQ(ds->input_size(), 3);
  EXPECT_EQ(ds->input(0), "u_actnn_mask");
  EXPECT_EQ(ds->input(1), "du");
  EXPECT_EQ(producerOf(g, "u_actnn_mask")->op_type(), "Greater");
  EXPECT_EQ(producerOf(g, ds->input(2))->op_type(), "Constant");
  EXPECT_EQ(producerOf(g, "dx")->input(0), "r_actnn_mask");
  EXPECT_EQ(readersOf(g, "r_actnn_dq"), (std::vector<std::string>{"w_grad"}));
  const auto rows = rowsByValue(report);
  EXPECT_FALSE(rows.count("u"));  // only its mask is saved
  ASSERT_TRUE(rows.count("u_actnn_mask"));
  EXPECT_EQ(rows.at("u_actnn_mask")->action, "mask");
  EXPECT_EQ(rows.at("u_actnn_mask")->dtype, "bool");
  EXPECT_EQ(rows.at("u_actnn_mask")->bits, 8);
  EXPECT_EQ(rows.at("u_actnn_mask")->full_bytes, 4096);
  EXPECT_EQ(rows.at("u_actnn_mask")->stored_bytes, 1024);
  ASSERT_TRUE(rows.count("r"));
  EXPECT_TRUE(rows.at("r")->quantized);
  EXPECT_EQ(rows.at("r_actnn_mask")->full_bytes, 0);  // r's buffer is counted on r's row

  // L0 inserts nothing; a model below opset 13 keeps the ReluGrad input whole.
  ::onnx::ModelProto l0 = parse(text);
  const std::string before = l0.SerializeAsString();
  insertOnnxQuantize(l0, onnxPolicyForLevel("L0"));
  EXPECT_EQ(l0.SerializeAsString(), before);
  std::string old_text = text;
  old_text.replace(old_text.find("\"\" : 17"), 7, "\"\" : 12");
  ::onnx::ModelProto old = parse(old_text);
  const auto old_report = insertOnnxQuantize(old, onnxPolicyForLevel("L3"));
  EXPECT_EQ(countOps(old.graph(), "Where"), 0);
  EXPECT_EQ(rowsByValue(old_report).at("r")->action, "kept");
}

// Views share their source's buffer: one decision per alias class.
TEST(OnnxTraining, ViewsShareTheirSourcesDecision) {
  // r is kept (ReluGrad in an opset-12 model): its Flatten is an alias, not quantized.
  ::onnx::ModelProto kept = parse(R"(
<ir_version: 8, opset_import: ["" : 12, "com.microsoft" : 1]>
alias (float[4,16,4,4] x, float[256,8] w) => (float loss, float[256,8] w_grad)
  <float loss_grad = {1.0}>
{
  r = Relu(x)
  f = Flatten(r)
  y = MatMul(f, w)
  loss = ReduceSum<keepdims = 0>(y)
  yshape = Shape(y)
  dy = Expand(loss_grad, yshape)
  w_grad = Gemm<transA = 1>(f, dy)
  df = MatMul(dy, w)
  dr = Reshape(df, yshape)
  dx = com.microsoft.ReluGrad(dr, r)
}
)");
  auto report = insertOnnxQuantize(kept, onnxPolicyForLevel("L3"));
  EXPECT_EQ(countOps(kept.graph(), "Quantize"), 0);
  auto rows = rowsByValue(report);
  ASSERT_TRUE(rows.count("f"));
  EXPECT_EQ(rows.at("f")->action, "alias");
  EXPECT_NE(rows.at("f")->reason.find("a view of 'r'"), std::string::npos) << rows.at("f")->reason;
  EXPECT_EQ(rows.at("r")->full_bytes, 4096);
  EXPECT_EQ(rows.at("f")->full_bytes, 0);  // one buffer, counted once
  EXPECT_EQ(rows.at("f")->stored_bytes, 0);

  // p (ConvGrad) and its Flatten fp (Gemm) are quantized once: fp is restored
  // by Reshape from p's dequantized copy.
  ::onnx::ModelProto quantized = parse(R"(
<ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
alias (float[4,3,8,8] x, float[16,3,3,3] w1, float[1024,10] w2) => (float loss, float[1024,10] w2_grad, float[16,3,3,3] w1_grad)
  <float loss_grad = {1.0}>
{
  c = Conv<pads = [1, 1, 1, 1]>(x, w1)
  p = Tanh(c)
  c2 = Conv<pads = [1, 1, 1, 1]>(p, w1)
  fp = Flatten(p)
  y = MatMul(fp, w2)
  s = Add(y, y)
  loss = ReduceSum<keepdims = 0>(s)
  yshape = Shape(y)
  dy = Expand(loss_grad, yshape)
  w2_grad = Gemm<transA = 1>(fp, dy)
  cshape = Shape(c)
  dc = Expand(loss_grad, cshape)
  dpc, w1_grad, b_grad = com.microsoft.ConvGrad(dc, p, w1)
}
)");
  report = insertOnnxQuantize(quantized, onnxPolicyForLevel("L3"));
  const ::onnx::GraphProto& g = quantized.graph();
  expectTopological(g);
  EXPECT_NO_THROW(::onnx::checker::check_model(quantized));
  EXPECT_EQ(countOps(g, "Quantize"), 1);
  rows = rowsByValue(report);
  EXPECT_TRUE(rows.at("p")->quantized);
  EXPECT_EQ(rows.at("fp")->action, "alias");
  EXPECT_EQ(rows.at("fp")->full_bytes, 0);
  const auto* restore = producerOf(g, readersOf(g, "p_actnn_dq").front() == "fp_actnn_dq" ? "fp_actnn_dq" : "");
  ASSERT_NE(restore, nullptr);
  EXPECT_EQ(restore->op_type(), "Reshape");
  EXPECT_EQ(readersOf(g, "fp_actnn_dq"), (std::vector<std::string>{"w2_grad"}));
  EXPECT_EQ(producerOf(g, restore->input(1))->op_type(), "Shape");
}

// No Quantize right before its Dequantize: values produced after the first
// backward node, or read by the backward part with no forward node between.
TEST(OnnxTraining, NothingToSaveIsKept) {
  ::onnx::ModelProto model = parse(R"(
<ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
late (float[4,256] x, float[256,256] w) => (float loss, float[256,256] w_grad)
  <float loss_grad = {1.0}>
{
  h = MatMul(x, w)
  loss = ReduceSum<keepdims = 0>(h)
  hshape = Shape(h)
  dh = Expand(loss_grad, hshape)
  late = Tanh(x)
  w_grad = Gemm<transA = 1>(late, dh)
  dx = MatMul(dh, w)
  y = Sigmoid(x)
  dy = com.microsoft.SigmoidGrad(dx, y)
}
)");
  const auto report = insertOnnxQuantize(model, onnxPolicyForLevel("L3"));
  EXPECT_EQ(countOps(model.graph(), "Quantize"), 0);
  const auto rows = rowsByValue(report);
  EXPECT_EQ(rows.at("late")->reason, "produced inside the backward part");
  EXPECT_EQ(rows.at("y")->reason, "produced inside the backward part");
  ::onnx::ModelProto adjacent = parse(R"(
<ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
adj (float[4,256] x) => (float loss, float[4,256] dx)
  <float loss_grad = {1.0}, int64[2] xshape = {4, 256}>
{
  loss = ReduceSum<keepdims = 0>(x)
  t = Tanh(x)
  dt = Expand(loss_grad, xshape)
  dx = com.microsoft.TanhGrad(dt, t)
}
)");
  const auto adj = insertOnnxQuantize(adjacent, onnxPolicyForLevel("L3"));
  EXPECT_EQ(countOps(adjacent.graph(), "Quantize"), 0);
  EXPECT_NE(rowsByValue(adj).at("t")->reason.find("right after it is produced"), std::string::npos);
}

// Inserted names avoid value_info entries (stale ones included) and names
// local to subgraphs.
TEST(OnnxTraining, InsertedNamesAvoidValueInfoAndSubgraphs) {
  ::onnx::ModelProto model = parse(kCnn);
  auto* stale = model.mutable_graph()->add_value_info();
  stale->set_name("p_actnn_dq");
  stale->mutable_type()->mutable_tensor_type()->set_elem_type(::onnx::TensorProto::INT64);
  // An If in the forward part whose branch defines t_actnn_dq locally.
  ::onnx::ModelProto with_if = parse(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (bool cond) => (float[1] out) {
  out = If(cond) <then_branch = b1 () => (float[1] t_actnn_dq) { t_actnn_dq = Constant<value = float[1] {1.0}>() },
                  else_branch = b2 () => (float[1] z) { z = Constant<value = float[1] {2.0}>() }>
}
)");
  auto* node = model.mutable_graph()->add_node();
  *node = with_if.graph().node(0);
  node->set_input(0, "cond");
  auto* cond = model.mutable_graph()->add_input();
  cond->set_name("cond");
  cond->mutable_type()->mutable_tensor_type()->set_elem_type(::onnx::TensorProto::BOOL);
  // Move the If to the front (it reads only a graph input).
  auto* nodes = model.mutable_graph()->mutable_node();
  for (int i = nodes->size() - 1; i > 0; --i) nodes->SwapElements(i, i - 1);
  insertOnnxQuantize(model, onnxPolicyForLevel("L2"));
  const ::onnx::GraphProto& g = model.graph();
  EXPECT_EQ(readersOf(g, "p_actnn_dq_1").size(), 1u);
  EXPECT_EQ(readersOf(g, "t_actnn_dq_1"), (std::vector<std::string>{"dc2"}));
  EXPECT_TRUE(readersOf(g, "p_actnn_dq").empty());
}

// A float value of unknown rank is kept.
TEST(OnnxTraining, UnknownRankIsKept) {
  ::onnx::ModelProto model = parse(R"(
<ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
rank (float[4,256] x, float[256,256] w) => (float loss, float[256,256] w_grad)
  <float loss_grad = {1.0}>
{
  h = com.microsoft.Gelu(x)
  s = MatMul(h, w)
  loss = ReduceSum<keepdims = 0>(s)
  sshape = Shape(s)
  ds = Expand(loss_grad, sshape)
  w_grad = Gemm<transA = 1>(h, ds)
}
)");
  auto* vi = model.mutable_graph()->add_value_info();  // float, rank unknown
  vi->set_name("h");
  vi->mutable_type()->mutable_tensor_type()->set_elem_type(::onnx::TensorProto::FLOAT);
  const auto report = insertOnnxQuantize(model, onnxPolicyForLevel("L3"));
  const auto rows = rowsByValue(report);
  ASSERT_TRUE(rows.count("h"));
  EXPECT_EQ(rows.at("h")->reason, "rank unknown");
  EXPECT_FALSE(rows.at("h")->shape);
  EXPECT_EQ(countOps(model.graph(), "Quantize"), 0);
}

// The printed model parses back (value_info included) with every float bit
// for bit; what ONNX 1.12's parser cannot read is refused.
TEST(OnnxText, RoundTripsExactly) {
  ::onnx::ModelProto model = parse(kCnn);
  insertOnnxQuantize(model, onnxPolicyForLevel("L3"));
  auto* k = model.mutable_graph()->add_initializer();
  k->set_name("third");
  k->set_data_type(::onnx::TensorProto::FLOAT);
  k->add_float_data(1.0f / 3.0f);
  k->add_float_data(1.17549435e-38f);  // the smallest normal float
  auto* attr = model.mutable_graph()->mutable_node(1)->add_attribute();
  attr->set_name("alpha");
  attr->set_type(::onnx::AttributeProto::FLOAT);
  attr->set_f(0.1f);
  const std::string text = actnn::onnxModelText(model);
  ::onnx::ModelProto back = parse(text);
  EXPECT_EQ(back.graph().value_info_size(), model.graph().value_info_size());
  EXPECT_EQ(back.graph().node_size(), model.graph().node_size());
  const auto& third = back.graph().initializer(back.graph().initializer_size() - 1);
  ASSERT_EQ(third.float_data_size(), 2);
  EXPECT_EQ(third.float_data(0), 1.0f / 3.0f);
  EXPECT_EQ(third.float_data(1), 1.17549435e-38f);
  const auto& alpha = back.graph().node(1).attribute(back.graph().node(1).attribute_size() - 1);
  EXPECT_EQ(alpha.type(), ::onnx::AttributeProto::FLOAT);
  EXPECT_EQ(alpha.f(), 0.1f);

  k->set_data_type(::onnx::TensorProto::FLOAT16);
  k->clear_float_data();
  k->set_raw_data(std::string("\x00\x3c", 2));
  EXPECT_THROW(actnn::onnxModelText(model), std::invalid_argument);
  k->set_data_type(::onnx::TensorProto::FLOAT);
  k->set_raw_data(std::string("\x00\x00\x80\x7f", 4));  // +inf
  EXPECT_THROW(actnn::onnxModelText(model), std::invalid_argument);
  k->set_raw_data(std::string("\x01\x00\x00\x00", 4));  // subnormal: the parser's stof throws
  EXPECT_THROW(actnn::onnxModelText(model), std::invalid_argument);
}

// A real ONNX Runtime training artifact (Conv, BatchNormInternal, MaxPool,
// Conv, Gemm, cross-entropy; com.microsoft gradient ops).
TEST(OnnxTraining, OrtArtifact) {
#ifndef ACTNN_ORT_TRAINING_SCRIPT
  GTEST_SKIP() << "ACTNN_ORT_TRAINING_SCRIPT not defined";
#else
  const char* env = std::getenv("ACTNN_ORT_PYTHON");
#ifdef ACTNN_ORT_PYTHON
  const std::string python = env ? env : ACTNN_ORT_PYTHON;
#else
  const std::string python = env ? env : "python3";
#endif
  const std::string dir = ::testing::TempDir() + "actnn_ort_training";
  const std::string cmd = python + " " + ACTNN_ORT_TRAINING_SCRIPT + " " + dir + " cnn > /dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "could not generate an artifact (" << cmd << ")";
  ::onnx::ModelProto model;
  std::ifstream in(dir + "/cnn/training_model.onnx", std::ios::binary);
  ASSERT_TRUE(model.ParseFromIstream(&in));

  const auto report = insertOnnxQuantize(model, onnxPolicyForLevel("L3"));
  const ::onnx::GraphProto& g = model.graph();
  expectTopological(g);
  // ONNX's checker rejects the artifact as a whole (ONNX Runtime puts
  // MaxPoolGrad in the ONNX domain), so check the inserted nodes one by one.
  ::onnx::checker::CheckerContext ctx;
  ctx.set_ir_version(int(model.ir_version()));
  std::unordered_map<std::string, int> opsets;
  for (const auto& o : model.opset_import()) opsets[o.domain()] = int(o.version());
  ctx.set_opset_imports(opsets);
  ::onnx::checker::LexicalScopeContext lex;
  int inserted = 0;
  for (const auto& n : g.node()) {
    if (n.domain() != actnn::kActnnOnnxDomain) continue;
    ++inserted;
    EXPECT_NO_THROW(::onnx::checker::check_node(n, ctx, lex)) << n.name();
  }
  std::map<std::string, const actnn::OnnxSavedValue*> rows;
  for (const auto& r : report.saved) rows[r.value] = &r;
  // conv1's output (BatchNormalizationGrad's input) and conv2's input are
  // quantized; what ReluGrad read (BatchNormInternal's output, the second
  // Relu's output) is saved as masks only, and the Flatten of the second
  // Relu's output, the same buffer, is quantized once. MaxPool's int64
  // indices are kept.
  ASSERT_TRUE(rows.count("/conv1/Conv_output_0"));
  EXPECT_TRUE(rows["/conv1/Conv_output_0"]->quantized);
  ASSERT_TRUE(rows.count("/pool/MaxPool_output_0"));
  EXPECT_TRUE(rows["/pool/MaxPool_output_0"]->quantized);
  EXPECT_FALSE(rows.count("/bn/BatchNormalization_output_0"));
  ASSERT_TRUE(rows.count("/bn/BatchNormalization_output_0_actnn_mask"));
  EXPECT_EQ(rows["/bn/BatchNormalization_output_0_actnn_mask"]->action, "mask");
  EXPECT_FALSE(rows.count("/Relu_1_output_0"));
  ASSERT_TRUE(rows.count("/Relu_1_output_0_actnn_mask"));
  ASSERT_TRUE(rows.count("/Flatten_output_0"));
  EXPECT_TRUE(rows["/Flatten_output_0"]->quantized);
  EXPECT_EQ(countOps(g, "ReluGrad"), 0);
  EXPECT_EQ(countOps(g, "Where"), 2);
  ASSERT_TRUE(rows.count("/pool/MaxPool_output_0_mask"));
  EXPECT_EQ(rows["/pool/MaxPool_output_0_mask"]->dtype, "int64");
  int quantized = 0;
  for (const auto& r : report.saved) quantized += r.quantized;
  EXPECT_EQ(inserted, 2 * quantized);
  for (const auto& r : report.saved) {
    if (r.quantized) {
      EXPECT_FALSE(readersOf(g, r.value + "_actnn_dq").empty()) << r.value;
    }
  }
#endif
}

}  // namespace
