// `interview_chain run`: the seven experiments (or some), on one process or
// several, then the summaries and the report.
#pragma once

#include "common.hpp"

#include "../chain.hpp"

#include <mtl/detail/join.hpp>
#include <mtl/io/file_io.hpp>

#include <chrono>
#include <cstdio>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace chain::commands {

inline constexpr const char* kRunHelp =
    "usage: interview_chain run [options]\n"
    "  --configs DIR     the seven config files (default: " MTL_CHAIN_CONFIG_DIR
    ")\n"
    "  --output DIR      summaries and report go here; run directories beside it (default: runs/interview_chain)\n"
    "  --only E1,E2      run only these experiments; an experiment of DIR/extensions runs only when named here\n"
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

inline std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

inline int cmd_run(int argc, char** argv) {
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

}  // namespace chain::commands
