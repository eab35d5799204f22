#include "args.h"

#include <cmath>

#include <algorithm>
#include <cstdlib>

namespace actnn {
namespace tools {

Args& Args::flag(const std::string& name, const std::string& def, const std::string& help) {
  flags_[name] = Flag{def, help, false, ""};
  order_.push_back(name);
  return *this;
}

Args& Args::option(const std::string& name, const std::string& def, const std::string& implicit,
                   const std::string& help) {
  flag(name, def, help);
  flags_[name].has_implicit = true;
  flags_[name].implicit = implicit;
  return *this;
}

Args& Args::alias(const std::string& short_name, const std::string& name) {
  aliases_[short_name] = name;
  return *this;
}

Args& Args::positional(const std::string& name, const std::string& help) {
  flag(name, "", help);
  positional_.push_back(name);
  return *this;
}

bool Args::parse(int argc, char** argv, int first) {
  size_t next_positional = 0;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") return false;
    auto alias = aliases_.find(arg);
    if (alias != aliases_.end()) arg = "--" + alias->second;
    if (arg.rfind("--", 0) != 0 || arg == "--") {
      if (arg.rfind("-", 0) == 0 && arg.size() > 1) throw UsageError("unknown flag '" + arg + "'");
      if (next_positional >= positional_.size()) throw UsageError("unexpected argument '" + arg + "'");
      flags_[positional_[next_positional++]].value = arg;
      continue;
    }
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    auto it = flags_.find(name);
    if (it == flags_.end()) throw UsageError("unknown flag '--" + name + "'");
    if (eq != std::string::npos) {
      it->second.value = arg.substr(eq + 1);
    } else if (it->second.has_implicit) {
      it->second.value = it->second.implicit;
    } else if (i + 1 < argc) {
      it->second.value = argv[++i];
    } else {
      throw UsageError("flag '--" + name + "' needs a value");
    }
  }
  return true;
}

std::string Args::str(const std::string& name) const { return flags_.at(name).value; }

int64_t Args::integer(const std::string& name) const {
  const std::string& v = flags_.at(name).value;
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0') {
    throw UsageError("flag '--" + name + "' expects an integer, got '" + v + "'");
  }
  return x;
}

double Args::number(const std::string& name) const {
  const std::string& v = flags_.at(name).value;
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(x)) {
    throw UsageError("flag '--" + name + "' expects a number, got '" + v + "'");
  }
  return x;
}

std::string Args::help() const {
  std::string out;
  for (const auto& name : order_) {
    const Flag& f = flags_.at(name);
    if (std::find(positional_.begin(), positional_.end(), name) != positional_.end()) {
      out += "  " + name + "\n      " + f.help + "\n";
      continue;
    }
    out += "  --" + name + "=" + (f.value.empty() ? "..." : f.value) + "\n      " + f.help + "\n";
  }
  return out;
}

}  // namespace tools
}  // namespace actnn
