#!/usr/bin/env bash
# The side-by-side race: the C++ E1 and E5 training steps (bench_training) and
# the same models in eager PyTorch (compare_pytorch.py), in one invocation, with
# the same threads and shapes; prints both samples/s and the ratio.
#   benchmarks/race.sh BUILD_DIR [THREADS]
set -euo pipefail
build=${1:?usage: race.sh BUILD_DIR [THREADS]}
threads=${2:-$(nproc)}
here=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3
[ -x "$python" ] && "$python" -c "import torch" 2> /dev/null || python=python3
cpp=$(OMP_NUM_THREADS=$threads "$build/benchmarks/bench_training" --benchmark_filter='BM_Step_E(1|5)/' \
        --benchmark_format=json 2> /dev/null)
# The C++ side keeps freed memory in the process (the Trainer's retain_freed_memory);
# the Python side gets the same glibc setting, so neither pays page re-zeroing.
py=$(OMP_NUM_THREADS=$threads GLIBC_TUNABLES=glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=1073741824 \
       "$python" "$here/compare_pytorch.py" --threads "$threads")
echo "$py"
CPP="$cpp" PY="$py" "$python" - <<'PYEOF'
import json, os
cpp = {b["name"].split("/")[0].replace("BM_Step_", ""): b["items_per_second"] for b in json.loads(os.environ["CPP"])["benchmarks"]}
py = {l.split()[1]: float(l.split()[3]) for l in os.environ["PY"].splitlines()}
for name in ("E1", "E5"):
    print(f"{name}: mtl {cpp[name]:.0f} samples/s, eager PyTorch {py[name]:.0f} samples/s, ratio {cpp[name] / py[name]:.2f}x")
PYEOF
