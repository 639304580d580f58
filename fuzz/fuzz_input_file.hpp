// What every fuzz target needs: its input as a file (the readers take
// paths), in a folder of the process's own under the temporary directory.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

namespace mtl_fuzz {

inline const std::filesystem::path& scratch_dir() {
  static const auto dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("mtl_fuzz_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

/// Writes `size` bytes to `name` in the scratch folder; returns its path.
inline std::string write_file(const std::string& name, const char* data, size_t size) {
  const auto path = (scratch_dir() / name).string();
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(data, static_cast<std::streamsize>(size));
  return path;
}

}  // namespace mtl_fuzz
