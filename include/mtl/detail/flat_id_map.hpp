// Raw id -> row for a fixed set of ids, as one open-addressing table (linear
// probing, at most half full): a lookup reads one or two adjacent slots where
// a node-based map follows a pointer per entry, which matters when every
// request maps thousands of ids through tables of a million.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace mtl::detail {

class FlatIdMap {
 public:
  /// Maps ids[i] to row i + 1; a repeated id keeps its first row.
  void assign(const std::vector<int64_t>& ids) {
    std::size_t capacity = 8;
    while (capacity < 2 * ids.size()) capacity *= 2;
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      std::size_t at = home(ids[i]);
      while (slots_[at].row != 0 && slots_[at].id != ids[i]) at = (at + 1) & mask_;
      if (slots_[at].row == 0) slots_[at] = {ids[i], static_cast<int64_t>(i + 1)};
    }
  }

  /// The row of `id`, or 0 when the map does not hold it.
  int64_t find(int64_t id) const {
    if (slots_.empty()) return 0;
    for (std::size_t at = home(id);; at = (at + 1) & mask_) {
      const Slot& slot = slots_[at];
      if (slot.row == 0 || slot.id == id) return slot.row;
    }
  }

 private:
  struct Slot {
    int64_t id = 0;
    int64_t row = 0;  ///< 0: empty (rows start at 1)
  };

  // splitmix64's finaliser: ids that differ in a few low bits land far apart.
  std::size_t home(int64_t id) const {
    uint64_t x = static_cast<uint64_t>(id);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return static_cast<std::size_t>(x ^ (x >> 31)) & mask_;
  }

  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
};

}  // namespace mtl::detail
