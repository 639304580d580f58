// Which columns of a CSV file hold the sparse ids, the dense values and the
// two labels, found by header name. Presets for the processed Ali-CCP and
// the AliExpress layouts.
#pragma once

#include <string>
#include <vector>

namespace mtl::data {

struct CsvLayout {
  std::string name;                 ///< for messages, e.g. "aliccp"
  std::vector<std::string> sparse;  ///< id columns, in schema order
  std::vector<std::string> dense;   ///< real-valued columns, in schema order
  /// Label columns; both empty for rows to be scored, whose labels are unknown (read as 0).
  std::string click = "click";
  std::string conversion;

  bool labelled() const noexcept { return !click.empty() || !conversion.empty(); }

  /// Processed Ali-CCP (the public preprocessed release): `click,purchase`,
  /// 23 id columns, 8 dense columns named D<field>.
  static CsvLayout aliccp() {
    CsvLayout l;
    l.name = "aliccp";
    l.sparse = {"101", "121", "122", "124", "125", "126", "127", "128",    "129",    "205",    "206",   "207",
                "210", "216", "508", "509", "702", "853", "301", "109_14", "110_14", "127_14", "150_14"};
    l.dense = {"D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853"};
    l.conversion = "purchase";
    return l;
  }

  /// AliExpress: `search_id` (not a feature), categorical_1..16, numerical_1..63, click, conversion.
  static CsvLayout aliexpress() {
    CsvLayout l;
    l.name = "aliexpress";
    for (int i = 1; i <= 16; ++i) l.sparse.push_back("categorical_" + std::to_string(i));
    for (int i = 1; i <= 63; ++i) l.dense.push_back("numerical_" + std::to_string(i));
    l.conversion = "conversion";
    return l;
  }

  /// A one-line description of the columns, part of the binary cache key.
  std::string signature() const {
    std::string s = name + "|" + click + "|" + conversion + "|";
    for (const auto& c : sparse) s += c + ",";
    s += "|";
    for (const auto& c : dense) s += c + ",";
    return s;
  }
};

}  // namespace mtl::data
