// Streams the raw Ali-CCP release: each `sample_skeleton` line (sample id,
// click, buy, md5 key of a common-feature line, feature count, features) is
// joined with its `common_features` line (md5, count, features). A feature
// is `field` 0x02 `id` 0x03 `value`, features joined by 0x01. For each of the
// 23 fields the first feature gives the sparse id (0 when absent); the eight
// dense columns D<field> take that feature's value, as the processed release
// does. The common-feature file is held in memory (only the 23 fields); the
// skeleton, about 10 GB for the training split, is streamed. Accepted: a
// UTF-8 byte-order mark, CRLF line ends, fields the model does not use.
// Refused, naming file, line and field: a line with fewer fields, a feature
// count that differs from the features present (a line cut short), a
// malformed feature, a non-numeric or negative id, a non-finite value, a
// label other than 0/1, a conversion without a click, an unknown md5 key.
#pragma once

#include <mtl/data/csv_layout.hpp>
#include <mtl/data/parsed_row.hpp>
#include <mtl/data/text_fields.hpp>

#include <c10/util/Exception.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace mtl::data {

namespace detail {

/// One field's first feature: its id and value.
struct RawFeature {
  int32_t field = -1;  ///< index into the layout's sparse columns
  int64_t id = 0;
  float value = 0.f;
};

class RawFieldIndex {
 public:
  RawFieldIndex() {
    const auto layout = CsvLayout::aliccp();
    for (size_t j = 0; j < layout.sparse.size(); ++j) field_.emplace(layout.sparse[j], static_cast<int32_t>(j));
    for (size_t k = 0; k < layout.dense.size(); ++k)
      dense_of_field_.emplace(field_.at(layout.dense[k].substr(1)), static_cast<int32_t>(k));
  }
  /// Layout index of a raw field name, or -1 for fields the model does not use.
  int32_t field(std::string_view name) const {
    auto it = field_.find(std::string(name));
    return it == field_.end() ? -1 : it->second;
  }
  /// Dense column fed by a field, or -1.
  int32_t dense_of(int32_t field) const {
    auto it = dense_of_field_.find(field);
    return it == dense_of_field_.end() ? -1 : it->second;
  }

 private:
  std::unordered_map<std::string, int32_t> field_;
  std::unordered_map<int32_t, int32_t> dense_of_field_;
};

/// Parses a 0x01-joined feature list of `count` features (the line's own
/// count, which catches a line cut short), keeping each used field's first feature.
inline void parse_features(std::string_view list, int64_t count, const RawFieldIndex& index, const FieldPlace& at,
                           std::vector<RawFeature>& out) {
  int64_t seen_features = 0;
  size_t start = 0;
  while (start < list.size()) {
    ++seen_features;
    size_t end = list.find('\x01', start);
    if (end == std::string_view::npos) end = list.size();
    const auto item = list.substr(start, end - start);
    start = end + 1;
    const size_t a = item.find('\x02'), b = item.find('\x03');
    TORCH_CHECK(a != std::string_view::npos && b != std::string_view::npos && a < b, describe(at),
                ": expected features as field 0x02 id 0x03 value, got ", excerpt(item));
    const int32_t field = index.field(item.substr(0, a));
    if (field < 0) continue;
    bool seen = false;
    for (const auto& f : out) seen = seen || f.field == field;
    if (seen) continue;
    out.push_back({field, parse_id(item.substr(a + 1, b - a - 1), at), parse_dense(item.substr(b + 1), at)});
  }
  TORCH_CHECK(seen_features == count, describe(at), ": the line announces ", count, " features but holds ",
              seen_features, " (a line cut short?)");
}

/// Splits off the first `n` comma-separated fields; the rest stays in `rest`.
inline bool take_fields(std::string_view line, size_t n, std::vector<std::string_view>& head, std::string_view& rest) {
  head.clear();
  size_t start = 0;
  for (size_t i = 0; i < n; ++i) {
    const size_t comma = line.find(',', start);
    if (comma == std::string_view::npos) return false;
    head.push_back(line.substr(start, comma - start));
    start = comma + 1;
  }
  rest = line.substr(start);
  return true;
}

inline std::unordered_map<std::string, std::vector<RawFeature>> read_common_features(const std::string& path,
                                                                                     const RawFieldIndex& index) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), "cannot open '", path, "': ", std::strerror(errno));
  std::unordered_map<std::string, std::vector<RawFeature>> common;
  std::string line;
  std::vector<std::string_view> head;
  std::string_view rest;
  int64_t number = 0;
  while (std::getline(in, line)) {
    trim_line(line, ++number);
    TORCH_CHECK(take_fields(line, 2, head, rest), path, ":", number, ": expected md5,feature_count,features, got ",
                excerpt(line));
    std::vector<RawFeature> features;
    parse_features(rest, parse_non_negative(head[1], {path, number, "feature_count"}, "a feature count"), index,
                   {path, number, "features"}, features);
    common[std::string(head[0])] = std::move(features);
  }
  return common;
}

}  // namespace detail

/// The raw release's skeleton joined with its common features, as a RowSource
/// in the processed Ali-CCP layout (`CsvLayout::aliccp()` field order).
inline RowSource aliccp_raw_source(std::string skeleton_path, std::string common_path) {
  auto common = std::make_shared<std::unordered_map<std::string, std::vector<detail::RawFeature>>>();
  auto loaded = std::make_shared<bool>(false);
  return [=](const std::function<void(const ParsedRow&)>& on_row) {
    const detail::RawFieldIndex index;
    if (!*loaded) *common = detail::read_common_features(common_path, index), *loaded = true;
    std::ifstream in(skeleton_path, std::ios::binary);
    TORCH_CHECK(in.good(), "cannot open '", skeleton_path, "': ", std::strerror(errno));
    const auto layout = CsvLayout::aliccp();
    ParsedRow row;
    row.sparse.resize(layout.sparse.size());
    row.dense.resize(layout.dense.size());
    std::vector<detail::RawFeature> features;
    std::vector<std::string_view> head;
    std::string_view rest;
    std::string line;
    int64_t number = 0;
    while (std::getline(in, line)) {
      trim_line(line, ++number);
      TORCH_CHECK(detail::take_fields(line, 5, head, rest), skeleton_path, ":", number,
                  ": expected sample_id,click,buy,md5,feature_count,features, got ", excerpt(line));
      row.click = parse_label(head[1], {skeleton_path, number, "click"});
      row.conversion = parse_label(head[2], {skeleton_path, number, "buy"});
      TORCH_CHECK(row.conversion <= row.click, skeleton_path, ":", number,
                  ": buy is 1 but click is 0; a conversion needs a click");
      auto joined = common->find(std::string(head[3]));
      TORCH_CHECK(joined != common->end(), skeleton_path, ":", number, ": common-feature key ", excerpt(head[3]),
                  " is not in '", common_path, "'");
      features.clear();
      detail::parse_features(rest,
                             parse_non_negative(head[4], {skeleton_path, number, "feature_count"}, "a feature count"),
                             index, {skeleton_path, number, "features"}, features);
      std::fill(row.sparse.begin(), row.sparse.end(), 0);
      std::fill(row.dense.begin(), row.dense.end(), 0.f);
      // Impression features come last, so they win over a common feature of the same field.
      for (const auto* list : {&joined->second, &features})
        for (const auto& f : *list) {
          row.sparse[f.field] = f.id;
          if (const int32_t k = index.dense_of(f.field); k >= 0) row.dense[k] = f.value;
        }
      on_row(row);
    }
  };
}

}  // namespace mtl::data
