// Tests of data-parallel training on c10d's Gloo process group: two ranks,
// each a thread of this process, meet over loopback; their averaged
// gradients equal one process's on the whole batch, their replicas stay
// equal, and a rank that leaves or never comes is an error, never a hang.
#include "test_helpers.hpp"

#include <mtl/data/synthetic.hpp>
#include <mtl/distributed/group_replicas.hpp>
#include <mtl/distributed/replica_sync.hpp>
#include <mtl/model.hpp>
#include <mtl/optim/dual_optimizer.hpp>
#include <mtl/train/batch_share.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <future>
#include <map>

using namespace mtl;
using namespace std::chrono_literals;

namespace {

/// A TCP port that was free a moment ago (bound to port 0, then released).
uint16_t free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  socklen_t length = sizeof(address);
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  close(fd);
  return ntohs(address.sin_port);
}

distributed::Environment rank_of(int64_t rank, int64_t world_size, uint16_t port) {
  distributed::Environment e;
  e.rank = rank, e.world_size = world_size, e.local_rank = rank, e.master_addr = "127.0.0.1", e.master_port = port;
  return e;
}

/// Runs `body(rank)` for every rank of a `world_size` group on its own thread; rethrows the first error.
template <class Body>
void on_every_rank(int64_t world_size, Body body) {
  std::vector<std::future<void>> ranks;
  for (int64_t r = 0; r < world_size; ++r) ranks.push_back(std::async(std::launch::async, body, r));
  for (auto& rank : ranks) rank.get();
}

PLEModel small_model(uint64_t seed) {
  torch::manual_seed(seed);
  return PLEModel(PLEModelOptions(DeepFMOptions(mtl_test::small_schema()).deep_hidden_dims({16}).fm_projection_dim(4),
                                  PLEOptions(0, 0)
                                      .shared_experts({ExpertOptions::mlp({8}), ExpertOptions::cross(2)})
                                      .task_experts({{ExpertOptions::cross(1)}, {ExpertOptions::mlp({8})}})
                                      .expert_dim(8),
                                  {"ctr", "cvr"}));
}

/// The mean over rows of both tasks' BCE against fixed labels.
torch::Tensor mean_loss(PLEModel& model, const FeatureInputs& inputs, const torch::Tensor& labels) {
  const auto logits = model->forward(inputs);
  return torch::binary_cross_entropy_with_logits(logits.at("ctr"), labels.select(1, 0)) +
         torch::binary_cross_entropy_with_logits(logits.at("cvr"), labels.select(1, 1));
}

}  // namespace

TEST_CASE("distributed environment: torchrun's variables") {
  using distributed::Environment;
  const auto from = [](std::map<std::string, std::string> vars) {
    return Environment::from_process([vars = std::move(vars)](const char* name) -> const char* {
      const auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    });
  };
  REQUIRE_FALSE(from({}).has_value());
  const auto e = from({{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "10.0.0.2"}, {"MASTER_PORT", "29400"}});
  REQUIRE(e.has_value());
  REQUIRE((e->rank == 1 && e->world_size == 4 && e->local_rank == 1 && e->master_addr == "10.0.0.2" &&
           e->master_port == 29400 && !e->is_leader()));
  REQUIRE(from({{"RANK", "3"}, {"LOCAL_RANK", "0"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}})
              ->local_rank == 0);
  REQUIRE_FALSE(e->launcher_serves_store);
  REQUIRE(from({{"RANK", "0"},
                {"WORLD_SIZE", "2"},
                {"MASTER_ADDR", "h"},
                {"MASTER_PORT", "1"},
                {"TORCHELASTIC_USE_AGENT_STORE", "True"}})
              ->launcher_serves_store);
  REQUIRE_TORCH_ERROR(from({{"RANK", "0"}}), "sets RANK but not WORLD_SIZE");
  REQUIRE_TORCH_ERROR(from({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "29400"}}),
                      "the environment's RANK is '2': expected an integer in [0, 1]");
  REQUIRE_TORCH_ERROR(from({{"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "29400"}}),
                      "sets WORLD_SIZE but not RANK");
  REQUIRE_TORCH_ERROR(from({{"RANK", "0"}, {"WORLD_SIZE", "two"}}), "WORLD_SIZE is 'two'");
  REQUIRE_TORCH_ERROR(from({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "29400"}}),
                      "sets WORLD_SIZE but neither MASTER_ADDR nor MTL_STORE_FILE");
  // Ranks on one machine meet at a file store: no address or port is read.
  const auto local = from({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MTL_STORE_FILE", "/tmp/x/store"}});
  REQUIRE((local->store_file == "/tmp/x/store" && local->rank == 1 && local->world_size == 2));
  REQUIRE(e->store_file.empty());
  REQUIRE_TORCH_ERROR(from({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}}),
                      "MASTER_PORT is '70000': expected an integer in [1, 65535]");
}

// Ranks on one machine meet at a file store (no port is opened) and exchange tensors over loopback.
TEST_CASE("distributed: two ranks meet at a file store") {
  mtl_test::ScratchDir tmp("file_store");
  const std::string store = (tmp / "store");
  std::vector<torch::Tensor> gathered(2);
  on_every_rank(2, [&](int64_t rank) {
    distributed::Environment e;
    e.rank = rank, e.world_size = 2, e.local_rank = rank, e.store_file = store;
    const auto group = distributed::join_group(e, 20s);
    gathered[rank] = torch::stack(group.all_gather(torch::full({2}, static_cast<float>(rank + 1)), "test gather"));
  });
  for (const auto& g : gathered) REQUIRE(torch::equal(g, torch::tensor({{1.f, 1.f}, {2.f, 2.f}})));
}

// Two ranks, each with half of a batch, average their gradients: the result
// equals one process's gradient on the whole batch (dense parameters and the
// embedding table's sparse rows); after an optimizer step on each rank the
// replicas are equal, and a replica changed on one rank is found on both.
TEST_CASE("distributed: two ranks' averaged gradients equal one process's on the whole batch") {
  const auto schema = mtl_test::small_schema();
  const auto batch = mtl_test::random_inputs(schema, 64);
  const auto labels = torch::randint(2, {64, 2}).to(torch::kFloat);
  const uint16_t port = free_port();
  std::vector<PLEModel> models{small_model(1), small_model(2)};  // different until the broadcast
  std::vector<std::map<std::string, torch::Tensor>> gradients(2);
  std::vector<std::string> drift_errors(2);
  std::string changed;  // the first parameter of the first tower, changed on rank 1
  for (const auto& p : models[0]->named_parameters())
    if (changed.empty() && p.key().rfind("towers.0.", 0) == 0) changed = p.key();
  on_every_rank(2, [&](int64_t rank) {
    const auto group = distributed::join_group(rank_of(rank, 2, port), 20s);
    auto& model = models[rank];
    distributed::broadcast_parameters(*model, group);
    optim::DualSparseDenseOptimizer optimizer(*model);
    optimizer.zero_grad();
    const auto rows = torch::arange(rank * 32, rank * 32 + 32);
    mean_loss(model, {batch.sparse_ids.index_select(0, rows), batch.dense.index_select(0, rows)},
              labels.index_select(0, rows))
        .backward();
    distributed::average_gradients(*model, group);
    for (const auto& p : model->named_parameters()) {
      const auto& grad = p.value().grad();
      gradients[rank][p.key()] = grad.is_sparse() ? grad.to_dense() : grad.clone();
    }
    optimizer.step();
    distributed::check_replicas_equal(*model, group);
    if (rank == 1) {
      torch::NoGradGuard no_grad;
      model->named_parameters()[changed].add_(1e-3);
    }
    try {
      distributed::check_replicas_equal(*model, group);
    } catch (const c10::Error& e) {
      drift_errors[rank] = e.what_without_backtrace();
    }
  });
  auto reference = small_model(1);  // rank 0's initial parameters
  mean_loss(reference, batch, labels).backward();
  for (const auto& p : reference->named_parameters()) {
    INFO("parameter " << p.key());
    auto expected = p.value().grad();
    if (expected.is_sparse()) expected = expected.to_dense();
    REQUIRE(torch::allclose(gradients[0][p.key()], expected, 1e-5, 1e-7));
    REQUIRE(torch::equal(gradients[0][p.key()], gradients[1][p.key()]));
  }
  for (const auto& message : drift_errors) {
    REQUIRE_THAT(message, Catch::Contains("the replicas have drifted apart: parameter '" + changed + "'"));
    REQUIRE_THAT(message, Catch::Contains("on rank 1 but"));
  }
}

// Two ranks, each training on its share of every global batch (97 rows:
// shares of 49 and 48) with the loss divided by the global counts, end with
// the parameters one process reaches on the whole batches, in ESMM and in the
// two-head objective whose CVR term averages over clicked rows.
TEST_CASE("distributed: two ranks train as one process") {
  const data::SyntheticGenerator gen{data::SyntheticOptions().num_users(3000).num_items(3000)};
  const auto rows = gen.generate(data::Split::train, 97 * 6);
  const int64_t steps = 6;
  for (const auto& options : {train::ObjectiveOptions().use_esmm(true), train::ObjectiveOptions()}) {
    INFO("esmm " << options.use_esmm());
    const train::Objective objective({"ctr", "cvr"}, options);
    const auto model_of = [&](uint64_t seed) {
      torch::manual_seed(seed);
      return PLEModel(PLEModelOptions(DeepFMOptions(gen.schema()).deep_hidden_dims({16}).fm_projection_dim(4),
                                      PLEOptions(0, 0)
                                          .shared_experts({ExpertOptions::mlp({8}), ExpertOptions::cross(2)})
                                          .task_experts({{ExpertOptions::cross(1)}, {ExpertOptions::mlp({8})}})
                                          .expert_dim(8),
                                      {"ctr", "cvr"}));
    };
    const auto optimizer_options = optim::DualSparseDenseOptions().total_steps(steps).warmup_steps(1);
    auto single = model_of(1);
    {
      optim::DualSparseDenseOptimizer optimizer(*single, optimizer_options);
      for (int64_t step = 0; step < steps; ++step) {
        const auto batch = rows.slice(step * 97, step * 97 + 97);
        optimizer.zero_grad();
        objective(single->forward(batch.features), batch).total.backward();
        optimizer.step();
      }
    }
    const uint16_t port = free_port();
    std::vector<PLEModel> ranks{model_of(1), model_of(2)};
    on_every_rank(2, [&](int64_t rank) {
      const auto group = distributed::join_group(rank_of(rank, 2, port), 20s);
      auto& model = ranks[rank];
      distributed::broadcast_parameters(*model, group);
      optim::DualSparseDenseOptimizer optimizer(*model, optimizer_options);
      for (int64_t step = 0; step < steps; ++step) {
        const auto batch = rows.slice(step * 97, step * 97 + 97);
        const auto share = train::share_of(batch, rank, 2);
        optimizer.zero_grad();
        objective(model->forward(share.features), share, train::share_denominators(batch, 2)).total.backward();
        distributed::average_gradients(*model, group);
        optimizer.step();
      }
      distributed::check_replicas_equal(*model, group);
    });
    for (const auto& p : single->named_parameters()) {
      const auto other = ranks[0]->named_parameters()[p.key()];
      const double scale = std::max(1e-3, p.value().abs().max().item<double>());
      INFO("parameter " << p.key() << ": largest difference " << (other - p.value()).abs().max().item<double>()
                        << " of largest value " << scale);
      REQUIRE((other - p.value()).abs().max().item<double>() <= 1e-4 * scale);
    }
  }
}

// A rank that leaves the group makes the others' next collective fail with
// a message naming the operation; a rank that never comes makes joining fail
// within the timeout; a port in use is named.
TEST_CASE("distributed: a rank that leaves or never comes is an error within the timeout") {
  const uint16_t port = free_port();
  std::string failure;
  on_every_rank(2, [&](int64_t rank) {
    const auto group = distributed::join_group(rank_of(rank, 2, port), 20s);
    if (rank == 1) return;  // leaves: its group is destroyed
    auto model = small_model(3);
    std::this_thread::sleep_for(200ms);
    try {
      distributed::broadcast_parameters(*model, distributed::Group{group.environment, group.process_group, 5s});
    } catch (const c10::Error& e) {
      failure = e.what_without_backtrace();
    }
  });
  REQUIRE_THAT(failure, Catch::Contains("rank 0 of 2: broadcast of the leader's parameters failed; another rank has "
                                        "exited or stopped answering"));

  const auto start = std::chrono::steady_clock::now();
  REQUIRE_TORCH_ERROR(distributed::join_group(rank_of(0, 2, free_port()), 2s),
                      "rank 0 of 2 could not join the process group at 127.0.0.1:");
  REQUIRE(std::chrono::steady_clock::now() - start < 30s);

  const int fd = socket(AF_INET, SOCK_STREAM, 0);  // holds a port
  sockaddr_in address{};
  address.sin_family = AF_INET, address.sin_addr.s_addr = htonl(INADDR_ANY), address.sin_port = 0;
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  REQUIRE(listen(fd, 1) == 0);
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  REQUIRE_TORCH_ERROR(distributed::join_group(rank_of(0, 2, ntohs(address.sin_port)), 2s), "is the port in use");
  close(fd);
}

// What the Trainer and the chain ask of replicas: predictions of unequal
// shares gathered in rank order, values summed, the leader's text on every
// rank, and ranks started with other settings refused by name.
TEST_CASE("distributed: GroupReplicas gathers, sums, shares the leader's text and compares settings") {
  const uint16_t port = free_port();
  std::vector<std::vector<float>> gathered(3);
  std::vector<double> sums(3);
  std::vector<std::string> refusals(3), texts(3);
  on_every_rank(3, [&](int64_t rank) {
    distributed::GroupReplicas replicas(distributed::join_group(rank_of(rank, 3, port), 20s));
    std::vector<float> mine;
    for (int64_t i = 0; i < rank + 1; ++i) mine.push_back(static_cast<float>(10 * rank + i));
    gathered[static_cast<size_t>(rank)] = replicas.gather(mine);
    auto value = torch::tensor({static_cast<double>(rank) + 0.5}, torch::kDouble);
    replicas.sum(value);
    sums[static_cast<size_t>(rank)] = value.item<double>();
    replicas.barrier();
    texts[static_cast<size_t>(rank)] = replicas.leaders_text(rank == 0 ? "20261205_150000" : "another");
    distributed::expect_same_settings(replicas.group(), "steps: 20", "settings");
    try {
      distributed::expect_same_settings(replicas.group(), rank == 2 ? "steps: 30" : "steps: 20", "settings");
    } catch (const c10::Error& e) {
      refusals[static_cast<size_t>(rank)] = e.what_without_backtrace();
    }
  });
  for (int64_t rank = 0; rank < 3; ++rank) {
    CHECK(gathered[static_cast<size_t>(rank)] == std::vector<float>{0, 10, 11, 20, 21, 22});
    CHECK(sums[static_cast<size_t>(rank)] == 4.5);
    CHECK(texts[static_cast<size_t>(rank)] == "20261205_150000");
    CHECK_THAT(refusals[static_cast<size_t>(rank)],
               Catch::Contains("rank 2 was started with other settings than rank 0"));
  }
}
