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
  // A flag that may stand alone (`--name`, meaning `implicit`) or take a
  // value with `=` (`--name=value`).
  Args& option(const std::string& name, const std::string& def, const std::string& implicit,
               const std::string& help);
  // A short alias: `-o FILE` is `--output FILE`.
  Args& alias(const std::string& short_name, const std::string& name);
  // Declares a positional argument (in order); absent ones stay empty.
  Args& positional(const std::string& name, const std::string& help);
  // Parses argv[first..argc); throws UsageError on unknown flags, missing
  // values and stray positional arguments. Returns false when --help was
  // given (print help() then).
  bool parse(int argc, char** argv, int first);

  std::string str(const std::string& name) const;
  int64_t integer(const std::string& name) const;  // throws UsageError when not an integer
  double number(const std::string& name) const;    // throws UsageError when not a finite number
  std::string help() const;  // one line per flag

 private:
  struct Flag {
    std::string value, help;
    bool has_implicit = false;
    std::string implicit;
  };
  std::map<std::string, Flag> flags_;
  std::vector<std::string> order_;
  std::map<std::string, std::string> aliases_;
  std::vector<std::string> positional_;
};

}  // namespace tools
}  // namespace actnn
