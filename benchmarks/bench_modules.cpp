// Forward + backward time of the model shapes of the chain at batch 1024, on
// an Ali-CCP-sized schema (23 sparse fields, 8 dense), in samples/s.
#include <mtl/mtl.hpp>

#include <benchmark/benchmark.h>

#include <thread>

namespace {

mtl::FeatureSchema aliccp_sized_schema() {
  mtl::FeatureSchema schema(/*default_embedding_dim=*/8);
  const int64_t vocab[] = {200000, 100,   10,   10,  10,   10,   10, 10,  10,  300000, 10000, 100000,
                           50000,  80000, 1000, 100, 1000, 5000, 10, 500, 500, 500,    500};
  for (int i = 0; i < 23; ++i) schema.add_sparse("f" + std::to_string(i), vocab[i]);
  for (int i = 0; i < 8; ++i) schema.add_dense("d" + std::to_string(i));
  return schema;
}

mtl::FeatureInputs random_batch(const mtl::FeatureSchema& schema, int64_t batch) {
  std::vector<torch::Tensor> columns;
  for (const auto& f : schema.sparse_fields()) columns.push_back(torch::randint(f.vocab_size, {batch, 1}));
  return {torch::cat(columns, 1), torch::randn({batch, schema.num_dense()})};
}

mtl::DeepFMOptions backbone() { return mtl::DeepFMOptions(aliccp_sized_schema()).deep_hidden_dims({256, 128}); }

template <class Model>
void run_steps(benchmark::State& state, Model model) {
  torch::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));
  const int64_t batch = 1024;
  auto input = random_batch(aliccp_sized_schema(), batch);
  auto click = torch::bernoulli(torch::full({batch}, 0.2));
  auto conversion = click * torch::bernoulli(torch::full({batch}, 0.1));
  mtl::ESMMLoss loss;
  for (auto _ : state) {
    model->zero_grad();
    auto logits = model->forward(input);
    loss->forward(logits.logits[0], logits.logits.back(), click, conversion).total.backward();
  }
  state.SetItemsProcessed(state.iterations() * batch);
}

const std::vector<std::string> kCtrCvr{"ctr", "cvr"};

void BM_SharedBottom_E1(benchmark::State& state) {
  run_steps(state, mtl::SharedBottomModel(mtl::SharedBottomModelOptions(
                       backbone(), mtl::SharedBottomOptions(0, 0).hidden_dims({128}), kCtrCvr)));
}
void BM_MMoE_E3(benchmark::State& state) {
  run_steps(state, mtl::MMoEModel(mtl::MMoEModelOptions(backbone(),
                                                        mtl::MMoEOptions(0, 0).experts(std::vector<mtl::ExpertOptions>(
                                                            4, mtl::ExpertOptions::mlp({128}))),
                                                        kCtrCvr)));
}
void BM_PLE_hetero_E5(benchmark::State& state) {
  using mtl::ExpertOptions;
  run_steps(state, mtl::PLEModel(mtl::PLEModelOptions(
                       backbone(),
                       mtl::PLEOptions(0, 0)
                           .shared_experts({ExpertOptions::mlp({128}), ExpertOptions::mlp({256, 128}),
                                            ExpertOptions::cross(2), ExpertOptions::cross(3)})
                           .task_experts({{ExpertOptions::cross(2)}, {ExpertOptions::mlp({64})}})
                           .align_outputs(true),
                       kCtrCvr)));
}

}  // namespace

BENCHMARK(BM_SharedBottom_E1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MMoE_E3)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_PLE_hetero_E5)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
