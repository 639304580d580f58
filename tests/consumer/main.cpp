// A consumer of the installed package, as a user writes one: an E5-shaped
// model (DeepFM, heterogeneous PLE with the aligner, ESMM v2) trained with the
// dual sparse/dense optimizer on a batch whose labels follow one field, then
// scored in eval mode. Exits non-zero unless the loss falls and the scores
// rank the clicked rows above the others.
#include <mtl/mtl.hpp>
#include <mtl/optim/dual_optimizer.hpp>

#include <iostream>

int main() {
  torch::manual_seed(1);
  mtl::FeatureSchema schema(/*default_embedding_dim=*/8);
  schema.add_sparse("user", 1000).add_sparse("item", 500).add_sparse("category", 20).add_dense("price");
  using mtl::ExpertOptions;
  mtl::PLEModel model(mtl::PLEModelOptions(
      mtl::DeepFMOptions(schema).deep_hidden_dims({64, 32}).fm_projection_dim(8),
      mtl::PLEOptions(/*input_dim=*/0, /*num_tasks=*/2)
          .shared_experts({ExpertOptions::mlp({32}), ExpertOptions::mlp({64, 32}), ExpertOptions::cross(2)})
          .task_experts({{ExpertOptions::cross(2)}, {ExpertOptions::mlp({16})}})
          .expert_dim(16)
          .align_outputs(true),
      {"ctr", "cvr"}));
  mtl::optim::DualSparseDenseOptimizer optimizer(
      *model, mtl::optim::DualSparseDenseOptions().sparse_lr(0.01).dense_lr(0.005).total_steps(60).warmup_steps(5));
  mtl::ESMMLoss esmm(mtl::ESMMLossOptions().version(mtl::ESMMVersion::v2).lambda_cvr_aux(0.1));

  const int64_t rows = 512;
  const auto category = torch::randint(20, {rows}, torch::kLong);
  const mtl::FeatureInputs batch{
      torch::stack({torch::randint(1000, {rows}, torch::kLong), torch::randint(500, {rows}, torch::kLong), category}, 1),
      torch::rand({rows, 1})};
  const auto click = (category < 6).to(torch::kFloat);  // the first six categories are clicked
  const auto conversion = click * (category < 3).to(torch::kFloat);

  double first = 0, last = 0;
  model->train();
  for (int step = 0; step < 60; ++step) {
    optimizer.zero_grad();
    const auto logits = model->forward(batch);
    auto loss = esmm->forward(logits.at("ctr"), logits.at("cvr"), click, conversion).total;
    loss.backward();
    optimizer.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  model->eval();
  torch::NoGradGuard no_grad;
  const auto p_ctr = torch::sigmoid(model->forward(batch).at("ctr"));
  const double clicked = p_ctr.masked_select(click > 0).mean().item<double>();
  const double unclicked = p_ctr.masked_select(click == 0).mean().item<double>();
  std::cout << "consumer: mtl " << mtl::version() << ", loss " << first << " -> " << last
            << ", mean p_ctr clicked " << clicked << " vs not " << unclicked << "\n";
  if (!(last < 0.5 * first) || !(clicked > unclicked + 0.5)) {
    std::cerr << "consumer: the E5-shaped model did not learn its batch\n";
    return 1;
  }
  return 0;
}
