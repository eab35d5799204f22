#include "json.h"

#include <cmath>
#include <cstdio>

namespace actnn {
namespace tools {

namespace {
std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}
}  // namespace

JsonLine& JsonLine::raw(const std::string& key, const std::string& json) {
  if (!body_.empty()) body_ += ", ";
  body_ += quote(key) + ": " + json;
  return *this;
}

JsonLine& JsonLine::add(const std::string& key, const std::string& value) {
  return raw(key, quote(value));
}

JsonLine& JsonLine::add(const std::string& key, double value) {
  if (!std::isfinite(value)) return raw(key, "null");
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", value);
  return raw(key, buf);
}

JsonLine& JsonLine::add(const std::string& key, int64_t value) {
  return raw(key, std::to_string(value));
}

JsonLine& JsonLine::add(const std::string& key, bool value) {
  return raw(key, value ? "true" : "false");
}

std::ostream& operator<<(std::ostream& os, const JsonLine& line) {
  return os << line.str() << std::endl;
}

}  // namespace tools
}  // namespace actnn
