// Serving latency of the E5 model (bench_training's shapes: 23 Ali-CCP-shaped
// fields with 1.6M vocabulary rows, dim 8, 8 dense, DeepFM [256, 128],
// heterogeneous PLE with the aligner, towers [64]) through a bundle file and
// mtl::serving::Predictor: p50 and p99 latency and throughput for batch 1,
// 16 and 256 rows with 1 and 2 concurrent callers (one intra-op thread per
// call), and batch 256 with one caller on every core, each call from raw ids
// through the vocabularies. Beside it, the cost per row of a batch-256 predict
// (from raw ids, and from encoded ids as a training batch holds them) against a
// batch-1024 training step of the same model, all on every core. One line per
// measurement:
//   mtl_serve batch B callers C threads T p50_ms X p99_ms Y rows_per_s Z
//   mtl_cost raw_us_per_row X encoded_us_per_row Y train_step_us_per_row Z raw_ratio R encoded_ratio S
// and the floor under a batch-256 forward: the model's matrix products alone
// (every Linear and cross layer at its shape, as the layers run them), on one
// thread and on every core:
//   mtl_products batch 256 threads T mflop F p50_ms X gflops_per_s Y
//
//   bench_serving [--calls N] [--warmup N]
#include <mtl/data/synthetic.hpp>
#include <mtl/detail/matrix_product.hpp>
#include <mtl/model_spec.hpp>
#include <mtl/optim/dual_optimizer.hpp>
#include <mtl/serving/bundle.hpp>
#include <mtl/serving/predictor.hpp>
#include <mtl/train/heap_retention.hpp>
#include <mtl/train/objective.hpp>

#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

mtl::ModelSpec e5_spec() {
  mtl::ModelSpec s;
  s.mixer = "ple";
  s.deep_hidden_dims = {256, 128};
  s.fm_projection_dim = 16;
  s.tower_hidden_dims = {{64}, {64}};
  s.shared_experts = {mtl::ExpertOptions::mlp({128}), mtl::ExpertOptions::mlp({256, 128}), mtl::ExpertOptions::cross(2),
                      mtl::ExpertOptions::cross(3)};
  s.task_experts = {{mtl::ExpertOptions::cross(2)}, {mtl::ExpertOptions::mlp({64})}};
  s.expert_dim = 64;
  s.align_outputs = true;
  return s;
}

/// Raw ids of a row: row r of field j is the id 7 * r + j (row 0 stays the rare-id row).
int64_t raw_id(int64_t row, size_t field) { return 7 * row + static_cast<int64_t>(field); }

mtl::serving::ModelBundle e5_bundle() {
  mtl::serving::ModelBundle b;
  b.model = e5_spec();
  b.schema =
      mtl::data::SyntheticGenerator(mtl::data::SyntheticOptions().num_users(700'000).num_items(700'000)).schema();
  for (size_t j = 0; j < b.schema.sparse_fields().size(); ++j) {
    std::vector<int64_t> ids;
    for (int64_t r = 1; r < b.schema.sparse_fields()[j].vocab_size; ++r) ids.push_back(raw_id(r, j));
    mtl::data::Vocabulary v;
    v.set_ids(ids);
    b.vocabularies.push_back(std::move(v));
  }
  torch::manual_seed(0);
  mtl::with_model(b.model, b.schema, [&](auto model) { b.weights = mtl::io::module_state(*model); });
  return b;
}

/// Requests of `rows` rows: known ids drawn uniformly per field, one in a hundred unseen.
std::vector<mtl::serving::RawRows> requests(const mtl::FeatureSchema& schema, int64_t rows, int count) {
  std::mt19937_64 rng(static_cast<uint64_t>(rows));
  std::vector<mtl::serving::RawRows> out(static_cast<size_t>(count));
  for (auto& request : out) {
    for (size_t j = 0; j < schema.sparse_fields().size(); ++j) {
      auto& column = request.sparse[schema.sparse_fields()[j].name];
      std::uniform_int_distribution<int64_t> row(1, schema.sparse_fields()[j].vocab_size - 1);
      for (int64_t i = 0; i < rows; ++i) column.push_back(rng() % 100 == 0 ? -1 : raw_id(row(rng), j));
    }
    std::normal_distribution<float> value;
    for (const auto& f : schema.dense_fields()) {
      auto& column = request.dense[f.name];
      for (int64_t i = 0; i < rows; ++i) column.push_back(value(rng));
    }
  }
  return out;
}

double percentile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<size_t>(q * static_cast<double>(values.size())))];
}

void serve(const mtl::serving::Predictor& predictor, int threads_per_call, int64_t batch, int callers, int calls,
           int warmup) {
  const auto pool = requests(predictor.schema(), batch, 32);
  std::vector<std::vector<double>> latencies(static_cast<size_t>(callers));
  std::vector<std::thread> threads;
  Clock::time_point started, ended;
  std::atomic<int> ready{0};
  for (int t = 0; t < callers; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < warmup; ++i) predictor.predict(pool[static_cast<size_t>(i) % pool.size()]);
      if (++ready == callers) started = Clock::now();
      while (ready < callers) std::this_thread::yield();
      auto& mine = latencies[static_cast<size_t>(t)];
      for (int i = 0; i < calls; ++i) {
        const auto begin = Clock::now();
        const auto p = predictor.predict(pool[static_cast<size_t>(i + t) % pool.size()]);
        mine.push_back(std::chrono::duration<double, std::milli>(Clock::now() - begin).count());
        if (p.p_ctcvr.size() != static_cast<size_t>(batch)) std::abort();
      }
    });
  for (auto& thread : threads) thread.join();
  ended = Clock::now();
  std::vector<double> all;
  for (const auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  const double seconds = std::chrono::duration<double>(ended - started).count();
  std::printf("mtl_serve batch %ld callers %d threads %d p50_ms %.4f p99_ms %.4f rows_per_s %.0f\n",
              static_cast<long>(batch), callers, threads_per_call, percentile(all, 0.5), percentile(all, 0.99),
              static_cast<double>(batch) * static_cast<double>(all.size()) / seconds);
  std::fflush(stdout);
}

/// Median microseconds per row of a batch-1024 training step of the model, on all cores.
double train_step_us_per_row(const mtl::serving::ModelBundle& bundle) {
  constexpr int64_t kBatch = 1024;
  const int threads_before = at::get_num_threads();
  at::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));
  std::vector<double> per_row;
  mtl::with_model(bundle.model, bundle.schema, [&](auto model) {
    mtl::optim::DualSparseDenseOptimizer opt(*model,
                                             mtl::optim::DualSparseDenseOptions().total_steps(1000).warmup_steps(10));
    mtl::train::Objective objective({"ctr", "cvr"}, mtl::train::ObjectiveOptions().use_esmm(true));
    std::vector<torch::Tensor> columns;
    for (const auto& f : bundle.schema.sparse_fields())
      columns.push_back(torch::randint(f.vocab_size, {kBatch}, torch::kLong));
    const auto click = (torch::rand({kBatch}) < 0.05).to(torch::kFloat);
    const mtl::data::TrainingBatch batch{{torch::stack(columns, 1), torch::rand({kBatch, bundle.schema.num_dense()})},
                                         click,
                                         click * (torch::rand({kBatch}) < 0.1).to(torch::kFloat)};
    for (int step = 0; step < 40; ++step) {
      const auto begin = Clock::now();
      opt.zero_grad();
      objective(model->forward(batch.features), batch).total.backward();
      opt.step();
      if (step >= 10)
        per_row.push_back(std::chrono::duration<double, std::micro>(Clock::now() - begin).count() / kBatch);
    }
  });
  at::set_num_threads(threads_before);
  return percentile(per_row, 0.5);
}

/// The model's matrix products for `batch` rows, one after another on `threads`
/// threads: every 2-D weight but the embedding table, as `x [batch, in] * W^T`.
void products_floor(const mtl::serving::ModelBundle& bundle, int64_t batch, int threads) {
  const int threads_before = at::get_num_threads();
  at::set_num_threads(threads);
  std::vector<torch::Tensor> inputs, weights;
  double flop = 0;
  mtl::with_model(bundle.model, bundle.schema, [&](auto model) {
    for (const auto& p : model->named_parameters())
      if (p.value().dim() == 2 && p.key().find("embedding") == std::string::npos) {
        weights.push_back(p.value().detach().contiguous());
        inputs.push_back(torch::randn({batch, p.value().size(1)}));
        flop += 2.0 * static_cast<double>(batch) * static_cast<double>(p.value().numel());
      }
  });
  std::vector<double> ms;
  for (int i = 0; i < 300; ++i) {
    const auto begin = Clock::now();
    for (size_t l = 0; l < weights.size(); ++l) mtl::detail::mm_transposed(inputs[l], weights[l]);
    if (i >= 30) ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - begin).count());
  }
  const double median = percentile(ms, 0.5);
  std::printf("mtl_products batch %ld threads %d mflop %.1f p50_ms %.4f gflops_per_s %.1f\n", static_cast<long>(batch),
              threads, flop / 1e6, median, flop / median / 1e6);
  std::fflush(stdout);
  at::set_num_threads(threads_before);
}

}  // namespace

int main(int argc, char** argv) {
  int calls = 2000, warmup = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--calls") == 0) calls = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--warmup") == 0) warmup = std::atoi(argv[i + 1]);
  }
  mtl::train::retain_freed_memory();  // as the Trainer does; a server keeps its heap too
  const auto bundle = e5_bundle();
  const auto path =
      (std::filesystem::temp_directory_path() / ("bench_serving_" + std::to_string(::getpid()) + ".mtl")).string();
  mtl::serving::save_bundle(path, bundle);
  const mtl::serving::Predictor predictor(path);
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  const mtl::serving::Predictor all_cores(path, mtl::serving::PredictorOptions().threads_per_call(cores));
  std::filesystem::remove(path);

  for (const int64_t batch : {1, 16, 256})
    for (const int callers : {1, 2}) serve(predictor, 1, batch, callers, batch == 256 ? calls / 4 : calls, warmup);
  serve(all_cores, cores, 256, 1, calls / 4, warmup);
  products_floor(bundle, 256, 1);
  products_floor(bundle, 256, cores);

  // Cost per row on every core: a batch-256 predict, from raw ids and from encoded ones, against a training step.
  const auto pool = requests(predictor.schema(), 256, 8);
  std::vector<mtl::FeatureInputs> encoded;
  for (const auto& request : pool) encoded.push_back(all_cores.encode(request));
  std::vector<double> raw, from_encoded;
  for (int i = 0; i < 400; ++i) {
    const auto at = static_cast<size_t>(i) % pool.size();
    const auto begin = Clock::now();
    if (i % 2 == 0)
      all_cores.predict(pool[at]);
    else
      all_cores.predict(encoded[at]);
    const double us = std::chrono::duration<double, std::micro>(Clock::now() - begin).count() / 256;
    if (i >= 40) (i % 2 == 0 ? raw : from_encoded).push_back(us);
  }
  const double raw_us = percentile(raw, 0.5), encoded_us = percentile(from_encoded, 0.5);
  const double train_us = train_step_us_per_row(bundle);
  std::printf(
      "mtl_cost raw_us_per_row %.3f encoded_us_per_row %.3f train_step_us_per_row %.3f raw_ratio %.3f encoded_ratio "
      "%.3f\n",
      raw_us, encoded_us, train_us, raw_us / train_us, encoded_us / train_us);
  return 0;
}
