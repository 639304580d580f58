#!/usr/bin/env bash
# Runs each libFuzzer target for SECONDS from its seeds (in a scratch copy,
# so the repository's seeds stay as committed) and prints what it did.
#   fuzz/run_fuzzers.sh BUILD_DIR [SECONDS]
# A crash, hang (over 10 s on one input), leak, sanitizer report or
# uncaught exception stops that target with its reproducer under the work
# folder, and the script exits non-zero.
set -euo pipefail
build=$1 seconds=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
status=0
run() {  # target, seed folders...
  local target=$1; shift
  mkdir -p "$work/$target/corpus"
  echo "== $target: ${seconds} s"
  if ! (cd "$work/$target" && "$build/fuzz/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
          -max_len=65536 -print_final_stats=1 corpus "$@" > log.txt 2>&1); then
    tail -60 "$work/$target/log.txt"
    echo "FAIL: $target found a problem; reproducer and log in $work/$target"
    status=1
    return
  fi
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$work/$target/log.txt" | sed 's/^/  /'
  echo "  corpus: $(ls "$work/$target/corpus" | wc -l) inputs"
}
run fuzz_csv_reader "$here/seeds/csv"
run fuzz_aliccp_raw_reader "$here/seeds/raw"
run fuzz_config "$here/../examples/interview_chain/configs"
[ "$status" = 0 ] && rm -rf "$work"
exit "$status"
