// One row as a reader hands it on, before vocabularies: raw integer ids per
// sparse field, dense values and labels. Readers reuse one instance per file.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace mtl::data {

struct ParsedRow {
  std::vector<int64_t> sparse;
  std::vector<float> dense;
  float click = 0.f;
  float conversion = 0.f;
};

/// Streams every row of one source to a callback, in file order.
using RowSource = std::function<void(const std::function<void(const ParsedRow&)>&)>;

}  // namespace mtl::data
