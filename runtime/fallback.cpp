// The autograd fallback's ops (see actnn/runtime/fallback.h for the graph
// shape autodiff builds around a node with no derivative rule).
#include "actnn/runtime/fallback.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <memory>
#include <type_traits>

namespace actnn {
namespace {

using torch::autograd::Edge;
using torch::autograd::variable_list;

// Where a leaf's gradient arrives. B captures it there, so apply never runs.
struct FallbackSink : torch::autograd::Node {
  variable_list apply(variable_list&&) override { return {}; }
  std::string name() const override { return "actnn::FallbackSink"; }
};

// An autograd node as Edge holds one: std::shared_ptr in LibTorch 1.13,
// c10::intrusive_ptr in 2.x.
template <typename T>
auto makeNode() {
  using Pointer = decltype(std::declval<Edge>().function);
  if constexpr (std::is_same_v<Pointer, std::shared_ptr<torch::autograd::Node>>) {
    return std::make_shared<T>();
  } else {
    return c10::make_intrusive<T>();
  }
}

bool fallbackBegin() {
  const bool previous = c10::GradMode::is_enabled();
  c10::GradMode::set_enabled(true);
  return previous;
}

at::Tensor makeLeaf(const at::Tensor& x) {
  if (!x.defined() || !(x.is_floating_point() || x.is_complex())) return x;  // no gradient to capture
  auto sink = makeNode<FallbackSink>();
  at::Tensor data = x.detach();
  sink->add_input_metadata(data);
  return torch::autograd::make_variable(data, Edge(std::move(sink), 0));
}

std::vector<at::Tensor> makeLeaves(const std::vector<at::Tensor>& xs) {
  std::vector<at::Tensor> out;
  out.reserve(xs.size());
  for (const auto& x : xs) out.push_back(makeLeaf(x));
  return out;
}

FallbackTapePtr fallbackEnd(bool previous, const std::string& op, const std::vector<std::vector<at::Tensor>>& inputs,
                            const std::vector<std::vector<at::Tensor>>& outputs) {
  c10::GradMode::set_enabled(previous);
  auto tape = c10::make_intrusive<FallbackTape>();
  tape->op = op;
  for (const auto& group : inputs) {
    std::vector<FallbackTape::Input> edges;
    for (const auto& leaf : group) {
      FallbackTape::Input in;
      if (leaf.defined() && leaf.grad_fn()) {
        TORCH_CHECK(dynamic_cast<FallbackSink*>(leaf.grad_fn().get()), "actnn: ", op,
                    " (run under autograd: the autograd fallback) modified one of its differentiable inputs in place;"
                    " make it out of place");
        in.edge = torch::autograd::impl::gradient_edge(leaf);
        in.sizes = leaf.sizes().vec();
        in.options = leaf.options();
      }
      edges.push_back(std::move(in));
    }
    tape->inputs.push_back(std::move(edges));
  }
  for (const auto& group : outputs) {
    std::vector<Edge> edges;
    for (const auto& y : group) {
      edges.push_back(y.defined() && y.requires_grad() ? torch::autograd::impl::gradient_edge(y) : Edge());
    }
    tape->outputs.push_back(std::move(edges));
  }
  return tape;
}

at::Tensor fallbackOutput(const FallbackTapePtr&, const at::Tensor& y) { return y.detach(); }

std::vector<at::Tensor> fallbackOutputs(const FallbackTapePtr&, const std::vector<at::Tensor>& ys) {
  std::vector<at::Tensor> out;
  out.reserve(ys.size());
  for (const auto& y : ys) out.push_back(y.detach());
  return out;
}

std::vector<std::vector<at::Tensor>> fallbackBackward(const FallbackTapePtr& tape,
                                                      const std::vector<std::vector<at::Tensor>>& grads) {
  TORCH_CHECK(!tape->used, "actnn::fallback_backward: the autograd graph of ", tape->op,
              " was already used (B runs once per forward)");
  tape->used = true;
  TORCH_CHECK(grads.size() == tape->outputs.size(), "actnn::fallback_backward: ", tape->op, " has ",
              tape->outputs.size(), " output groups but got ", grads.size(), " gradient groups");
  torch::autograd::edge_list roots;
  variable_list root_grads;
  for (size_t g = 0; g < grads.size(); ++g) {
    if (grads[g].empty()) continue;  // no gradient reaches this output
    TORCH_CHECK(grads[g].size() == tape->outputs[g].size(), "actnn::fallback_backward: output ", g, " of ",
                tape->op, " has ", tape->outputs[g].size(), " tensors but got ", grads[g].size(), " gradients");
    for (size_t k = 0; k < grads[g].size(); ++k) {
      if (!tape->outputs[g][k].is_valid() || !grads[g][k].defined()) continue;
      roots.push_back(tape->outputs[g][k]);
      root_grads.push_back(grads[g][k]);
    }
  }
  torch::autograd::edge_list captures;
  for (const auto& group : tape->inputs)
    for (const auto& in : group)
      if (in.edge.is_valid()) captures.push_back(in.edge);
  variable_list captured;
  if (!roots.empty() && !captures.empty()) {
    captured = torch::autograd::Engine::get_default_engine().execute(roots, root_grads, /*keep_graph=*/false,
                                                                     /*create_graph=*/false,
                                                                     /*accumulate_grad=*/false, captures);
  }
  std::vector<std::vector<at::Tensor>> result;
  size_t next = 0;
  for (const auto& group : tape->inputs) {
    std::vector<at::Tensor> out;
    for (const auto& in : group) {
      if (!in.edge.is_valid()) {  // not floating point: no gradient, never read
        out.push_back(at::zeros({0}));
        continue;
      }
      at::Tensor g = next < captured.size() ? captured[next] : at::Tensor();
      ++next;
      out.push_back(g.defined() ? g : at::zeros(in.sizes, in.options));
    }
    result.push_back(std::move(out));
  }
  tape->inputs.clear();
  tape->outputs.clear();
  return result;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(actnn, m) {
  m.class_<FallbackTape>("FallbackTape")
      .def("op", [](const FallbackTapePtr& self) { return self->op; });
  // Side effects (grad mode, the tape): never merged, moved or dropped.
  const auto effects = c10::AliasAnalysisKind::CONSERVATIVE;
  m.def(torch::schema("fallback_begin() -> bool", effects), fallbackBegin);
  m.def(torch::schema("fallback_leaf(Tensor x) -> Tensor", effects), makeLeaf);
  m.def(torch::schema("fallback_leaves(Tensor[] xs) -> Tensor[]", effects), makeLeaves);
  m.def(torch::schema("fallback_end(bool previous, str op, Tensor[][] inputs, Tensor[][] outputs)"
                      " -> __torch__.torch.classes.actnn.FallbackTape",
                      effects),
        fallbackEnd);
  m.def(torch::schema("fallback_output(__torch__.torch.classes.actnn.FallbackTape tape, Tensor y) -> Tensor", effects),
        fallbackOutput);
  m.def(torch::schema("fallback_outputs(__torch__.torch.classes.actnn.FallbackTape tape, Tensor[] ys) -> Tensor[]",
                      effects),
        fallbackOutputs);
  m.def(torch::schema("fallback_backward(__torch__.torch.classes.actnn.FallbackTape tape, Tensor[][] grads)"
                      " -> Tensor[][]",
                      effects),
        fallbackBackward);
}

}  // namespace actnn
