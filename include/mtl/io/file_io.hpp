// Writing a run's files so that neither a kill nor a full disk leaves a
// damaged one: a whole file is replaced atomically (temporary file, fsync,
// rename), a line is appended with one unbuffered write, and a failed write
// throws StorageError naming the file and the system's reason.
#pragma once

#include <mtl/detail/crash_points.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace mtl::io {

/// A file could not be written: disk full, file too large, read-only or not
/// permitted. Separate from bad input, so that a caller can stop at once
/// rather than try the next job on the same disk.
class StorageError : public std::runtime_error {
 public:
  StorageError(const std::string& what, int error_number)
      : std::runtime_error(what + ": " + std::strerror(error_number)), error_number_(error_number) {}
  int error_number() const noexcept { return error_number_; }

 private:
  int error_number_;
};

namespace detail {
/// Writes all of `size` bytes to `fd`; false (errno set) on failure.
inline bool write_all(int fd, const char* data, size_t size) {
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}
}  // namespace detail

/// Writes `bytes` to `path` so that `path` holds either its old content or
/// all of the new. `crash_point_name` names the point halfway (tests kill there).
inline void atomic_write(const std::string& path, const std::vector<char>& bytes,
                         const char* crash_point_name = "atomic_write") {
  const std::string temporary = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw StorageError("cannot write '" + temporary + "'", errno);
  auto fail = [&](const std::string& what) {
    const int err = errno;
    ::close(fd);
    ::unlink(temporary.c_str());
    throw StorageError(what, err);
  };
  const size_t half = bytes.size() / 2;
  if (!detail::write_all(fd, bytes.data(), half)) fail("writing '" + temporary + "' failed");
  mtl::detail::crash_point(crash_point_name);  // a kill here leaves half a temporary file and `path` untouched
  if (!detail::write_all(fd, bytes.data() + half, bytes.size() - half)) fail("writing '" + temporary + "' failed");
  if (::fsync(fd) != 0) fail("flushing '" + temporary + "' to disk failed");
  ::close(fd);
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temporary.c_str());
    throw StorageError("cannot move '" + temporary + "' to '" + path + "'", err);
  }
}

inline void atomic_write(const std::string& path, const std::string& text) {
  atomic_write(path, std::vector<char>(text.begin(), text.end()));
}

/// Appends `line` and a newline to `file` in one write, so that a record is
/// on disk (or the error is known) when this returns.
inline void append_line(const std::string& file, const std::string& line) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
  if (fd < 0) throw StorageError("cannot append to '" + file + "'", errno);
  const std::string record = line + "\n";
  const bool written = detail::write_all(fd, record.data(), record.size());
  const int err = errno;
  ::close(fd);
  if (!written) throw StorageError("appending to '" + file + "' failed", err);
}

/// Creates `dir` (and its parents), or throws naming it and why not.
inline void create_output_dir(const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) throw StorageError("cannot create the output folder '" + dir + "'", error.value());
}

/// Removes the temporaries a killed writer left in `dir` (`NAME.tmp.PID`).
inline void remove_stale_temporaries(const std::string& dir) {
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error))
    if (entry.path().filename().string().find(".tmp.") != std::string::npos)
      std::filesystem::remove(entry.path(), error);
}

}  // namespace mtl::io
