// The Trainer's view of a Gloo process group (train::Replicas): what a
// TrainerOptions::replicas needs for data-parallel training, and a check
// that every rank was started with the same settings.
#pragma once

#include <mtl/distributed/process_group.hpp>
#include <mtl/distributed/replica_sync.hpp>
#include <mtl/train/replicas.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace mtl::distributed {

class GroupReplicas : public train::Replicas {
 public:
  explicit GroupReplicas(Group group) : group_(std::move(group)) {}

  const Group& group() const noexcept { return group_; }
  int64_t rank() const override { return group_.rank(); }
  int64_t world_size() const override { return group_.size(); }

  void broadcast_parameters(torch::nn::Module& module) override { distributed::broadcast_parameters(module, group_); }
  void average_gradients(torch::nn::Module& module) override { distributed::average_gradients(module, group_); }
  void check_equal(torch::nn::Module& module) override { check_replicas_equal(module, group_); }

  void sum(torch::Tensor& values) override {
    std::vector<torch::Tensor> one{values};
    group_.wait(group_.process_group->allreduce(one), "a sum over the ranks");
  }

  std::vector<float> gather(const std::vector<float>& values) override {
    const auto lengths =
        group_.all_gather(torch::tensor({static_cast<int64_t>(values.size())}), "gathering the row counts");
    int64_t longest = 0;
    for (const auto& l : lengths) longest = std::max(longest, l.item<int64_t>());
    // Gloo gathers equal lengths: each rank's values padded to the longest.
    auto padded = torch::zeros({longest}, torch::kFloat);
    std::copy(values.begin(), values.end(), padded.data_ptr<float>());
    const auto gathered = group_.all_gather(padded, "gathering the predictions");
    std::vector<float> out;
    for (size_t r = 0; r < gathered.size(); ++r) {
      const float* begin = gathered[r].data_ptr<float>();
      out.insert(out.end(), begin, begin + lengths[r].item<int64_t>());
    }
    return out;
  }

  void barrier() override { group_.wait(group_.process_group->barrier(), "a barrier"); }

  std::string leaders_text(const std::string& text) override {
    std::vector<torch::Tensor> length{torch::tensor({static_cast<int64_t>(text.size())})};
    group_.wait(group_.process_group->broadcast(length), "broadcast of the leader's text length");
    const int64_t size = length[0].item<int64_t>();
    if (size == 0) return {};
    std::vector<torch::Tensor> bytes{torch::zeros({size}, torch::kUInt8)};
    if (leader()) std::memcpy(bytes[0].data_ptr<uint8_t>(), text.data(), text.size());
    group_.wait(group_.process_group->broadcast(bytes), "broadcast of the leader's text");
    return std::string(reinterpret_cast<const char*>(bytes[0].data_ptr<uint8_t>()), static_cast<size_t>(size));
  }

 private:
  Group group_;
};

/// An error on every rank unless each was given the same `settings` (a
/// config's text, say): their hashes are compared with the leader's, and
/// the message names the first rank that differs and what `settings` are.
inline void expect_same_settings(const Group& group, const std::string& settings, const std::string& what) {
  const auto hash = static_cast<int64_t>(std::hash<std::string>{}(settings));
  const auto gathered = group.all_gather(torch::tensor({hash}), "comparing the ranks' " + what);
  const int64_t leader = gathered[0].item<int64_t>();
  for (int64_t r = 1; r < group.size(); ++r)
    TORCH_CHECK(gathered[static_cast<size_t>(r)].item<int64_t>() == leader, "rank ", group.rank(), ": rank ", r,
                " was started with other ", what, " than rank 0 (every rank must be given the same)");
}

}  // namespace mtl::distributed
