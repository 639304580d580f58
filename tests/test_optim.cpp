// Tests of the optimizers: SparseAdam against plain Adam on the same rows,
// the cosine-with-warmup schedule, and the dual sparse/dense optimizer with
// its state saved and restored.
#include "test_helpers.hpp"

#include <mtl/detail/join.hpp>
#include <mtl/esmm.hpp>
#include <mtl/model.hpp>
#include <mtl/optim/cosine_schedule.hpp>
#include <mtl/optim/dense_adam.hpp>
#include <mtl/optim/dual_optimizer.hpp>
#include <mtl/optim/sparse_adam.hpp>

#include <torch/cuda.h>

#include <cmath>
#include <set>
#include <thread>
#include <tuple>

using namespace mtl;
using namespace mtl::optim;

// Every row's update equals torch::optim::Adam applied to that row alone over
// the steps that touched it (repeated ids in a batch are summed), within 1e-6
// in double and 1e-5 in float (whose rows of 9 take the vector path and its tail).
// A step touches more rows than one block of the update (32).
TEST_CASE("SparseAdam equals plain Adam on the touched rows") {
  for (auto [dtype, dim, tolerance] :
       {std::tuple{torch::kDouble, int64_t{4}, 1e-6}, std::tuple{torch::kFloat, int64_t{9}, 1e-5}}) {
    torch::manual_seed(3);
    const int64_t rows = 100;
    auto table = torch::randn({rows, dim}, dtype).requires_grad_();
    SparseAdam sparse(table, SparseAdamOptions().lr(0.01));
    std::vector<torch::Tensor> reference_rows;
    std::vector<std::unique_ptr<torch::optim::Adam>> reference;
    for (int64_t r = 0; r < rows; ++r) {
      reference_rows.push_back(table.detach()[r].clone().requires_grad_());
      reference.push_back(std::make_unique<torch::optim::Adam>(std::vector<torch::Tensor>{reference_rows.back()},
                                                               torch::optim::AdamOptions(0.01)));
    }
    for (int step = 0; step < 6; ++step) {
      // Ids from a small range, so rows repeat within a batch and skip steps.
      auto ids = torch::randint(step % 2 == 0 ? rows : rows / 3, {80}, torch::kLong);
      auto weights = torch::randn({80, dim}, dtype);
      (torch::embedding(table, ids, -1, false, /*sparse=*/true) * weights).sum().backward();
      REQUIRE(table.grad().is_sparse());
      sparse.step();
      REQUIRE_FALSE(table.grad().defined());
      auto summed = torch::zeros({rows, dim}, dtype).index_add_(0, ids, weights);
      std::set<int64_t> touched;
      for (int64_t i = 0; i < ids.size(0); ++i) touched.insert(ids[i].item<int64_t>());
      for (int64_t r : touched) {
        reference_rows[r].mutable_grad() = summed[r].clone();
        reference[r]->step();
      }
    }
    auto expected = torch::stack(reference_rows).detach();
    REQUIRE((table.detach() - expected).abs().max().item<double>() < tolerance);
    REQUIRE_FALSE(torch::allclose(table.detach(), expected.mul(0.0)));
  }
}

// Each thread updates its own part of the rows; a row's update must not
// depend on how many parts there are, nor on hash collisions: 1, 2 and 3
// threads give the same table, bit for bit, over batches with many repeats.
TEST_CASE("SparseAdam gives the same table whatever the number of threads") {
  std::vector<torch::Tensor> results;
  for (int threads : {1, 2, 3}) {
    const mtl_test::IntraOpThreads scoped(threads);
    torch::manual_seed(11);
    auto table = torch::randn({5000, 9}).requires_grad_();
    SparseAdam sparse(table, SparseAdamOptions().lr(0.01));
    for (int step = 0; step < 8; ++step) {
      auto ids = torch::cat({torch::randint(5000, {3000}, torch::kLong), torch::randint(40, {3000}, torch::kLong)});
      sparse.step_rows(ids, torch::randn({6000, 9}));
    }
    results.push_back(table.detach().clone());
  }
  REQUIRE(torch::equal(results[0], results[1]));
  REQUIRE(torch::equal(results[0], results[2]));
}

// The fused dense Adam follows torch::optim::Adam (with L2 weight decay) step
// for step, in float on the fused CPU path and in double; a parameter without
// a gradient is left alone; state saved and loaded continues identically.
TEST_CASE("DenseAdam equals torch::optim::Adam") {
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    torch::manual_seed(5);
    auto a = torch::randn({70000}, dtype).requires_grad_(), b = torch::randn({3, 4}, dtype).requires_grad_();
    auto idle = torch::randn({5}, dtype).requires_grad_();
    auto ra = a.detach().clone().requires_grad_(), rb = b.detach().clone().requires_grad_();
    DenseAdam ours({a, b, idle}, DenseAdamOptions().lr(0.01).weight_decay(0.1));
    torch::optim::Adam reference({ra, rb}, torch::optim::AdamOptions(0.01).weight_decay(0.1));
    const auto idle_before = idle.detach().clone();
    for (int step = 0; step < 5; ++step) {
      auto ga = torch::randn({70000}, dtype), gb = torch::randn({3, 4}, dtype);
      ours.zero_grad(), reference.zero_grad();
      ((a * ga).sum() + (b * gb).sum()).backward();
      ((ra * ga).sum() + (rb * gb).sum()).backward();
      ours.step(), reference.step();
    }
    const double tolerance = dtype == torch::kFloat ? 1e-5 : 1e-12;
    REQUIRE(torch::allclose(a, ra, tolerance, tolerance));
    REQUIRE(torch::allclose(b, rb, tolerance, tolerance));
    REQUIRE(torch::equal(idle.detach(), idle_before));
    ours.zero_grad();
    REQUIRE_FALSE(a.grad().defined());
    torch::serialize::OutputArchive out;
    ours.save(out, "x_");
    std::ostringstream bytes;
    out.save_to(bytes);
    auto a2 = a.detach().clone().requires_grad_(), b2 = b.detach().clone().requires_grad_();
    auto idle2 = idle.detach().clone().requires_grad_();
    DenseAdam restored({a2, b2, idle2}, DenseAdamOptions().lr(0.01).weight_decay(0.1));
    torch::serialize::InputArchive in;
    std::istringstream read(bytes.str());
    in.load_from(read);
    restored.load(in, "x_");
    auto ga = torch::randn({70000}, dtype);
    (a * ga).sum().backward(), (a2 * ga).sum().backward();
    ours.step(), restored.step();
    REQUIRE(torch::equal(a.detach(), a2.detach()));
  }
}

// The library's own loops (at::parallel_for in its headers) run on several
// threads: they do only when the including code is compiled with OpenMP,
// which the mtl target passes on (without it they silently run on one); and
// on the runtime LibTorch uses: one OpenMP runtime in the process.
TEST_CASE("parallel loops in the headers use the threads of LibTorch's one OpenMP runtime") {
  const auto runtimes = mtl_test::loaded_libraries({"libgomp", "libiomp", "libomp"});
  INFO("OpenMP runtimes loaded: " << mtl::detail::join(runtimes));
  REQUIRE(runtimes.size() == 1);
  if (std::thread::hardware_concurrency() < 2) {
    WARN("skipped: one core");
    return;
  }
  const mtl_test::IntraOpThreads two(2);
  std::vector<int> thread_of(64, -1);
  at::parallel_for(0, 64, /*grain_size=*/1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) thread_of[i] = at::get_thread_num();
  });
  REQUIRE(std::set<int>(thread_of.begin(), thread_of.end()) == std::set<int>{0, 1});
}

// A dense gradient or a misshapen row gradient is refused.
TEST_CASE("SparseAdam refuses dense gradients") {
  auto table = torch::randn({5, 2}).requires_grad_();
  SparseAdam sparse(table);
  (table * 2).sum().backward();
  REQUIRE_TORCH_ERROR(sparse.step(), "expects a sparse gradient");
  REQUIRE_TORCH_ERROR(sparse.step_rows(torch::zeros({3}, torch::kLong), torch::zeros({3, 4})),
                      "expects rows [n] and gradients [n, 2], but got [3] and [3, 4]");
  REQUIRE_TORCH_ERROR(SparseAdam(torch::zeros({3})), "expects a 2-D table");
  // A row outside the table is refused before anything changes; the next step works.
  const auto before = table.detach().clone();
  REQUIRE_TORCH_ERROR(sparse.step_rows(torch::tensor({1, 9}, torch::kLong), torch::ones({2, 2})),
                      "expects rows in [0, 5), but got 9");
  REQUIRE_TORCH_ERROR(sparse.step_rows(torch::tensor({1, -1}, torch::kLong), torch::ones({2, 2})),
                      "expects rows in [0, 5), but got -1");
  REQUIRE(torch::equal(table.detach(), before));
  sparse.step_rows(torch::tensor({1, 1}, torch::kLong), torch::ones({2, 2}));
  REQUIRE(torch::equal(table.detach()[0], before[0]));
  REQUIRE_FALSE(torch::equal(table.detach()[1], before[1]));
}

// Linear warmup to 1, cosine to min_ratio at total_steps, flat after.
TEST_CASE("CosineWarmupSchedule") {
  CosineWarmupSchedule s(/*total_steps=*/110, /*warmup_steps=*/10, /*min_ratio=*/0.1);
  REQUIRE(s.factor(0) == Approx(0.1));
  REQUIRE(s.factor(4) == Approx(0.5));
  REQUIRE(s.factor(9) == Approx(1.0));
  REQUIRE(s.factor(10) == Approx(1.0));
  REQUIRE(s.factor(60) == Approx(0.1 + 0.9 * 0.5));
  REQUIRE(s.factor(110) == Approx(0.1));
  REQUIRE(s.factor(500) == Approx(0.1));
  for (int64_t t = 10; t < 110; ++t) REQUIRE(s.factor(t + 1) <= s.factor(t));
  REQUIRE(CosineWarmupSchedule(5, 0).factor(0) == Approx(1.0));
  REQUIRE_TORCH_ERROR(CosineWarmupSchedule(10, 11), "warmup_steps in [0, total_steps=10], but got 11");
}

namespace {
PLEModel small_model() {
  return PLEModel(PLEModelOptions(DeepFMOptions(mtl_test::small_schema()).deep_hidden_dims({16}).fm_projection_dim(4),
                                  PLEOptions::homogeneous(0, 2, 2, 1, ExpertOptions::mlp({8})).expert_dim(8),
                                  {"ctr", "cvr"}));
}

/// One ESMM v2 training step on a fixed batch; returns the loss.
double train_step(PLEModel& model, DualSparseDenseOptimizer& opt, const FeatureInputs& x, const torch::Tensor& click,
                  const torch::Tensor& conversion) {
  opt.zero_grad();
  auto logits = model->forward(x);
  auto loss = ESMMLoss()->forward(logits.at("ctr"), logits.at("cvr"), click, conversion).total;
  loss.backward();
  opt.step();
  return loss.item<double>();
}
}  // namespace

namespace {
/// Every parameter (a sparse gradient coalesced, made dense) of `a` and `b` within the tolerances.
void require_close_parameters(torch::nn::Module& a, torch::nn::Module& b, double rtol, double atol, bool gradients) {
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  REQUIRE(pa.size() == pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    INFO((gradients ? "gradient of " : "parameter ") << pa[i].key());
    auto x = gradients ? pa[i].value().grad() : pa[i].value(), y = gradients ? pb[i].value().grad() : pb[i].value();
    REQUIRE(x.defined() == y.defined());
    if (!x.defined()) continue;
    if (x.is_sparse()) x = x.coalesce().to_dense(), y = y.coalesce().to_dense();
    REQUIRE(torch::allclose(x.cpu(), y.cpu(), rtol, atol));
  }
}

/// One ESMM v2 step of `model` on the CPU and of a copy on CUDA: logits, loss, every gradient and every
/// parameter after the dual optimizer's step agree. fp32 on both (no TF32 in LibTorch's default matrix
/// products); the tolerances allow for other summation orders, and the step's for Adam's first update
/// amplifying a difference of a gradient near zero.
template <class Holder>
void require_cuda_step_equals_cpu(Holder& model) {
  auto copy = std::dynamic_pointer_cast<typename Holder::ContainedType>(model->clone());
  Holder on_cuda(copy);
  on_cuda->to(torch::Device(torch::kCUDA));
  const auto options = DualSparseDenseOptions().total_steps(10).warmup_steps(0);
  DualSparseDenseOptimizer cpu_opt(*model, options), cuda_opt(*on_cuda, options);
  auto x = mtl_test::random_inputs(mtl_test::small_schema(), 512);
  auto click = torch::bernoulli(torch::full({512}, 0.3));
  auto conversion = click * torch::bernoulli(torch::full({512}, 0.4));
  const auto cuda = torch::Device(torch::kCUDA);
  cpu_opt.zero_grad(), cuda_opt.zero_grad();
  const TaskLogits cpu_logits = model->forward(x);
  const TaskLogits cuda_logits = on_cuda->forward(x.to(cuda));
  for (const auto* task : {"ctr", "cvr"}) {
    INFO("logits of " << task);
    REQUIRE(cuda_logits.at(task).is_cuda());
    REQUIRE(torch::allclose(cuda_logits.at(task).cpu(), cpu_logits.at(task), 1e-4, 1e-5));
  }
  torch::Tensor cpu_loss = ESMMLoss()->forward(cpu_logits.at("ctr"), cpu_logits.at("cvr"), click, conversion).total;
  torch::Tensor cuda_loss =
      ESMMLoss()->forward(cuda_logits.at("ctr"), cuda_logits.at("cvr"), click.to(cuda), conversion.to(cuda)).total;
  REQUIRE(cuda_loss.item<double>() == Approx(cpu_loss.item<double>()).epsilon(1e-5));
  cpu_loss.backward(), cuda_loss.backward();
  require_close_parameters(*model, *on_cuda, 1e-3, 1e-5, /*gradients=*/true);
  cpu_opt.step(), cuda_opt.step();
  require_close_parameters(*model, *on_cuda, 1e-4, 1e-5, /*gradients=*/false);
}
}  // namespace

// E1- and E5-shaped models (a shared bottom; heterogeneous PLE with the aligner) step alike on the CPU and
// on CUDA. Skipped without a CUDA device.
TEST_CASE("CPU and CUDA agree on one training step of E1- and E5-shaped models") {
  if (!torch::cuda::is_available()) {
    WARN("skipped: this LibTorch sees no CUDA device");
    return;
  }
  torch::manual_seed(11);
  const auto backbone = DeepFMOptions(mtl_test::small_schema()).deep_hidden_dims({32, 16}).fm_projection_dim(4);
  SharedBottomModel e1(SharedBottomModelOptions(backbone, SharedBottomOptions(0, 0).hidden_dims({16}), {"ctr", "cvr"})
                           .tower_hidden_dims({8}));
  require_cuda_step_equals_cpu(e1);
  PLEModel e5(PLEModelOptions(backbone,
                              PLEOptions(0, 0)
                                  .shared_experts({ExpertOptions::mlp({16}), ExpertOptions::mlp({32, 16}),
                                                   ExpertOptions::cross(2), ExpertOptions::cross(3)})
                                  .task_experts({{ExpertOptions::cross(2)}, {ExpertOptions::mlp({8})}})
                                  .expert_dim(8)
                                  .align_outputs(true),
                              {"ctr", "cvr"})
                  .tower_hidden_dims({8}));
  require_cuda_step_equals_cpu(e5);
}

// The embedding table goes to SparseAdam, everything else to Adam, under one schedule.
TEST_CASE("DualSparseDenseOptimizer splits parameters and follows the schedule") {
  torch::manual_seed(5);
  auto model = small_model();
  DualSparseDenseOptimizer opt(
      *model, DualSparseDenseOptions().sparse_lr(0.01).dense_lr(0.005).total_steps(60).warmup_steps(5));
  REQUIRE(opt.num_sparse_tables() == 1);
  REQUIRE(opt.num_dense_parameters() == model->parameters().size() - 1);
  REQUIRE(opt.sparse_lr() == Approx(0.01 / 5));
  REQUIRE(opt.dense_lr() == Approx(0.005 / 5));
  auto x = mtl_test::random_inputs(mtl_test::small_schema(), 256);
  auto click = (x.dense.select(1, 0) > 0).to(torch::kFloat);
  auto conversion = click * (x.sparse_ids.select(1, 2) < 2).to(torch::kFloat);
  const double first = train_step(model, opt, x, click, conversion);
  double last = first;
  for (int i = 0; i < 40; ++i) last = train_step(model, opt, x, click, conversion);
  REQUIRE(opt.step_count() == 41);
  REQUIRE(opt.dense_lr() == Approx(0.005 * CosineWarmupSchedule(60, 5).factor(41)));
  REQUIRE(last < 0.7 * first);
}

// Saving and loading the state, with the parameters, continues bit for bit.
TEST_CASE("DualSparseDenseOptimizer state round-trips") {
  torch::manual_seed(6);
  auto options = DualSparseDenseOptions().total_steps(100).warmup_steps(3);
  auto model = small_model();
  DualSparseDenseOptimizer opt(*model, options);
  auto x = mtl_test::random_inputs(mtl_test::small_schema(), 64);
  auto click = torch::bernoulli(torch::full({64}, 0.4));
  auto conversion = click * torch::bernoulli(torch::full({64}, 0.3));
  for (int i = 0; i < 4; ++i) train_step(model, opt, x, click, conversion);

  torch::serialize::OutputArchive archive;
  opt.save(archive);
  std::stringstream stream;
  archive.save_to(stream);
  auto copy = std::dynamic_pointer_cast<PLEModel::ContainedType>(model->clone());
  PLEModel restored(copy);
  DualSparseDenseOptimizer restored_opt(*restored, options);
  torch::serialize::InputArchive in;
  in.load_from(stream);
  restored_opt.load(in);
  REQUIRE(restored_opt.step_count() == 4);

  for (int i = 0; i < 3; ++i) {
    REQUIRE(train_step(model, opt, x, click, conversion) == train_step(restored, restored_opt, x, click, conversion));
  }
  auto a = model->parameters(), b = restored->parameters();
  for (size_t i = 0; i < a.size(); ++i) REQUIRE(torch::equal(a[i], b[i]));
}

// The dual optimizer groups the table's rows on one thread while the other
// threads update the dense parameters in chunks, then updates the rows: the
// same parameters, bit for bit, as SparseAdam and DenseAdam stepped one after
// the other, with 1, 2 or 3 threads. The deep layers make several chunks.
TEST_CASE("DualSparseDenseOptimizer equals SparseAdam then DenseAdam, whatever the number of threads") {
  for (int threads : {1, 2, 3}) {
    const mtl_test::IntraOpThreads scoped(threads);
    torch::manual_seed(9);
    const auto options =
        PLEModelOptions(DeepFMOptions(mtl_test::small_schema()).deep_hidden_dims({512, 256}).fm_projection_dim(4),
                        PLEOptions::homogeneous(0, 2, 2, 1, ExpertOptions::mlp({8})).expert_dim(8), {"ctr", "cvr"});
    PLEModel model(options), reference(options);
    {
      torch::NoGradGuard no_grad;
      auto from = model->parameters(), to = reference->parameters();
      for (size_t i = 0; i < from.size(); ++i) to[i].copy_(from[i]);
    }
    DualSparseDenseOptimizer opt(*model, DualSparseDenseOptions().total_steps(50).warmup_steps(2));
    const auto& table = reference->backbone->embedding->weight;
    SparseAdam sparse(table);
    std::vector<torch::Tensor> dense;
    int64_t dense_values = 0;
    for (const auto& p : reference->parameters())
      if (!p.is_same(table)) dense.push_back(p), dense_values += p.numel();
    REQUIRE(dense_values > 4 * DenseAdam::kValuesPerThread);
    DenseAdam dense_adam(dense);
    for (int step = 0; step < 5; ++step) {
      auto x = mtl_test::random_inputs(mtl_test::small_schema(), 64);
      auto click = torch::bernoulli(torch::full({64}, 0.4));
      auto conversion = click * torch::bernoulli(torch::full({64}, 0.3));
      sparse.set_lr(opt.sparse_lr()), dense_adam.set_lr(opt.dense_lr());
      train_step(model, opt, x, click, conversion);
      sparse.zero_grad(), dense_adam.zero_grad();
      auto logits = reference->forward(x);
      ESMMLoss()->forward(logits.at("ctr"), logits.at("cvr"), click, conversion).total.backward();
      sparse.step(), dense_adam.step();
    }
    auto ours = model->parameters(), expected = reference->parameters();
    for (size_t i = 0; i < ours.size(); ++i) REQUIRE(torch::equal(ours[i], expected[i]));
  }
}
