#!/usr/bin/env bash
# The prepared check for a machine with a CUDA GPU and a CUDA build of PyTorch
# 2.x: builds mtl against that torch, runs the unit tests (the CUDA ones and
# the CPU/CUDA parity of one E1- and one E5-shaped training step among them),
# measures E1 and E5 training samples/s at batch 1024 and 8192 in fp32 and
# bf16 autocast, and runs the quick chain with --device cuda. Each stage has a
# time limit; on a 16-core machine the whole is meant to take under 10 minutes.
# Figures go to OUT_DIR/gpu_check.txt, logs beside it.
#
#   benchmarks/gpu_check.sh OUT_DIR [DEPS_DIR]
#
# DEPS_DIR holds Debian 12 .deb files of what such a machine may lack (yaml-cpp,
# nlohmann-json, Catch2; fmt comes with LibTorch 2.x); they are unpacked into a
# prefix, not installed. Make it on a Debian 12 machine with network access:
#   benchmarks/gpu_check.sh --fetch-deps DEPS_DIR
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

if [ "${1:-}" = "--fetch-deps" ]; then
  deps=${2:?usage: gpu_check.sh --fetch-deps DEPS_DIR}
  mkdir -p "$deps" && cd "$deps" || exit 1
  apt-get download libyaml-cpp0.7 libyaml-cpp-dev nlohmann-json3-dev catch2
  exit
fi
out=${1:?usage: gpu_check.sh OUT_DIR [DEPS_DIR]}
deps=${2:-}
mkdir -p "$out"
out=$(cd "$out" && pwd)
report="$out/gpu_check.txt"
: > "$report"
say() { echo "$*" | tee -a "$report"; }
stage() {  # stage NAME SECONDS COMMAND...: runs COMMAND with a time limit, its output in OUT_DIR/NAME.log
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  say "stage $name: exit $rc after $((SECONDS - start)) s (limit $limit s)"
  return $rc
}

python=${PYTHON:-python3}
device=${GPU_CHECK_DEVICE:-cuda}  # cpu tries the script's mechanics on a machine without a GPU
torch_dir=$("$python" -c "import os, torch; print(os.path.dirname(torch.__file__))" 2> /dev/null) || {
  say "no torch importable by $python"
  exit 1
}
say "torch $("$python" -c "import torch; print(torch.__version__, 'CUDA', torch.version.cuda, 'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)" 2> /dev/null)"
say "nvcc: $(nvcc --version 2> /dev/null | tail -n 1)"
prefix_path="$torch_dir"
if [ -n "$deps" ]; then
  unpacked="$out/deps-prefix"
  for f in "$deps"/*.deb; do dpkg -x "$f" "$unpacked"; done
  prefix_path="$prefix_path;$unpacked/usr"
  export LD_LIBRARY_PATH="$unpacked/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

build="$out/build"
generator=()
command -v ninja > /dev/null && generator=(-G Ninja)
stage configure 120 cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix_path" -DMTL_BUILD_TESTS=ON -DMTL_BUILD_EXAMPLES=ON || exit 1
stage build 240 cmake --build "$build" --parallel "$(nproc)" --target mtl_tests interview_chain || exit 1

# Unit tests, CUDA included; the parity test's tolerances are in tests/test_optim.cpp.
stage unit_tests 120 "$build/tests/mtl_tests" --durations no
grep -E "^(test cases|All tests passed)" "$out/unit_tests.log" | tee -a "$report"
stage cuda_parity 60 "$build/tests/mtl_tests" --success --reporter compact \
  "CPU and CUDA agree on one training step of E1- and E5-shaped models,MultiTaskModel moves with .to(dtype) and .to(device)"
grep -E "^(Passed|Failed|All tests passed|test cases)|skipped|warning" "$out/cuda_parity.log" | tail -n 5 | tee -a "$report"

# Training throughput: 300 steps of the quick preset's data, the mean samples/s of the last half of the
# logged windows (the first ones include warm-up).
chain="$build/examples/interview_chain/interview_chain"
configs="$root/examples/interview_chain/configs"
say "experiment batch precision samples_per_s"
for experiment in E1_deepfm_shared_dualhead E5_deepfm_ple_lite_hetero_esmm; do
  for batch in 1024 8192; do
    for amp in false true; do
      dir="$out/throughput_${experiment%%_*}_${batch}_${amp}"
      mkdir -p "$dir/configs"
      cp "$configs"/*.yaml "$dir/configs/"
      sed -i "s/^  batch_size: 1024/  batch_size: $batch/; s/^  amp: true .*/  amp: $amp/" "$dir/configs/base.yaml"
      timeout 60 "$chain" train --config "$dir/configs/$experiment.yaml" --run-dir "$dir/run" --preset quick \
        --device "$device" --max-steps 300 > "$dir.log" 2>&1
      rate=$("$python" -c "
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '\"split\":\"train\"' in l]
rates = [r['samples_per_s'] for r in rows][len(rows) // 2:]
print(f'{sum(rates) / len(rates):.0f}' if rates else 'none')" "$dir/run/metrics.jsonl" 2> /dev/null || echo failed)
      say "${experiment%%_*} $batch $([ "$amp" = true ] && echo bf16 || echo fp32) $rate"
    done
  done
done

# The quick chain on CUDA, one seed.
stage quick_chain 180 "$chain" run --preset quick --device "$device" --quiet --output "$out/chain/interview_chain"
cp "$out/chain/interview_chain/delta_analysis.txt" "$out/" 2> /dev/null
grep -E "finished in" "$out/quick_chain.log" | tee -a "$report"
say "done in $SECONDS s"
