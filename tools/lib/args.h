// Command-line flags for actnn's tools: --name=value or --name value, every
// flag declared up front so that an unknown or malformed one is an error that
// names it.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace actnn {
namespace tools {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Args {
 public:
  // Declares a flag with its default value and a one-line description.
  Args& flag(const std::string& name, const std::string& def, const std::string& help);
  // Parses argv[first..argc); throws UsageError on unknown flags, missing
  // values and stray positional arguments. Returns false when --help was
  // given (print help() then).
  bool parse(int argc, char** argv, int first);

  std::string str(const std::string& name) const;
  int64_t integer(const std::string& name) const;  // throws UsageError when not an integer
  std::string help() const;  // one line per flag

 private:
  struct Flag {
    std::string value, help;
  };
  std::map<std::string, Flag> flags_;
  std::vector<std::string> order_;
};

}  // namespace tools
}  // namespace actnn
