// checkArchive and the pickle skimmer under it (runtime/archive_check.h): the
// storages a saved module's data.pkl declares, and the malformed archives and
// pickles it refuses before LibTorch would read them.
#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <sstream>
#include <string>

#include "actnn/runtime/archive_check.h"
#include "test_util.h"

namespace actnn {
namespace {

// A module with a float parameter of 6 values and an int64 buffer of 3.
torch::jit::Module smallModule() {
  torch::jit::Module m("Small");
  m.register_parameter("weight", at::ones({2, 3}), false);
  m.register_buffer("steps", at::arange(3, at::kLong));
  return m;
}

// A file under the test temp folder, removed when the test is done.
struct TempArchive {
  std::string path;
  explicit TempArchive(const std::string& name) : path(::testing::TempDir() + "/actnn_archive_" + name + ".pt") {}
  ~TempArchive() { std::remove(path.c_str()); }
  operator const std::string&() const { return path; }
};

// Copies the archive at `from` to `to`, record by record, passing each
// through `edit` (which may shorten it, or return false to leave it out).
template <typename Edit>
void rewrite(const std::string& from, const std::string& to, Edit edit) {
  caffe2::serialize::PyTorchStreamReader reader(from);
  caffe2::serialize::PyTorchStreamWriter writer(to);
  for (const auto& name : reader.getAllRecords()) {
    auto [data, size] = reader.getRecord(name);
    std::string bytes(static_cast<const char*>(data.get()), size);
    if (edit(name, bytes)) writer.writeRecord(name, bytes.data(), bytes.size());
  }
  writer.writeEndOfFile();
}

std::string dataPickle(const std::string& path) {
  caffe2::serialize::PyTorchStreamReader reader(path);
  auto [data, size] = reader.getRecord("data.pkl");
  return std::string(static_cast<const char*>(data.get()), size);
}

TEST(ArchiveCheck, FindsEveryStorageOfASavedModule) {
  const TempArchive path("good");
  smallModule().save(path);
  const auto storages = pickledStorages(dataPickle(path), "data");
  ASSERT_EQ(storages.size(), 2u);
  EXPECT_EQ(storages[0].type, "FloatStorage");
  EXPECT_EQ(storages[0].numel, 6);
  EXPECT_EQ(storages[0].declared_bytes, 24);
  EXPECT_EQ(storages[1].type, "LongStorage");
  EXPECT_EQ(storages[1].declared_bytes, 24);
  EXPECT_NO_THROW(checkArchive(path));
}

TEST(ArchiveCheck, ShortOrMissingRecordIsMalformed) {
  const TempArchive path("source"), shorter("short"), missing("missing");
  smallModule().save(path);
  const std::string key = pickledStorages(dataPickle(path), "data")[0].key;
  rewrite(path, shorter, [&](const std::string& name, std::string& bytes) {
    if (name == "data/" + key) bytes.resize(10);
    return true;
  });
  test::expect_error([&] { checkArchive(shorter); },
                     "the archive is malformed: record data/" + key +
                         " holds 10 bytes but data.pkl declares a FloatStorage of 6 elements (24 bytes)");
  rewrite(path, missing, [&](const std::string& name, std::string&) { return name != "data/" + key; });
  test::expect_error([&] { checkArchive(missing); },
                     "data.pkl refers to a FloatStorage in record data/" + key + ", which the archive lacks");
  test::expect_error([&] { checkArchive(TempArchive("no_such_file")); }, "no_such_file.pt: cannot read the archive:");
}

TEST(ArchiveCheck, DamagedPicklesAreMalformed) {
  const TempArchive path("pickles");
  smallModule().save(path);
  const std::string good = dataPickle(path);
  test::expect_error([&] { pickledStorages(good.substr(0, good.size() / 2), "data"); },
                     "the archive is malformed: data.pkl: truncated at byte");
  std::string bad = good;
  bad[2] = char(0xff);
  test::expect_error([&] { pickledStorages(bad, "data"); }, "data.pkl: pickle opcode 0xff at byte 2 is not one");
  // BINGET of a memo entry never written; BINPERSID of a non-storage id.
  test::expect_error([&] { pickledStorages(std::string("\x80\x02h\x07.", 5), "data"); },
                     "memo entry 7 is read before it is written");
  test::expect_error([&] { pickledStorages(std::string("\x80\x02K\x01Q.", 6), "data"); },
                     "a persistent id that is not ('storage', type, key, location, numel)");
  test::expect_error([&] { pickledStorages(std::string("\x80\x02t.", 4), "constants"); },
                     "constants.pkl: no MARK before byte 2");
}

}  // namespace
}  // namespace actnn
