// One JSON object per line, the output format of actnn-bench: fields in the
// order they are added, strings escaped, non-finite numbers written as null.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

namespace actnn {
namespace tools {

class JsonLine {
 public:
  JsonLine& add(const std::string& key, const std::string& value);
  JsonLine& add(const std::string& key, const char* value) { return add(key, std::string(value)); }
  JsonLine& add(const std::string& key, double value);
  JsonLine& add(const std::string& key, int64_t value);
  JsonLine& add(const std::string& key, int value) { return add(key, int64_t(value)); }
  JsonLine& add(const std::string& key, bool value);
  std::string str() const { return "{" + body_ + "}"; }

 private:
  JsonLine& raw(const std::string& key, const std::string& json);
  std::string body_;
};

// Writes the line and flushes, so that progress is visible through a pipe.
std::ostream& operator<<(std::ostream& os, const JsonLine& line);

}  // namespace tools
}  // namespace actnn
