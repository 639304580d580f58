#!/usr/bin/env bash
# The side-by-side race: the C++ E1 and E5 training steps (bench_training) and
# the same models in eager PyTorch (compare_pytorch.py), in one invocation, with
# the same threads and shapes; prints samples/s and the ratios per round, then
# each model's median ratios. Rounds alternate the order of the sides, so that
# a slow spell of a shared machine does not always land on the same one.
#
#   benchmarks/race.sh BUILD_DIR [THREADS] [ROUNDS] [TORCH2_BUILD_DIR]
#
# BUILD_DIR is mtl built against Debian's LibTorch 1.13, raced against the
# python3 that imports Debian's torch. With TORCH2_BUILD_DIR (mtl built against
# the pinned PyTorch 2.x, scripts/torch2-venv.sh), the same rounds also race
# that build against PyTorch 2.x eager and torch.compile from the venv
# (TORCH2_VENV names another venv directory).
set -euo pipefail
build=${1:?usage: race.sh BUILD_DIR [THREADS] [ROUNDS] [TORCH2_BUILD_DIR]}
threads=${2:-$(nproc)}
rounds=${3:-3}
build2=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3
[ -x "$python" ] && "$python" -c "import torch" 2> /dev/null || python=python3
python2=""
[ -n "$build2" ] && python2=$("$here/../scripts/torch2-venv.sh" --python "${TORCH2_VENV:-}")

run_cpp() {  # run_cpp BUILD_DIR LABEL
  OMP_NUM_THREADS=$threads "$1/benchmarks/bench_training" --benchmark_filter='BM_Step_E(1|5)/' \
    --benchmark_format=json 2> /dev/null |
    "$python" -c "
import json, sys
for b in json.load(sys.stdin)['benchmarks']:
    print('$2', b['name'].split('/')[0].replace('BM_Step_', ''), 'samples_per_s', round(b['items_per_second']))"
}
# The C++ side keeps freed memory in the process (the Trainer's retain_freed_memory);
# the Python side gets the same glibc setting, so neither pays page re-zeroing.
run_python() {  # run_python PYTHON LABEL [--compile]
  local interpreter=$1 label=$2
  shift 2
  OMP_NUM_THREADS=$threads GLIBC_TUNABLES=glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=1073741824 \
    "$interpreter" "$here/compare_pytorch.py" --threads "$threads" "$@" 2> /dev/null | sed "s/^pytorch_/${label}_/"
}
sides=("run_cpp $build mtl_1.13" "run_python $python torch1.13")
[ -n "$build2" ] && sides+=("run_cpp $build2 mtl_2.x" "run_python $python2 torch2.x --compile")

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for ((round = 1; round <= rounds; ++round)); do
  order=("${sides[@]}")
  if ((round % 2 == 0)); then
    order=()
    for ((i = ${#sides[@]} - 1; i >= 0; --i)); do order+=("${sides[i]}"); done
  fi
  for side in "${order[@]}"; do $side | sed "s/^/round $round /" | tee -a "$results"; done
done
RESULTS="$results" "$python" - <<'PYEOF'
import os, statistics
rates = {}  # (round, model) -> {label: samples/s}
for line in open(os.environ["RESULTS"]):
    _, r, label, model, _, value = line.split()
    rates.setdefault((r, model), {})[label] = float(value)
pairs = [("mtl_1.13", "torch1.13_eager"), ("mtl_2.x", "torch2.x_eager"), ("mtl_2.x", "torch2.x_compile")]
for model in ("E1", "E5"):
    for ours, theirs in pairs:
        ratios = [v[ours] / v[theirs] for (r, m), v in sorted(rates.items()) if m == model and ours in v and theirs in v]
        if ratios:
            print(f"{model}: {ours} / {theirs}: median ratio {statistics.median(ratios):.2f}x over {len(ratios)} rounds"
                  f" (min {min(ratios):.2f}x, max {max(ratios):.2f}x)")
PYEOF
