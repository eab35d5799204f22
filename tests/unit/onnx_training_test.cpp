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
#include <set>
#include <string>

#include "actnn/passes/onnx_actnn_ops.h"
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
  std::set<std::string> quantized, kept;
  for (const auto& row : report.saved) (row.quantized ? quantized : kept).insert(row.value);
  EXPECT_EQ(quantized, (std::set<std::string>{"p", "t", "logp"}));
  EXPECT_EQ(kept, (std::set<std::string>{"r1", "tshape"}));
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
  // quantized; BatchNormInternal's output, read by ReluGrad, is kept, and
  // so are MaxPool's int64 indices.
  ASSERT_TRUE(rows.count("/conv1/Conv_output_0"));
  EXPECT_TRUE(rows["/conv1/Conv_output_0"]->quantized);
  ASSERT_TRUE(rows.count("/pool/MaxPool_output_0"));
  EXPECT_TRUE(rows["/pool/MaxPool_output_0"]->quantized);
  ASSERT_TRUE(rows.count("/bn/BatchNormalization_output_0"));
  EXPECT_FALSE(rows["/bn/BatchNormalization_output_0"]->quantized);
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
