// Loads a data set's splits from files, through the binary cache when a
// cache folder is given: processed CSV layouts (Ali-CCP, AliExpress) and the
// raw Ali-CCP release.
#pragma once

#include <mtl/data/aliccp_raw_reader.hpp>
#include <mtl/data/binary_cache.hpp>
#include <mtl/data/csv_layout.hpp>
#include <mtl/data/csv_reader.hpp>
#include <mtl/data/encoded_splits.hpp>
#include <mtl/data/layout_rules.hpp>

#include <c10/util/Exception.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace mtl::data {

/// Split files; `valid` and `test` may be empty.
struct SplitFiles {
  std::string train, valid, test;
};

/// The CSV files of a folder: the one name holding "train" is the training
/// split, "val" the validation split, "test" the test split.
inline SplitFiles find_split_files(const std::string& folder) {
  TORCH_CHECK(std::filesystem::is_directory(folder), "data folder '", folder, "' does not exist or is not a folder");
  SplitFiles files;
  auto take = [&](std::string& slot, const std::string& path, const char* role) {
    TORCH_CHECK(slot.empty(), "data folder '", folder, "' has two ", role, " files: '", slot, "' and '", path, "'");
    slot = path;
  };
  for (const auto& entry : std::filesystem::directory_iterator(folder)) {
    const auto name = entry.path().filename().string();
    if (entry.path().extension() != ".csv") continue;
    if (name.find("train") != std::string::npos)
      take(files.train, entry.path().string(), "training");
    else if (name.find("val") != std::string::npos)
      take(files.valid, entry.path().string(), "validation");
    else if (name.find("test") != std::string::npos)
      take(files.test, entry.path().string(), "test");
  }
  TORCH_CHECK(!files.train.empty(), "data folder '", folder, "' has no CSV file whose name holds 'train'");
  return files;
}

namespace detail {
inline std::string options_signature(const EncodeOptions& o) {
  return "min_count=" + std::to_string(o.min_count) + ",dim=" + std::to_string(o.embedding_dim) +
         ",valid_fraction=" + std::to_string(o.valid_fraction) + ",test_fraction=" + std::to_string(o.test_fraction) +
         ",held_out=position_hash";
}

/// Encodes through the cache: a hit skips every source; a miss encodes and
/// stores. The cache only saves time: when it cannot be stored (a full disk,
/// a read-only folder) a warning says why and the run goes on without it.
inline EncodedSplits cached(const std::vector<std::string>& files, const std::string& signature,
                            const std::string& cache_dir, const std::string& stem,
                            const std::function<EncodedSplits()>& encode) {
  if (cache_dir.empty()) return encode();
  std::error_code cannot_create;
  std::filesystem::create_directories(cache_dir, cannot_create);
  if (cannot_create) {
    TORCH_WARN("cannot create the data cache folder '", cache_dir, "' (", cannot_create.message(),
               "); reading without a cache");
    return encode();
  }
  const uint64_t key = cache_key(files, signature);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(key));
  const std::string path = (std::filesystem::path(cache_dir) / (stem + "-" + hex + ".mtlcache")).string();
  if (auto hit = load_cache(path, key)) return std::move(*hit);
  auto splits = encode();
  try {
    save_cache(path, key, splits);
  } catch (const c10::Error& e) {
    TORCH_WARN("the data cache was not stored: ", e.what_without_backtrace(), "; the next run parses again");
  }
  return splits;
}
}  // namespace detail

/// The splits of `files` read with `layout`. `read` says how to treat a file's first line and a conversion
/// without a click: the training file always has a header line, whose columns a validation or test file
/// without one is read with (`HeaderLine::detect` or `absent`). What reading each file found and changed is in
/// the result's `reads`.
inline EncodedSplits load_csv_splits(const SplitFiles& files, const CsvLayout& layout,
                                     const EncodeOptions& options = {}, const std::string& cache_dir = "",
                                     const CsvReadOptions& read = {}) {
  const auto read_signature =
      "|header=" + std::to_string(static_cast<int>(read.header)) +
      ",conversion_without_click=" + std::to_string(static_cast<int>(read.conversion_without_click));
  return detail::cached(
      {files.train, files.valid, files.test}, layout.signature() + detail::options_signature(options) + read_signature,
      cache_dir, layout.name, [&] {
        std::map<std::string, CsvReadReport> reads;
        CsvReadOptions train_read = read, other_read = read;
        train_read.header = HeaderLine::first_line;
        if (read.header != HeaderLine::first_line) {
          other_read.columns = read_csv_header(files.train);
          other_read.columns_from = std::filesystem::path(files.train).filename().string();
        }
        SplitSources sources{csv_source(files.train, layout, train_read, &reads[files.train]), {}, {}};
        if (!files.valid.empty()) sources.valid = csv_source(files.valid, layout, other_read, &reads[files.valid]);
        if (!files.test.empty()) sources.test = csv_source(files.test, layout, other_read, &reads[files.test]);
        auto splits = encode_splits(sources, {layout.sparse, layout.dense}, options);
        splits.reads = std::move(reads);
        return splits;
      });
}

/// As above, with the layout that `rules` find in the training file's header;
/// the validation and test files must hold the same columns.
inline EncodedSplits load_csv_splits(const SplitFiles& files, const LayoutRules& rules,
                                     const EncodeOptions& options = {}, const std::string& cache_dir = "",
                                     const CsvReadOptions& read = {}) {
  return load_csv_splits(files, rules.resolve(read_csv_header(files.train), files.train), options, cache_dir, read);
}

/// Raw Ali-CCP: training skeleton and common features, and optionally the
/// test pair. Validation (and test, without the pair) is held out from training.
inline EncodedSplits load_aliccp_raw_splits(const std::string& train_skeleton, const std::string& train_common,
                                            const std::string& test_skeleton, const std::string& test_common,
                                            const EncodeOptions& options = {}, const std::string& cache_dir = "") {
  const auto layout = CsvLayout::aliccp();
  return detail::cached({train_skeleton, train_common, test_skeleton, test_common},
                        "aliccp-raw|" + layout.signature() + detail::options_signature(options), cache_dir,
                        "aliccp_raw", [&] {
                          SplitSources sources{aliccp_raw_source(train_skeleton, train_common), {}, {}};
                          if (!test_skeleton.empty()) sources.test = aliccp_raw_source(test_skeleton, test_common);
                          return encode_splits(sources, {layout.sparse, layout.dense}, options);
                        });
}

}  // namespace mtl::data
