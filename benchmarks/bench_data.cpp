// Data-path throughput in rows/s: the synthetic generator on one core, CSV
// parsing, binary-cache loading, and exact AUC over 10M rows.
#include <mtl/data/split_files.hpp>
#include <mtl/data/synthetic.hpp>
#include <mtl/metrics/auc.hpp>

#include <benchmark/benchmark.h>

#include <filesystem>
#include <fstream>
#include <random>

namespace {

using namespace mtl::data;

void BM_SyntheticGenerator(benchmark::State& state) {
  SyntheticGenerator gen;  // default: 100k users, 200k items
  const int64_t rows = state.range(0);
  int64_t first = 0;
  for (auto _ : state) {
    auto ds = gen.generate(Split::train, rows, first);
    benchmark::DoNotOptimize(ds.click.data());
    first += rows;
  }
  state.SetItemsProcessed(state.iterations() * rows);
}

/// A processed-Ali-CCP-layout CSV of `rows` synthetic rows, written once.
std::string aliccp_csv(int64_t rows) {
  const auto path = std::filesystem::temp_directory_path() / ("mtl_bench_aliccp_" + std::to_string(rows) + ".csv");
  if (std::filesystem::exists(path)) return path.string();
  auto ds = SyntheticGenerator().generate(Split::train, rows);
  const auto layout = CsvLayout::aliccp();
  std::ofstream out(path);
  out << "click,purchase";
  for (const auto& c : layout.sparse) out << "," << c;
  for (const auto& c : layout.dense) out << "," << c;
  out << "\n";
  for (int64_t r = 0; r < rows; ++r) {
    out << ds.click[r] << "," << ds.conversion[r];
    for (int j = 0; j < 23; ++j) out << "," << ds.ids[r * 23 + j];
    for (int j = 0; j < 8; ++j) out << "," << ds.dense[r * 8 + j];
    out << "\n";
  }
  return path.string();
}

void BM_CsvParse(benchmark::State& state) {
  const auto path = aliccp_csv(state.range(0));
  for (auto _ : state) {
    int64_t rows = 0;
    read_csv(path, CsvLayout::aliccp(), [&](const ParsedRow&) { ++rows; });
    benchmark::DoNotOptimize(rows);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

void BM_CacheLoad(benchmark::State& state) {
  const auto path = aliccp_csv(state.range(0));
  const auto cache_dir = std::filesystem::temp_directory_path() / "mtl_bench_cache";
  load_csv_splits({path, "", ""}, CsvLayout::aliccp(), {}, cache_dir.string());  // writes the cache
  for (auto _ : state) {
    auto splits = load_csv_splits({path, "", ""}, CsvLayout::aliccp(), {}, cache_dir.string());
    benchmark::DoNotOptimize(splits.train.ids.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

void BM_Auc(benchmark::State& state) {
  const int64_t n = state.range(0);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<float> scores(n), labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = u(rng) < 0.05f, scores[i] = u(rng) + 0.3f * labels[i];
  for (auto _ : state) benchmark::DoNotOptimize(mtl::metrics::roc_auc(scores, labels).value);
  state.SetItemsProcessed(state.iterations() * n);
}

}  // namespace

BENCHMARK(BM_SyntheticGenerator)->Arg(1'000'000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CsvParse)->Arg(200'000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CacheLoad)->Arg(200'000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Auc)->Arg(10'000'000)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
