// How a CSV file's header becomes a layout: the two label columns by name,
// columns that are not features, and which of the rest are dense. Every
// other column is a sparse id field, in header order, so an Ali-CCP file
// with any subset of its fields (the 18 fields most papers use, or all 23
// with their dense values) reads without a layout written for it.
#pragma once

#include <mtl/data/csv_layout.hpp>
#include <mtl/detail/join.hpp>

#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <set>
#include <string>
#include <vector>

namespace mtl::data {

struct LayoutRules {
  std::string name;  ///< for messages and the cache key, e.g. "aliccp"
  std::string click = "click";
  std::string conversion = "conversion";
  /// A column named one of these prefixes followed by a digit is dense
  /// (Ali-CCP's `D109_14`, AliExpress's `numerical_1`), unless `dense` is given.
  std::vector<std::string> dense_prefixes;
  /// Columns that are neither labels nor features (AliExpress's `search_id`).
  std::vector<std::string> ignored;
  /// Explicit sparse fields. When given, an unlisted column is no sparse field:
  /// it is dense where `dense` or the prefix rule says so, else not a feature.
  std::vector<std::string> sparse;
  /// Explicit dense fields. When given, the prefix rule is off: an unlisted
  /// column is sparse (or, when `sparse` is given too, not a feature).
  std::vector<std::string> dense;

  /// Processed Ali-CCP: labels `click`, `purchase`; dense columns `D<field>`.
  static LayoutRules aliccp() {
    LayoutRules r;
    r.name = "aliccp";
    r.conversion = "purchase";
    r.dense_prefixes = {"D"};
    return r;
  }

  /// AliExpress: labels `click`, `conversion`; dense `numerical_<n>`; `search_id` is not a feature.
  static LayoutRules aliexpress() {
    LayoutRules r;
    r.name = "aliexpress";
    r.dense_prefixes = {"numerical_"};
    r.ignored = {"search_id"};
    return r;
  }

  /// The layout these rules find in `header` (the columns of `file`, named in errors).
  CsvLayout resolve(const std::vector<std::string>& header, const std::string& file) const {
    const std::string found =
        "; the header holds " + std::to_string(header.size()) + " columns: " + mtl::detail::join(header, ",");
    std::set<std::string> seen;
    for (const auto& column : header)
      TORCH_CHECK(seen.insert(column).second, file, ":1: the header names column '", column, "' twice", found);
    auto require = [&](const std::string& column, const char* role) {
      TORCH_CHECK(seen.count(column), file, ":1: the header has no column '", column, "', the ", name, " layout's ",
                  role, found);
    };
    require(click, "click label");
    require(conversion, "conversion label (a different name goes in the config's data.labels.conversion)");
    TORCH_CHECK(click != conversion, "the click and the conversion label are both '", click, "'");
    for (const auto* list : {&sparse, &dense})
      for (const auto& column : *list) {
        TORCH_CHECK(column != click && column != conversion, "'", column,
                    "' is listed as a feature but it is a label column");
        require(column, list == &sparse ? "listed sparse field" : "listed dense field");
      }
    for (const auto& column : sparse)
      TORCH_CHECK(std::find(dense.begin(), dense.end(), column) == dense.end(), "'", column,
                  "' is listed as both a sparse and a dense field");

    CsvLayout layout;
    layout.name = name;
    layout.click = click;
    layout.conversion = conversion;
    auto listed = [](const std::vector<std::string>& list, const std::string& column) {
      return std::find(list.begin(), list.end(), column) != list.end();
    };
    for (const auto& column : header) {
      if (column == click || column == conversion || listed(ignored, column)) continue;
      if (listed(dense, column) || (dense.empty() && !listed(sparse, column) && dense_by_name(column)))
        layout.dense.push_back(column);
      else if (listed(sparse, column) || sparse.empty())
        layout.sparse.push_back(column);
    }
    TORCH_CHECK(!layout.sparse.empty(), file, ":1: the ", name, " layout found no sparse id column", found);
    return layout;
  }

 private:
  bool dense_by_name(const std::string& column) const {
    for (const auto& prefix : dense_prefixes)
      if (column.size() > prefix.size() && column.compare(0, prefix.size(), prefix) == 0 &&
          std::isdigit(static_cast<unsigned char>(column[prefix.size()])))
        return true;
    return false;
  }
};

}  // namespace mtl::data
