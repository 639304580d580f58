// Training batches from TrainingRows (a Dataset, or rows made on demand):
// fixed batch size, an order shuffled per epoch from a seed (index order for
// rows made on demand, each an independent draw), a background thread that
// prepares the next batches (pinned for a non-blocking copy when the device
// is CUDA), and a position that can be saved and sought, so a resumed run
// reads the same batches.
#pragma once

#include <mtl/data/dataset.hpp>
#include <mtl/data/training_rows.hpp>

#include <torch/arg.h>
#include <torch/types.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <numeric>
#include <random>
#include <thread>
#include <utility>
#include <vector>

namespace mtl::data {

/// Options of `BatchLoader`.
///
/// Example:
///   BatchLoader loader(train, LoaderOptions().batch_size(1024).seed(20260127).device(torch::kCUDA));
struct LoaderOptions {
  TORCH_ARG(int64_t, batch_size) = 1024;
  TORCH_ARG(bool, shuffle) = true;
  TORCH_ARG(uint64_t, seed) = 20260127;
  /// Batches prepared ahead by the background thread; 0 prepares on demand.
  TORCH_ARG(int64_t, prefetch) = 2;
  TORCH_ARG(torch::Device, device) = torch::Device(torch::kCPU);
};

/// Where the next batch comes from: an epoch and a batch within it.
struct LoaderPosition {
  int64_t epoch = 0;
  int64_t batch = 0;
  bool operator==(const LoaderPosition& o) const { return epoch == o.epoch && batch == o.batch; }
};

class BatchLoader {
 public:
  BatchLoader(TrainingRows rows, LoaderOptions options) : rows_(std::move(rows)), options_(options) {
    TORCH_CHECK(options_.batch_size() > 0, "BatchLoader expects batch_size > 0, but got ", options_.batch_size());
    TORCH_CHECK(rows_.num_rows() >= options_.batch_size(), "BatchLoader: the data set holds ", rows_.num_rows(),
                " rows, fewer than one batch of ", options_.batch_size(), "; lower data.batch_size");
    TORCH_CHECK(options_.prefetch() >= 0, "BatchLoader expects prefetch >= 0, but got ", options_.prefetch());
    start_worker();
  }
  ~BatchLoader() { stop_worker(); }
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  /// Full batches per epoch (the remainder of a shuffled epoch is dropped).
  int64_t batches_per_epoch() const { return rows_.num_rows() / options_.batch_size(); }

  /// The next batch, on the loader's device; epochs follow one another without end.
  TrainingBatch next() {
    TrainingBatch batch;
    if (options_.prefetch() == 0) {
      batch = make(position_);
    } else {
      std::unique_lock<std::mutex> lock(mutex_);
      ready_.wait(lock, [&] { return !queue_.empty() || failure_; });
      if (failure_) std::rethrow_exception(failure_);
      batch = std::move(queue_.front());
      queue_.pop_front();
      space_.notify_one();
    }
    advance(position_);
    const bool to_cuda = options_.device().is_cuda();
    return to_cuda ? batch.to(options_.device(), /*non_blocking=*/true) : batch;
  }

  /// The position of the batch the next call to `next()` returns.
  LoaderPosition position() const { return position_; }

  /// Continues from `position` (from a checkpoint).
  void seek(LoaderPosition position) {
    TORCH_CHECK(position.epoch >= 0 && position.batch >= 0 && position.batch < batches_per_epoch(),
                "BatchLoader cannot seek to epoch ", position.epoch, ", batch ", position.batch, " of ",
                batches_per_epoch());
    stop_worker();
    position_ = position;
    start_worker();
  }

 private:
  void advance(LoaderPosition& p) const {
    if (++p.batch == batches_per_epoch()) p.batch = 0, ++p.epoch;
  }

  /// The row order of `epoch`: a permutation drawn from (seed, epoch).
  const std::vector<int64_t>& shuffled_order(int64_t epoch) {
    if (order_epoch_ != epoch) {
      order_.resize(rows_.num_rows());
      std::iota(order_.begin(), order_.end(), int64_t{0});
      std::mt19937_64 rng(options_.seed() * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(epoch));
      std::shuffle(order_.begin(), order_.end(), rng);
      order_epoch_ = epoch;
    }
    return order_;
  }

  TrainingBatch make(const LoaderPosition& p) {
    const int64_t b = options_.batch_size();
    std::vector<int64_t> rows(b);
    if (options_.shuffle() && !rows_.independent_rows()) {
      const auto& order = shuffled_order(p.epoch);
      std::copy(order.begin() + p.batch * b, order.begin() + (p.batch + 1) * b, rows.begin());
    } else {
      std::iota(rows.begin(), rows.end(), p.batch * b);
    }
    auto batch = rows_.batch(rows);
    if (options_.device().is_cuda()) {
      batch.features.sparse_ids = batch.features.sparse_ids.pin_memory();
      if (batch.features.dense.defined()) batch.features.dense = batch.features.dense.pin_memory();
      batch.click = batch.click.pin_memory(), batch.conversion = batch.conversion.pin_memory();
    }
    return batch;
  }

  void start_worker() {
    if (options_.prefetch() == 0) return;
    stopping_ = false;
    queue_.clear();
    failure_ = nullptr;
    worker_ = std::thread([this, p = position_]() mutable {
      try {
        while (true) {
          auto batch = make(p);
          advance(p);
          std::unique_lock<std::mutex> lock(mutex_);
          space_.wait(lock, [&] { return stopping_ || static_cast<int64_t>(queue_.size()) < options_.prefetch(); });
          if (stopping_) return;
          queue_.push_back(std::move(batch));
          ready_.notify_one();
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        failure_ = std::current_exception();
        ready_.notify_all();
      }
    });
  }

  void stop_worker() {
    if (!worker_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    space_.notify_all();
    worker_.join();
    queue_.clear();
  }

  TrainingRows rows_;
  LoaderOptions options_;
  LoaderPosition position_;
  std::vector<int64_t> order_;
  int64_t order_epoch_ = -1;

  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable ready_, space_;
  std::deque<TrainingBatch> queue_;
  bool stopping_ = false;
  std::exception_ptr failure_;
};

/// Calls `fn` on consecutive batches of rows [begin, end) of `dataset` in
/// row order, the last one possibly short; for evaluation passes.
inline void for_each_batch(const Dataset& dataset, int64_t begin, int64_t end, int64_t batch_size,
                           const std::function<void(const TrainingBatch&, int64_t first_row)>& fn) {
  TORCH_CHECK(batch_size > 0, "for_each_batch expects batch_size > 0, but got ", batch_size);
  TORCH_CHECK(0 <= begin && begin <= end && end <= dataset.num_rows(), "for_each_batch expects rows within [0, ",
              dataset.num_rows(), "), but got [", begin, ", ", end, ")");
  for (int64_t first = begin; first < end; first += batch_size)
    fn(dataset.slice(first, std::min(first + batch_size, end)), first);
}

/// Every row of `dataset`, in batches of `batch_size`.
inline void for_each_batch(const Dataset& dataset, int64_t batch_size,
                           const std::function<void(const TrainingBatch&, int64_t first_row)>& fn) {
  for_each_batch(dataset, 0, dataset.num_rows(), batch_size, fn);
}

}  // namespace mtl::data
