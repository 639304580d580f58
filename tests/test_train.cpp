// Tests of the training engine: autocast guard, objectives, expert health,
// checkpoints (readable by Python's torch.load), and the trainer end to end,
// including a resumed run that equals an uninterrupted one.
#include "test_helpers.hpp"

#include <mtl/data/synthetic.hpp>
#include <mtl/io/checkpoint.hpp>
#include <mtl/train/autocast.hpp>
#include <mtl/train/batch_share.hpp>
#include <mtl/train/expert_health.hpp>
#include <mtl/train/loss_weighting.hpp>
#include <mtl/train/objective.hpp>
#include <mtl/train/trainer.hpp>

#include <sys/resource.h>

#include <csignal>
#include <filesystem>
#include <fstream>

using namespace mtl;
using namespace mtl::train;
using namespace mtl::io;
namespace fs = std::filesystem;
using mtl_test::ScratchDir;

namespace {
std::vector<nlohmann::json> read_jsonl(const std::string& file) {
  std::vector<nlohmann::json> out;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}
}  // namespace

// bf16 autocast on CPU inside the guard, the previous state after it.
TEST_CASE("AutocastGuard on CPU") {
  auto a = torch::randn({4, 4});
  REQUIRE(torch::mm(a, a).scalar_type() == torch::kFloat);
  {
    AutocastGuard on(torch::kCPU, true);
    REQUIRE(torch::mm(a, a).scalar_type() == torch::kBFloat16);
    {
      AutocastGuard off(torch::kCPU, false);  // a disabled guard changes nothing
      REQUIRE(torch::mm(a, a).scalar_type() == torch::kBFloat16);
    }
  }
  REQUIRE(torch::mm(a, a).scalar_type() == torch::kFloat);
}

// The task list and ESMM switch pick the loss terms; without ESMM the CVR term is averaged over the
// clicked rows or over all rows, and a CVR-only model always averages over the clicked rows.
TEST_CASE("Objective terms per experiment shape") {
  data::TrainingBatch batch{{}, torch::tensor({1.f, 0.f, 1.f}), torch::tensor({1.f, 0.f, 0.f})};
  TaskLogits logits{{"ctr", "cvr"}, {torch::tensor({0.5f, -1.f, 2.f}), torch::tensor({0.1f, 0.2f, -0.3f})}};
  auto names = [](const LossTerms& t) {
    std::vector<std::string> n;
    for (const auto& [k, v] : t.terms) n.push_back(k);
    return n;
  };
  REQUIRE(names(Objective({"ctr", "cvr"}, ObjectiveOptions().use_esmm(true))(logits, batch)) ==
          std::vector<std::string>{"ctr", "ctcvr", "cvr_aux"});
  REQUIRE(names(Objective({"ctr", "cvr"}, ObjectiveOptions().use_esmm(true).esmm_version(ESMMVersion::v1))(
              logits, batch)) == std::vector<std::string>{"ctr", "ctcvr"});
  auto naive = Objective({"ctr", "cvr"})(logits, batch);
  REQUIRE(names(naive) == std::vector<std::string>{"ctr", "cvr"});
  REQUIRE(naive.total.item<float>() == Approx((naive.terms[0].second + naive.terms[1].second).item<float>()));
  // Over all rows, the clicked rows' BCE sums to the same as their mean times 2 clicked / 3 rows.
  const float clicked_mean = clicked_cvr_loss(logits.logits[1], batch.conversion, batch.click).item<float>();
  REQUIRE(naive.terms[1].second.item<float>() == Approx(clicked_mean));
  const float per_row =
      torch::binary_cross_entropy_with_logits(logits.logits[1], batch.conversion, {}, {}, at::Reduction::None)[0]
          .item<float>() +
      torch::binary_cross_entropy_with_logits(logits.logits[1], batch.conversion, {}, {}, at::Reduction::None)[2]
          .item<float>();
  auto all_rows =
      Objective({"ctr", "cvr"}, ObjectiveOptions().cvr_denominator(CvrDenominator::all_rows))(logits, batch);
  REQUIRE(all_rows.terms[1].second.item<float>() == Approx(per_row / 3));
  REQUIRE(all_rows.terms[0].second.item<float>() == Approx(naive.terms[0].second.item<float>()));
  data::TrainingBatch no_click{{}, torch::zeros({3}), torch::zeros({3})};
  REQUIRE(Objective({"ctr", "cvr"}, ObjectiveOptions().cvr_denominator(CvrDenominator::all_rows))(logits, no_click)
              .terms[1]
              .second.item<float>() == 0.f);
  TaskLogits cvr_only{{"cvr"}, {logits.logits[1]}};
  REQUIRE(Objective({"cvr"}, ObjectiveOptions().cvr_denominator(CvrDenominator::all_rows))(cvr_only, batch)
              .total.item<float>() == Approx(clicked_mean));
  REQUIRE_TORCH_ERROR(Objective({"ctr"}, ObjectiveOptions().use_esmm(true)),
                      "ESMM needs both a 'ctr' and a 'cvr' head");
  // ESCM2: ips adds a counterfactual term; dr also an imputation term, from the model's "imputation" head.
  const auto escm2 = [](ESMMCounterfactual kind) {
    return ObjectiveOptions().use_esmm(true).esmm_version(ESMMVersion::v1).counterfactual(kind);
  };
  REQUIRE(names(Objective({"ctr", "cvr"}, escm2(ESMMCounterfactual::ips))(logits, batch)) ==
          std::vector<std::string>{"ctr", "ctcvr", "counterfactual"});
  TaskLogits with_imputation{{"ctr", "cvr", "imputation"},
                             {logits.logits[0], logits.logits[1], torch::tensor({0.3f, -0.2f, 0.0f})}};
  REQUIRE(names(Objective({"ctr", "cvr", "imputation"}, escm2(ESMMCounterfactual::dr))(with_imputation, batch)) ==
          std::vector<std::string>{"ctr", "ctcvr", "counterfactual", "imputation"});
  REQUIRE_TORCH_ERROR(Objective({"ctr", "cvr"}, escm2(ESMMCounterfactual::dr)),
                      "needs a model head named 'imputation'");
  REQUIRE_TORCH_ERROR(Objective({"ctr", "cvr", "imputation"}, escm2(ESMMCounterfactual::ips)),
                      "which only ESCM2's dr risk reads");
  REQUIRE_TORCH_ERROR(Objective({"ctr", "cvr"}, ObjectiveOptions().counterfactual(ESMMCounterfactual::ips)),
                      "an ESMM option, but ESMM is off");
}

// Shares of a batch whose terms divide by the whole batch's counts over the
// number of shares: the shares' mean loss is the whole batch's loss, in
// every experiment shape, with shares of unequal size and a share without a click.
TEST_CASE("Objective over shares of a batch equals the whole batch's") {
  const auto click = torch::tensor({1.f, 0.f, 0.f, 1.f, 0.f, 0.f, 0.f, 0.f, 1.f, 1.f, 0.f});
  const auto conversion = torch::tensor({1.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 1.f, 0.f});
  const data::TrainingBatch batch{{}, click, conversion};
  const auto ctr = torch::randn({11}), cvr = torch::randn({11});
  const std::vector<std::pair<std::vector<std::string>, ObjectiveOptions>> shapes{
      {{"ctr"}, {}},
      {{"cvr"}, {}},
      {{"ctr", "cvr"}, {}},
      {{"ctr", "cvr"}, ObjectiveOptions().cvr_denominator(CvrDenominator::all_rows)},
      {{"ctr", "cvr"}, ObjectiveOptions().use_esmm(true).esmm_version(ESMMVersion::v1)},
      {{"ctr", "cvr"}, ObjectiveOptions().use_esmm(true).lambda_cvr_aux(0.3)}};
  for (const auto& [tasks, options] : shapes) {
    INFO("tasks " << tasks.size() << ", esmm " << options.use_esmm());
    const Objective objective(tasks, options);
    const auto logits_of = [&](const data::TrainingBatch& b, int64_t begin) {
      TaskLogits l;
      for (const auto& t : tasks)
        l.tasks.push_back(t), l.logits.push_back((t == "ctr" ? ctr : cvr).narrow(0, begin, b.size()));
      return l;
    };
    const auto whole = objective(logits_of(batch, 0), batch);
    const int64_t shares = 3;  // 4, 4 and 3 rows; the second share has no click
    const auto denominators = share_denominators(batch, shares);
    double mean = 0;
    std::vector<double> term_means(whole.terms.size(), 0.0);
    for (int64_t r = 0, begin = 0; r < shares; ++r) {
      const auto share = share_of(batch, r, shares);
      const auto loss = objective(logits_of(share, begin), share, denominators);
      mean += loss.total.item<double>() / shares;
      for (size_t i = 0; i < loss.terms.size(); ++i) term_means[i] += loss.terms[i].second.item<double>() / shares;
      begin += share.size();
    }
    REQUIRE(mean == Approx(whole.total.item<double>()).epsilon(1e-6));
    for (size_t i = 0; i < whole.terms.size(); ++i)
      REQUIRE(term_means[i] == Approx(whole.terms[i].second.item<double>()).epsilon(1e-6));
  }
  REQUIRE(share_of(batch, 1, 3).click.sum().item<float>() == 0.f);
  REQUIRE_TORCH_ERROR(share_of(batch, 3, 3), "share_range expects a rank in [0, 3), but got 3");
}

// Gini is 0 for equal shares and (n-1)/n when one expert takes all; dead and
// monopolising experts are named; a gate that gives every row the same weights
// takes nothing from its input and is not healthy, however even its shares.
TEST_CASE("expert health statistics") {
  REQUIRE(gini({0.25, 0.25, 0.25, 0.25}) == Approx(0.0).margin(1e-12));
  REQUIRE(gini({0, 0, 0, 1}) == Approx(0.75));
  REQUIRE(entropy({0.5, 0.5}) == Approx(std::log(2.0)));
  ExpertHealth health({"ctr", "cvr"}, {{"a", "b", "c"}, {"a", "b", "c"}}, {"a", "b", "c"});
  auto ctr = torch::tensor({{0.95, 0.04, 0.01}, {0.93, 0.05, 0.02}});
  auto cvr = torch::tensor({{0.6, 0.2, 0.2}, {0.1, 0.5, 0.4}});
  ExpertOutputs outputs{torch::full({2, 3, 4}, 2.0), torch::ones({2, 3, 4})};
  health.add({ctr, cvr}, outputs);
  auto records = health.records(/*step=*/7);
  REQUIRE(records.size() == 5);
  REQUIRE(records[0]["task"] == "ctr");
  REQUIRE(records[0]["monopolising_experts"] == std::vector<std::string>{"a"});
  REQUIRE(records[0]["dead_experts"] == std::vector<std::string>{"b", "c"});
  REQUIRE(records[0]["healthy"] == false);
  REQUIRE(records[1]["healthy"] == true);
  REQUIRE(records[1]["gini"].get<double>() < 0.1);
  const double mean_row_entropy = (entropy({0.6, 0.2, 0.2}) + entropy({0.1, 0.5, 0.4})) / 2;
  REQUIRE(records[1]["mean_row_entropy"].get<double>() == Approx(mean_row_entropy));
  REQUIRE(records[1]["input_dependence"].get<double>() == Approx(entropy({0.35, 0.35, 0.3}) - mean_row_entropy));
  REQUIRE(records[2]["rms_before_aligner"].get<double>() == Approx(2.0));
  REQUIRE(records[2]["rms_after_aligner"].get<double>() == Approx(1.0));

  ExpertHealth constant({"ctr"}, {{"a", "b", "c"}}, {});
  constant.add({torch::tensor({{0.35, 0.35, 0.3}, {0.35, 0.35, 0.3}})}, {});
  const auto ignoring = constant.records(/*step=*/1).front();
  REQUIRE(ignoring["input_dependence"].get<double>() == Approx(0.0).margin(1e-12));
  REQUIRE(ignoring["gini"].get<double>() < 0.1);
  REQUIRE(ignoring["healthy"] == false);
}

// A PLE records its expert outputs on request; the aligner brings each expert's RMS to about its scale.
TEST_CASE("PLE records expert outputs for health") {
  PLE ple(PLEOptions(12, 2)
              .shared_experts({ExpertOptions::mlp({16}), ExpertOptions::cross(2)})
              .task_experts({{ExpertOptions::cross(1)}, {ExpertOptions::mlp({8})}})
              .expert_dim(8)
              .align_outputs(true));
  ple->forward(torch::randn({4, 12}));
  REQUIRE_FALSE(ple->recorded_expert_outputs().raw.defined());
  ple->record_expert_outputs(true);
  ple->forward(torch::randn({64, 12}) * 10);
  const auto& rec = ple->recorded_expert_outputs();
  REQUIRE(rec.raw.sizes() == torch::IntArrayRef{64, 4, 8});
  auto rms = rec.aligned.pow(2).mean(torch::IntArrayRef{0, 2}).sqrt();
  REQUIRE(torch::allclose(rms, torch::ones({4}), 1e-2, 1e-2));
  REQUIRE(ple->expert_names() ==
          std::vector<std::string>{"shared_0:mlp[16]", "shared_1:cross(2)", "task0_0:cross(1)", "task1_0:mlp[8]"});
}

// Checkpoints round-trip, name what is missing or misshapen, and refuse a truncated file.
TEST_CASE("tensor-dict checkpoints") {
  ScratchDir tmp("ckpt");
  Tower tower(TowerOptions(4).hidden_dims({3}));
  save_tensor_dict(tmp / "t.pt", module_state(*tower));
  Tower other(TowerOptions(4).hidden_dims({3}));
  load_module_state(*other, load_tensor_dict(tmp / "t.pt"));
  auto x = torch::randn({2, 4});
  REQUIRE(torch::equal(tower->forward(x), other->forward(x)));
  Tower wider(TowerOptions(4).hidden_dims({5}));
  REQUIRE_TORCH_ERROR(load_module_state(*wider, load_tensor_dict(tmp / "t.pt"), "", "t.pt"),
                      "t.pt: tensor 'hidden.layers.0.weight' has shape [3, 4], but the model expects [5, 4]");
  Tower deeper(TowerOptions(4).hidden_dims({3, 2}));
  REQUIRE_TORCH_ERROR(load_module_state(*deeper, load_tensor_dict(tmp / "t.pt"), "", "t.pt"),
                      "t.pt has no tensor 'hidden.layers.1.weight'");
  fs::resize_file(tmp / "t.pt", fs::file_size(tmp / "t.pt") / 2);
  REQUIRE_TORCH_ERROR(load_tensor_dict(tmp / "t.pt"), "is not a readable tensor dict");
  REQUIRE(tensor_bytes(bytes_tensor(std::string("x\0y", 3))) == std::string("x\0y", 3));
}

namespace {
/// Flips one byte of `file` inside the first occurrence of `pattern`.
void flip_byte_inside(const std::string& file, const std::string& pattern) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto at = bytes.find(pattern);
  REQUIRE(at != std::string::npos);
  f.seekp(static_cast<std::streamoff>(at + pattern.size() / 2));
  f.put(static_cast<char>(bytes[at + pattern.size() / 2] ^ 0x10));
}
}  // namespace

// A flipped bit in a tensor's bytes fails the checksum; a missing or
// damaged last checkpoint falls back to the previous one; none usable is an error.
TEST_CASE("checkpoint checksums and the previous-checkpoint fallback") {
  ScratchDir tmp("ckpt_damage");
  const auto last = tmp / "last.pt", previous = tmp / "prev.pt";
  auto dict_of = [](float value) {
    TensorDict d;
    d.insert("w", torch::full({64}, value));
    return d;
  };
  save_keeping_previous(last, previous, dict_of(1.5f));
  REQUIRE_FALSE(fs::exists(previous));
  save_keeping_previous(last, previous, dict_of(2.5f));
  REQUIRE(load_tensor_dict(previous).at("w")[0].item<float>() == 1.5f);
  REQUIRE_FALSE(load_tensor_dict(last).contains(kChecksumKey));  // checked and dropped on load

  const float pattern_value = 2.5f;  // 64 copies of its bytes lie in the file
  std::string pattern;
  for (int i = 0; i < 4; ++i) pattern.append(reinterpret_cast<const char*>(&pattern_value), sizeof(float));
  flip_byte_inside(last, pattern);
  REQUIRE_TORCH_ERROR(load_tensor_dict(last), "last.pt' is corrupted: its checksum does not match its contents");

  std::vector<std::string> warnings;
  auto warn = [&](const std::string& w) { warnings.push_back(w); };
  auto loaded = load_first_good({last, previous}, warn);
  REQUIRE(loaded.path == previous);
  REQUIRE(loaded.tensors.at("w")[0].item<float>() == 1.5f);
  REQUIRE(warnings.size() == 1);
  fs::remove(last);  // as after a kill between moving the last checkpoint aside and writing the new one
  REQUIRE(load_first_good({last, previous}, warn).path == previous);
  fs::resize_file(previous, fs::file_size(previous) / 2);
  REQUIRE_TORCH_ERROR(load_first_good({last, previous}, warn), "no usable checkpoint among the ones found");
}

// Writes that fail (here: past the file-size limit, as on a full disk) throw
// StorageError naming the file, and leave the previous content whole.
TEST_CASE("failed writes are StorageErrors that keep the old file") {
  ScratchDir tmp("storage");
  const auto file = tmp / "result.txt";
  atomic_write(file, std::string("finished result\n"));
  rlimit saved{};
  REQUIRE(getrlimit(RLIMIT_FSIZE, &saved) == 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);  // so write() fails with EFBIG instead of killing us
  rlimit small = saved;
  small.rlim_cur = 4096;
  REQUIRE(setrlimit(RLIMIT_FSIZE, &small) == 0);
  std::string message;
  try {
    atomic_write(file, std::string(100000, 'x'));
  } catch (const StorageError& e) {
    message = e.what();
  }
  std::string append_message;
  try {
    append_line(file, std::string(100000, 'y'));
  } catch (const StorageError& e) {
    append_message = e.what();
  }
  REQUIRE(setrlimit(RLIMIT_FSIZE, &saved) == 0);
  std::signal(SIGXFSZ, old_handler);
  INFO(message);
  REQUIRE(message.find("writing '" + file + ".tmp.") == 0);
  REQUIRE(message.find("File too large") != std::string::npos);
  REQUIRE(append_message.find("appending to '" + file + "' failed") == 0);
  std::ifstream in(file);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(content.rfind("finished result\n", 0) == 0);
  size_t files = 0;
  for (const auto& entry : fs::directory_iterator(tmp.path)) files += entry.is_regular_file();
  REQUIRE(files == 1);  // no temporary left behind

  const auto not_a_folder = tmp.write("plain_file", "x");
  try {
    create_output_dir(not_a_folder + "/run");
    FAIL("created a folder below a file");
  } catch (const StorageError& e) {
    REQUIRE(std::string(e.what()).find("cannot create the output folder '" + not_a_folder + "/run'") == 0);
  }
}

namespace {
/// A small E5-shaped experiment on synthetic data.
struct SmallRun {
  data::SyntheticGenerator gen{data::SyntheticOptions().num_users(3000).num_items(3000)};
  data::Dataset train = gen.generate(data::Split::train, 20000);
  data::Dataset valid = gen.generate(data::Split::valid, 4000);
  data::Dataset test = gen.generate(data::Split::test, 4000);

  PLEModel model() const {
    torch::manual_seed(11);
    return PLEModel(PLEModelOptions(DeepFMOptions(gen.schema()).deep_hidden_dims({32, 16}).fm_projection_dim(8),
                                    PLEOptions(0, 0)
                                        .shared_experts({ExpertOptions::mlp({16}), ExpertOptions::cross(2)})
                                        .task_experts({{ExpertOptions::cross(1)}, {ExpertOptions::mlp({8})}})
                                        .expert_dim(16)
                                        .align_outputs(true),
                                    {"ctr", "cvr"}));
  }
  LossWeightingOptions weighting;
  TrainResult run(const std::string& dir, int64_t stop_after = 0, PLEModel m = nullptr) {
    if (m.is_empty()) m = model();
    Trainer<PLEModel> trainer(
        m, optim::DualSparseDenseOptions().sparse_lr(0.01).dense_lr(0.003).total_steps(60).warmup_steps(5),
        Objective({"ctr", "cvr"}, ObjectiveOptions().use_esmm(true)), train, valid, &test,
        TrainerOptions(dir)
            .max_train_steps(60)
            .eval_every(20)
            .log_every(10)
            .batch_size(256)
            .eval_batch_size(2048)
            .quiet(true)
            .threads(2)
            .loss_weighting(weighting)
            .hooks(std::make_shared<StopAfterSteps>(stop_after)));
    return trainer.run();
  }
};
}  // namespace

// A short run writes every output the chain reads, and learns.
TEST_CASE("Trainer end to end") {
  ScratchDir tmp("e2e");
  SmallRun s;
  auto result = s.run(tmp / "run");
  REQUIRE(result.finished);
  REQUIRE(result.steps == 60);
  REQUIRE(result.best_step > 0);
  for (const char* f : {"train.log", "metrics.jsonl", "ckpt_best.pt", "ckpt_last.pt", "eval.json",
                        "expert_health_diag.jsonl", "test_predictions.pt"})
    REQUIRE(fs::exists(tmp / ("run/" + std::string(f))));
  auto records = read_jsonl(tmp / "run/metrics.jsonl");
  int train_records = 0, valid_records = 0;
  for (const auto& r : records) (r["split"] == "train" ? train_records : valid_records)++;
  REQUIRE(train_records == 6);
  REQUIRE(valid_records == 3);
  REQUIRE(records.back()["values"].contains("auc_cvr_entire_space"));
  std::ifstream eval_file(tmp / "run/eval.json");
  auto eval = nlohmann::json::parse(eval_file);
  REQUIRE(eval["rows"] == 4000);
  const double auc_ctr = eval["values"]["auc_ctr"].get<double>();
  INFO("test AUC of CTR after 60 steps: " << auc_ctr);
  REQUIRE(auc_ctr > 0.57);  // chance is 0.5, with a standard error of about 0.02 on these 4000 rows
  REQUIRE(result.test.at("auc_ctcvr").defined());
  auto health = read_jsonl(tmp / "run/expert_health_diag.jsonl");
  REQUIRE(health.size() == 4 * 6);  // 3 validations + test: 2 gate records and 4 expert records each
  REQUIRE(health.back()["split"] == "test");
}

// Killed after 30 of 60 steps (last checkpoint at 20) and resumed: the same numbers as one uninterrupted run.
TEST_CASE("Trainer resume equals an uninterrupted run") {
  ScratchDir tmp("resume");
  SmallRun s;
  auto whole = s.run(tmp / "whole");
  auto first = s.run(tmp / "split", /*stop_after=*/30);
  REQUIRE_FALSE(first.finished);
  auto second = s.run(tmp / "split", 0, s.model());
  REQUIRE(second.finished);
  REQUIRE(second.best_step == whole.best_step);
  REQUIRE(second.best_metric == whole.best_metric);
  for (const auto& [k, v] : whole.test) {
    INFO(k);
    REQUIRE(second.test.at(k).value == v.value);
  }
  auto strip_timing = [](std::vector<nlohmann::json> records) {
    for (auto& r : records) r.erase("samples_per_s");
    return records;
  };
  REQUIRE(strip_timing(read_jsonl(tmp / "split/metrics.jsonl")) ==
          strip_timing(read_jsonl(tmp / "whole/metrics.jsonl")));
  REQUIRE(read_jsonl(tmp / "split/expert_health_diag.jsonl") == read_jsonl(tmp / "whole/expert_health_diag.jsonl"));
}

// With learned loss weights (uncertainty, GradNorm on steps 1, 4, 7, ...), a resumed run continues them exactly:
// the weights logged after the resume are an uninterrupted run's. A checkpoint is refused by a run whose weighting
// differs: learned weights under fixed ones, another learned weighting, none where this run learns them.
TEST_CASE("Trainer resumes learned loss weights exactly") {
  for (const auto kind : {LossWeightingKind::uncertainty, LossWeightingKind::gradnorm}) {
    ScratchDir tmp("resume_weights");
    SmallRun s;
    s.weighting = LossWeightingOptions().kind(kind).lr(0.05).gradnorm_interval(3);
    auto whole = s.run(tmp / "whole");
    REQUIRE(s.run(tmp / "split", /*stop_after=*/30).finished == false);
    auto second = s.run(tmp / "split", 0, s.model());
    REQUIRE(second.finished);
    auto strip_timing = [](std::vector<nlohmann::json> records) {
      for (auto& r : records) r.erase("samples_per_s");
      return records;
    };
    const auto records = strip_timing(read_jsonl(tmp / "whole/metrics.jsonl"));
    REQUIRE(strip_timing(read_jsonl(tmp / "split/metrics.jsonl")) == records);
    const auto& last_train = records[records.size() - 2];  // the last train record, before the last validation
    REQUIRE(last_train["split"] == "train");
    for (const char* term : {"weight_ctr", "weight_ctcvr", "weight_cvr_aux"}) {
      INFO(term);
      REQUIRE(last_train.contains(term));
      REQUIRE(last_train[term].get<double>() != 1.0);  // the weights moved
    }
    s.weighting = LossWeightingOptions();
    REQUIRE_TORCH_ERROR(s.run(tmp / "split", 0, s.model()), "it has learned loss weights, but this run's weighting");
    s.weighting.kind(kind == LossWeightingKind::uncertainty ? LossWeightingKind::gradnorm
                                                            : LossWeightingKind::uncertainty);
    REQUIRE_TORCH_ERROR(s.run(tmp / "split", 0, s.model()), "of another weighting or other terms");
  }
  ScratchDir tmp("resume_unweighted");
  SmallRun s;
  REQUIRE_FALSE(s.run(tmp / "plain", /*stop_after=*/25).finished);
  s.weighting = LossWeightingOptions().kind(LossWeightingKind::uncertainty);
  REQUIRE_TORCH_ERROR(s.run(tmp / "plain", 0, s.model()), "it has no learned loss weights, but this run learns them");
}

// GradNorm's per-term gradients keep the graph for the step's backward: the model's gradients after both equal
// those of the backward alone, through the fused nodes of an E5-shaped model.
TEST_CASE("GradNorm's term gradients leave the step's gradients as they are") {
  SmallRun s;
  auto model = s.model();
  model->train();
  data::TrainingBatch batch;
  data::for_each_batch(s.train, 0, 256, 256, [&](const data::TrainingBatch& b, int64_t) { batch = b; });
  const Objective objective({"ctr", "cvr"}, ObjectiveOptions().use_esmm(true));
  const LossWeighting weighting(objective, LossWeightingOptions().kind(LossWeightingKind::gradnorm));
  const auto step_gradients = [&](bool term_gradients_first) {
    model->zero_grad();
    const auto loss = objective(model->forward(batch.features), batch);
    if (term_gradients_first) {
      const auto g = weighting.term_gradients(loss, last_shared_weights(model));
      REQUIRE(g.size(0) == 3);  // ctr, ctcvr, cvr_aux
      REQUIRE(g.abs().sum().item<double>() > 0);
    }
    loss.total.backward();
    std::vector<torch::Tensor> out;
    for (const auto& p : model->parameters())
      out.push_back(p.grad().defined() ? (p.grad().is_sparse() ? p.grad().to_dense() : p.grad().clone()) : torch::Tensor());
    return out;
  };
  const auto alone = step_gradients(false), after = step_gradients(true);
  REQUIRE(alone.size() == after.size());
  for (size_t i = 0; i < alone.size(); ++i) {
    INFO("parameter " << i);
    REQUIRE(alone[i].defined() == after[i].defined());
    if (alone[i].defined()) REQUIRE(torch::allclose(alone[i], after[i], 1e-6, 1e-7));
  }
}

// A damaged last checkpoint is refused (checksum) and the run resumes from
// the previous one, to the same numbers as an uninterrupted run.
TEST_CASE("Trainer resumes from the previous checkpoint when the last is damaged") {
  ScratchDir tmp("resume_damaged");
  SmallRun s;
  auto whole = s.run(tmp / "whole");
  REQUIRE_FALSE(s.run(tmp / "split", /*stop_after=*/50).finished);  // checkpoints at 20 and 40
  const auto last = tmp / "split/ckpt_last.pt";
  fs::resize_file(last, fs::file_size(last) - 1000);
  auto second = s.run(tmp / "split", 0, s.model());
  REQUIRE(second.finished);
  std::ifstream log(tmp / "split/train.log");
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  REQUIRE(text.find("warning: checkpoint '" + last + "' is not a readable tensor dict") != std::string::npos);
  REQUIRE(text.find("resumed from " + tmp / "split/ckpt_prev.pt at step 20") != std::string::npos);
  for (const auto& [k, v] : whole.test) {
    INFO(k);
    REQUIRE(second.test.at(k).value == v.value);
  }
}

// A non-finite loss stops the run naming the step and each term.
TEST_CASE("Trainer stops on a non-finite loss") {
  ScratchDir tmp("nan");
  SmallRun s;
  auto model = s.model();
  {
    torch::NoGradGuard no_grad;
    model->towers[1]->as<Tower>()->logit->bias.fill_(std::nan(""));
  }
  auto result = s.run(tmp / "run", 0, model);
  REQUIRE_FALSE(result.finished);
  INFO(result.stopped_because);
  REQUIRE(result.stopped_because.find("non-finite at step 1 (terms at step 1: ctr=") != std::string::npos);
  REQUIRE(result.stopped_because.find("nan cvr_aux=nan") != std::string::npos);
  std::ifstream log(tmp / "run/train.log");
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  REQUIRE(text.find("stopped: the loss went non-finite") != std::string::npos);
}

// Python's torch.load reads a checkpoint as a dict of named tensors.
TEST_CASE("checkpoints load in Python's torch.load") {
#ifndef MTL_TEST_TORCH_PYTHON
  WARN("skipped: no python3 with PyTorch was found when the tests were configured");
#else
  ScratchDir tmp("python");
  Tower tower(TowerOptions(4).hidden_dims({3}));
  save_tensor_dict(tmp / "t.pt", module_state(*tower));
  const std::string command = std::string(MTL_TEST_TORCH_PYTHON) + " -c \"import torch; d = torch.load('" +
                              (tmp / "t.pt") + "'); print(sorted(d.keys())); print(float(d['logit.bias'][0]))\"";
  FILE* pipe = popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buffer[4096];
  std::string output;
  while (std::fgets(buffer, sizeof buffer, pipe)) output += buffer;
  REQUIRE(pclose(pipe) == 0);
  INFO(output);
  REQUIRE(
      output.find("['__checksum__', 'hidden.layers.0.bias', 'hidden.layers.0.weight', 'logit.bias', 'logit.weight']") !=
      std::string::npos);
  REQUIRE(std::abs(std::stod(output.substr(output.find('\n') + 1)) - tower->logit->bias[0].item<double>()) < 1e-6);
#endif
}
