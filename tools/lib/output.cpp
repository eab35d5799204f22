#include "output.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace actnn {
namespace tools {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& why) {
  throw OutputError("cannot write '" + path + "': " + why);
}

[[noreturn]] void failErrno(const std::string& path, const std::string& step) {
  fail(path, step + ": " + std::strerror(errno));
}

void writeAll(int fd, const std::string& bytes, const std::string& path) {
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      failErrno(path, "write");
    }
    p += n;
    left -= size_t(n);
  }
}

// A character device, a FIFO or a socket: written in place.
void writeInPlace(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) failErrno(path, "open");
  try {
    writeAll(fd, bytes, path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) failErrno(path, "close");
}

void writeByRename(const std::string& path, const std::string& bytes, const struct stat* existing) {
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  std::string temp = dir + "/." + base + ".actnn-tmp-XXXXXX";
  const int fd = ::mkstemp(temp.data());
  if (fd < 0) failErrno(path, "create a temporary file in '" + dir + "'");
  try {
    // The target's mode when it exists, else what the umask allows (mkstemp
    // makes 0600).
    mode_t mode;
    if (existing) {
      mode = existing->st_mode & 07777;
    } else {
      const mode_t mask = ::umask(0);
      ::umask(mask);
      mode = 0666 & ~mask;
    }
    if (::fchmod(fd, mode) != 0) failErrno(path, "chmod");
    writeAll(fd, bytes, path);
    if (::fsync(fd) != 0) failErrno(path, "fsync");
  } catch (...) {
    ::close(fd);
    ::unlink(temp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    errno = err;
    failErrno(path, "close");
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    errno = err;
    failErrno(path, "rename");
  }
}

void writeBytes(const std::string& path, const std::string& bytes) {
  std::string target = path;
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
    // Through a link to what it names (the link stays a link).
    char resolved[PATH_MAX];
    if (::realpath(path.c_str(), resolved)) target = resolved;
  }
  if (::stat(target.c_str(), &st) != 0) {
    if (errno != ENOENT) failErrno(path, "stat");
    writeByRename(target, bytes, nullptr);
    return;
  }
  if (S_ISDIR(st.st_mode)) fail(path, "it is a directory");
  if (S_ISREG(st.st_mode)) {
    writeByRename(target, bytes, &st);
    return;
  }
  writeInPlace(target, bytes);
}

}  // namespace

void writeOutput(const std::string& path, const std::function<void(std::ostream&)>& produce) {
  std::ostringstream buffer;
  produce(buffer);
  if (!buffer) fail(path, "the output could not be produced in memory");
  writeBytes(path, buffer.str());
}

void writeOutputOr(const std::string& path, std::ostream& out, const std::function<void(std::ostream&)>& produce) {
  if (!path.empty()) {
    writeOutput(path, produce);
    return;
  }
  produce(out);
  out.flush();
  if (!out) throw OutputError("cannot write to standard output");
}

}  // namespace tools
}  // namespace actnn
