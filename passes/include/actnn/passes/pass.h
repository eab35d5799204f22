// The pass interface: a pass reads and rewrites a TrainingIR, reports user
// errors to a Diagnostics sink (naming the node, op and source location), and
// says whether it changed anything. Options are declared once in the pass's
// constructor with a default and a help line, and set from a pipeline string
// such as `canonicalize{shape-checks=remove}`.
#pragma once

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "actnn/passes/ir.h"

namespace torch {
namespace jit {
struct Node;
}
}  // namespace torch

namespace actnn {

// A user-facing compile error: the message names what was wrong and where.
struct CompileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A LibTorch internal assertion that failed inside a pass: a bug (ours, or
// an input the validation let through), not a user error. actnn-opt exits
// with 3 for it.
struct InternalError : CompileError {
  using CompileError::CompileError;
};

class Diagnostics {
 public:
  // An error about `node`: the message is followed by the node's source
  // location (when it has one) and its IR line.
  void error(const torch::jit::Node* node, const std::string& message);
  void error(const std::string& message);
  bool hasErrors() const { return !errors_.empty(); }
  const std::vector<std::string>& errors() const { return errors_; }
  // Throws CompileError with every error, prefixed by the pass name.
  void throwIfErrors(const std::string& pass) const;

 private:
  std::vector<std::string> errors_;
};

// "where" for a node: file:line:col of its source if known, then its IR.
std::string describeNode(const torch::jit::Node* node);
// "file:line:col" of the user's source a node came from, or "".
std::string sourceLocation(const torch::jit::Node* node);

class PassOptions {
 public:
  void declare(const std::string& name, const std::string& def, const std::string& help);
  void set(const std::string& name, const std::string& value);  // throws CompileError
  const std::string& str(const std::string& name) const;
  bool boolean(const std::string& name) const;
  int64_t integer(const std::string& name) const;
  double number(const std::string& name) const;  // finite
  // "name=value (help)" per option, for --help.
  std::vector<std::string> describe() const;

 private:
  struct Option {
    std::string value, help;
  };
  std::map<std::string, Option> options_;
  std::vector<std::string> order_;
};

class Pass {
 public:
  virtual ~Pass() = default;
  // Returns true if the IR changed. User errors go to `diag`.
  virtual bool run(TrainingIR& ir, Diagnostics& diag) = 0;
  // Throws CompileError naming the option when a value (or a combination of
  // values) is one `run` could not accept. parsePipeline calls it once the
  // options are set, before any input is read, so a bad value is a bad
  // command line (actnn-opt exit 2); runPipeline calls it again before `run`
  // for passes set up by hand.
  virtual void checkOptions() const {}
  PassOptions& options() { return options_; }
  const PassOptions& options() const { return options_; }

 protected:
  PassOptions options_;
};

}  // namespace actnn
