// Communication of data-parallel training at 2 ranks for the E5 model
// (bench_training's widths on the default synthetic schema: 23 fields, 100k
// users, 200k items, dim 8, DeepFM [256, 128], heterogeneous PLE with the
// aligner, towers [64]), a global batch of 1024 rows split in two. The ranks are
// threads of this process meeting over loopback, one intra-op thread each.
// Per step: each rank's forward and backward, the dense gradients'
// bucketed all-reduce, and the embedding table's gradient rows exchanged two
// ways: Gloo's sparse all-reduce (what mtl::distributed uses) and an
// all-gather of (row, gradient) pairs padded to the largest rank's count.
// Medians over the steps, one line:
//   mtl_dist ranks 2 rows_per_rank R compute_ms X dense_bytes B dense_allreduce_ms Y
//     sparse_rows N sparse_bytes S sparse_allreduce_ms Z sparse_allgather_ms W same_result yes|no
//
//   bench_distributed [--steps N]
#include <mtl/data/synthetic.hpp>
#include <mtl/distributed/replica_sync.hpp>
#include <mtl/model.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

uint16_t free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

mtl::PLEModel e5_model(const mtl::FeatureSchema& schema) {
  using mtl::ExpertOptions;
  return mtl::PLEModel(
      mtl::PLEModelOptions(mtl::DeepFMOptions(schema).deep_hidden_dims({256, 128}).fm_projection_dim(16),
                           mtl::PLEOptions(0, 0)
                               .shared_experts({ExpertOptions::mlp({128}), ExpertOptions::mlp({256, 128}),
                                                ExpertOptions::cross(2), ExpertOptions::cross(3)})
                               .task_experts({{ExpertOptions::cross(2)}, {ExpertOptions::mlp({64})}})
                               .expert_dim(64)
                               .align_outputs(true),
                           {"ctr", "cvr"})
          .tower_hidden_dims({64}));
}

/// The table's gradient rows of every rank, gathered (padded to the largest count) and scaled by 1 / ranks.
torch::Tensor allgather_rows(const torch::Tensor& grad, const mtl::distributed::Group& group) {
  const auto mine = grad.coalesce();
  const auto rows = mine._indices()[0], values = mine._values();
  const int64_t ranks = group.size();
  std::vector<std::vector<torch::Tensor>> counts(1);
  for (int64_t r = 0; r < ranks; ++r) counts[0].push_back(torch::empty({1}, torch::kLong));
  std::vector<torch::Tensor> my_count{torch::tensor({rows.numel()}, torch::kLong)};
  group.wait(group.process_group->allgather(counts, my_count), "gathering row counts");
  int64_t most = 0;
  for (const auto& c : counts[0]) most = std::max(most, c.item<int64_t>());
  auto padded_rows = torch::zeros({most}, torch::kLong);
  auto padded_values = torch::zeros({most, values.size(1)}, values.options());
  padded_rows.narrow(0, 0, rows.numel()).copy_(rows);
  padded_values.narrow(0, 0, rows.numel()).copy_(values);
  std::vector<std::vector<torch::Tensor>> all_rows(1), all_values(1);
  for (int64_t r = 0; r < ranks; ++r) {
    all_rows[0].push_back(torch::empty_like(padded_rows));
    all_values[0].push_back(torch::empty_like(padded_values));
  }
  std::vector<torch::Tensor> in_rows{padded_rows}, in_values{padded_values};
  group.wait(group.process_group->allgather(all_rows, in_rows), "gathering rows");
  group.wait(group.process_group->allgather(all_values, in_values), "gathering row gradients");
  std::vector<torch::Tensor> kept_rows, kept_values;
  for (int64_t r = 0; r < ranks; ++r) {
    const int64_t n = counts[0][static_cast<size_t>(r)].item<int64_t>();
    kept_rows.push_back(all_rows[0][static_cast<size_t>(r)].narrow(0, 0, n));
    kept_values.push_back(all_values[0][static_cast<size_t>(r)].narrow(0, 0, n));
  }
  return torch::sparse_coo_tensor(torch::cat(kept_rows).unsqueeze(0), torch::cat(kept_values) / ranks, grad.sizes());
}

struct RankTimes {
  std::vector<double> compute, dense, sparse_allreduce, sparse_allgather;
  int64_t dense_bytes = 0, sparse_rows = 0, sparse_bytes = 0;
  bool same = true;
};

}  // namespace

int main(int argc, char** argv) {
  int64_t steps = 20;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--steps") == 0 && i + 1 < argc) {
      steps = std::stoll(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: bench_distributed [--steps N]\n");
      return 2;
    }
  }
  const int64_t ranks = 2, global_batch = 1024, rows_per_rank = global_batch / ranks, warmup = 3;
  const mtl::data::SyntheticGenerator gen{mtl::data::SyntheticOptions()};
  const auto data = gen.generate(mtl::data::Split::train, global_batch * (steps + warmup));
  const auto ids = torch::from_blob(const_cast<int32_t*>(data.ids.data()),
                                    {data.num_rows(), mtl::data::SyntheticGenerator::kNumSparse}, torch::kInt)
                       .to(torch::kLong);
  const auto dense = torch::from_blob(const_cast<float*>(data.dense.data()),
                                      {data.num_rows(), mtl::data::SyntheticGenerator::kNumDense}, torch::kFloat);
  const auto labels = torch::from_blob(const_cast<float*>(data.click.data()), {data.num_rows()}, torch::kFloat);
  const uint16_t port = free_port();
  std::vector<RankTimes> times(ranks);
  std::vector<std::future<void>> running;
  for (int64_t rank = 0; rank < ranks; ++rank)
    running.push_back(std::async(std::launch::async, [&, rank] {
      at::set_num_threads(1);
      mtl::distributed::Environment env;
      env.rank = rank, env.world_size = ranks, env.master_port = port;
      const auto group = mtl::distributed::join_group(env);
      torch::manual_seed(static_cast<uint64_t>(rank));
      auto model = e5_model(gen.schema());
      mtl::distributed::broadcast_parameters(*model, group);
      auto& t = times[static_cast<size_t>(rank)];
      for (int64_t step = 0; step < steps + warmup; ++step) {
        const int64_t first = step * global_batch + rank * rows_per_rank;
        model->zero_grad();
        auto start = Clock::now();
        const auto logits =
            model->forward({ids.narrow(0, first, rows_per_rank), dense.narrow(0, first, rows_per_rank)});
        torch::binary_cross_entropy_with_logits(logits.at("ctr"), labels.narrow(0, first, rows_per_rank)).backward();
        const double compute = ms_since(start);
        torch::Tensor table_grad;
        std::vector<torch::Tensor> dense_grads;
        for (auto& p : model->parameters()) {
          if (!p.grad().defined()) continue;
          if (p.grad().is_sparse())
            table_grad = p.grad();
          else
            dense_grads.push_back(p.grad());
        }
        start = Clock::now();
        const auto gathered = allgather_rows(table_grad, group);
        const double allgather = ms_since(start);
        start = Clock::now();
        mtl::distributed::average_gradients(*model, group);  // the table's rows by sparse all-reduce, then dense
        const double all = ms_since(start);
        start = Clock::now();
        mtl::distributed::detail::over_flat_buckets(dense_grads, mtl::distributed::kBucketBytes, [&](torch::Tensor& b) {
          std::vector<torch::Tensor> one{b};
          group.wait(group.process_group->allreduce(one), "dense");
        });
        const double dense_only = ms_since(start);
        if (step < warmup) continue;
        t.compute.push_back(compute), t.dense.push_back(dense_only);
        t.sparse_allreduce.push_back(std::max(0.0, all - dense_only)), t.sparse_allgather.push_back(allgather);
        t.dense_bytes = 0;
        for (const auto& g : dense_grads) t.dense_bytes += static_cast<int64_t>(g.nbytes());
        const auto rows = table_grad.coalesce();
        t.sparse_rows = rows._nnz();
        t.sparse_bytes = rows._nnz() * (8 + rows._values().size(1) * 4);
        for (auto& p : model->parameters())
          if (p.grad().is_sparse()) t.same = t.same && torch::allclose(p.grad().to_dense(), gathered.to_dense());
      }
    }));
  for (auto& r : running) r.get();
  const auto& t = times[0];
  std::printf(
      "mtl_dist ranks %lld rows_per_rank %lld compute_ms %.2f dense_bytes %lld dense_allreduce_ms %.2f sparse_rows "
      "%lld "
      "sparse_bytes %lld sparse_allreduce_ms %.2f sparse_allgather_ms %.2f same_result %s\n",
      static_cast<long long>(ranks), static_cast<long long>(rows_per_rank), median(t.compute),
      static_cast<long long>(t.dense_bytes), median(t.dense), static_cast<long long>(t.sparse_rows),
      static_cast<long long>(t.sparse_bytes), median(t.sparse_allreduce), median(t.sparse_allgather),
      times[0].same && times[1].same ? "yes" : "no");
  return 0;
}
