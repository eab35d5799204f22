#include <set>

#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>

#include "actnn/passes/ir_builder.h"
#include "rules.h"

namespace actnn {
namespace rules {

const std::unordered_map<c10::Symbol, std::vector<RuleSpec>>& ruleTable() {
  static const auto table = [] {
    std::vector<RuleSpec> all;
    registerConvolutionRules(all);
    registerLinearRules(all);
    registerNormRules(all);
    registerActivationRules(all);
    registerPoolingRules(all);
    registerUpsampleRules(all);
    registerReductionRules(all);
    registerElementwiseRules(all);
    registerShapeRules(all);
    registerScatterRules(all);
    registerLossRules(all);
    std::unordered_map<c10::Symbol, std::vector<RuleSpec>> byKind;
    for (auto& rule : all) {
      auto colons = rule.schema.find("::");
      auto name = rule.schema.substr(0, rule.schema.find_first_of(".(", colons));
      byKind[c10::Symbol::fromQualString(name)].push_back(std::move(rule));
    }
    return byKind;
  }();
  return table;
}

RefuseFn needsConstant(size_t i, const char* what) {
  return [=](const Node* n) -> std::string {
    if (i < n->inputs().size() && torch::jit::toIValue(n->input(i))) return "";
    return std::string(what) + " is not a constant";
  };
}

const RuleSpec* findRule(const Node* node) {
  const auto& table = ruleTable();
  auto it = table.find(node->kind());
  if (it == table.end()) return nullptr;
  for (const auto& rule : it->second) {
    const std::string& s = rule.schema;
    if (s.find('(') != std::string::npos) {
      if (const_cast<Node*>(node)->matches(s.c_str())) return &rule;
      continue;
    }
    auto dot = s.find('.', s.find("::"));
    if (dot == std::string::npos) return &rule;
    const auto* schema = node->maybeSchema();
    if (schema && schema->overload_name() == s.substr(dot + 1)) return &rule;
  }
  return nullptr;
}

std::string supportedOps() {
  std::set<std::string> names;
  for (const auto& entry : ruleTable()) names.insert(entry.first.toQualString());
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

bool isNonDifferentiable(const Node* node) {
  static const std::set<std::string> ops = {
      "aten::detach", "aten::zeros_like", "aten::ones_like", "aten::empty_like", "aten::full_like",
      "aten::rand_like", "aten::randn_like", "aten::randint_like", "aten::bernoulli", "aten::eq",
      "aten::ne", "aten::lt", "aten::le", "aten::gt", "aten::ge", "aten::argmax", "aten::argmin",
      "aten::logical_and", "aten::logical_or", "aten::logical_not", "aten::isnan", "aten::isfinite",
      "aten::sign", "aten::floor_divide", "aten::zeros", "aten::ones", "aten::empty", "aten::full",
      "aten::arange", "aten::rand", "aten::randn", "aten::size", "aten::numel", "aten::dim",
      "aten::__is__", "aten::__isnot__", "aten::Bool", "aten::Int", "aten::Float", "aten::len",
      "prim::dtype", "prim::device", "prim::shape", "prim::is_cuda", "prim::requires_grad",
      "prim::is_nested", "aten::eq_", "aten::new_zeros", "aten::new_ones", "aten::new_empty",
      "aten::new_full", "aten::bernoulli_", "aten::uniform_", "aten::normal_", "aten::fill_",
      "aten::zero_", "aten::all", "aten::any", "aten::where.ScalarSelf"};
  return ops.count(node->kind().toQualString()) > 0;
}

}  // namespace rules
}  // namespace actnn
