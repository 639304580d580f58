#!/usr/bin/env bash
# Serving side by side: bench_serving (the E5 bundle through
# mtl::serving::Predictor) and the same model in eager PyTorch inference
# (compare_pytorch.py --serve), in one invocation, alternating which side goes
# first each round; prints every measurement, then per batch, callers and
# intra-op threads per call the median p50, p99 and throughput of each side and
# mtl's speed-up, and mtl's cost per row against a training step's.
#
#   benchmarks/serving_race.sh BUILD_DIR [ROUNDS] [CALLS]
set -euo pipefail
build=${1:?usage: serving_race.sh BUILD_DIR [ROUNDS] [CALLS]}
rounds=${2:-3}
calls=${3:-2000}
here=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3
[ -x "$python" ] && "$python" -c "import torch" 2> /dev/null || python=python3

run_cpp() { "$build/benchmarks/bench_serving" --calls "$calls"; }
run_python() { "$python" "$here/compare_pytorch.py" --serve --calls "$calls" 2> /dev/null; }

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for ((round = 1; round <= rounds; ++round)); do
  if ((round % 2 == 1)); then order=(run_cpp run_python); else order=(run_python run_cpp); fi
  for side in "${order[@]}"; do $side | sed "s/^/round $round /" | tee -a "$results"; done
done
RESULTS="$results" "$python" - <<'PYEOF'
import os, statistics
rows = {}  # (side, batch, callers, threads) -> {metric: [values]}
costs = {}  # metric -> [values]
for line in open(os.environ["RESULTS"]):
    f = line.split()
    if f[2] == "mtl_cost":
        for name, value in zip(f[3::2], f[4::2]):
            costs.setdefault(name, []).append(float(value))
    if f[2] == "mtl_products":
        costs.setdefault(f"products_ms_{f[6]}_threads", []).append(float(f[10]))
    if f[2] not in ("mtl_serve", "pytorch_serve"):
        continue
    key = (f[2].split("_")[0], int(f[4]), int(f[6]), int(f[8]))
    for name, value in zip(f[9::2], f[10::2]):
        rows.setdefault(key, {}).setdefault(name, []).append(float(value))
print("batch callers threads | mtl p50 ms  p99 ms  rows/s | pytorch p50 ms  p99 ms  rows/s | mtl speed-up (p50)")
for batch, callers, threads in sorted({(b, c, t) for _, b, c, t in rows}):
    m, p = rows.get(("mtl", batch, callers, threads)), rows.get(("pytorch", batch, callers, threads))
    med = lambda d, k: statistics.median(d[k]) if d else float("nan")
    print(f"{batch:5d} {callers:7d} {threads:7d} | {med(m, 'p50_ms'):10.3f} {med(m, 'p99_ms'):7.3f}"
          f" {med(m, 'rows_per_s'):8.0f} | {med(p, 'p50_ms'):14.3f} {med(p, 'p99_ms'):7.3f}"
          f" {med(p, 'rows_per_s'):8.0f} | {med(p, 'p50_ms') / med(m, 'p50_ms'):.1f}x")
if costs:
    print("cost per row on every core, medians over rounds: " +
          ", ".join(f"{name} {statistics.median(values):.3f}" for name, values in costs.items()))
PYEOF
