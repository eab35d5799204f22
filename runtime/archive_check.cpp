#include "actnn/runtime/archive_check.h"

#include <c10/core/ScalarType.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/library.h>

#include <cstring>
#include <map>
#include <stdexcept>

namespace actnn {
namespace {

[[noreturn]] void malformed(const std::string& what) { throw std::runtime_error("the archive is malformed: " + what); }

// What the skimmer keeps of a pickled value: strings, integers and globals
// (a storage's persistent id is built from them), tuples of those, marks;
// anything else is an opaque value.
struct Value {
  enum Kind { kOther, kString, kInt, kGlobal, kTuple, kMark };
  Value() = default;
  explicit Value(Kind k) : kind(k) {}
  Kind kind = kOther;
  std::string text;  // kString, kGlobal ("module.name")
  int64_t number = 0;
  std::vector<Value> items;  // kTuple
};

// Reads the pickle protocol-2 opcodes LibTorch's Pickler writes (and the
// few protocol-4 framing ones) without building objects. An opcode outside
// that set is an error: nothing is skipped unread.
class Skimmer {
 public:
  Skimmer(const std::string& bytes, const std::string& name) : b_(bytes), name_(name) {}

  std::vector<ArchiveStorage> run() {
    while (true) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80: skip(1); break;  // PROTO
        case 0x95: skip(8); break;  // FRAME
        case '.': return std::move(found_);  // STOP
        case '(': push(Value(Value::kMark)); break;
        case ')': push(Value(Value::kTuple)); break;  // EMPTY_TUPLE
        case 't': push(tuple(popToMark())); break;
        case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
          std::vector<Value> items(op - 0x84);
          for (size_t i = items.size(); i-- > 0;) items[i] = pop();
          push(tuple(std::move(items)));
          break;
        }
        case ']': case '}': case 'N': case 0x88: case 0x89: push(Value()); break;  // list, dict, None, True, False
        case 'a': pop(); break;  // APPEND
        case 's': pop(), pop(); break;  // SETITEM
        case 'e': case 'u': popToMark(); break;  // APPENDS, SETITEMS
        case 'J': pushInt(int32_t(little(4))); break;  // BININT
        case 'K': pushInt(int64_t(little(1))); break;  // BININT1
        case 'M': pushInt(int64_t(little(2))); break;  // BININT2
        case 0x8a: pushInt(signedLittle(size_t(little(1)))); break;  // LONG1
        case 'G': skip(8), push(Value()); break;  // BINFLOAT
        case 'X': pushString(size_t(little(4))); break;  // BINUNICODE
        case 0x8c: pushString(size_t(little(1))); break;  // SHORT_BINUNICODE
        case 0x8d: pushString(size_t(little(8))); break;  // BINUNICODE8
        case 'B': skip(size_t(little(4))), push(Value()); break;  // BINBYTES
        case 'C': skip(size_t(little(1))), push(Value()); break;  // SHORT_BINBYTES
        case 0x8e: skip(size_t(little(8))), push(Value()); break;  // BINBYTES8
        case 'c': {  // GLOBAL module\nname\n
          Value g(Value::kGlobal);
          g.text = line() + ".";
          g.text += line();
          push(std::move(g));
          break;
        }
        case 'R': case 0x81: pop(), pop(), push(Value()); break;  // REDUCE, NEWOBJ
        case 'b': pop(); break;  // BUILD
        case 'Q': persistent(pop()), push(Value()); break;  // BINPERSID
        case 'q': memo_[little(1)] = top(); break;  // BINPUT
        case 'r': memo_[little(4)] = top(); break;  // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = top(); break;  // MEMOIZE
        case 'h': get(little(1)); break;  // BINGET
        case 'j': get(little(4)); break;  // LONG_BINGET
        default:
          fail("pickle opcode 0x" + hex(op) + " at byte " + std::to_string(pos_ - 1) +
               " is not one LibTorch writes");
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { malformed(name_ + ".pkl: " + what); }
  static std::string hex(uint8_t v) {
    const char* digits = "0123456789abcdef";
    return {digits[v >> 4], digits[v & 15]};
  }
  void need(size_t n) const {
    if (n > b_.size() - pos_) fail("truncated at byte " + std::to_string(pos_) + " (needs " + std::to_string(n) + " more)");
  }
  uint8_t byte() {
    need(1);
    return uint8_t(b_[pos_++]);
  }
  void skip(size_t n) {
    need(n);
    pos_ += n;
  }
  uint64_t little(size_t n) {
    need(n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t(uint8_t(b_[pos_ + i])) << (8 * i);
    pos_ += n;
    return v;
  }
  int64_t signedLittle(size_t n) {
    if (n > 8) fail("an integer of " + std::to_string(n) + " bytes");
    if (n == 0) return 0;
    uint64_t v = little(n);
    if (n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t(0) << (8 * n);  // sign-extend
    return int64_t(v);
  }
  std::string line() {
    const size_t end = b_.find('\n', pos_);
    if (end == std::string::npos) fail("truncated GLOBAL at byte " + std::to_string(pos_));
    std::string s = b_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }
  void push(Value v) { stack_.push_back(std::move(v)); }
  void pushInt(int64_t n) {
    Value v(Value::kInt);
    v.number = n;
    push(std::move(v));
  }
  void pushString(size_t n) {
    need(n);
    Value v(Value::kString);
    v.text = b_.substr(pos_, n);
    pos_ += n;
    push(std::move(v));
  }
  Value pop() {
    if (stack_.empty() || stack_.back().kind == Value::kMark) fail("a value is taken from an empty stack at byte " + std::to_string(pos_ - 1));
    Value v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  const Value& top() const {
    if (stack_.empty()) fail("memoizes an empty stack at byte " + std::to_string(pos_ - 1));
    return stack_.back();
  }
  std::vector<Value> popToMark() {
    std::vector<Value> items;
    while (!stack_.empty() && stack_.back().kind != Value::kMark) {
      items.push_back(std::move(stack_.back()));
      stack_.pop_back();
    }
    if (stack_.empty()) fail("no MARK before byte " + std::to_string(pos_ - 1));
    stack_.pop_back();
    return {items.rbegin(), items.rend()};
  }
  static Value tuple(std::vector<Value> items) {
    Value v(Value::kTuple);
    v.items = std::move(items);
    return v;
  }
  void get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) fail("memo entry " + std::to_string(index) + " is read before it is written");
    push(it->second);
  }
  // ('storage', torch.<Type>Storage, key, location, numel)
  void persistent(const Value& id) {
    const auto& f = id.items;
    if (id.kind != Value::kTuple || f.size() != 5 || f[0].kind != Value::kString || f[0].text != "storage")
      fail("a persistent id that is not ('storage', type, key, location, numel)");
    if (f[1].kind != Value::kGlobal || f[2].kind != Value::kString || f[4].kind != Value::kInt || f[4].number < 0)
      fail("storage persistent id with a bad type, key or element count");
    ArchiveStorage s;
    s.pickle = name_;
    s.key = f[2].text;
    const std::string prefix = "torch.";
    s.type = f[1].text.compare(0, prefix.size(), prefix) == 0 ? f[1].text.substr(prefix.size()) : f[1].text;
    s.numel = f[4].number;
    s.declared_bytes = s.numel * elementSize(s.type);
    found_.push_back(std::move(s));
  }
  int64_t elementSize(const std::string& type) const {
    // The Pickler names a storage c10::toString(dtype) + "Storage".
#define ACTNN_STORAGE_SIZE(ctype, name) \
  if (type == #name "Storage") return int64_t(sizeof(ctype));
    AT_FORALL_SCALAR_TYPES_WITH_COMPLEX_AND_QINTS(ACTNN_STORAGE_SIZE)
#undef ACTNN_STORAGE_SIZE
    fail("storage type '" + type + "' is not a LibTorch dtype's");
  }

  const std::string& b_;
  std::string name_;
  size_t pos_ = 0;
  std::vector<Value> stack_;
  std::map<uint64_t, Value> memo_;
  std::vector<ArchiveStorage> found_;
};

}  // namespace

std::vector<ArchiveStorage> pickledStorages(const std::string& bytes, const std::string& pickle) {
  return Skimmer(bytes, pickle).run();
}

void checkArchive(const std::string& path) {
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    auto record = [&](const std::string& name) {
      auto [data, size] = reader.getRecord(name);
      return std::string(static_cast<const char*>(data.get()), size);
    };
    for (const std::string pickle : {"data", "constants"}) {
      if (!reader.hasRecord(pickle + ".pkl")) {
        if (pickle == "data") malformed("it has no data.pkl");
        continue;
      }
      for (const auto& s : pickledStorages(record(pickle + ".pkl"), pickle)) {
        const std::string name = pickle + "/" + s.key;
        if (!reader.hasRecord(name))
          malformed(pickle + ".pkl refers to a " + s.type + " in record " + name + ", which the archive lacks");
        const auto [data, size] = reader.getRecord(name);
        if (int64_t(size) < s.declared_bytes)
          malformed("record " + name + " holds " + std::to_string(size) + " bytes but " + pickle + ".pkl declares a " +
                    s.type + " of " + std::to_string(s.numel) + " elements (" + std::to_string(s.declared_bytes) +
                    " bytes)");
      }
    }
  } catch (const c10::Error& e) {
    throw std::runtime_error(path + ": cannot read the archive: " + e.what_without_backtrace());
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

TORCH_LIBRARY_FRAGMENT(actnn, m) {
  // Python's actnn.load calls it before torch.jit.load (archive_check.h).
  m.def("check_archive(str path) -> ()", [](const std::string& path) { checkArchive(path); });
}

}  // namespace actnn
