// Quickstart: DeepFM + heterogeneous PLE-Lite + ESMM v2 trained for 200 steps
// on random data whose labels follow hidden per-id effects; the loss falls.
#include <mtl/mtl.hpp>

#include <fmt/core.h>
#include <torch/optim/adam.h>

#include <algorithm>
#include <thread>

int main() {
  torch::manual_seed(7);
  torch::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));

  mtl::FeatureSchema schema(/*default_embedding_dim=*/8);
  schema.add_sparse("user", 2000).add_sparse("item", 800).add_sparse("category", 30).add_dense("price");

  // Clicks depend on user and item, purchases on category and price.
  const int64_t rows = 50000;
  auto ids = torch::stack({torch::randint(2000, {rows}), torch::randint(800, {rows}), torch::randint(30, {rows})}, 1);
  auto price = torch::randn({rows, 1});
  auto ctr_logit = torch::randn({2000}).index({ids.select(1, 0)}) + torch::randn({800}).index({ids.select(1, 1)}) - 2.0;
  auto cvr_logit = 1.5 * torch::randn({30}).index({ids.select(1, 2)}) - price.squeeze(1) - 1.0;
  auto click = torch::bernoulli(torch::sigmoid(ctr_logit));
  auto conversion = click * torch::bernoulli(torch::sigmoid(cvr_logit));
  fmt::print("data: {} rows, CTR {:.3f}, CVR on clicks {:.3f}\n", rows, click.mean().item<double>(),
             (conversion.sum() / click.sum()).item<double>());

  using mtl::ExpertOptions;
  mtl::PLEModel model(mtl::PLEModelOptions(
      mtl::DeepFMOptions(schema).deep_hidden_dims({128, 64}).fm_projection_dim(16).sparse_grad(false),
      mtl::PLEOptions(/*input_dim=*/0, /*num_tasks=*/2)
          .shared_experts({ExpertOptions::mlp({64}), ExpertOptions::mlp({128, 64}), ExpertOptions::cross(2)})
          .task_experts({{ExpertOptions::cross(2)}, {ExpertOptions::mlp({32})}})
          .expert_dim(32)
          .align_outputs(true),
      {"ctr", "cvr"}));
  mtl::ESMMLoss loss_fn(mtl::ESMMLossOptions().version(mtl::ESMMVersion::v2).lambda_cvr_aux(0.1));
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(2e-3));
  fmt::print("model: {} parameters\n", [&] {
    int64_t n = 0;
    for (const auto& p : model->parameters()) n += p.numel();
    return n;
  }());

  const int64_t steps = 200, batch = 1024, window = 20;
  double window_loss = 0.0, first_window = 0.0, last_window = 0.0;
  for (int64_t step = 1; step <= steps; ++step) {
    auto rows_of_batch = torch::randint(rows, {batch});
    auto logits = model->forward({ids.index({rows_of_batch}), price.index({rows_of_batch})});
    auto terms = loss_fn->forward(logits.at("ctr"), logits.at("cvr"), click.index({rows_of_batch}),
                                  conversion.index({rows_of_batch}));
    optimizer.zero_grad();
    terms.total.backward();
    optimizer.step();
    window_loss += terms.total.item<double>();
    if (step % window == 0) {
      const double mean = window_loss / window;
      if (step == window) first_window = mean;
      last_window = mean;
      fmt::print("step {:4d}  loss {:.4f}  (ctr {:.4f}, ctcvr {:.4f}, cvr_aux {:.4f})\n", step, mean,
                 terms.ctr.item<double>(), terms.ctcvr.item<double>(), terms.cvr_aux.item<double>());
      window_loss = 0.0;
    }
  }
  fmt::print("mean loss over steps 1-{}: {:.4f}; over steps {}-{}: {:.4f}\n", window, first_window, steps - window + 1,
             steps, last_window);
  if (!(last_window < first_window)) {
    fmt::print("the loss did not fall\n");
    return 1;
  }
  return 0;
}
