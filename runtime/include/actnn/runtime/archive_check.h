// Checks a TorchScript archive against itself before LibTorch loads it.
//
// torch::jit::load trusts an archive's records: a tensor record shorter than
// the storage its pickle declares is read past its end (LibTorch 1.13 then
// builds the tensor from whatever follows: garbage weights, or a
// heap-buffer-overflow under AddressSanitizer), and exits 0. checkArchive
// reads the pickles (data.pkl, constants.pkl) without building anything,
// collects every storage they refer to (persistent ids
// ('storage', torch.<Type>Storage, key, location, numel)), and requires each
// record `<archive>/<key>` to exist and to hold at least numel * element size
// bytes. Errors (std::runtime_error) say "the archive is malformed: ..." and
// name the record.
//
// What it does not catch: code (code/*.py) or debug records that make
// LibTorch's own loader crash. actnn-opt loads an archive in a child process
// first for that (tools/lib/opt.cpp); a C++ program that loads untrusted
// archives should do the same.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace actnn {

struct ArchiveStorage {
  std::string pickle;  // "data" or "constants"
  std::string key;     // the record is <pickle>/<key>
  std::string type;    // "FloatStorage", ...
  int64_t numel = 0;
  int64_t declared_bytes = 0;  // numel * element size
};

// The storages a TorchScript pickle refers to. Throws std::runtime_error
// ("the archive is malformed: ...") on a truncated or unreadable pickle.
std::vector<ArchiveStorage> pickledStorages(const std::string& bytes, const std::string& pickle);

// Checks the archive at `path` as described above; throws
// std::runtime_error naming the path and the record.
void checkArchive(const std::string& path);

}  // namespace actnn
