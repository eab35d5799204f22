// Honest output for the tools: what they write either arrives whole or the
// tool says it did not, with the path and the OS error, and exits 1.
//
// A regular file (or a path that does not exist yet) is written to a
// temporary file in the same folder, flushed to the disk (fsync), closed —
// each step checked — and renamed over the target, so a full disk or a
// killed process never leaves a truncated archive or IR under the target's
// name, and a target that was there stays as it was. Anything else that
// exists (a character device such as /dev/stdout or /dev/full, a FIFO) is
// written in place, and its write, flush and close are checked. A folder is
// refused before anything is written.
#pragma once

#include <functional>
#include <ostream>
#include <stdexcept>
#include <string>

namespace actnn {
namespace tools {

// A failed write: exit 1 (the command line was fine; the system said no).
struct OutputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Writes what `produce` puts into its stream to `path` as above. An
// exception from `produce` leaves no file behind and propagates.
void writeOutput(const std::string& path, const std::function<void(std::ostream&)>& produce);

// The same for standard output (path empty): `produce` writes to `out`,
// which is flushed and checked (a closed or full stdout is an OutputError).
void writeOutputOr(const std::string& path, std::ostream& out, const std::function<void(std::ostream&)>& produce);

}  // namespace tools
}  // namespace actnn
