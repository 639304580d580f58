// interview_chain: runs the chain of seven controlled experiments (single
// task -> shared bottom -> ESMM -> MMoE -> PLE -> heterogeneous PLE) and says,
// with numbers and DeLong tests, whether each step helps.
#include "chain.hpp"
#include "local_ranks.hpp"
#include "report.hpp"
#include "report_html.hpp"

#include <torch/version.h>
#include <mtl/detail/join.hpp>
#include <mtl/serving/bundle.hpp>
#include <mtl/serving/predictor.hpp>
#ifdef MTL_CHAIN_DISTRIBUTED
#include <mtl/distributed/group_replicas.hpp>
#endif

#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#ifndef MTL_CHAIN_CONFIG_DIR
#define MTL_CHAIN_CONFIG_DIR "examples/interview_chain/configs"
#endif

namespace {

namespace fs = std::filesystem;

const char* kUsage =
    "usage: interview_chain <command> [options]\n"
    "commands:\n"
    "  run        run the seven experiments (or some), then write the summaries and the report\n"
    "  train      run one experiment from its config file\n"
    "  validate   check that the controlled fields agree across the seven configs\n"
    "  predict    score a data split with a run's best checkpoint, or raw CSV rows with a model bundle\n"
    "  export     write a run's best model as one bundle file for serving\n"
    "  report     rebuild the summaries and the report from a chain's run directories\n"
    "'interview_chain <command> --help' describes each.\n";

const char* kRunHelp =
    "usage: interview_chain run [options]\n"
    "  --configs DIR     the seven config files (default: " MTL_CHAIN_CONFIG_DIR
    ")\n"
    "  --output DIR      summaries and report go here; run directories beside it (default: runs/interview_chain)\n"
    "  --only E1,E2      run only these experiments\n"
    "  --skip E0a,E0b    skip these experiments\n"
    "  --resume          skip finished experiments, continue an interrupted one from its last checkpoint\n"
    "  --dry-run         print each resolved config and what would run, then exit\n"
    "  --preset NAME     full (the locked 40000 steps), quick (2500 steps, under 10 min on 2 CPU cores), tiny (a smoke "
    "test)\n"
    "  --device cpu|cuda\n"
    "  --data SRC        synthetic (default; synthetic:null turns every mechanism off), aliccp:DIR or\n"
    "                    aliexpress:DIR (CSV files named *train*, *val*, *test*)\n"
    "  --seeds N         run each experiment with N seeds (runtime.seed, +1, ...); comparisons pair the runs by\n"
    "                    seed, and verdicts need 3 seeds or more\n"
    "  --max-steps N     override the steps of all seven (and the schedule with them)\n"
    "  --batch-size N    override data.batch_size for all seven\n"
    "  --threads N       override runtime.threads (intra-op threads) for all seven\n"
    "  --nproc N         train each experiment on N processes of this machine (data-parallel over loopback, Gloo);\n"
    "                    one process's computation, its sums in another order; see train --help\n"
    "  --timeout S       how long a rank waits for the others before it fails, naming itself (default 60)\n"
    "  --quiet           no per-step progress\n";

const char* kTrainHelp =
    "usage: interview_chain train --config FILE [--run-dir DIR] [--preset P] [--device D] [--data SRC] [--max-steps "
    "N]\n"
    "                             [--batch-size N] [--threads N] [--nproc N] [--timeout S] [--quiet]\n"
    "  trains one experiment; with an existing --run-dir holding ckpt_last.pt it continues from there\n"
    "  --nproc N     train on N processes of this machine (data-parallel over loopback, Gloo): each takes its share\n"
    "                of every global batch of data.batch_size rows: one process's computation, its sums in another\n"
    "                order; each rank gets the cores / N as --threads unless --threads is given\n"
    "  --timeout S   how long a rank waits for the others before it fails, naming itself (default 60)\n"
    "  Started by an external launcher (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set), the program joins that\n"
    "  group instead; every rank then needs the same --run-dir, on storage every rank can read.\n";

const char* kValidateHelp =
    "usage: interview_chain validate [--configs DIR] [--preset P] [--device D] [--data SRC]\n"
    "  prints a pass or fail mark per controlled field and each differing value with its file;\n"
    "  exits 1 when a field differs or a config has an error\n";

const char* kPredictHelp =
    "usage: interview_chain predict --run DIR --out FILE.csv [--data SRC] [--split train|valid|test]\n"
    "       interview_chain predict --bundle FILE.mtl --data FILE.csv --out FILE.csv\n"
    "  scores a split (default test) with the run's best checkpoint, or every row of a CSV file with an exported\n"
    "  bundle (raw ids under the bundle's field names; label columns optional); writes p_ctr, p_cvr, p_ctcvr and\n"
    "  the labels per row\n";

const char* kExportHelp =
    "usage: interview_chain export --run DIR --out FILE.mtl\n"
    "  writes the run's best model, its config, feature schema, vocabularies and test metrics as one bundle,\n"
    "  which `predict --bundle` and mtl::serving::Predictor load\n";

const char* kReportHelp =
    "usage: interview_chain report DIR\n"
    "  rebuilds summary.csv, summary.json, delta_analysis.txt, delta_analysis.json and report.html in DIR from the\n"
    "  run directories that DIR/chain_state.json names\n";

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> values;
  std::set<std::string> flags;
};

Args parse(int argc, char** argv, int first, const std::set<std::string>& with_value,
           const std::set<std::string>& flags, const char* help) {
  Args a;
  for (int i = first; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::printf("%s", help);
      std::exit(0);
    }
    if (with_value.count(arg)) {
      TORCH_CHECK(i + 1 < argc, arg, " expects a value\n", help);
      a.values[arg] = argv[++i];
    } else if (flags.count(arg)) {
      a.flags.insert(arg);
    } else {
      TORCH_CHECK(arg.rfind("--", 0) != 0, "unknown option '", arg, "'\n", help);
      a.positional.push_back(arg);
    }
  }
  return a;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

/// A whole number of 1 or more given to `option`.
int positive_count(const std::string& text, const char* option) {
  size_t used = 0;
  int value = 0;
  try {
    value = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TORCH_CHECK(used == text.size() && value >= 1, option, " expects a whole number of 1 or more, but got '", text, "'");
  return value;
}

chain::Overrides overrides(const Args& a) {
  chain::Overrides o;
  auto value = [&](const char* k, const std::string& d) { return a.values.count(k) ? a.values.at(k) : d; };
  o.preset = value("--preset", "full");
  o.device = value("--device", "");
  o.data = value("--data", "");
  o.max_steps = std::stoll(value("--max-steps", "0"));
  o.batch_size = std::stoll(value("--batch-size", "0"));
  if (a.values.count("--threads")) o.threads = positive_count(a.values.at("--threads"), "--threads");
  return o;
}

const std::set<std::string> kOverrideOptions{"--preset",    "--device",     "--data",
                                             "--max-steps", "--batch-size", "--threads"};

std::set<std::string> with(std::set<std::string> s, std::initializer_list<std::string> more) {
  s.insert(more);
  return s;
}

void write_reports(const std::string& output) {
  const auto records = chain::read_chain(output);
  chain::write_summaries(output, records);
  chain::write_delta_analysis(output, records, /*alpha=*/0.05);
  chain::write_report_html(output, records, /*alpha=*/0.05);
  std::printf("wrote %s/{summary.csv, summary.json, delta_analysis.txt, delta_analysis.json, report.html}\n",
              output.c_str());
}

/// What --nproc and --timeout ask of train and run.
struct RankOptions {
  std::optional<int> nproc;
  std::chrono::seconds timeout{60};
  bool in_group = false;  ///< started as one rank of a group: WORLD_SIZE is set
};

RankOptions rank_options(const Args& a) {
  RankOptions r;
  if (a.values.count("--nproc")) r.nproc = positive_count(a.values.at("--nproc"), "--nproc");
  if (a.values.count("--timeout"))
    r.timeout = std::chrono::seconds(positive_count(a.values.at("--timeout"), "--timeout"));
  r.in_group = std::getenv("WORLD_SIZE") != nullptr;
#ifndef MTL_CHAIN_DISTRIBUTED
  TORCH_CHECK(!r.in_group && r.nproc.value_or(1) == 1,
              "this interview_chain was built without distributed support (CMake found no Gloo headers: install "
              "libgloo-dev and configure again), so it cannot run as one of several processes");
#endif
  return r;
}

/// Whether this process should start the ranks itself: --nproc above 1, outside a group.
bool starts_ranks(const RankOptions& r) { return !r.in_group && r.nproc.value_or(1) > 1; }

/// Starts the ranks on this machine, each with this process's arguments, then
/// `more`, then its share of the cores as --threads unless that is given;
/// returns 0 when every rank succeeded. The launcher waits a rank's timeout
/// past a failure, and a little more, before it stops the ranks left.
int start_ranks(int argc, char** argv, const Args& a, const RankOptions& r, std::vector<std::string> more) {
  if (!a.values.count("--threads")) {
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    more.push_back("--threads");
    more.push_back(std::to_string(std::max(1u, cores / static_cast<unsigned>(*r.nproc))));
  }
  std::vector<char*> args(argv, argv + argc);
  for (auto& arg : more) args.push_back(arg.data());
  args.push_back(nullptr);
  return chain::run_local_ranks(args.data(), *r.nproc, r.timeout + std::chrono::seconds(30));
}

/// Joins the group the environment describes, when this process is one of its
/// ranks: `settings` (the resolved configs and the output folders) must be
/// the same on every rank. A rank other than the leader prints nothing on
/// stdout; errors still go to stderr.
std::shared_ptr<mtl::train::Replicas> join_ranks(const RankOptions& r, const std::string& settings, bool on_cpu) {
  if (!r.in_group) return nullptr;
#ifdef MTL_CHAIN_DISTRIBUTED
  const auto environment = mtl::distributed::Environment::from_process();
  TORCH_CHECK(!r.nproc || *r.nproc == environment->world_size, "--nproc is ", r.nproc.value_or(0),
              " but WORLD_SIZE is ", environment->world_size, ": give one of them, or the same count to both");
  TORCH_CHECK(on_cpu,
              "runtime.device is cuda: training on several processes runs on the CPU (Gloo); NCCL for CUDA "
              "is not supported yet");
  auto group = mtl::distributed::join_group(*environment, r.timeout);
  mtl::distributed::expect_same_settings(group, settings, "settings (config, overrides and output folder)");
  if (!environment->is_leader()) TORCH_CHECK(std::freopen("/dev/null", "w", stdout), "cannot silence stdout");
  return std::make_shared<mtl::distributed::GroupReplicas>(std::move(group));
#else
  (void)settings, (void)on_cpu;
  return nullptr;
#endif
}

int cmd_run(int argc, char** argv) {
  auto a =
      parse(argc, argv, 2,
            with(kOverrideOptions, {"--configs", "--output", "--only", "--skip", "--seeds", "--nproc", "--timeout"}),
            {"--resume", "--dry-run", "--quiet"}, kRunHelp);
  chain::RunOptions o;
  o.config_dir = a.values.count("--configs") ? a.values["--configs"] : MTL_CHAIN_CONFIG_DIR;
  if (a.values.count("--output")) o.output = a.values["--output"];
  if (a.values.count("--only")) o.only = split_list(a.values["--only"]);
  if (a.values.count("--skip")) o.skip = split_list(a.values["--skip"]);
  if (a.values.count("--seeds")) o.seeds = std::stoi(a.values["--seeds"]);
  o.resume = a.flags.count("--resume") > 0;
  o.dry_run = a.flags.count("--dry-run") > 0;
  o.quiet = a.flags.count("--quiet") > 0;
  o.overrides = overrides(a);
  const auto ranks = rank_options(a);
  if (starts_ranks(ranks) && !o.dry_run) return start_ranks(argc, argv, a, ranks, {});
  if (ranks.in_group && !o.dry_run) {
    std::string settings = "output: " + o.output + "\nseeds: " + std::to_string(o.seeds) +
                           "\nresume: " + std::to_string(o.resume) + "\nonly: " + mtl::detail::join(o.only) +
                           "\nskip: " + mtl::detail::join(o.skip);
    bool on_cpu = true;
    for (const auto& c : chain::load_chain(o.config_dir, o.overrides))
      settings += "\n" + c.fields.to_yaml(), on_cpu = on_cpu && !c.on_cuda();
    o.replicas = join_ranks(ranks, settings, on_cpu);
  }
  const bool leader = !o.replicas || o.replicas->leader();
  const auto started = std::chrono::steady_clock::now();
  std::optional<chain::OutputFolderLock> lock;
  if (!o.dry_run && leader) mtl::io::create_output_dir(o.output), lock.emplace(o.output);
  const int unfinished = chain::run_chain(o);
  if (o.dry_run) return 0;
  if (!leader) return unfinished == 0 ? 0 : 1;
  write_reports(o.output);
  std::printf("chain wall time %.1f s; %d run(s) did not finish\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(), unfinished);
  return unfinished == 0 ? 0 : 1;
}

int cmd_train(int argc, char** argv) {
  auto a = parse(argc, argv, 2, with(kOverrideOptions, {"--config", "--run-dir", "--nproc", "--timeout"}), {"--quiet"},
                 kTrainHelp);
  TORCH_CHECK(a.values.count("--config"), "train expects --config FILE\n", kTrainHelp);
  auto c = chain::load_experiment(a.values["--config"], overrides(a));
  const auto ranks = rank_options(a);
  TORCH_CHECK(!ranks.in_group || a.values.count("--run-dir"),
              "a rank of a process group needs --run-dir: every rank must name the same folder");
  const auto dir =
      a.values.count("--run-dir") ? a.values["--run-dir"] : "runs/interview_" + c.id + "_" + chain::timestamp();
  if (starts_ranks(ranks))
    return start_ranks(
        argc, argv, a, ranks,
        a.values.count("--run-dir") ? std::vector<std::string>{} : std::vector<std::string>{"--run-dir", dir});
  const auto replicas = join_ranks(ranks, c.fields.to_yaml() + "\nrun directory: " + dir, !c.on_cuda());
  const auto data = chain::load_data(c, (fs::path(dir) / "data_cache").string());
  std::printf("data: %s\n=== %s: %s -> %s%s\n", data.description.c_str(), c.id.c_str(), c.description.c_str(),
              dir.c_str(), replicas ? fmt::format(" ({} processes)", replicas->world_size()).c_str() : "");
  auto result = chain::run_experiment(c, data, dir, a.flags.count("--quiet") > 0, replicas);
  if (!result.finished) {
    std::printf("failed: %s\n", result.stopped_because.c_str());
    return 1;
  }
  if (result.best_step < 0)
    std::printf(
        "finished: no validation gave a defined %s (its rows hold one class only), so the last model was "
        "kept; outputs in %s\n",
        c.trainer.primary_key().c_str(), dir.c_str());
  else
    std::printf("finished: best %s %.5f at step %ld; outputs in %s\n", c.trainer.primary_key().c_str(), result.best_metric,
                static_cast<long>(result.best_step), dir.c_str());
  return 0;
}

int cmd_validate(int argc, char** argv) {
  auto a = parse(argc, argv, 2, with(kOverrideOptions, {"--configs"}), {}, kValidateHelp);
  const auto dir = a.values.count("--configs") ? a.values["--configs"] : MTL_CHAIN_CONFIG_DIR;
  const auto configs = chain::load_chain(dir, overrides(a));
  return chain::validate_controlled(configs, std::cout) ? 0 : 1;
}

/// The predictions file's header: probabilities, then the labels where known.
void write_prediction_header(std::ostream& out, bool labelled) {
  out << "row,p_ctr,p_cvr,p_ctcvr" << (labelled ? ",click,conversion" : "") << "\n";
}

/// One CSV line per row: row, p_ctr, p_cvr, p_ctcvr (empty where the model
/// lacks a head), then the labels when `click` is given.
void write_prediction_rows(std::ostream& out, int64_t first, const mtl::serving::Predictions& p, const float* click,
                           const float* conversion) {
  const size_t rows = std::max({p.p_ctr.size(), p.p_cvr.size()});
  auto cell = [](const std::vector<float>& v, size_t i) {
    return v.empty() ? std::string() : fmt::format("{:.7g}", v[i]);
  };
  for (size_t i = 0; i < rows; ++i) {
    out << first + static_cast<int64_t>(i) << "," << cell(p.p_ctr, i) << "," << cell(p.p_cvr, i) << ","
        << cell(p.p_ctcvr, i);
    if (click) out << "," << click[i] << "," << conversion[i];
    out << "\n";
  }
}

std::ofstream open_output(const std::string& path) {
  std::ofstream out(path);
  TORCH_CHECK(out.good(), "cannot write '", path, "'");
  return out;
}

/// The best checkpoint of a run directory, in the model its config describes.
template <class Fn>
void with_best_model(const chain::ExperimentConfig& c, const mtl::FeatureSchema& schema, const std::string& run,
                     Fn&& fn) {
  const auto checkpoint = mtl::train::RunDirectory(run).path(mtl::train::run_files::kBestCheckpoint);
  chain::with_model(c, schema, [&](auto model) {
    mtl::io::load_module_state(*model, mtl::io::load_tensor_dict(checkpoint), "", checkpoint);
    model->eval();
    fn(model);
  });
}

/// Scores the rows of a CSV file with a bundle, streaming them in chunks.
int predict_with_bundle(const std::string& bundle_path, const std::string& csv, const std::string& out_path) {
  const mtl::serving::Predictor predictor(bundle_path, mtl::serving::PredictorOptions().threads_per_call(0));
  const auto& bundle = predictor.bundle();
  mtl::data::CsvLayout layout;
  layout.name = "the bundle's";
  for (const auto& f : predictor.schema().sparse_fields()) layout.sparse.push_back(f.name);
  for (const auto& f : predictor.schema().dense_fields()) layout.dense.push_back(f.name);
  const auto header = mtl::data::read_csv_header(csv);
  const bool labelled = std::count(header.begin(), header.end(), bundle.click_label) > 0 &&
                        std::count(header.begin(), header.end(), bundle.conversion_label) > 0;
  layout.click = labelled ? bundle.click_label : "";
  layout.conversion = labelled ? bundle.conversion_label : "";
  auto out = open_output(out_path);
  write_prediction_header(out, labelled);
  constexpr size_t kChunk = 8192;
  mtl::serving::RawRows chunk;
  std::vector<float> click, conversion;
  int64_t written = 0;
  // The chunk's columns in layout order (a map's values stay where they are).
  std::vector<std::vector<int64_t>*> sparse_columns;
  std::vector<std::vector<float>*> dense_columns;
  for (const auto& name : layout.sparse) sparse_columns.push_back(&chunk.sparse[name]);
  for (const auto& name : layout.dense) dense_columns.push_back(&chunk.dense[name]);
  auto flush = [&] {
    if (click.empty()) return;
    write_prediction_rows(out, written, predictor.predict(chunk), labelled ? click.data() : nullptr, conversion.data());
    written += static_cast<int64_t>(click.size());
    for (auto* column : sparse_columns) column->clear();
    for (auto* column : dense_columns) column->clear();
    click.clear(), conversion.clear();
  };
  mtl::data::read_csv(csv, layout, [&](const mtl::data::ParsedRow& row) {
    for (size_t j = 0; j < sparse_columns.size(); ++j) sparse_columns[j]->push_back(row.sparse[j]);
    for (size_t j = 0; j < dense_columns.size(); ++j) dense_columns[j]->push_back(row.dense[j]);
    click.push_back(row.click), conversion.push_back(row.conversion);
    if (click.size() == kChunk) flush();
  });
  flush();
  out.flush();
  TORCH_CHECK(out.good(), "writing '", out_path, "' failed");
  std::printf("wrote %ld rows of %s to %s\n", static_cast<long>(written), csv.c_str(), out_path.c_str());
  return 0;
}

int cmd_predict(int argc, char** argv) {
  auto a = parse(argc, argv, 2, {"--run", "--bundle", "--out", "--data", "--split"}, {}, kPredictHelp);
  TORCH_CHECK(a.values.count("--run") + a.values.count("--bundle") == 1 && a.values.count("--out"),
              "predict expects --run DIR or --bundle FILE, and --out FILE\n", kPredictHelp);
  if (a.values.count("--bundle")) {
    TORCH_CHECK(a.values.count("--data") && !a.values.count("--split"),
                "predict --bundle expects --data FILE.csv (and no --split)\n", kPredictHelp);
    return predict_with_bundle(a.values["--bundle"], a.values["--data"], a.values["--out"]);
  }
  const auto run = a.values["--run"];
  chain::Overrides o;
  if (a.values.count("--data")) o.data = a.values["--data"];
  auto c = chain::load_experiment(mtl::train::RunDirectory(run).path(mtl::train::run_files::kConfig), o);
  const auto data = chain::load_data(c, (fs::path(run) / "data_cache").string());
  const auto split = a.values.count("--split") ? a.values["--split"] : "test";
  TORCH_CHECK(split == "train" || split == "valid" || split == "test", "--split expects train, valid or test, got '",
              split, "'");
  mtl::data::Dataset generated(data.schema);  // synthetic training rows exist only when generated
  if (split == "train" && data.generator) generated = data.generated_train();
  const auto& rows = split == "valid"  ? data.valid
                     : split == "test" ? data.test
                     : data.generator  ? generated
                                       : data.train;
  auto out = open_output(a.values["--out"]);
  write_prediction_header(out, true);
  with_best_model(c, data.schema, run, [&](auto model) {
    torch::NoGradGuard no_grad;
    mtl::data::for_each_batch(rows, 8192, [&](const mtl::data::TrainingBatch& b, int64_t first) {
      write_prediction_rows(out, first, mtl::serving::to_predictions(model->forward(b.features)),
                            b.click.data_ptr<float>(), b.conversion.data_ptr<float>());
    });
  });
  std::printf("wrote %ld rows of the %s split to %s\n", static_cast<long>(rows.num_rows()), split.c_str(),
              a.values["--out"].c_str());
  return 0;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), "cannot read '", path, "'");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

int cmd_export(int argc, char** argv) {
  auto a = parse(argc, argv, 2, {"--run", "--out"}, {}, kExportHelp);
  TORCH_CHECK(a.values.count("--run") && a.values.count("--out"), "export expects --run DIR and --out FILE\n",
              kExportHelp);
  const auto run = a.values["--run"];
  const auto config_path = mtl::train::RunDirectory(run).path(mtl::train::run_files::kConfig);
  const auto eval_path = mtl::train::RunDirectory(run).path(mtl::train::run_files::kEvaluation);
  TORCH_CHECK(fs::exists(eval_path), "'", run, "' holds no eval.json: export takes a finished run");
  auto c = chain::load_experiment(config_path, {});
  const auto features = chain::load_features(c, (fs::path(run) / "data_cache").string());
  mtl::serving::ModelBundle bundle;
  bundle.model = c.model;
  bundle.schema = features.schema;
  bundle.vocabularies = features.vocabularies;
  if (c.source != "synthetic") bundle.click_label = c.layout.click, bundle.conversion_label = c.layout.conversion;
  with_best_model(c, features.schema, run, [&](auto model) { bundle.weights = mtl::io::module_state(*model); });
  bundle.metadata = {{"experiment", c.id},
                     {"description", c.description},
                     {"run", fs::path(run).filename().string()},
                     {"data", features.description},
                     {"config_yaml", read_text(config_path)},
                     {"test_evaluation", nlohmann::json::parse(read_text(eval_path))}};
  mtl::serving::save_bundle(a.values["--out"], bundle);
  std::printf("wrote %s: %s (%s), %ld sparse and %ld dense fields, mtl %s, LibTorch %s\n", a.values["--out"].c_str(),
              c.id.c_str(), c.model.mixer.c_str(), static_cast<long>(features.schema.num_sparse()),
              static_cast<long>(features.schema.num_dense()), mtl::version(), TORCH_VERSION);
  return 0;
}

int cmd_report(int argc, char** argv) {
  auto a = parse(argc, argv, 2, {}, {}, kReportHelp);
  TORCH_CHECK(a.positional.size() == 1, "report expects one folder\n", kReportHelp);
  TORCH_CHECK(fs::exists(fs::path(a.positional[0]) / "chain_state.json"), "'", a.positional[0],
              "' has no chain_state.json: is it a chain's --output folder?");
  write_reports(a.positional[0]);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::printf("%s", kUsage);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  try {
    if (command == "run") return cmd_run(argc, argv);
    if (command == "train") return cmd_train(argc, argv);
    if (command == "validate") return cmd_validate(argc, argv);
    if (command == "predict") return cmd_predict(argc, argv);
    if (command == "export") return cmd_export(argc, argv);
    if (command == "report") return cmd_report(argc, argv);
    std::fprintf(stderr, "unknown command '%s'\n%s", command.c_str(), kUsage);
    return 2;
  } catch (const mtl::io::StorageError& e) {
    std::fprintf(stderr,
                 "error: %s\nfinished results are kept; make room (or fix the folder), then run the command again "
                 "(run: with --resume)\n",
                 e.what());
    return 3;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what_without_backtrace());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
