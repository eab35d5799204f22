// libFuzzer targets for actnn-opt's four kinds of input. One source, built
// once per kind (tests/fuzz/CMakeLists.txt sets ACTNN_FUZZ_EXTENSION):
// graph text (.tsir), ONNX binary (.onnx) and text (.onnxtxt), TorchScript
// archives (.pt). scripts/fuzz.sh builds and runs them.
//
// Each input goes through actnn-opt's own driver (optMain) as a file named
// on the command line would: written to a private temporary folder, compiled
// at a level the input's size picks (L0..L5, so every pipeline is reached),
// its output written. The contract under test is the README's: whatever the
// input, actnn-opt ends with exit 0, 1 or 2 and a message. A crash, a hang
// (libFuzzer's -timeout) or a sanitizer report is libFuzzer's finding; exit
// 3 ("internal error": a LibTorch assertion inside a pass) or any other code
// is made one here (abort, with the message).
//
// Archives are zip files with a CRC per record: a flipped byte mostly makes a
// CRC mismatch that LibTorch's reader refuses at once. The archive target's
// mutator therefore mutates the bytes of one record (a pickle, code, a
// tensor, debug information) and writes the archive again with LibTorch's
// own writer, so the mutated record reaches the loader and the passes.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "opt.h"

#ifdef ACTNN_FUZZ_ARCHIVE
#include <caffe2/serialize/inline_container.h>

#include <random>
#endif

#ifndef ACTNN_FUZZ_EXTENSION
#error "ACTNN_FUZZ_EXTENSION names the input kind: \".tsir\", \".onnx\", \".onnxtxt\" or \".pt\""
#endif

namespace {

// Made on first use, removed at exit. A plain array: the exit handler runs
// after static strings are destroyed.
char g_folder[] = "/tmp/actnn-fuzz-XXXXXX";

std::string workFolder() {
  static const bool made = [] {
    if (!mkdtemp(g_folder)) {
      std::perror("actnn fuzz: mkdtemp");
      std::abort();
    }
    std::atexit([] { std::system((std::string("rm -rf '") + g_folder + "'").c_str()); });
    return true;
  }();
  (void)made;
  return g_folder;
}

}  // namespace

// Graph text is parsed in the fuzzer's process, not in actnn-opt's guarded
// child (a fork per input cost 99% of the speed): a parser that loops is a
// libFuzzer timeout here.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (std::string(ACTNN_FUZZ_EXTENSION) == ".tsir") setenv("ACTNN_READ_SECONDS", "0", 1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string extension = ACTNN_FUZZ_EXTENSION;
  const std::string input = workFolder() + "/input" + extension;
  {
    std::ofstream file(input, std::ios::binary | std::ios::trunc);
    file.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!file) {
      std::perror("actnn fuzz: writing the input");
      std::abort();
    }
  }
  const std::string level = "--level=L" + std::to_string(size % 6);
  const std::string output = workFolder() + "/output" + (extension == ".pt" ? ".pt" : "");
  std::vector<std::string> args = {"actnn-opt", level, input};
  if (extension == ".pt") args.push_back("--emit=module");
  if (extension != ".tsir") args.insert(args.end(), {"-o", output});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(&a[0]);
  argv.push_back(nullptr);

  std::ostringstream out, err;
  const int code = actnn::tools::optMain(static_cast<int>(args.size()), argv.data(), out, err);
  if (code == 0 || code == 1 || code == 2) return 0;
  std::fprintf(stderr, "actnn fuzz: actnn-opt %s %s exited %d (0, 1 or 2 expected):\n%s\n", level.c_str(),
               input.c_str(), code, err.str().c_str());
  std::abort();
}

#ifdef ACTNN_FUZZ_ARCHIVE
extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

// One record mutated, the archive written again (see the top of the file).
// Anything that is not a readable archive is mutated as plain bytes.
extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  try {
    std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
    caffe2::serialize::PyTorchStreamReader reader(&in);
    std::vector<std::string> names;
    for (const auto& name : reader.getAllRecords())
      if (name != "version" && name != ".data/version") names.push_back(name);  // the writer adds it
    if (!names.empty()) {
      std::minstd_rand random(seed);
      const std::string& chosen = names[random() % names.size()];
      std::string archive;
      caffe2::serialize::PyTorchStreamWriter writer([&](const void* bytes, size_t n) {
        archive.append(static_cast<const char*>(bytes), n);
        return n;
      });
      writer.setMinVersion(reader.version());
      for (const auto& name : names) {
        auto record = reader.getRecord(name);
        const size_t length = std::get<1>(record);
        std::string bytes(static_cast<const char*>(std::get<0>(record).get()), length);
        if (name == chosen) {
          bytes.resize(std::max<size_t>(2 * length, 64));
          bytes.resize(LLVMFuzzerMutate(reinterpret_cast<uint8_t*>(&bytes[0]), length, bytes.size()));
        }
        writer.writeRecord(name, bytes.data(), bytes.size());
      }
      writer.writeEndOfFile();
      if (archive.size() <= max_size) {
        std::memcpy(data, archive.data(), archive.size());
        return archive.size();
      }
    }
  } catch (const std::exception&) {
  }
  return LLVMFuzzerMutate(data, size, max_size);
}
#endif
