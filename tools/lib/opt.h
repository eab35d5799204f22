// actnn-opt's driver, callable from tests: reads a module or graph, runs a
// pipeline, writes IR or a module archive. Returns the process exit code
// (0 ok, 1 compile error or failed output, 2 usage error, 3 internal error:
// a LibTorch assertion failed inside a pass).
#pragma once

#include <ostream>

namespace actnn {
namespace tools {

int optMain(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace tools
}  // namespace actnn
