#!/usr/bin/env bash
# The side-by-side race: the C++ E1 and E5 training steps (bench_training) and
# the same models in eager PyTorch (compare_pytorch.py), in one invocation, with
# the same threads and shapes; prints both samples/s and the ratio per round,
# then each model's median ratio. Rounds alternate which side runs first, so
# that a slow spell of a shared machine does not always land on the same side.
#   benchmarks/race.sh BUILD_DIR [THREADS] [ROUNDS]
set -euo pipefail
build=${1:?usage: race.sh BUILD_DIR [THREADS] [ROUNDS]}
threads=${2:-$(nproc)}
rounds=${3:-3}
here=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3
[ -x "$python" ] && "$python" -c "import torch" 2> /dev/null || python=python3

run_cpp() {
  OMP_NUM_THREADS=$threads "$build/benchmarks/bench_training" --benchmark_filter='BM_Step_E(1|5)/' \
    --benchmark_format=json 2> /dev/null
}
# The C++ side keeps freed memory in the process (the Trainer's retain_freed_memory);
# the Python side gets the same glibc setting, so neither pays page re-zeroing.
run_python() {
  OMP_NUM_THREADS=$threads GLIBC_TUNABLES=glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=1073741824 \
    "$python" "$here/compare_pytorch.py" --threads "$threads"
}

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for ((round = 1; round <= rounds; ++round)); do
  if ((round % 2)); then cpp=$(run_cpp); py=$(run_python); else py=$(run_python); cpp=$(run_cpp); fi
  CPP="$cpp" PY="$py" ROUND=$round "$python" - >> "$results" <<'PYEOF'
import json, os
cpp = {b["name"].split("/")[0].replace("BM_Step_", ""): b["items_per_second"] for b in json.loads(os.environ["CPP"])["benchmarks"]}
py = {l.split()[1]: float(l.split()[3]) for l in os.environ["PY"].splitlines()}
for name in ("E1", "E5"):
    print(f"round {os.environ['ROUND']} {name}: mtl {cpp[name]:.0f} samples/s, eager PyTorch {py[name]:.0f} samples/s, ratio {cpp[name] / py[name]:.2f}x")
PYEOF
  tail -n 2 "$results"
done
RESULTS="$results" "$python" - <<'PYEOF'
import os, statistics
ratios = {}
for line in open(os.environ["RESULTS"]):
    name = line.split()[2].rstrip(":")
    ratios.setdefault(name, []).append(float(line.split()[-1].rstrip("x")))
for name, r in ratios.items():
    print(f"{name}: median ratio {statistics.median(r):.2f}x over {len(r)} rounds (min {min(r):.2f}x, max {max(r):.2f}x)")
PYEOF
