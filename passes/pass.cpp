// Diagnostics and pass options.
#include "actnn/passes/pass.h"

#include <cmath>
#include <cstdlib>
#include <sstream>

#include <torch/csrc/jit/ir/ir.h>

namespace actnn {

std::string sourceLocation(const torch::jit::Node* node) {
  auto range = node->sourceRange();
  // Code loaded from an archive carries the range in the archive's code/
  // file; the range it was generated from points at the user's source.
  if (auto source = range.source()) {
    if (auto original = source->findSourceRangeThatGenerated(range)) range = *original;
  }
  auto loc = range.file_line_col();
  if (!loc) return "";
  return std::get<0>(*loc) + ":" + std::to_string(std::get<1>(*loc)) + ":" + std::to_string(std::get<2>(*loc));
}

std::string describeNode(const torch::jit::Node* node) {
  std::ostringstream out;
  const std::string where = sourceLocation(node);
  if (!where.empty()) out << "\n  at " << where;
  std::ostringstream ir;
  ir << *node;
  std::string line = ir.str();
  // Node printing ends with the source comment and a newline; keep the IR.
  auto cut = line.find(" #");
  if (cut != std::string::npos) line = line.substr(0, cut);
  while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
  out << "\n  node: " << line;
  return out.str();
}

void Diagnostics::error(const torch::jit::Node* node, const std::string& message) {
  errors_.push_back(message + describeNode(node));
}

void Diagnostics::error(const std::string& message) { errors_.push_back(message); }

void Diagnostics::throwIfErrors(const std::string& pass) const {
  if (errors_.empty()) return;
  std::ostringstream out;
  for (size_t i = 0; i < errors_.size(); ++i) {
    if (i) out << "\n";
    out << "error: " << pass << ": " << errors_[i];
  }
  throw CompileError(out.str());
}

void PassOptions::declare(const std::string& name, const std::string& def, const std::string& help) {
  if (!options_.count(name)) order_.push_back(name);
  options_[name] = {def, help};
}

void PassOptions::set(const std::string& name, const std::string& value) {
  auto it = options_.find(name);
  if (it == options_.end()) {
    std::string known;
    for (const auto& n : order_) known += (known.empty() ? "" : ", ") + n;
    throw CompileError("unknown option '" + name + "' (options: " + (known.empty() ? "none" : known) +
                       ")");
  }
  it->second.value = value;
}

const std::string& PassOptions::str(const std::string& name) const {
  auto it = options_.find(name);
  TORCH_INTERNAL_ASSERT(it != options_.end(), "undeclared pass option ", name);
  return it->second.value;
}

bool PassOptions::boolean(const std::string& name) const {
  const std::string& v = str(name);
  if (v == "true" || v == "1") return true;
  if (v == "false" || v == "0") return false;
  throw CompileError("option '" + name + "' expects true or false, got '" + v + "'");
}

int64_t PassOptions::integer(const std::string& name) const {
  const std::string& v = str(name);
  size_t used = 0;
  int64_t result = 0;
  try {
    result = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size())
    throw CompileError("option '" + name + "' expects an integer, got '" + v + "'");
  return result;
}

double PassOptions::number(const std::string& name) const {
  const std::string& v = str(name);
  char* end = nullptr;
  const double result = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(result))
    throw CompileError("option '" + name + "' expects a number, got '" + v + "'");
  return result;
}

std::vector<std::string> PassOptions::describe() const {
  std::vector<std::string> lines;
  for (const auto& n : order_) {
    const auto& o = options_.at(n);
    lines.push_back(n + "=" + o.value + "  " + o.help);
  }
  return lines;
}

}  // namespace actnn
