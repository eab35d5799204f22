// Small helpers shared by the unit tests.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>

namespace actnn {
namespace test {

// Runs `f`, expecting a c10::Error (or another std::exception: the
// compiler's CompileError) whose message contains `needle`.
template <typename F>
void expect_error(F&& f, const std::string& needle) {
  std::string msg;
  try {
    f();
  } catch (const c10::Error& e) {
    msg = e.what_without_backtrace();
  } catch (const std::exception& e) {
    msg = e.what();
  }
  if (msg.empty()) {
    ADD_FAILURE() << "no error raised, expected one containing: " << needle;
    return;
  }
  EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg << "\nexpected: " << needle;
}

inline bool bytes_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.nbytes() != b.nbytes()) return false;
  const at::Tensor ca = a.contiguous().cpu(), cb = b.contiguous().cpu();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

}  // namespace test
}  // namespace actnn
