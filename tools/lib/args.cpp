#include "args.h"

#include <cstdlib>

namespace actnn {
namespace tools {

Args& Args::flag(const std::string& name, const std::string& def, const std::string& help) {
  flags_[name] = Flag{def, help};
  order_.push_back(name);
  return *this;
}

bool Args::parse(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") return false;
    if (arg.rfind("--", 0) != 0) throw UsageError("unexpected argument '" + arg + "'");
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    auto it = flags_.find(name);
    if (it == flags_.end()) throw UsageError("unknown flag '--" + name + "'");
    if (eq != std::string::npos) {
      it->second.value = arg.substr(eq + 1);
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

std::string Args::help() const {
  std::string out;
  for (const auto& name : order_) {
    const Flag& f = flags_.at(name);
    out += "  --" + name + "=" + (f.value.empty() ? "..." : f.value) + "\n      " + f.help + "\n";
  }
  return out;
}

}  // namespace tools
}  // namespace actnn
