// The A/A check of the chain's verdicts: one configuration (the shared-bottom
// ESMM model, E2's shape, small) trained with different seeds and compared
// with itself the way the chain compares two experiments: per-seed
// differences of the test CTCVR AUC, the paired t-test over 3 seeds with the
// test rows' variance that the seeds share added. There is no true
// difference, so the share of replicates called significant at 0.05 must be
// at most 0.05 within its sampling error; the seeds-only test (no test-row
// term) is shown beside it. Each replicate trains 6 fresh runs (seeds never
// reused), on the synthetic data of the designed scenario; as in the chain, a
// seed sets the initialisation and the training rows (one pass over a draw
// of them of its own), and every run is tested on the same test rows.
//   aa_check [REPLICATES] [STEPS]      (defaults 100 and 300)
#include <mtl/data/batch_loader.hpp>
#include <mtl/data/synthetic.hpp>
#include <mtl/metrics/delong.hpp>
#include <mtl/metrics/multitask_metrics.hpp>
#include <mtl/metrics/paired_seeds.hpp>
#include <mtl/model.hpp>
#include <mtl/optim/dual_optimizer.hpp>
#include <mtl/train/objective.hpp>

#include <ATen/Parallel.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

using namespace mtl;

constexpr int64_t kBatch = 256;
constexpr int kSeedsPerSide = 3;

struct Data {
  data::SyntheticGenerator generator{data::SyntheticOptions().num_users(3000).num_items(3000)};
  data::Dataset test = generator.generate(data::Split::test, 20000);
};

/// A run's test CTCVR scores and their AUC.
struct Scored {
  std::vector<float> p_ctcvr;
  double auc = NAN;
};

/// Trains the model with `seed` (initialisation, and the draw of training rows it reads) and scores the test rows.
Scored train_and_test(const Data& d, uint64_t seed, int64_t steps) {
  torch::manual_seed(seed);
  SharedBottomModel model(
      SharedBottomModelOptions(DeepFMOptions(d.generator.schema()).deep_hidden_dims({64, 32}).fm_projection_dim(8),
                               SharedBottomOptions(0, 0).hidden_dims({32}), {"ctr", "cvr"})
          .task_tower_hidden_dims({{16}, {16}}));
  optim::DualSparseDenseOptimizer optimizer(
      *model, optim::DualSparseDenseOptions().sparse_lr(0.01).dense_lr(0.003).total_steps(steps).warmup_steps(10));
  train::Objective objective({"ctr", "cvr"}, train::ObjectiveOptions().use_esmm(true));
  data::BatchLoader loader(d.generator.rows_on_demand(data::Split::train, steps * kBatch, /*redraw=*/seed),
                           data::LoaderOptions().batch_size(kBatch).seed(seed).prefetch(0));
  for (int64_t step = 0; step < steps; ++step) {
    const auto batch = loader.next();
    optimizer.zero_grad();
    objective(model->forward(batch.features), batch).total.backward();
    optimizer.step();
  }
  torch::NoGradGuard no_grad;
  model->eval();
  metrics::PredictionColumns columns;
  data::for_each_batch(d.test, 4096, [&](const data::TrainingBatch& batch, int64_t) {
    const auto logits = model->forward(batch.features);
    for (auto [name, out] : {std::pair{"ctr", &columns.p_ctr}, std::pair{"cvr", &columns.p_cvr}}) {
      const auto p = torch::sigmoid(logits.at(name)).contiguous();
      out->insert(out->end(), p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
    }
  });
  columns.click = d.test.click;
  columns.conversion = d.test.conversion;
  Scored out;
  for (size_t i = 0; i < columns.p_ctr.size(); ++i) out.p_ctcvr.push_back(columns.p_ctr[i] * columns.p_cvr[i]);
  out.auc = metrics::evaluate_predictions(columns).at("auc_ctcvr").value;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const int replicates = argc > 1 ? std::atoi(argv[1]) : 100;
  const int64_t steps = argc > 2 ? std::atoll(argv[2]) : 300;
  if (replicates < 1 || steps < 1) {
    std::fprintf(stderr, "usage: aa_check [REPLICATES >= 1] [STEPS >= 1]\n");
    return 2;
  }
  at::set_num_threads(1);  // runs are small; one thread keeps them independent of the machine's load
  const Data d;
  std::vector<float> ctcvr_labels;
  for (int64_t i = 0; i < d.test.num_rows(); ++i) ctcvr_labels.push_back(d.test.click[i] * d.test.conversion[i]);
  const auto start = std::chrono::steady_clock::now();
  int significant = 0, significant_seeds_only = 0;
  std::vector<double> all_differences;
  for (int r = 0; r < replicates; ++r) {
    std::vector<double> differences;
    std::vector<std::vector<float>> scores_a, scores_b;
    for (int k = 0; k < kSeedsPerSide; ++k) {
      const uint64_t base = 1000 + static_cast<uint64_t>(r) * 2 * kSeedsPerSide + 2 * static_cast<uint64_t>(k);
      auto a = train_and_test(d, base, steps), b = train_and_test(d, base + 1, steps);
      differences.push_back(a.auc - b.auc);
      scores_a.push_back(std::move(a.p_ctcvr)), scores_b.push_back(std::move(b.p_ctcvr));
    }
    // As the chain does: the test rows' variance that the seeds share.
    const auto shared = metrics::shared_test_row_variance(scores_a, scores_b, ctcvr_labels);
    const auto test = metrics::paired_seed_test(differences, 0.95, 2, shared.defined() ? shared.shared : 0.0);
    const auto seeds_only = metrics::paired_seed_test(differences);
    significant += test.p_value < 0.05;
    significant_seeds_only += seeds_only.p_value < 0.05;
    all_differences.insert(all_differences.end(), differences.begin(), differences.end());
    std::printf("replicate %3d: differences %+.5f %+.5f %+.5f  p=%.3f%s  (seeds only: p=%.3f)\n", r, differences[0],
                differences[1], differences[2], test.p_value, test.p_value < 0.05 ? "  significant" : "",
                seeds_only.p_value);
    std::fflush(stdout);
  }
  double sd = 0;
  for (double x : all_differences) sd += x * x;
  sd = std::sqrt(sd / static_cast<double>(all_differences.size()));
  const double rate = static_cast<double>(significant) / replicates;
  const double se = std::sqrt(0.05 * 0.95 / replicates);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "A/A: %d of %d replicates significant at 0.05 (%.1f %%); nominal 5 %% +- %.1f %% (2 standard errors: %.1f-%.1f "
      "%%); the seeds-only test: %d (%.1f %%); root mean square of the differences %.5f; %d runs of %lld steps in "
      "%.0f s\n",
      significant, replicates, 100 * rate, 200 * se, std::max(0.0, 100 * (0.05 - 2 * se)), 100 * (0.05 + 2 * se),
      significant_seeds_only, 100.0 * significant_seeds_only / replicates, sd, replicates * 2 * kSeedsPerSide,
      static_cast<long long>(steps), seconds);
  return 0;
}
