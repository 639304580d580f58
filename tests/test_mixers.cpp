// Tests of the mixers (SharedBottom, MMoE, PLE) and of the composed model in
// the shapes of the seven experiments.
#include "test_helpers.hpp"

#include <mtl/functional/expert_mixing.hpp>
#include <mtl/gate.hpp>
#include <mtl/mmoe.hpp>
#include <mtl/model.hpp>
#include <mtl/ple.hpp>
#include <mtl/shared_bottom.hpp>
#include <mtl/train/autocast.hpp>

#include <chrono>
#include <set>
#include <sstream>
#include <thread>

using namespace mtl;
using mtl::detail::Branch;
using mtl::detail::run_branches_stacked;
using mtl_test::IntraOpThreads;
using mtl_test::printed;
using mtl_test::random_inputs;
using mtl_test::random_projection_loss;
using mtl_test::require_gradient_everywhere;
using mtl_test::require_independent_clone;
using mtl_test::require_same_gradients;
using mtl_test::small_schema;

namespace {

/// Every task output joined, so that one tensor stands for a mixer's output.
torch::Tensor joined(const std::vector<torch::Tensor>& per_task) { return torch::cat(per_task, 1); }

/// Every gate row is a distribution over that gate's experts.
void require_distributions(const std::vector<torch::Tensor>& weights, const std::vector<int64_t>& widths,
                           int64_t batch) {
  REQUIRE(weights.size() == widths.size());
  for (size_t t = 0; t < weights.size(); ++t) {
    INFO("task " << t);
    REQUIRE(weights[t].sizes() == torch::IntArrayRef{batch, widths[t]});
    REQUIRE(weights[t].min().item<float>() >= 0.0f);
    REQUIRE(torch::allclose(weights[t].sum(1), torch::ones({batch}), 1e-5, 1e-6));
  }
}

// The heterogeneous expert lists of E5.
std::vector<ExpertOptions> hetero_shared() {
  return {ExpertOptions::mlp({32}), ExpertOptions::mlp({48, 24}), ExpertOptions::cross(2), ExpertOptions::cross(3)};
}
std::vector<std::vector<ExpertOptions>> hetero_private() {
  return {{ExpertOptions::cross(2)}, {ExpertOptions::mlp({16})}};
}

}  // namespace

// A gate's softmax on the CPU (detail::RowSoftmax) equals ATen's in value and
// gradient: float and double, one to seven experts, logits up to +-100, a row
// of equal logits, batches below and above the rows one thread takes.
TEST_CASE("Gate softmax equals ATen's softmax") {
  for (auto dtype : {torch::kFloat, torch::kDouble})
    for (int64_t cols : {1, 2, 5, 7})
      for (int64_t rows : {1, 1000, 9000}) {
        CAPTURE(dtype, cols, rows);
        torch::manual_seed(cols * rows);
        auto logits = (torch::randn({rows, cols}, dtype) * 10).requires_grad_();
        {
          torch::NoGradGuard no_grad;
          logits[0].fill_(3.0);
          if (rows > 1) logits[rows - 1][0] = 100.0, logits[rows - 1][cols - 1] = -100.0;
        }
        const auto reference = logits.detach().clone().requires_grad_();
        const auto ours = mtl::detail::RowSoftmax::apply(logits)[0];
        const auto expected = torch::softmax(reference, 1);
        const double tolerance = dtype == torch::kFloat ? 1e-6 : 1e-14;
        REQUIRE(ours.scalar_type() == dtype);
        REQUIRE(torch::allclose(ours, expected, tolerance, tolerance));
        const auto g = torch::randn({rows, cols}, dtype);
        const auto grad = torch::autograd::grad({ours}, {logits}, {g})[0];
        const auto expected_grad = torch::autograd::grad({expected}, {reference}, {g})[0];
        REQUIRE(torch::allclose(grad, expected_grad, tolerance, tolerance));
      }
  Gate gate(GateOptions(6, 3));
  const auto x = torch::randn({4, 6});
  REQUIRE(torch::allclose(gate->forward(x), torch::softmax(gate->scorer->forward(x), 1), 1e-6, 1e-6));
}

namespace {

// Not a mixer: forward gives one tensor, not one per task.
struct OneOutputImpl : torch::nn::Module {
  struct Options {
    TORCH_ARG(int64_t, input_dim) = 0;
    TORCH_ARG(int64_t, num_tasks) = 0;
  } options;
  torch::Tensor forward(const torch::Tensor& x) { return x; }
  int64_t output_dim() const { return 0; }
  int64_t num_tasks() const { return 1; }
};
}  // namespace

// The mixer contract is checked at compile time: the library's mixers meet it
// (MMoE and PLE with gates, SharedBottom without), a user's own mixer composes
// into a MultiTaskModel, and a module of another shape is no mixer.
TEST_CASE("the mixer contract") {
  STATIC_REQUIRE(is_gated_mixer_v<MMoEImpl>);
  STATIC_REQUIRE(is_gated_mixer_v<PLEImpl>);
  STATIC_REQUIRE(is_mixer_v<SharedBottomImpl>);
  STATIC_REQUIRE(is_mixer_v<mtl_test::DoublingMixerImpl>);
  STATIC_REQUIRE_FALSE(is_gated_mixer_v<mtl_test::DoublingMixerImpl>);
  STATIC_REQUIRE_FALSE(is_mixer_v<OneOutputImpl>);
  STATIC_REQUIRE_FALSE(is_mixer_v<GateImpl>);
  torch::manual_seed(2);
  MultiTaskModel<DeepFM, mtl_test::DoublingMixer> model(MultiTaskModelOptions<DeepFM, mtl_test::DoublingMixer>(
      DeepFMOptions(mtl_test::small_schema()).deep_hidden_dims({8}).fm_projection_dim(4),
      mtl_test::DoublingMixerOptions(0, 0), {"ctr", "cvr"}));
  REQUIRE(model->mixer->options.input_dim() == model->backbone->output_dim());
  REQUIRE(model->mixer->options.num_tasks() == 2);
  const auto logits = model->forward(random_inputs(mtl_test::small_schema(), 6));
  REQUIRE(logits.at("cvr").sizes() == torch::IntArrayRef{6});
}

// Shared bottom hands one representation to every task; empty layers are the identity.
TEST_CASE("SharedBottom") {
  SharedBottom bottom(SharedBottomOptions(12, 2).hidden_dims({10}));
  for (int64_t batch : {1, 1024}) {
    auto out = bottom->forward(torch::randn({batch, 12}));
    REQUIRE(out.size() == 2);
    REQUIRE(out[1].sizes() == torch::IntArrayRef{batch, 10});
  }
  STATIC_REQUIRE(is_mixer_v<SharedBottomImpl>);
  STATIC_REQUIRE_FALSE(is_gated_mixer_v<SharedBottomImpl>);  // no gates: diagnostics say so
  auto x = torch::randn({8, 12});
  require_gradient_everywhere(*bottom, random_projection_loss(joined(bottom->forward(x))));
  require_independent_clone(bottom, [&](SharedBottomImpl& m) { return joined(m.forward(x)); });
  SharedBottom identity(SharedBottomOptions(12, 1));
  REQUIRE(torch::equal(identity->forward(x)[0], x));
  // With its output aligned: each row normalised over its features (the scale starts at 1), trainable throughout.
  SharedBottom aligned(SharedBottomOptions(12, 2).hidden_dims({64}).align_outputs(true));  // 64 ReLUs: no row all zero
  const auto y = aligned->forward(torch::randn({64, 12}))[0];
  REQUIRE(y.mean(1).abs().max().item<float>() < 1e-5);
  REQUIRE(torch::allclose(y.var(1, /*unbiased=*/false), torch::ones({64}), 1e-3, 1e-3));
  require_gradient_everywhere(*aligned, random_projection_loss(joined(aligned->forward(x))));
}

// MMoE: per-task mixtures of the shared experts, gates that are distributions.
TEST_CASE("MMoE") {
  MMoE mmoe(MMoEOptions(12, 2).experts(std::vector<ExpertOptions>(4, ExpertOptions::mlp({16}))).expert_dim(8));
  for (int64_t batch : {1, 1024}) {
    auto out = mmoe->forward(torch::randn({batch, 12}));
    REQUIRE(out.size() == 2);
    REQUIRE(out[0].sizes() == torch::IntArrayRef{batch, 8});
    require_distributions(mmoe->gate_weights(), {4, 4}, batch);
  }
  auto x = torch::randn({16, 12});
  require_gradient_everywhere(*mmoe, random_projection_loss(joined(mmoe->forward(x))));
  require_independent_clone(mmoe, [&](MMoEImpl& m) { return joined(m.forward(x)); });
  REQUIRE(mmoe->gate_expert_names()[1][3] == "expert_3:mlp[16]");
  REQUIRE(printed(mmoe) == "mtl::MMoE(num_tasks=2, experts=4, expert_dim=8, aligned=false)");
  REQUIRE_TORCH_ERROR(MMoE(MMoEOptions(12, 2)), "MMoE expects at least one expert, but the expert list is empty");
  REQUIRE_TORCH_ERROR(mmoe->forward(torch::randn({12})), "MMoE expects [batch, 12], but got shape [12]");
}

// Homogeneous PLE-Lite (E4): 4 shared + 1 private expert per task, gates over 5 experts.
TEST_CASE("PLE homogeneous") {
  PLE ple(PLEOptions::homogeneous(12, 2, 4, 1, ExpertOptions::mlp({16})).expert_dim(8));
  for (int64_t batch : {1, 1024}) {
    auto out = ple->forward(torch::randn({batch, 12}));
    REQUIRE(out.size() == 2);
    REQUIRE(out[0].sizes() == torch::IntArrayRef{batch, 8});
    require_distributions(ple->gate_weights(), {5, 5}, batch);
  }
  auto x = torch::randn({16, 12});
  require_gradient_everywhere(*ple, random_projection_loss(joined(ple->forward(x))));
  require_independent_clone(ple, [&](PLEImpl& m) { return joined(m.forward(x)); });
  REQUIRE(printed(ple) ==
          "mtl::PLE(num_tasks=2, levels=1, shared_experts=4, task_experts=[1, 1], expert_dim=8, aligned=false)");
  REQUIRE(ple->gate_expert_names()[1] == std::vector<std::string>{"shared_0:mlp[16]", "shared_1:mlp[16]",
                                                                  "shared_2:mlp[16]", "shared_3:mlp[16]",
                                                                  "task1_0:mlp[16]"});
}

// Heterogeneous PLE (E5): experts of different kinds and natural widths, aligned.
TEST_CASE("PLE heterogeneous with the aligner") {
  PLE ple(PLEOptions(12, 2)
              .shared_experts(hetero_shared())
              .task_experts(hetero_private())
              .expert_dim(8)
              .align_outputs(true));
  REQUIRE(ple->levels[0]->as<PLELevel>()->aligner->options.num_experts() == 6);
  for (int64_t batch : {1, 1024}) {
    auto out = ple->forward(torch::randn({batch, 12}));
    REQUIRE(out[1].sizes() == torch::IntArrayRef{batch, 8});
    REQUIRE(torch::isfinite(joined(out)).all().item<bool>());
    require_distributions(ple->gate_weights(), {5, 5}, batch);
  }
  auto x = torch::randn({16, 12});
  require_gradient_everywhere(*ple, random_projection_loss(joined(ple->forward(x))));
  require_independent_clone(ple, [&](PLEImpl& m) { return joined(m.forward(x)); });
  REQUIRE(ple->gate_expert_names()[0].back() == "task0_0:cross(2)");
}

// Two levels: the first level's shared gate feeds the second level's shared experts.
TEST_CASE("PLE with two levels") {
  PLE ple(PLEOptions(12, 3)
              .shared_experts(hetero_shared())
              .task_experts({{ExpertOptions::mlp({8})}, {}, {ExpertOptions::cross(1), ExpertOptions::mlp({8})}})
              .expert_dim(6)
              .num_levels(2)
              .align_outputs(true));
  auto x = torch::randn({32, 12});
  auto out = ple->forward(x);
  REQUIRE(out.size() == 3);
  REQUIRE(out[2].sizes() == torch::IntArrayRef{32, 6});
  require_distributions(ple->gate_weights(), {5, 4, 6}, 32);
  require_distributions(ple->level_gate_weights(0), {5, 4, 6}, 32);
  require_gradient_everywhere(*ple, random_projection_loss(joined(ple->forward(x))));
  REQUIRE_TORCH_ERROR(ple->level_gate_weights(2), "PLE has levels 0..1, but got level 2");
}

// Branches side by side: each on one thread, started costliest first, each
// thread taking the next branch when it is free; outputs stacked in the
// branches' order.
TEST_CASE("run_branches_stacked runs branches side by side, a free thread taking the next") {
  REQUIRE(mtl::detail::branches_by_cost({5, 1, 4, 2}) == std::vector<int64_t>{0, 2, 3, 1});
  REQUIRE(mtl::detail::branches_by_cost({3, 3, 3}) == std::vector<int64_t>{0, 1, 2});
  if (std::thread::hardware_concurrency() < 2) {
    WARN("skipped the threads half: one core");
    return;
  }
  const IntraOpThreads two(2);
  // Branch 0 is the costliest by its stated cost and by far the slowest: the
  // other thread runs all the rest meanwhile (a split by stated cost would
  // have given branch 0's thread branch 1 as well).
  const std::vector<double> costs{5, 1, 4, 2};
  const std::vector<int> sleep_ms{100, 2, 2, 2};
  std::vector<int> ran_on(costs.size(), -1), runs(costs.size(), 0);
  std::vector<Branch> branches;
  for (size_t i = 0; i < costs.size(); ++i) {
    Branch branch;
    branch.run = [&, i](const torch::Tensor& x) {
      ran_on[i] = at::get_thread_num();
      ++runs[i];
      std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms[i]));
      return x * static_cast<double>(i + 1);
    };
    branch.input = torch::ones({3, 2});
    branch.cost = costs[i];
    branches.push_back(branch);
  }
  const auto stacked = run_branches_stacked(branches);
  REQUIRE(runs == std::vector<int>{1, 1, 1, 1});
  REQUIRE(std::set<int>(ran_on.begin(), ran_on.end()) == std::set<int>{0, 1});
  REQUIRE(ran_on[1] != ran_on[0]);
  REQUIRE(ran_on[1] == ran_on[2]);
  REQUIRE(ran_on[1] == ran_on[3]);
  REQUIRE(stacked.sizes() == torch::IntArrayRef{3, 4, 2});
  for (int64_t i = 0; i < 4; ++i) REQUIRE(torch::equal(stacked.select(1, i), torch::full({3, 2}, i + 1.0)));
  {
    const BranchesOneAfterAnotherGuard one_after_another;
    run_branches_stacked(branches);
    REQUIRE(ran_on == std::vector<int>{0, 0, 0, 0});
  }
  branches[2].draws_random_numbers = true;  // dropout: one after another, so that a seed repeats
  run_branches_stacked(branches);
  REQUIRE(ran_on == std::vector<int>{0, 0, 0, 0});
  // A branch of another shape is named against the first to finish (branch 2,
  // the other thread's first, while branch 0 sleeps).
  branches[2].draws_random_numbers = false;
  branches[1].run = [](const torch::Tensor& x) { return torch::cat({x, x}, 1); };
  REQUIRE_TORCH_ERROR(run_branches_stacked(branches),
                      "run_branches_stacked expects every branch to give one shape and dtype, but branch 1 gave "
                      "[3, 4] (Float) where branch 2 gave [3, 2] (Float)");
}

// Experts side by side give what they give one after another: outputs and the
// gradients to each input and parameter, in double and in float, with inputs
// that need a gradient and one that does not.
TEST_CASE("Experts side by side equal experts one after another") {
  const IntraOpThreads two(2);
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    INFO("dtype " << dtype);
    torch::manual_seed(3);
    auto list = make_experts(hetero_shared(), 12, 8);
    list->to(dtype);
    std::vector<Expert> experts;
    for (const auto& e : *list) experts.emplace_back(std::dynamic_pointer_cast<ExpertImpl>(e));
    const auto options = torch::TensorOptions().dtype(dtype);
    auto first = torch::randn({64, 12}, options).requires_grad_(), second = torch::randn({64, 12}, options);
    const std::vector<torch::Tensor> inputs{first, first, second, first};
    const auto weights = torch::randn({64, 4, 8}, options);
    const auto side_by_side = run_experts(experts, inputs);
    torch::Tensor one_after_another;
    {
      const BranchesOneAfterAnotherGuard guard;
      one_after_another = run_experts(experts, inputs);
    }
    const double tolerance = dtype == torch::kDouble ? 1e-10 : 1e-5;
    REQUIRE(torch::allclose(side_by_side, one_after_another, tolerance, tolerance));
    require_same_gradients((side_by_side * weights).sum(), (one_after_another * weights).sum(), first,
                           list->parameters(), tolerance);
  }
}

// The side-by-side node: parameters get gradients when no input needs one, a
// branch's error reaches the caller, the graph can be kept for a second
// backward, and gradients of gradients are refused with a way out.
TEST_CASE("Experts side by side: gradients, errors, a kept graph, no double backward") {
  const IntraOpThreads two(2);
  torch::manual_seed(5);
  auto list = make_experts(hetero_shared(), 12, 8);
  const auto x = torch::randn({16, 12});
  require_gradient_everywhere(*list, random_projection_loss(run_experts(*list, x)));

  Branch failing;
  failing.run = [](const torch::Tensor&) -> torch::Tensor { TORCH_CHECK(false, "branch 1 failed"); };
  failing.input = x;
  Branch passing = failing;
  passing.run = [](const torch::Tensor& in) { return in * 2; };
  REQUIRE_TORCH_ERROR(run_branches_stacked({passing, failing}), "branch 1 failed");

  const auto input = x.clone().requires_grad_();
  const auto loss = random_projection_loss(run_experts(*list, input));
  loss.backward({}, /*retain_graph=*/true);
  const auto once = input.grad().clone();
  loss.backward();
  REQUIRE(torch::allclose(input.grad(), 2 * once));

  REQUIRE_TORCH_ERROR(torch::autograd::grad({random_projection_loss(run_experts(*list, input))}, {input}, {},
                                            /*retain_graph=*/true, /*create_graph=*/true),
                      "run the forward under mtl::BranchesOneAfterAnotherGuard");
  const BranchesOneAfterAnotherGuard guard;
  const auto grad = torch::autograd::grad({random_projection_loss(run_experts(*list, input))}, {input}, {},
                                          /*retain_graph=*/true, /*create_graph=*/true)[0];
  REQUIRE(grad.requires_grad());
}

// Without gradients the experts still run side by side and give the same
// values; with dropout in training a seed gives the same draws every run.
TEST_CASE("Experts side by side without gradients, and with dropout") {
  const IntraOpThreads two(2);
  torch::manual_seed(7);
  auto list = make_experts(hetero_shared(), 12, 8);
  const auto x = torch::randn({16, 12});
  const auto with_graph = run_experts(*list, x);
  torch::NoGradGuard no_grad;
  const auto without = run_experts(*list, x);
  REQUIRE_FALSE(without.requires_grad());
  REQUIRE(torch::allclose(with_graph, without, 1e-5, 1e-5));

  auto dropping = make_experts(
      {ExpertOptions::mlp({32}).dropout(0.5), ExpertOptions::mlp({48, 24}).dropout(0.5), ExpertOptions::cross(2)}, 12,
      8);
  torch::manual_seed(9);
  const auto first = run_experts(*dropping, x);
  torch::manual_seed(9);
  REQUIRE(torch::equal(run_experts(*dropping, x), first));
  torch::manual_seed(9);
  const BranchesOneAfterAnotherGuard guard;
  REQUIRE(torch::equal(run_experts(*dropping, x), first));
}

// A whole PLE of two levels (task experts reading their task's input) side by
// side against one after another: outputs and gradients.
TEST_CASE("PLE side by side equals PLE one after another") {
  const IntraOpThreads two(2);
  torch::manual_seed(13);
  PLE ple(PLEOptions(12, 2)
              .shared_experts(hetero_shared())
              .task_experts(hetero_private())
              .expert_dim(8)
              .num_levels(2)
              .align_outputs(true));
  const auto x = torch::randn({64, 12}).requires_grad_();
  const auto weights = torch::randn({64, 16});
  const auto side_by_side = joined(ple->forward(x));
  torch::Tensor one_after_another;
  {
    const BranchesOneAfterAnotherGuard guard;
    one_after_another = joined(ple->forward(x));
  }
  REQUIRE(torch::allclose(side_by_side, one_after_another, 1e-5, 1e-5));
  require_same_gradients((side_by_side * weights).sum(), (one_after_another * weights).sum(), x, ple->parameters(),
                         1e-5);
}

// Bad PLE settings are refused with messages saying what was expected.
TEST_CASE("PLE refuses bad settings") {
  REQUIRE_TORCH_ERROR(PLE(PLEOptions(12, 2).task_experts(hetero_private())),
                      "at least one shared expert, but the shared expert list is empty");
  REQUIRE_TORCH_ERROR(PLE(PLEOptions(12, 3).shared_experts(hetero_shared()).task_experts(hetero_private())),
                      "one private expert list per task (3), but got 2 lists");
  PLE ple(PLEOptions(12, 2).shared_experts(hetero_shared()).task_experts(hetero_private()));
  REQUIRE_TORCH_ERROR(ple->forward(torch::randn({4, 11})), "PLE expects [batch, 12], but got shape [4, 11]");
}

namespace {
const std::vector<std::string> kCtrCvr{"ctr", "cvr"};

DeepFMOptions backbone_options() {
  return DeepFMOptions(small_schema()).deep_hidden_dims({16, 8}).fm_projection_dim(4);
}

/// Runs a composed model: logits per task of shape [batch], gradients everywhere, independent clone.
template <class Model>
void require_working_model(Model& model, const std::vector<std::string>& tasks) {
  using Impl = typename Model::ContainedType;
  for (int64_t batch : {1, 1024}) {
    auto out = model->forward(random_inputs(small_schema(), batch));
    REQUIRE(out.tasks == tasks);
    for (const auto& logit : out.logits) REQUIRE(logit.sizes() == torch::IntArrayRef{batch});
  }
  auto input = random_inputs(small_schema(), 32);
  {
    // Embeddings start at std 0.01, so every ReLU's input is nearly its bias: a
    // small layer whose biases are all negative would pass no gradient (seen
    // once in CI). Positive biases keep every unit alive; the check is about wiring.
    torch::NoGradGuard no_grad;
    for (auto& p : model->named_parameters())
      if (p.key().size() >= 4 && p.key().compare(p.key().size() - 4, 4, "bias") == 0) p.value().fill_(0.1);
  }
  require_gradient_everywhere(*model, random_projection_loss(torch::stack(model->forward(input).logits)));
  require_independent_clone(model, [&](Impl& m) { return torch::stack(m.forward(input).logits); });
}
}  // namespace

// The shapes of all seven experiments compose from the headers.
TEST_CASE("MultiTaskModel in the seven experiment shapes") {
  SECTION("E0a / E0b: single task over an identity shared bottom") {
    for (const char* task : {"ctr", "cvr"}) {
      SharedBottomModel model(SharedBottomModelOptions(backbone_options(), SharedBottomOptions(0, 0), {task}));
      require_working_model(model, {task});
    }
  }
  SECTION("E1 / E2: shared bottom, two heads") {
    SharedBottomModel model(
        SharedBottomModelOptions(backbone_options(), SharedBottomOptions(0, 0).hidden_dims({10}), kCtrCvr)
            .tower_hidden_dims({6}));
    require_working_model(model, kCtrCvr);
    REQUIRE(printed(model) == "mtl::MultiTaskModel(tasks=[ctr, cvr])");
  }
  SECTION("E3: MMoE") {
    MMoEModel model(MMoEModelOptions(backbone_options(),
                                     MMoEOptions(0, 0).experts(std::vector<ExpertOptions>(4, ExpertOptions::mlp({16}))),
                                     kCtrCvr));
    require_working_model(model, kCtrCvr);
  }
  SECTION("E4: homogeneous PLE-Lite") {
    PLEModel model(
        PLEModelOptions(backbone_options(), PLEOptions::homogeneous(0, 2, 4, 1, ExpertOptions::mlp({16})), kCtrCvr));
    require_working_model(model, kCtrCvr);
  }
  SECTION("E5: heterogeneous PLE-Lite with the aligner") {
    PLEModel model(PLEModelOptions(
        backbone_options(),
        PLEOptions(0, 0).shared_experts(hetero_shared()).task_experts(hetero_private()).align_outputs(true), kCtrCvr));
    require_working_model(model, kCtrCvr);
    auto out = model->forward(random_inputs(small_schema(), 8));
    REQUIRE(torch::equal(out.at("cvr"), out.logits[1]));
    REQUIRE_TORCH_ERROR(out.at("ctcvr"), "the model has no task 'ctcvr'; its tasks are: ctr, cvr");
    require_distributions(model->mixer->gate_weights(), {5, 5}, 8);
  }
}

// The towers run side by side as one node (stacked_branches.hpp), with the
// logits and gradients they give one after another.
TEST_CASE("MultiTaskModel towers side by side equal towers one after another") {
  const IntraOpThreads two(2);
  torch::manual_seed(14);
  SharedBottomModel model(
      SharedBottomModelOptions(backbone_options(), SharedBottomOptions(0, 0).hidden_dims({10}), kCtrCvr)
          .task_tower_hidden_dims({{6}, {5, 4}}));
  auto x = random_inputs(small_schema(), 32);
  x.dense.requires_grad_();
  const auto weights = torch::randn({32, 2});
  const auto side_by_side = model->forward(x);
  REQUIRE(side_by_side.logits.size() == 2);
  REQUIRE(side_by_side.logits[1].sizes() == torch::IntArrayRef{32});
  const auto& towers_node = side_by_side.logits[1].grad_fn()->next_edges().at(0).function;
  REQUIRE(towers_node->name().find("StackedBranches") != std::string::npos);
  TaskLogits one_after_another;
  {
    const BranchesOneAfterAnotherGuard guard;
    one_after_another = model->forward(x);
  }
  const auto ours = torch::stack(side_by_side.logits, 1), reference = torch::stack(one_after_another.logits, 1);
  REQUIRE(torch::allclose(ours, reference, 1e-6, 1e-6));
  require_same_gradients((ours * weights).sum(), (reference * weights).sum(), x.dense, model->towers->parameters(),
                         1e-6);
}

// A mixer set for another task count or input width than the model's is refused.
TEST_CASE("MultiTaskModel refuses mismatched settings") {
  auto mmoe = MMoEOptions(0, 3).experts({ExpertOptions::mlp({8})});
  REQUIRE_TORCH_ERROR(MMoEModel(MMoEModelOptions(backbone_options(), mmoe, kCtrCvr)),
                      "the mixer is set for 3 tasks, but the model has 2 tasks");
  REQUIRE_TORCH_ERROR(
      MMoEModel(MMoEModelOptions(backbone_options(), MMoEOptions(99, 0).experts({ExpertOptions::mlp({8})}), kCtrCvr)),
      "the mixer expects input dim 99, but the backbone emits 12");
  REQUIRE_TORCH_ERROR(SharedBottomModel(SharedBottomModelOptions(backbone_options(), SharedBottomOptions(0, 0), {})),
                      "at least one task, but the task list is empty");
  REQUIRE_TORCH_ERROR(
      SharedBottomModel(SharedBottomModelOptions(backbone_options(), SharedBottomOptions(0, 0), {"ctr", "ctr"})),
      "'ctr' appears twice");
}

// Models move with .to(dtype) (ids stay int64) and .to(device).
TEST_CASE("MultiTaskModel moves with .to(dtype) and .to(device)") {
  PLEModel model(PLEModelOptions(
      backbone_options(),
      PLEOptions(0, 0).shared_experts(hetero_shared()).task_experts(hetero_private()).align_outputs(true), kCtrCvr));
  auto input = random_inputs(small_schema(), 16);
  auto float_out = torch::stack(model->forward(input).logits);
  model->to(torch::kDouble);
  for (const auto& p : model->parameters()) REQUIRE(p.scalar_type() == torch::kDouble);
  auto double_out = torch::stack(model->forward({input.sparse_ids, input.dense.to(torch::kDouble)}).logits);
  REQUIRE(double_out.scalar_type() == torch::kDouble);
  REQUIRE(torch::allclose(double_out.to(torch::kFloat), float_out, 1e-4, 1e-5));
  model->to(torch::kFloat);
  model->to(torch::Device(torch::kCPU));
  REQUIRE(torch::allclose(torch::stack(model->forward(input).logits), float_out, 1e-5, 1e-6));
  if (torch::cuda::is_available()) {
    model->to(torch::Device(torch::kCUDA));
    auto cuda_out = torch::stack(model->forward(input.to(torch::Device(torch::kCUDA))).logits);
    REQUIRE(cuda_out.is_cuda());
    REQUIRE(torch::allclose(cuda_out.cpu(), float_out, 1e-4, 1e-5));
  } else {
    WARN("CUDA is not available: the .to(cuda) half of this test did not run");
  }
}

// AITM's transfer (Xi et al., KDD 2021) equals its formula written out with the module's weights:
// p = relu(W_p z_0 + b_p), u in {p, q_1}, w_u = softmax_u(<h1 u, h2 u> / sqrt(d)), z_1 = sum_u w_u h3 u.
TEST_CASE("AdaptiveTransfer equals AITM's formula") {
  torch::manual_seed(21);
  const int64_t d = 6, batch = 5;
  AdaptiveTransfer transfer(AdaptiveTransferOptions(d, 3));
  const std::vector<torch::Tensor> q{torch::randn({batch, d}), torch::randn({batch, d}), torch::randn({batch, d})};
  const auto z = transfer->forward(q);
  REQUIRE(z.size() == 3);
  REQUIRE(torch::equal(z[0], q[0]));
  auto expected = q[0];
  for (size_t t = 1; t < 3; ++t) {
    const auto& s = transfer->steps[t - 1];
    const auto p = torch::relu(torch::matmul(expected, s.transfer->weight.t()) + s.transfer->bias);
    const auto h = s.attention->weight.chunk(3, 0), bias = s.attention->bias.chunk(3, 0);  // h1's, h2's, h3's
    std::vector<torch::Tensor> scores, values;
    for (const auto& u : {p, q[t]}) {
      const auto a = torch::matmul(u, h[0].t()) + bias[0], b = torch::matmul(u, h[1].t()) + bias[1];
      scores.push_back((a * b).sum(1) / std::sqrt(double(d)));
      values.push_back(torch::matmul(u, h[2].t()) + bias[2]);
    }
    const auto w = torch::softmax(torch::stack(scores, 1), 1);
    REQUIRE(torch::allclose(transfer->attention(t, expected, q[t]), w, 1e-6, 1e-7));
    expected = w.select(1, 0).unsqueeze(1) * values[0] + w.select(1, 1).unsqueeze(1) * values[1];
    REQUIRE(torch::allclose(z[t], expected, 1e-5, 1e-6));
  }
  REQUIRE_TORCH_ERROR(AdaptiveTransfer(AdaptiveTransferOptions(d, 1)), "needs at least two, but got 1");
  REQUIRE_TORCH_ERROR(transfer->forward({q[0], q[1]}), "expects 3 task states, but got 2");
}

// In a model, information flows forward only: the CVR logit depends on the CTR tower, the CTR logit not on
// the CVR tower; towers of different widths are refused.
TEST_CASE("MultiTaskModel with AITM's adaptive transfer") {
  torch::manual_seed(22);
  SharedBottomModel model(
      SharedBottomModelOptions(backbone_options(), SharedBottomOptions(0, 0).hidden_dims({10}), kCtrCvr)
          .tower_hidden_dims({6})
          .adaptive_transfer(true));
  require_working_model(model, kCtrCvr);
  const auto out = model->forward(random_inputs(small_schema(), 16));
  const auto ctr_tower = model->towers->ptr<TowerImpl>(0)->hidden->parameters();
  const auto cvr_tower = model->towers->ptr<TowerImpl>(1)->hidden->parameters();
  const auto from_cvr = torch::autograd::grad({out.at("cvr").sum()}, ctr_tower, {}, true, false, true);
  REQUIRE(from_cvr[0].defined());
  REQUIRE(from_cvr[0].abs().sum().item<double>() > 0);
  const auto from_ctr = torch::autograd::grad({out.at("ctr").sum()}, cvr_tower, {}, true, false, true);
  REQUIRE((!from_ctr[0].defined() || from_ctr[0].abs().sum().item<double>() == 0));  // the towers' node gives zeros
  {  // under bf16 autocast (TrainerOptions::amp) the transfer leaves the fused CPU path
    const mtl::train::AutocastGuard autocast(torch::kCPU, true);
    const auto logits = model->forward(random_inputs(small_schema(), 16));
    logits.at("cvr").to(torch::kFloat).sum().backward();
    const auto& g = model->transfer->steps[0].transfer->weight.grad();
    REQUIRE(g.defined());
    REQUIRE(torch::isfinite(g).all().item<bool>());
  }
  REQUIRE_TORCH_ERROR(SharedBottomModel(SharedBottomModelOptions(backbone_options(), SharedBottomOptions(0, 0), kCtrCvr)
                                            .task_tower_hidden_dims({{6}, {5}})
                                            .adaptive_transfer(true)),
                      "needs towers of one width, but task 'ctr' emits 6 and task 'cvr' 5");
}
