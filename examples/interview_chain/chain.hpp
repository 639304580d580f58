// The chain of seven experiments: loading and checking their configs
// (presets and command-line overrides applied to all alike), the validator of
// the controlled fields, running with skip/only/resume/seeds, and the state
// file that maps each experiment to its run directories.
#pragma once

#include "experiment.hpp"
#include "experiment_runner.hpp"

#include <mtl/detail/join.hpp>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <algorithm>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace chain {

namespace fs = std::filesystem;

/// The seven experiments in chain order, with their config files, and beside them E5na (E5 without the output
/// aligner), which tests the aligner's claim in an exploratory comparison.
inline const std::vector<std::pair<std::string, std::string>>& experiments() {
  static const std::vector<std::pair<std::string, std::string>> list{
      {"E0a", "E0a_deepfm_st_ctr.yaml"},
      {"E0b", "E0b_deepfm_st_cvr.yaml"},
      {"E1", "E1_deepfm_shared_dualhead.yaml"},
      {"E2", "E2_deepfm_shared_esmm.yaml"},
      {"E3", "E3_deepfm_mmoe_esmm.yaml"},
      {"E4", "E4_deepfm_ple_lite_homo_esmm.yaml"},
      {"E5", "E5_deepfm_ple_lite_hetero_esmm.yaml"},
      {"E5na", "E5na_deepfm_ple_lite_hetero_noalign_esmm.yaml"}};
  return list;
}

/// Training steps of `--preset quick`, the budget the synthetic data's designed answers are set for.
inline constexpr int64_t kQuickPresetSteps = 2500;

/// Settings applied to every experiment alike, so the controlled fields stay equal.
struct Overrides {
  std::string preset = "full";  ///< full | quick | tiny
  std::string device;           ///< empty keeps the configs'
  std::string data;             ///< synthetic[:designed|null] | aliccp:DIR | aliexpress:DIR; empty keeps the configs'
  int64_t max_steps = 0;        ///< 0 keeps the preset's
  int64_t batch_size = 0;       ///< 0 keeps the preset's (small real samples need a small batch)
  int64_t threads = 0;          ///< 0 keeps the configs'
};

inline void apply(FieldTable& f, const Overrides& o) {
  auto set = [&](const std::string& path, const auto& value, const std::string& origin) {
    f.set(path, YAML::Node(value), origin);
  };
  const std::string preset = "--preset " + o.preset;
  auto scale_steps = [&](int64_t steps, const std::string& origin) {
    set("runtime.max_train_steps", steps, origin);
    set("lr_scheduler.total_steps", steps, origin);
    set("lr_scheduler.warmup_steps", std::max<int64_t>(1, steps / 20), origin);
    set("runtime.eval_every", std::max<int64_t>(1, steps / 5), origin);
    set("runtime.log_every", std::max<int64_t>(1, steps / 20), origin);
  };
  if (o.preset == "quick") {
    scale_steps(kQuickPresetSteps, preset);
    set("data.synthetic.train_rows", 2'560'000, preset);
    set("data.synthetic.valid_rows", 100'000, preset);
    set("data.synthetic.test_rows", 200'000, preset);
  } else if (o.preset == "tiny") {
    scale_steps(40, preset);
    set("data.batch_size", 256, preset);
    set("runtime.eval_batch_size", 4096, preset);
    set("data.synthetic.train_rows", 20'000, preset);
    set("data.synthetic.valid_rows", 4'000, preset);
    set("data.synthetic.test_rows", 4'000, preset);
    set("data.synthetic.num_users", 3'000, preset);
    set("data.synthetic.num_items", 3'000, preset);
  } else {
    TORCH_CHECK(o.preset == "full", "--preset expects full, quick or tiny, got '", o.preset, "'");
  }
  if (o.max_steps > 0) scale_steps(o.max_steps, "--max-steps");
  if (!o.device.empty()) set("runtime.device", o.device, "--device");
  if (!o.data.empty()) {
    const auto colon = o.data.find(':');
    const auto source = o.data.substr(0, colon);
    const auto rest = colon == std::string::npos ? std::string() : o.data.substr(colon + 1);
    TORCH_CHECK(source == "synthetic" || ((source == "aliccp" || source == "aliexpress") && !rest.empty()),
                "--data expects synthetic, synthetic:designed, synthetic:null, aliccp:DIR or aliexpress:DIR, got '",
                o.data, "'");
    TORCH_CHECK(source != "synthetic" || colon == std::string::npos || rest == "designed" || rest == "null",
                "--data synthetic:SCENARIO expects the scenario designed or null, got '", rest, "'");
    set("data.source", source, "--data");
    if (source == "synthetic" && colon != std::string::npos) set("data.synthetic.scenario", rest, "--data");
    if (source != "synthetic") set("data.path", rest, "--data");
  }
  if (o.batch_size > 0) set("data.batch_size", o.batch_size, "--batch-size");
  if (o.threads > 0) set("runtime.threads", o.threads, "--threads");
}

/// One experiment's config file, overrides applied, read and checked.
inline ExperimentConfig load_experiment(const std::string& file, const Overrides& o) {
  auto table = FieldTable::load(file);
  apply(table, o);
  return read_experiment(table);
}

/// The experiment beside the seven, run where its config file is in the config folder.
inline constexpr const char* kAlignerAblation = "E5na";

/// The folder beside the seven configs whose experiments (ESCM2, AITM, loss weighting) run only when named.
inline constexpr const char* kExtensionsFolder = "extensions";

/// The experiments of `config_dir/extensions`: each config's experiment.id and file, in file-name order.
inline std::vector<std::pair<std::string, std::string>> extension_experiments(const std::string& config_dir) {
  std::vector<std::pair<std::string, std::string>> out;
  const auto folder = fs::path(config_dir) / kExtensionsFolder;
  if (!fs::is_directory(folder)) return out;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(folder))
    if (entry.path().extension() == ".yaml") files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  for (const auto& file : files) {
    const auto table = FieldTable::load(file.string());
    TORCH_CHECK(table.has("experiment.id"), file.string(), ": an extension config needs experiment.id");
    const auto id = table.text("experiment.id");
    for (const auto& [known, where] : experiments())
      TORCH_CHECK(known != id, file.string(), ": experiment.id '", id, "' is one of the chain's own");
    for (const auto& [known, where] : out)
      TORCH_CHECK(known != id, file.string(), ": experiment.id '", id, "' is also the id of ", where);
    out.emplace_back(id, file.string());
  }
  return out;
}

/// The chain's experiments, then the extensions named in `extensions` (by experiment.id).
inline std::vector<ExperimentConfig> load_chain(const std::string& config_dir, const Overrides& o,
                                                const std::vector<std::string>& extensions = {}) {
  std::vector<ExperimentConfig> out;
  for (const auto& [id, file] : experiments()) {
    if (id == kAlignerAblation && !fs::exists(fs::path(config_dir) / file)) continue;
    auto c = load_experiment((fs::path(config_dir) / file).string(), o);
    TORCH_CHECK(c.id == id, (fs::path(config_dir) / file).string(), ": experiment.id is '", c.id, "', expected '", id,
                "'");
    out.push_back(std::move(c));
  }
  for (const auto& [id, file] : extension_experiments(config_dir))
    if (std::count(extensions.begin(), extensions.end(), id)) out.push_back(load_experiment(file, o));
  return out;
}

/// Prints a mark per controlled field; returns whether all agree.
inline bool validate_controlled(const std::vector<ExperimentConfig>& configs, std::ostream& out) {
  bool all = true;
  for (const auto& field : controlled_fields()) {
    std::map<std::string, std::vector<std::string>> by_value;
    for (const auto& c : configs) {
      const auto where = c.fields.has(field) ? FieldTable::place(c.fields.at(field)) : c.id + " (unset)";
      by_value[c.fields.text(field)].push_back(c.id + " at " + where);
    }
    if (by_value.size() == 1) {
      out << "  [ok]   " << field << " = " << by_value.begin()->first << "\n";
      continue;
    }
    all = false;
    out << "  [FAIL] " << field << " differs:\n";
    for (const auto& [value, where] : by_value)
      for (const auto& w : where) out << "           " << value << "  in " << w << "\n";
  }
  out << (all ? "all controlled fields agree across the chain's configs\n"
              : "controlled fields differ: the comparisons would not be controlled\n");
  return all;
}

/// Which run directories belong to which experiment (per seed), kept in the chain's output folder.
struct ChainState {
  std::map<std::string, std::vector<std::string>> runs;

  static ChainState load(const std::string& output) {
    ChainState s;
    const auto file = fs::path(output) / "chain_state.json";
    if (!fs::exists(file)) return s;
    std::ifstream in(file);
    const auto j = nlohmann::json::parse(in);
    for (const auto& [id, dirs] : j["runs"].items()) s.runs[id] = dirs.get<std::vector<std::string>>();
    return s;
  }
  void save(const std::string& output) const {
    nlohmann::json j{{"runs", runs}};
    mtl::io::atomic_write((fs::path(output) / "chain_state.json").string(), j.dump(2) + "\n");
  }
};

/// The status of a run directory, read from its files.
struct RunStatus {
  std::string status;  ///< finished | failed: ... | interrupted at step N | not run
  bool finished = false;
};

inline RunStatus run_status(const std::string& dir) {
  if (dir.empty() || !fs::exists(dir)) return {"not run", false};
  const mtl::train::RunDirectory run(dir);
  if (run.finished()) return {"finished", true};
  std::ifstream log(run.path(mtl::train::run_files::kLog));
  std::string line, stopped;
  while (std::getline(log, line))
    if (line.rfind("stopped: ", 0) == 0) stopped = line.substr(9);
  if (!stopped.empty()) return {"failed: " + stopped, false};
  if (fs::exists(fs::path(dir) / "failure.txt")) {
    std::ifstream f(fs::path(dir) / "failure.txt");
    std::getline(f, line);
    return {"failed: " + line, false};
  }
  int64_t step = 0;
  for (const auto& record : run.metric_records()) step = std::max(step, record.value("step", int64_t{0}));
  return {"interrupted (last record at step " + std::to_string(step) + "); run again with --resume", false};
}

inline std::string timestamp() {
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d_%H%M%S", std::localtime(&now));
  return buf;
}

struct RunOptions {
  std::string config_dir;
  std::string output = "runs/interview_chain";
  std::vector<std::string> only, skip;
  bool resume = false, dry_run = false, quiet = false;
  int seeds = 1;
  Overrides overrides;
  /// The ranks that train each experiment together (null: this process alone).
  std::shared_ptr<mtl::train::Replicas> replicas;
};

inline bool selected(const std::string& id, const RunOptions& o) {
  if (!o.only.empty() && std::count(o.only.begin(), o.only.end(), id) == 0) return false;
  return std::count(o.skip.begin(), o.skip.end(), id) == 0;
}

/// One chain per output folder: an exclusive lock on `DIR/.chain.lock` held
/// while the chain runs. The kernel drops the lock when the process ends, so
/// a killed run never leaves a lock that blocks the next one.
class OutputFolderLock {
 public:
  explicit OutputFolderLock(const std::string& output) {
    const auto path = (fs::path(output) / ".chain.lock").string();
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw mtl::io::StorageError("cannot open the lock file '" + path + "'", errno);
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int why = errno;
      char holder[32] = {0};
      const ssize_t got = ::pread(fd_, holder, sizeof holder - 1, 0);
      ::close(fd_);
      TORCH_CHECK(why == EWOULDBLOCK, "cannot lock '", path, "': ", std::strerror(why));
      TORCH_CHECK(false, "another interview_chain run", got > 0 ? std::string(" (pid ") + holder + ")" : "",
                  " is writing to '", output, "'; wait for it to end or choose another --output");
    }
    const auto pid = std::to_string(::getpid());
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
      throw mtl::io::StorageError("cannot write the lock file '" + path + "'", errno);
  }
  ~OutputFolderLock() { ::close(fd_); }
  OutputFolderLock(const OutputFolderLock&) = delete;
  OutputFolderLock& operator=(const OutputFolderLock&) = delete;

 private:
  int fd_ = -1;
};

/// Runs the chain; returns the number of experiments that did not finish.
/// The caller holds the output folder's lock.
inline int run_chain(const RunOptions& o) {
  TORCH_CHECK(o.seeds >= 1, "--seeds expects a count >= 1, got ", o.seeds);
  const auto extensions = extension_experiments(o.config_dir);
  std::vector<std::string> known_ids;
  for (const auto& list : {experiments(), extensions})
    for (const auto& [id, file] : list) known_ids.push_back(id);
  for (const auto& list : {o.only, o.skip})
    for (const auto& id : list)
      TORCH_CHECK(std::count(known_ids.begin(), known_ids.end(), id), "unknown experiment '", id, "' (expected ",
                  mtl::detail::join(known_ids), ")");
  auto configs = load_chain(o.config_dir, o.overrides, o.only);
  std::ostringstream check;
  if (!validate_controlled(configs, check)) {
    std::printf("%s", check.str().c_str());
    TORCH_CHECK(false, "refusing to run: the controlled fields differ across the configs (see above)");
  }
  if (o.dry_run) {
    for (const auto& c : configs) {
      std::printf("=== %s: %s — %s\n", c.id.c_str(), c.description.c_str(),
                  selected(c.id, o) ? "would run" : "skipped");
      std::printf("%s\n", c.fields.to_yaml().c_str());
    }
    std::printf("dry run: %d seed(s) per experiment; results would go to %s\n", o.seeds, o.output.c_str());
    return 0;
  }
  const bool leader = !o.replicas || o.replicas->leader();
  mtl::io::create_output_dir(o.output);
  auto state = o.resume ? ChainState::load(o.output) : ChainState{};
  const auto runs_root = fs::absolute(o.output).parent_path();
  std::printf("loading data ...\n");
  std::fflush(stdout);
  const auto data = load_data(configs.front(), (fs::path(o.output) / "data_cache").string());
  std::printf("data: %s\n", data.description.c_str());
  int unfinished = 0;
  const auto stamp = o.replicas ? o.replicas->leaders_text(timestamp()) : timestamp();  // the run folders' names
  for (auto& c : configs) {
    if (!selected(c.id, o)) continue;
    auto& dirs = state.runs[c.id];
    dirs.resize(o.seeds);
    for (int k = 0; k < o.seeds; ++k) {
      const auto seed_tag = o.seeds > 1 ? "_s" + std::to_string(k) : std::string();
      if (!o.resume || dirs[k].empty()) dirs[k] = (runs_root / ("interview_" + c.id + seed_tag + "_" + stamp)).string();
      if (run_status(dirs[k]).finished) {
        std::printf("%s%s: finished earlier in %s; skipped\n", c.id.c_str(), seed_tag.c_str(), dirs[k].c_str());
        continue;
      }
      if (leader) state.save(o.output);
      auto seeded = c;
      if (k > 0) {
        seeded.trainer.seed(c.seed() + static_cast<uint64_t>(k));
        seeded.fields.set("runtime.seed", YAML::Node(seeded.seed()), "--seeds");
      }
      std::printf("=== %s%s: %s -> %s\n", c.id.c_str(), seed_tag.c_str(), c.description.c_str(), dirs[k].c_str());
      std::fflush(stdout);
      const auto started = std::chrono::steady_clock::now();
      try {
        auto result = run_experiment(seeded, data, dirs[k], o.quiet, o.replicas);
        if (!result.finished) ++unfinished;
        std::printf("%s%s: %s in %.1f s\n", c.id.c_str(), seed_tag.c_str(),
                    result.finished ? "finished" : ("failed: " + result.stopped_because).c_str(),
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      } catch (const mtl::io::StorageError&) {
        // The disk, not the experiment: the next one would fail the same way.
        std::fflush(stdout);
        throw;
      } catch (const std::exception& e) {
        if (o.replicas) throw;  // the ranks' collectives are out of step: every rank stops
        ++unfinished;
        std::string what = e.what();
        if (auto* err = dynamic_cast<const c10::Error*>(&e)) what = err->what_without_backtrace();
        if (what.find("out of memory") != std::string::npos)
          what += " (advice: lower data.batch_size, keep runtime.amp on, or use fewer / narrower experts)";
        mtl::io::atomic_write((fs::path(dirs[k]) / "failure.txt").string(), what.substr(0, what.find('\n')) + "\n");
        std::printf("%s%s: failed: %s\n", c.id.c_str(), seed_tag.c_str(), what.c_str());
      }
      std::fflush(stdout);
    }
  }
  if (leader) state.save(o.output);
  return unfinished;
}

}  // namespace chain
