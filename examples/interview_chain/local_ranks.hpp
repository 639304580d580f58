// `--nproc N`: starts N copies of this program on this machine as the ranks
// of one process group and waits for them. The ranks meet at a file store in
// a private temporary folder (MTL_STORE_FILE) and run their collectives over
// loopback, so nothing listens beyond this machine. When a rank fails, the others fail too once their next collective
// times out; a rank still running well past that is stopped, so nothing
// waits forever.
#pragma once

#include <c10/util/Exception.h>
#include <fmt/core.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace chain {

/// A private temporary folder (mode 0700), removed with what it holds when this goes out of scope.
class PrivateFolder {
 public:
  PrivateFolder() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/mtl-ranks-XXXXXX";
    TORCH_CHECK(::mkdtemp(pattern.data()) != nullptr, "cannot create a folder for the ranks' store (", pattern,
                "): ", std::strerror(errno));
    path_ = pattern;
  }
  ~PrivateFolder() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  PrivateFolder(const PrivateFolder&) = delete;
  PrivateFolder& operator=(const PrivateFolder&) = delete;
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

/// How a child process ended, in words.
inline std::string exit_description(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "ended";
}

/// Runs `argv` (this program's own arguments) as ranks 0..nproc-1 and
/// returns 0 when every rank exits 0. A rank that fails is named on stderr;
/// ranks still running `grace` after the first failure are killed.
inline int run_local_ranks(char** argv, int nproc, std::chrono::seconds grace) {
  TORCH_CHECK(nproc >= 1, "--nproc expects a count of 1 or more, but got ", nproc);
  const PrivateFolder folder;
  const std::string store = folder.path() + "/store";
  // Each rank's environment is built before fork: the child only calls execve.
  std::vector<std::vector<std::string>> environments;
  for (int rank = 0; rank < nproc; ++rank) {
    std::vector<std::string> env{"RANK=" + std::to_string(rank), "LOCAL_RANK=" + std::to_string(rank),
                                 "WORLD_SIZE=" + std::to_string(nproc), "LOCAL_WORLD_SIZE=" + std::to_string(nproc),
                                 "MTL_STORE_FILE=" + store};
    const auto launcher_set = env.size();  // then the rest of this process's environment
    for (char** var = environ; *var != nullptr; ++var) {
      const std::string entry = *var, name = entry.substr(0, entry.find('='));
      const bool replaced = std::any_of(env.begin(), env.begin() + static_cast<std::ptrdiff_t>(launcher_set),
                                        [&](const std::string& mine) { return mine.rfind(name + "=", 0) == 0; });
      if (!replaced) env.push_back(entry);
    }
    environments.push_back(std::move(env));
  }
  std::vector<pid_t> ranks;
  for (int rank = 0; rank < nproc; ++rank) {
    std::vector<char*> envp;
    for (auto& entry : environments[static_cast<size_t>(rank)]) envp.push_back(entry.data());
    envp.push_back(nullptr);
    const pid_t pid = ::fork();
    TORCH_CHECK(pid >= 0, "cannot start rank ", rank, ": ", std::strerror(errno));
    if (pid == 0) {
      ::execve("/proc/self/exe", argv, envp.data());
      static const char message[] = "error: a rank could not start this program again (execve failed)\n";
      [[maybe_unused]] const auto written = ::write(STDERR_FILENO, message, sizeof message - 1);
      ::_exit(127);
    }
    ranks.push_back(pid);
  }
  int running = nproc, failures = 0;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      --running;
      const auto rank = std::find(ranks.begin(), ranks.end(), pid) - ranks.begin();
      ranks[static_cast<size_t>(rank)] = 0;
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0) continue;
      std::fprintf(stderr, "rank %ld of %d %s\n", static_cast<long>(rank), nproc, exit_description(status).c_str());
      if (failures++ == 0) deadline = std::chrono::steady_clock::now() + grace;
      continue;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      for (size_t rank = 0; rank < ranks.size(); ++rank)
        if (ranks[rank] > 0) {
          std::fprintf(stderr, "rank %zu of %d still ran %lld s after a rank failed: stopped it\n", rank, nproc,
                       static_cast<long long>(grace.count()));
          ::kill(ranks[rank], SIGKILL);
        }
      deadline = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace chain
