// actnn-bench: measurements as JSON lines. `actnn-bench <suite> [--flags]`;
// the suites are listed in tools/lib/bench_registry.cpp.
#include <c10/util/Exception.h>

#include <iostream>

#include "args.h"
#include "bench.h"

namespace {

void usage(std::ostream& os) {
  os << "usage: actnn-bench <suite> [--flag=value ...]\n\nsuites:\n";
  for (const auto& c : actnn::tools::bench_commands()) os << "  " << c.name << "  " << c.summary << "\n";
  os << "\n`actnn-bench <suite> --help` lists a suite's flags.\n";
}

}  // namespace

int main(int argc, char** argv) {
  using namespace actnn::tools;
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    usage(argc < 2 ? std::cerr : std::cout);
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  for (const auto& c : bench_commands()) {
    if (c.name != name) continue;
    try {
      return c.run(argc, argv);
    } catch (const UsageError& e) {
      std::cerr << "actnn-bench " << name << ": error: " << e.what() << "\n";
      return 2;
    } catch (const c10::Error& e) {
      std::cerr << "actnn-bench " << name << ": error: " << e.what_without_backtrace() << "\n";
      return 1;
    } catch (const std::exception& e) {
      std::cerr << "actnn-bench " << name << ": error: " << e.what() << "\n";
      return 1;
    }
  }
  std::cerr << "actnn-bench: error: unknown suite '" << name << "'\n";
  usage(std::cerr);
  return 2;
}
