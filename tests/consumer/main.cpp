// A consumer of the installed package, as a user writes one: an E5-shaped
// model (DeepFM, heterogeneous PLE with the aligner, ESMM v2) trained with the
// dual sparse/dense optimizer on a batch whose labels follow one field, then
// scored in eval mode, then written to a model bundle and served by a
// Predictor from two threads at once; then a shared-bottom model with AITM's
// transfer trained under uncertainty-weighted ESMM terms. Exits non-zero
// unless the losses fall, the scores rank the clicked rows above the others,
// the Predictor gives the model's own scores and the learned weights move.
#include <mtl/mtl.hpp>
#include <mtl/optim/dual_optimizer.hpp>
#include <mtl/serving/predictor.hpp>
#include <mtl/train/loss_weighting.hpp>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <thread>

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
      torch::stack({torch::randint(1000, {rows}, torch::kLong), torch::randint(500, {rows}, torch::kLong), category},
                   1),
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
  std::cout << "consumer: mtl " << mtl::version() << ", loss " << first << " -> " << last << ", mean p_ctr clicked "
            << clicked << " vs not " << unclicked << "\n";
  if (!(last < 0.5 * first) || !(clicked > unclicked + 0.5)) {
    std::cerr << "consumer: the E5-shaped model did not learn its batch\n";
    return 1;
  }

  // Serve it: the same model as a ModelSpec, one bundle file, a Predictor called from two threads.
  mtl::serving::ModelBundle bundle;
  bundle.model.mixer = "ple";
  bundle.model.deep_hidden_dims = {64, 32};
  bundle.model.fm_projection_dim = 8;
  bundle.model.shared_experts = {ExpertOptions::mlp({32}), ExpertOptions::mlp({64, 32}), ExpertOptions::cross(2)};
  bundle.model.task_experts = {{ExpertOptions::cross(2)}, {ExpertOptions::mlp({16})}};
  bundle.model.expert_dim = 16;
  bundle.model.align_outputs = true;
  bundle.schema = schema;  // no vocabularies: the ids are rows already
  bundle.weights = mtl::io::module_state(*model);
  const auto path =
      (std::filesystem::temp_directory_path() / ("mtl_consumer_" + std::to_string(::getpid()) + ".mtl")).string();
  mtl::serving::save_bundle(path, bundle);
  const mtl::serving::Predictor predictor(path);
  std::filesystem::remove(path);
  mtl::serving::RawRows request;
  const char* names[] = {"user", "item", "category"};
  for (int64_t j = 0; j < 3; ++j) {
    const auto column = batch.sparse_ids.select(1, j).contiguous();
    request.sparse[names[j]].assign(column.data_ptr<int64_t>(), column.data_ptr<int64_t>() + rows);
  }
  const auto price = batch.dense.select(1, 0).contiguous();
  request.dense["price"].assign(price.data_ptr<float>(), price.data_ptr<float>() + rows);
  std::vector<float> served[2];
  std::thread callers[2];
  for (int t = 0; t < 2; ++t) callers[t] = std::thread([&, t] { served[t] = predictor.predict(request).p_ctr; });
  for (auto& caller : callers) caller.join();
  double worst = 0;
  for (int64_t i = 0; i < rows; ++i)
    worst = std::max(worst, std::abs(static_cast<double>(served[0][i]) - p_ctr[i].item<double>()));
  std::cout << "consumer: served " << rows << " rows from two threads, largest difference to the model " << worst
            << "\n";
  if (served[0] != served[1] || !(worst < 1e-5)) {
    std::cerr << "consumer: the Predictor does not give the model's scores\n";
    return 1;
  }

  // AITM between the towers, ESMM's terms weighed by learned log-variances.
  const torch::AutoGradMode with_gradients(true);  // the scoring above turned them off
  mtl::SharedBottomModel aitm(
      mtl::SharedBottomModelOptions(mtl::DeepFMOptions(schema).deep_hidden_dims({32}).fm_projection_dim(8),
                                    mtl::SharedBottomOptions(0, 0).hidden_dims({32}), {"ctr", "cvr"})
          .tower_hidden_dims({16})
          .adaptive_transfer(true));
  mtl::optim::DualSparseDenseOptimizer aitm_optimizer(
      *aitm, mtl::optim::DualSparseDenseOptions().sparse_lr(0.01).dense_lr(0.005).total_steps(60).warmup_steps(5));
  const mtl::train::Objective objective({"ctr", "cvr"}, mtl::train::ObjectiveOptions().use_esmm(true));
  mtl::train::LossWeighting weighting(
      objective, mtl::train::LossWeightingOptions().kind(mtl::train::LossWeightingKind::uncertainty).lr(0.05));
  const mtl::data::TrainingBatch labelled{batch, click, conversion};
  double aitm_first = 0, aitm_last = 0;
  for (int step = 0; step < 60; ++step) {
    const auto loss = objective(aitm->forward(batch), labelled);
    aitm_optimizer.zero_grad();
    weighting.total(loss).backward();
    aitm_optimizer.step();
    weighting.update(loss);
    (step == 0 ? aitm_first : aitm_last) = loss.total.item<double>();
  }
  const double ctr_weight = weighting.weights().front().second;
  std::cout << "consumer: AITM under uncertainty weighting, loss " << aitm_first << " -> " << aitm_last
            << ", ctr weight " << ctr_weight << "\n";
  if (!(aitm_last < 0.5 * aitm_first) || ctr_weight == 1.0) {
    std::cerr << "consumer: the AITM model did not learn its batch, or the weights did not move\n";
    return 1;
  }
  return 0;
}
