// A binary columnar cache of encoded splits (vocabularies and every column),
// so that a second run skips parsing. Keyed by the source files' paths,
// sizes and modification times and by the reading options; written to a
// temporary file and renamed, so a killed run never leaves a half file under
// the final name; read through mmap. A stale, truncated or foreign file is
// reported as a miss and parsing runs again.
#pragma once

#include <mtl/data/encoded_splits.hpp>

#include <c10/util/Exception.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace mtl::data {

/// FNV-1a over `text`, continuing from `hash`.
inline uint64_t fnv1a(const std::string& text, uint64_t hash = 0xcbf29ce484222325ULL) {
  for (unsigned char c : text) hash = (hash ^ c) * 0x100000001b3ULL;
  return hash;
}

/// Cache key of some source files and the options that shaped their encoding.
inline uint64_t cache_key(const std::vector<std::string>& files, const std::string& options) {
  uint64_t hash = fnv1a("mtl-cache-v2|" + options);
  for (const auto& f : files) {
    std::error_code ec;
    const auto path = std::filesystem::weakly_canonical(f, ec);
    const auto size = std::filesystem::file_size(f, ec);
    const auto time = std::filesystem::last_write_time(f, ec).time_since_epoch().count();
    hash = fnv1a(path.string() + "|" + std::to_string(size) + "|" + std::to_string(time) + ";", hash);
  }
  return hash;
}

namespace detail {
constexpr char kCacheMagic[8] = {'M', 'T', 'L', 'C', 'A', 'C', 'H', '2'};

class CacheWriter {
 public:
  explicit CacheWriter(const std::string& path) : out_(path, std::ios::binary | std::ios::trunc), path_(path) {
    TORCH_CHECK(out_.good(), "cannot write the data cache '", path, "': ", std::strerror(errno));
  }
  template <class T>
  void value(T v) {
    bytes(&v, sizeof(T));
  }
  void text(const std::string& s) {
    value<uint64_t>(s.size());
    bytes(s.data(), s.size());
  }
  template <class T>
  void column(const std::vector<T>& v) {
    value<uint64_t>(v.size());
    bytes(v.data(), v.size() * sizeof(T));
  }
  void close() {
    out_.close();
    TORCH_CHECK(!out_.fail(), "writing the data cache '", path_, "' failed: ", std::strerror(errno));
  }

 private:
  void bytes(const void* p, size_t n) { out_.write(static_cast<const char*>(p), static_cast<std::streamsize>(n)); }
  std::ofstream out_;
  std::string path_;
};

/// Reads from a mapped file; any read past the end marks the file bad.
class CacheReader {
 public:
  CacheReader(const char* data, size_t size) : data_(data), size_(size) {}
  bool ok() const noexcept { return ok_; }
  template <class T>
  T value() {
    T v{};
    bytes(&v, sizeof(T));
    return v;
  }
  std::string text() {
    const auto n = value<uint64_t>();
    if (!room(n)) return {};
    std::string s(data_ + at_, n);
    at_ += n;
    return s;
  }
  template <class T>
  std::vector<T> column() {
    const auto n = value<uint64_t>();
    if (!room(n * sizeof(T))) return {};
    std::vector<T> v(n);
    bytes(v.data(), n * sizeof(T));
    return v;
  }
  bool at_end() const noexcept { return at_ == size_; }

 private:
  bool room(uint64_t n) {
    if (!ok_ || n > size_ - at_) ok_ = false;
    return ok_;
  }
  void bytes(void* p, size_t n) {
    if (n == 0 || !room(n)) return;  // memcpy into an empty vector's null data() is undefined
    std::memcpy(p, data_ + at_, n);
    at_ += n;
  }
  const char* data_;
  size_t size_, at_ = 0;
  bool ok_ = true;
};
}  // namespace detail

/// Writes `splits` under `path` (temporary file, then rename); on failure
/// the temporary is removed and the error thrown.
inline void save_cache(const std::string& path, uint64_t key, const EncodedSplits& splits) {
  const std::string temporary = path + ".tmp." + std::to_string(::getpid());
  try {
    detail::CacheWriter w(temporary);
    for (char c : detail::kCacheMagic) w.value(c);
    w.value(key);
    const auto& schema = splits.schema;
    w.value<int64_t>(schema.default_embedding_dim());
    w.value<uint64_t>(schema.sparse_fields().size());
    for (size_t j = 0; j < schema.sparse_fields().size(); ++j) {
      w.text(schema.sparse_fields()[j].name);
      w.column(splits.vocabularies[j].ids());
    }
    w.value<uint64_t>(schema.dense_fields().size());
    for (const auto& f : schema.dense_fields()) w.text(f.name);
    for (const Dataset* ds : {&splits.train, &splits.valid, &splits.test}) {
      w.column(ds->ids), w.column(ds->dense), w.column(ds->click), w.column(ds->conversion);
    }
    w.value<uint64_t>(splits.reads.size());
    for (const auto& [file, read] : splits.reads) {
      w.text(file);
      w.value<uint8_t>(read.header_line ? 1 : 0);
      w.value(read.rows), w.value(read.conversions_without_click_dropped);
      w.value(read.conversions_without_click_as_click);
    }
    w.close();
    std::error_code ec;
    std::filesystem::rename(temporary, path, ec);
    TORCH_CHECK(!ec, "cannot move the data cache into place at '", path, "': ", ec.message());
  } catch (const c10::Error&) {
    std::error_code ignored;
    std::filesystem::remove(temporary, ignored);
    throw;
  }
}

/// The splits cached under `path` for `key`, or nullopt on a miss.
inline std::optional<EncodedSplits> load_cache(const std::string& path, uint64_t key) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return std::nullopt;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size <= 0) {
    ::close(fd);
    return std::nullopt;
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return std::nullopt;
  detail::CacheReader r(static_cast<const char*>(map), size);
  std::optional<EncodedSplits> result;
  bool magic_ok = true;
  for (char c : detail::kCacheMagic) magic_ok = magic_ok && r.value<char>() == c;
  // A file that fails any check is a miss, whatever it holds.
  if (magic_ok && r.value<uint64_t>() == key) try {
      FeatureSchema schema(r.value<int64_t>());
      std::vector<Vocabulary> vocabularies(r.value<uint64_t>());
      for (auto& v : vocabularies) {
        const auto name = r.text();
        v.set_ids(r.column<int64_t>());
        if (r.ok()) schema.add_sparse(name, v.size());
      }
      const auto num_dense = r.value<uint64_t>();
      for (uint64_t k = 0; k < num_dense && r.ok(); ++k) schema.add_dense(r.text());
      EncodedSplits s{schema, vocabularies, Dataset(schema), Dataset(schema), Dataset(schema)};
      for (Dataset* ds : {&s.train, &s.valid, &s.test}) {
        ds->ids = r.column<int32_t>(), ds->dense = r.column<float>();
        ds->click = r.column<float>(), ds->conversion = r.column<float>();
        const auto rows = static_cast<size_t>(ds->num_rows());
        if (ds->ids.size() != rows * schema.sparse_fields().size() || ds->dense.size() != rows * num_dense ||
            ds->conversion.size() != rows)
          magic_ok = false;
      }
      const auto num_reads = r.value<uint64_t>();
      for (uint64_t k = 0; k < num_reads && r.ok(); ++k) {
        auto& read = s.reads[r.text()];
        read.header_line = r.value<uint8_t>() != 0;
        read.rows = r.value<int64_t>(), read.conversions_without_click_dropped = r.value<int64_t>();
        read.conversions_without_click_as_click = r.value<int64_t>();
      }
      if (r.ok() && r.at_end() && magic_ok) result = std::move(s);
    } catch (const c10::Error&) {
      result.reset();
    }
  ::munmap(map, size);
  return result;
}

}  // namespace mtl::data
