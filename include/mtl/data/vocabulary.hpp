// Maps the raw ids of one field to embedding rows 1..n, fitted on the
// training split with a minimum frequency; rare and unseen ids map to row 0.
#pragma once

#include <mtl/detail/flat_id_map.hpp>

#include <algorithm>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace mtl::data {

class Vocabulary {
 public:
  /// Counts one occurrence while fitting.
  void count(int64_t raw) { ++counts_[raw]; }

  /// Ends fitting: ids seen at least `min_count` times get rows 1..n in
  /// ascending id order (deterministic), the rest share row 0.
  void finish(int64_t min_count) {
    std::vector<int64_t> kept;
    for (const auto& [raw, c] : counts_)
      if (c >= min_count) kept.push_back(raw);
    std::sort(kept.begin(), kept.end());
    set_ids(kept);
    counts_.clear();
  }

  /// Rebuilds a fitted vocabulary from its ids in row order (row i + 1 = ids[i]).
  void set_ids(const std::vector<int64_t>& ids) {
    ids_ = ids;
    index_.assign(ids_);
  }

  /// The embedding row of `raw`: 1..n if kept, else 0.
  int64_t encode(int64_t raw) const { return index_.find(raw); }

  /// Rows including the shared row 0.
  int64_t size() const noexcept { return static_cast<int64_t>(ids_.size()) + 1; }
  /// The kept raw ids in row order (row i + 1 holds ids()[i]).
  const std::vector<int64_t>& ids() const noexcept { return ids_; }

 private:
  std::unordered_map<int64_t, int64_t> counts_;
  mtl::detail::FlatIdMap index_;
  std::vector<int64_t> ids_;
};

}  // namespace mtl::data
