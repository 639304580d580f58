// Keeping data-parallel replicas equal: the leader's parameters to every
// rank at the start, every gradient averaged over the ranks before each
// optimizer step (dense ones in flat buckets, an embedding table's sparse
// rows by Gloo's sparse all-reduce, so every replica updates the same rows
// by the same amounts), and a cheap check that the replicas have not drifted.
#pragma once

#include <mtl/distributed/process_group.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace mtl::distributed {

namespace detail {

/// Runs `collective` on flat copies of `tensors`, `bucket_bytes` at most per
/// call (a tensor larger than that alone), then copies the results back.
template <class Collective>
void over_flat_buckets(const std::vector<torch::Tensor>& tensors, int64_t bucket_bytes, Collective&& collective) {
  torch::NoGradGuard no_grad;
  size_t first = 0;
  while (first < tensors.size()) {
    size_t last = first;
    int64_t bytes = 0;
    const auto dtype = tensors[first].scalar_type();
    while (last < tensors.size() && tensors[last].scalar_type() == dtype &&
           (last == first || bytes + tensors[last].nbytes() <= static_cast<size_t>(bucket_bytes)))
      bytes += tensors[last].nbytes(), ++last;
    std::vector<torch::Tensor> flat;
    for (size_t i = first; i < last; ++i) flat.push_back(tensors[i].reshape({-1}));
    auto bucket = torch::cat(flat);
    collective(bucket);
    int64_t offset = 0;
    for (size_t i = first; i < last; ++i) {
      const int64_t n = tensors[i].numel();
      tensors[i].copy_(bucket.narrow(0, offset, n).view_as(tensors[i]));
      offset += n;
    }
    first = last;
  }
}

}  // namespace detail

/// Default bucket size of the dense collectives.
inline constexpr int64_t kBucketBytes = 25 << 20;

/// Every parameter and buffer of `module` set to the leader's.
inline void broadcast_parameters(torch::nn::Module& module, const Group& group, int64_t bucket_bytes = kBucketBytes) {
  std::vector<torch::Tensor> tensors;
  for (const auto& p : module.parameters()) tensors.push_back(p);
  for (const auto& b : module.buffers()) tensors.push_back(b);
  detail::over_flat_buckets(tensors, bucket_bytes, [&](torch::Tensor& bucket) {
    std::vector<torch::Tensor> one{bucket};
    group.wait(group.process_group->broadcast(one), "broadcast of the leader's parameters");
  });
}

/// Each parameter's gradient replaced by its mean over the ranks. Each rank's
/// gradient must be of its own share of the global batch, scaled so that the
/// shares' gradients sum to the global batch's gradient times the world size
/// (equal shares of a mean loss do). A parameter without a gradient on one
/// rank must have none on every rank.
inline void average_gradients(torch::nn::Module& module, const Group& group, int64_t bucket_bytes = kBucketBytes) {
  torch::NoGradGuard no_grad;
  const double scale = 1.0 / static_cast<double>(group.size());
  std::vector<torch::Tensor> dense;
  for (auto& p : module.parameters()) {
    auto& grad = p.mutable_grad();
    if (!grad.defined()) continue;
    if (!grad.is_sparse()) {
      dense.push_back(grad);
      continue;
    }
    std::vector<torch::Tensor> rows{grad.coalesce()};
    group.wait(group.process_group->allreduce(rows), "all-reduce of an embedding table's gradient rows");
    grad = rows[0].coalesce().mul_(scale);
  }
  detail::over_flat_buckets(dense, bucket_bytes, [&](torch::Tensor& bucket) {
    std::vector<torch::Tensor> one{bucket};
    group.wait(group.process_group->allreduce(one), "all-reduce of the dense gradients");
    bucket.mul_(scale);
  });
}

/// Checks that every rank holds the same parameters, up to `tolerance`
/// relative: each parameter's sum and sum of squares (in double) gathered
/// from every rank and compared with the leader's. A difference is an error
/// on every rank naming the parameter and the rank that differs.
inline void check_replicas_equal(torch::nn::Module& module, const Group& group, double tolerance = 0.0) {
  torch::NoGradGuard no_grad;
  const auto named = module.named_parameters();
  std::vector<double> sums;
  for (const auto& p : named) {
    const auto values = p.value().to(torch::kDouble);
    sums.push_back(values.sum().item<double>());
    sums.push_back(values.square().sum().item<double>());
  }
  const auto mine = torch::tensor(sums, torch::kDouble);
  const auto gathered = group.all_gather(mine, "gathering the replicas' checksums");
  const double* leader = gathered[0].data_ptr<double>();
  for (int64_t r = 1; r < group.size(); ++r) {
    const double* other = gathered[static_cast<size_t>(r)].data_ptr<double>();
    for (int64_t i = 0; i < mine.numel(); ++i) {
      const double a = leader[i], b = other[i];
      TORCH_CHECK(std::fabs(a - b) <= tolerance * std::max(std::fabs(a), std::fabs(b)), "rank ", group.rank(),
                  ": the replicas have drifted apart: parameter '", named[static_cast<size_t>(i / 2)].key(), "' has ",
                  i % 2 == 0 ? "sum " : "sum of squares ", b, " on rank ", r, " but ", a, " on rank 0");
    }
  }
}

}  // namespace mtl::distributed
