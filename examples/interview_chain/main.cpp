// interview_chain: runs the chain of seven controlled experiments (single
// task -> shared bottom -> ESMM -> MMoE -> PLE -> heterogeneous PLE) and says,
// with numbers and DeLong tests, whether each step helps.
#include "commands/export.hpp"
#include "commands/predict.hpp"
#include "commands/report_command.hpp"
#include "commands/run.hpp"
#include "commands/train.hpp"
#include "commands/validate.hpp"

#include <mtl/io/file_io.hpp>

#include <c10/util/Exception.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

namespace {

constexpr const char* kUsage =
    "usage: interview_chain <command> [options]\n"
    "commands:\n"
    "  run        run the seven experiments (or some), then write the summaries and the report\n"
    "  train      run one experiment from its config file\n"
    "  validate   check that the controlled fields agree across the seven configs\n"
    "  predict    score a data split with a run's best checkpoint, or raw CSV rows with a model bundle\n"
    "  export     write a run's best model as one bundle file for serving\n"
    "  report     rebuild the summaries and the report from a chain's run directories\n"
    "'interview_chain <command> --help' describes each.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::printf("%s", kUsage);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  try {
    if (command == "run") return chain::commands::cmd_run(argc, argv);
    if (command == "train") return chain::commands::cmd_train(argc, argv);
    if (command == "validate") return chain::commands::cmd_validate(argc, argv);
    if (command == "predict") return chain::commands::cmd_predict(argc, argv);
    if (command == "export") return chain::commands::cmd_export(argc, argv);
    if (command == "report") return chain::commands::cmd_report(argc, argv);
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
