// The other ranks of a data-parallel run, as the Trainer sees them: it
// averages gradients, sums values and gathers predictions through this
// interface, so the training loop needs no process-group library; one
// implementation is mtl::distributed::GroupReplicas (Gloo).
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mtl::train {

class Replicas {
 public:
  virtual ~Replicas() = default;

  virtual int64_t rank() const = 0;
  virtual int64_t world_size() const = 0;
  bool leader() const { return rank() == 0; }

  /// Every parameter and buffer of `module` set to the leader's.
  virtual void broadcast_parameters(torch::nn::Module& module) = 0;
  /// Each gradient of `module` replaced by its mean over the ranks.
  virtual void average_gradients(torch::nn::Module& module) = 0;
  /// `values` (a CPU double tensor) replaced in place by their sum over the ranks.
  virtual void sum(torch::Tensor& values) = 0;
  /// Every rank's `values` (of any length), concatenated in rank order.
  virtual std::vector<float> gather(const std::vector<float>& values) = 0;
  /// An error on every rank when the ranks' parameters differ.
  virtual void check_equal(torch::nn::Module& module) = 0;
  /// Returns once every rank has called it.
  virtual void barrier() = 0;
  /// The leader's `text` on every rank (what the others pass is ignored).
  virtual std::string leaders_text(const std::string& text) = 0;
};

/// Rows [begin, end) of `rows` that rank `rank` of `world_size` takes:
/// contiguous, as equal as the count allows (the first `rows % world_size`
/// ranks one row more).
inline std::pair<int64_t, int64_t> share_range(int64_t rows, int64_t rank, int64_t world_size) {
  TORCH_CHECK(world_size > 0 && rank >= 0 && rank < world_size, "share_range expects a rank in [0, ", world_size,
              "), but got ", rank);
  const int64_t base = rows / world_size, extra = rows % world_size;
  const int64_t begin = rank * base + std::min(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

}  // namespace mtl::train
