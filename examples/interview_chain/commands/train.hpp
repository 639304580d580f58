// `interview_chain train`: one experiment from its config file, on one
// process or several.
#pragma once

#include "common.hpp"

#include "../chain.hpp"

#include <fmt/core.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace chain::commands {

inline constexpr const char* kTrainHelp =
    "usage: interview_chain train --config FILE [--run-dir DIR] [--preset P] [--device D] [--data SRC] [--max-steps "
    "N]\n"
    "                             [--batch-size N] [--threads N] [--nproc N] [--timeout S] [--quiet]\n"
    "  trains one experiment; with an existing --run-dir holding ckpt_last.pt it continues from there\n"
    "  --nproc N     train on N processes of this machine (data-parallel over loopback, Gloo): each takes its share\n"
    "                of every global batch of data.batch_size rows: one process's computation, its sums in another\n"
    "                order; each rank gets the cores / N as --threads unless --threads is given. The ranks meet at\n"
    "                a file store in a private temporary folder: no port is opened beyond loopback\n"
    "  --timeout S   how long a rank waits for the others before it fails, naming itself (default 60)\n"
    "  Started by an external launcher (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set), the program joins that\n"
    "  group instead; every rank then needs the same --run-dir, on storage every rank can read. Rank 0 then serves\n"
    "  c10d's TCP store at MASTER_ADDR:MASTER_PORT, which has no authentication: run it on a trusted network.\n";

inline int cmd_train(int argc, char** argv) {
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
    std::printf("finished: best %s %.5f at step %ld; outputs in %s\n", c.trainer.primary_key().c_str(),
                result.best_metric, static_cast<long>(result.best_step), dir.c_str());
  return 0;
}

}  // namespace chain::commands
