// What more than one command uses: argument parsing, the config overrides,
// starting or joining the ranks of a multi-process run, the best model of a
// run directory, and rebuilding a chain's summaries and report.
#pragma once

#include "../chain.hpp"
#include "../local_ranks.hpp"
#include "../report.hpp"
#include "../report_html.hpp"

#include <mtl/features.hpp>
#include <mtl/io/checkpoint.hpp>
#include <mtl/train/replicas.hpp>
#include <mtl/train/run_directory.hpp>
#ifdef MTL_CHAIN_DISTRIBUTED
#include <mtl/distributed/group_replicas.hpp>
#endif

#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#ifndef MTL_CHAIN_CONFIG_DIR
#define MTL_CHAIN_CONFIG_DIR "examples/interview_chain/configs"
#endif

namespace chain::commands {

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> values;
  std::set<std::string> flags;
};

inline Args parse(int argc, char** argv, int first, const std::set<std::string>& with_value,
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

/// A whole number of 1 or more given to `option`.
inline int positive_count(const std::string& text, const char* option) {
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

inline chain::Overrides overrides(const Args& a) {
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

inline const std::set<std::string> kOverrideOptions{"--preset",    "--device",     "--data",
                                                    "--max-steps", "--batch-size", "--threads"};

inline std::set<std::string> with(std::set<std::string> s, std::initializer_list<std::string> more) {
  s.insert(more);
  return s;
}

inline void write_reports(const std::string& output) {
  const auto records = chain::read_chain(output);
  chain::write_summaries(output, records);
  const auto analysis = chain::write_delta_analysis(output, records, /*alpha=*/0.05);
  chain::write_report_html(output, records, analysis);
  std::printf("wrote %s/{summary.csv, summary.json, delta_analysis.txt, delta_analysis.json, report.html}\n",
              output.c_str());
}

/// What --nproc and --timeout ask of train and run.
struct RankOptions {
  std::optional<int> nproc;
  std::chrono::seconds timeout{60};
  bool in_group = false;  ///< started as one rank of a group: WORLD_SIZE is set
};

inline RankOptions rank_options(const Args& a) {
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
inline bool starts_ranks(const RankOptions& r) { return !r.in_group && r.nproc.value_or(1) > 1; }

/// Starts the ranks on this machine, each with this process's arguments, then
/// `more`, then its share of the cores as --threads unless that is given;
/// returns 0 when every rank succeeded. The launcher waits a rank's timeout
/// past a failure, and a little more, before it stops the ranks left.
inline int start_ranks(int argc, char** argv, const Args& a, const RankOptions& r, std::vector<std::string> more) {
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
inline std::shared_ptr<mtl::train::Replicas> join_ranks(const RankOptions& r, const std::string& settings,
                                                        bool on_cpu) {
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

}  // namespace chain::commands
