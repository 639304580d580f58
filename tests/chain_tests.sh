#!/usr/bin/env bash
# End-to-end tests of the interview_chain program, one per ctest entry:
#   chain_tests.sh BINARY CONFIG_DIR DATA_DIR WORK_DIR TEST_NAME
# DATA_DIR is tests/data. A test that cannot run on this machine exits 77 (ctest: skipped).
set -euo pipefail
bin=$1 configs=$2 data=$3 work=$4 name=$5
rm -rf "$work/$name"
mkdir -p "$work/$name"
cd "$work/$name"

fail() { echo "FAIL: $*" >&2; exit 1; }
expect_in() { grep -qF -- "$1" "$2" || { echo "--- $2:"; cat "$2"; fail "expected '$1' in $2"; }; }
# A TCP port on the loopback address that was free a moment ago.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The 18 sparse fields most papers use, no dense columns: the Ali-CCP sample cut into folder $1.
aliccp_18_fields() {
  mkdir "$1"
  for split in train test; do
    cut -d, -f1-14,16-21 "$data/aliccp/ali_ccp_${split}_sample.csv" > "$1/aliccp_$split.csv"
  done
}

# A config beside copies of the shipped ones, written from the text $2 as bad/$1.yaml, must be refused by train
# with a message that contains $3.
expect_refused() {
  mkdir -p bad
  cp -n "$configs"/*.yaml bad/
  printf '%b' "$2" > "bad/$1.yaml"
  ! "$bin" train --config "bad/$1.yaml" --preset tiny --run-dir x --quiet 2> err.txt || fail "bad/$1.yaml was accepted"
  expect_in "$3" err.txt
}

# Summary numbers of a chain folder: experiment id and every metric column.
numbers() { cut -d, -f1,4-11 "$1/summary.csv"; }

case "$name" in
help)
  "$bin" --help | grep -q "usage: interview_chain" || fail "top-level --help"
  for cmd in run train validate predict export report; do
    "$bin" "$cmd" --help > out.txt || fail "$cmd --help exited non-zero"
    expect_in "usage: interview_chain $cmd" out.txt
  done
  ;;

tiny_chain)
  "$bin" run --configs "$configs" --preset tiny --output chain --quiet > log.txt
  [ "$(grep -c ',"finished",' chain/summary.csv)" = 8 ] || { cat chain/summary.csv; fail "not all eight finished"; }
  for f in summary.csv summary.json delta_analysis.txt delta_analysis.json report.html chain_state.json; do
    [ -s "chain/$f" ] || fail "missing $f"
  done
  for d in interview_E*; do
    for f in config.yaml train.log metrics.jsonl ckpt_best.pt eval.json expert_health_diag.jsonl; do
      [ -s "$d/$f" ] || fail "missing $d/$f"
    done
  done
  [ "$(grep -c '^Q[1-5] ' chain/delta_analysis.txt)" = 5 ] || fail "expected five questions"
  [ "$(grep -c '^  primary ' chain/delta_analysis.txt)" = 5 ] || fail "expected one primary comparison per question"
  expect_in "primary      E2 vs E1   auc_cvr_entire_space" chain/delta_analysis.txt
  # One seed cannot measure the variation between training runs: nothing is called significant.
  expect_in "With 1 seed(s) the variation between training runs cannot be measured" chain/delta_analysis.txt
  ! grep -q -- "-> significant" chain/delta_analysis.txt || fail "a one-seed chain called a difference significant"
  expect_in "cannot be measured" chain/report.html
  expect_in "<svg" chain/report.html
  # Every experiment normalises what its towers read, and the report says so.
  expect_in "E0a on, E0b on, E1 on, E2 on, E3 on, E4 on, E5 on, E5na off; a comparison of one with it" chain/delta_analysis.txt
  # report DIR rebuilds the same summary from the run directories alone.
  cp chain/summary.csv before.csv
  "$bin" report chain > /dev/null
  cmp -s before.csv chain/summary.csv || fail "report rebuilt a different summary"
  # predict scores the test split with a run's best checkpoint.
  "$bin" predict --run interview_E5_* --out e5.csv > e5_predict.txt
  [ "$(wc -l < e5.csv)" = 4001 ] || fail "predict wrote $(wc -l < e5.csv) lines, expected 4001"
  # It reads each AUC's rows as the trainer does: its test AUCs are the ones eval.json holds.
  expect_in "test split: auc_ctr=" e5_predict.txt
  python3 - interview_E5_*/eval.json e5_predict.txt <<'PY' || fail "predict's test AUCs differ from eval.json's"
import json, re, sys
values = json.load(open(sys.argv[1]))["values"]
printed = dict(re.findall(r" (auc_[a-z_]+)=([0-9.]+)", open(sys.argv[2]).read()))
assert set(printed) == {"auc_ctr", "auc_cvr", "auc_ctcvr", "auc_cvr_entire_space"}, printed
for key, value in printed.items():
    assert abs(float(value) - values[key]) < 2e-5, (key, value, values[key])
PY
  head -1 e5.csv | grep -q "^row,p_ctr,p_cvr,p_ctcvr,click,conversion$" || fail "predict header"
  # The synthetic training rows, generated as batches were drawn, are generated whole for --split train.
  "$bin" predict --run interview_E5_* --split train --out e5_train.csv > /dev/null
  [ "$(wc -l < e5_train.csv)" = 20001 ] || fail "predict --split train wrote $(wc -l < e5_train.csv) lines, expected 20001"
  # --skip and --resume: a second run skips every finished experiment.
  "$bin" run --configs "$configs" --preset tiny --output chain --resume --quiet > resume.txt
  [ "$(grep -c 'finished earlier' resume.txt)" = 8 ] || fail "resume did not skip finished experiments"
  ;;

seeds_verdicts)
  # Three seeds: every available comparison pairs three runs, the five primaries
  # are Holm-adjusted together, and each verdict follows from its p-value.
  "$bin" run --configs "$configs" --preset tiny --max-steps 20 --seeds 3 --output chain --quiet > log.txt
  python3 - chain/delta_analysis.json <<'PY' || fail "delta_analysis.json does not hold what a three-seed chain computes"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["paired_seeds"] == 3 and d["alpha"] == 0.05, d["paired_seeds"]
rows = [c for c in d["comparisons"] if c["available"]]
primaries = [c for c in rows if c["primary"]]
assert sorted(c["question"] for c in primaries) == ["Q1", "Q2", "Q3", "Q4", "Q5"], primaries
ps = sorted(c["p"] for c in primaries)
for c in rows:
    assert len(c["per_seed_differences"]) == 3, c
    assert abs(sum(c["per_seed_differences"]) / 3 - c["mean_difference"]) < 1e-12, c
    lo, hi = c["interval_95"]
    assert lo <= c["mean_difference"] <= hi, c
    p = c["p_adjusted"] if c["primary"] else c["p"]
    assert c["margin"] > 0 and c["mde"] > 0 and 0 <= c["equivalence_p"] <= 1, c
    if c["equivalence_p"] < 0.05:  # inside the margin, significant or not
        expected = "equivalent"
    elif p < 0.05:
        expected = "gain" if c["mean_difference"] > 0 else "loss"
    else:
        expected = "inconclusive"
    assert c["verdict"] == expected, c
    if expected == "equivalent":  # two one-sided tests: the 90 % interval inside the margin
        assert abs(c["mean_difference"]) < c["margin"], c
for c in primaries:  # Holm: never below the raw p, at most the family size times it
    assert c["p"] <= c["p_adjusted"] <= min(1.0, 5 * c["p"]) + 1e-12, c
assert all(c["p_adjusted"] is None for c in rows if not c["primary"])
# Synthetic data: each primary carries the designed answer, the exploratory lines none.
assert d["scenario"] == "designed", d["scenario"]
assert [c["designed"] for c in sorted(primaries, key=lambda c: c["question"])] == ["loss", "gain", "loss", "none", "none"]
assert all(c["designed"] is None for c in rows if not c["primary"])
# What each model learned of each mechanism: a finite slope per head the model has and term the data plant.
u = d["mechanism_uptake"]
heads = {"E0a": ["ctr"], "E0b": ["cvr"]}
for e in ["E0a", "E0b", "E1", "E2", "E3", "E4", "E5"]:
    want = [(h, t) for h in heads.get(e, ["ctr", "cvr"]) for t in (["taste", "private", "cross"] if h == "ctr" else ["taste", "private"])]
    assert [(t["head"], t["term"]) for t in u[e]] == want, (e, u[e])
    assert all(abs(t["slope"]) < 100 for t in u[e]), u[e]
PY
  expect_in "What the models learned of each mechanism" chain/delta_analysis.txt
  expect_in "<h2>Mechanisms learned</h2>" chain/report.html
  expect_in "here 3 seed(s) were paired" chain/delta_analysis.txt
  expect_in "Designed vs found (synthetic data, designed scenario; primary comparisons)" chain/delta_analysis.txt
  expect_in "<h2>Designed vs found</h2>" chain/report.html
  expect_in "The designed answers are set for the quick preset's budget (2500 steps)" chain/delta_analysis.txt
  expect_in "The answers are set for the quick preset's budget (2500 steps)" chain/report.html
  # Under the null scenario every designed answer is none (the runs' config snapshots say which scenario).
  sed -i 's/scenario: designed/scenario: "null"/' interview_E*/config.yaml
  "$bin" report chain > /dev/null
  ! grep -qF "set for the quick preset's budget" chain/delta_analysis.txt chain/report.html ||
    fail "the null scenario's report ties its answers to a budget"
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert d["scenario"] == "null" and {c["designed"] for c in d["comparisons"] if c["primary"]} == {"none"} and d["mechanism_uptake"] is None, d' chain/delta_analysis.json || fail "the null scenario's designed answers are not all none, or it reports mechanisms"
  ;;

distributed)
  # train --nproc 2 over loopback against one process, E2 and E5: the best
  # checkpoints equal within 1e-4 relative and the test AUCs within 1e-4. Both
  # ranks killed after a validation and resumed: the same model again. A rank
  # killed mid-run ends the run within the timeout, naming the rank. Ranks
  # started from outside (torchrun's variables) train the same model; a rank
  # started with other settings, or a WORLD_SIZE that --nproc contradicts, is refused.
  : "${MTL_TORCH_PYTHON:?this test needs a python3 with PyTorch (python3-torch)}"
  same_models() {
    "$MTL_TORCH_PYTHON" - "$1" "$2" <<'PY' || fail "the runs in $1 and $2 differ"
import json, sys, torch
a, b = sys.argv[1:3]
ca, cb = torch.load(f"{a}/ckpt_best.pt"), torch.load(f"{b}/ckpt_best.pt")
assert ca.keys() == cb.keys(), (sorted(ca.keys()), sorted(cb.keys()))
for k in ca:
    if k == "__checksum__":
        continue
    x, y = ca[k].double(), cb[k].double()
    scale = max(x.abs().max().item(), 1e-12)
    assert (x - y).abs().max().item() <= 1e-4 * scale, (k, (x - y).abs().max().item(), scale)
ea, eb = json.load(open(f"{a}/eval.json")), json.load(open(f"{b}/eval.json"))
assert ea["best_step"] == eb["best_step"], (ea["best_step"], eb["best_step"])
aucs = [k for k in ea["values"] if k.startswith("auc")]
assert aucs, ea
for k in aucs:
    assert abs(ea["values"][k] - eb["values"][k]) <= 1e-4, (k, ea["values"][k], eb["values"][k])
print(f"{a} = {b}: {len(ca) - 1} tensors, " + ", ".join(f"{k} {ea['values'][k]:.5f}" for k in aucs))
PY
  }
  for e in E2 E5; do
    config=$(ls "$configs"/${e}_*.yaml)
    "$bin" train --config "$config" --preset tiny --max-steps 24 --run-dir one_$e --quiet > one_$e.txt
    "$bin" train --config "$config" --preset tiny --max-steps 24 --run-dir two_$e --nproc 2 --quiet > two_$e.txt
    expect_in "(2 processes)" two_$e.txt
    same_models one_$e two_$e
  done
  # The launcher gave each rank its share of the cores as --threads, recorded; the rest is the same config.
  [ "$(sed -E 's/, threads: [0-9]+}/}/' two_E2/config.yaml)" = "$(cat one_E2/config.yaml)" ] ||
    fail "the ranks' run wrote another config.yaml than --threads explains"
  # run --nproc 2: each experiment trained by both ranks, one set of run folders, the same summary.
  chain_args=(--configs "$configs" --preset tiny --max-steps 20 --only E2,E5 --quiet)
  "$bin" run "${chain_args[@]}" --output chain_one/chain > run_one.txt
  "$bin" run "${chain_args[@]}" --output chain_two/chain --nproc 2 > run_two.txt
  [ "$(ls -d chain_two/interview_E* | wc -l)" = 2 ] || fail "two ranks made other run folders than two"
  python3 - chain_one/chain/summary.json chain_two/chain/summary.json <<'PY' || fail "run --nproc 2 gave another summary"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert [r["exp_id"] for r in a] == [r["exp_id"] for r in b]
compared = 0
for x, y in zip(a, b):
    assert x["status"] == y["status"] and x["best_step"] == y["best_step"], (x, y)
    for k in x:
        if k.startswith("auc") and x[k] is not None:
            assert abs(x[k] - y[k]) <= 1e-4, (x["exp_id"], k, x[k], y[k])
            compared += 1
assert compared >= 8, compared
PY
  e2=$(ls "$configs"/E2_*.yaml)
  status=0
  MTL_CRASH_AT=after_validation:3 "$bin" train --config "$e2" --preset tiny --max-steps 24 --run-dir resumed \
    --nproc 2 --quiet > crashed.txt 2>&1 || status=$?
  [ "$status" != 0 ] || fail "the ranks did not stop at MTL_CRASH_AT"
  expect_in "killed by signal 9" crashed.txt
  [ -e resumed/ckpt_last.pt ] && [ ! -e resumed/eval.json ] || fail "no unfinished run to resume"
  "$bin" train --config "$e2" --preset tiny --max-steps 24 --run-dir resumed --nproc 2 --quiet > resumed.txt
  expect_in "resumed from" resumed/train.log
  same_models two_E2 resumed

  "$bin" train --config "$e2" --preset tiny --max-steps 100000 --run-dir killed --nproc 2 --timeout 5 \
    > killed.txt 2>&1 &
  launcher=$!
  for _ in $(seq 1 600); do  # until rank 0 has started training
    [ -s killed/train.log ] && break
    sleep 0.1
  done
  sleep 2
  # Local ranks open no port beyond this machine: any socket of theirs still listening is on loopback
  # (a TCP store would listen on every interface for the whole run).
  ss -ltnpH > listening.txt
  ! grep 'interview_chain' listening.txt | awk '{print $4}' | grep -vE '^(127\.[0-9.]+|\[::1\]):' ||
    { cat listening.txt; fail "a local rank listens beyond loopback"; }
  for child in /proc/[0-9]*; do  # the launcher's child with RANK=1
    [ "$(awk '{print $4}' "$child/stat" 2> /dev/null)" = "$launcher" ] || continue
    if tr '\0' '\n' < "$child/environ" 2> /dev/null | grep -qx RANK=1; then kill -9 "${child#/proc/}"; fi
  done
  started=$SECONDS
  status=0
  wait "$launcher" || status=$?
  [ "$status" != 0 ] || fail "the run ended well after one of its ranks was killed"
  [ $((SECONDS - started)) -lt 60 ] || fail "the other rank took $((SECONDS - started)) s to stop"
  expect_in "rank 1 of 2 was killed by signal 9" killed.txt
  expect_in "rank 0 of 2: " killed.txt
  expect_in "another rank has exited or stopped answering" killed.txt
  expect_in "rank 0 of 2 exited with status" killed.txt

  port=$(free_port)
  rank() {  # rank, max steps, run folder: one rank as an external launcher starts it
    RANK=$1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port "$bin" train --config "$e2" --preset tiny \
      --max-steps "$2" --run-dir "$3" --threads 1 --timeout 20 --quiet > "rank$1.txt" 2>&1
  }
  rank 0 24 external &
  first=$!
  rank 1 24 external || { cat rank1.txt; fail "a rank started from outside failed"; }
  wait "$first" || { cat rank0.txt; fail "rank 0 started from outside failed"; }
  same_models two_E2 external
  port=$(free_port)
  rank 0 24 other &
  first=$!
  ! rank 1 30 other || fail "a rank with other settings was accepted"
  ! wait "$first" || fail "rank 0 accepted a rank with other settings"
  expect_in "rank 1 was started with other settings (config, overrides and output folder) than rank 0" rank0.txt
  ! RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port "$bin" train --config "$e2" --preset tiny --run-dir x \
    --nproc 3 > mismatch.txt 2>&1 ||
    fail "--nproc 3 with WORLD_SIZE=2 was accepted"
  expect_in "--nproc is 3 but WORLD_SIZE is 2" mismatch.txt
  ! RANK=2 WORLD_SIZE=2 "$bin" train --config "$e2" --preset tiny --run-dir x > rank_range.txt 2>&1 ||
    fail "RANK=2 of WORLD_SIZE=2 was accepted"
  expect_in "the environment's RANK is '2': expected an integer in [0, 1]" rank_range.txt
  ;;

kill_and_resume)
  # An uninterrupted reference; then one chain killed (SIGKILL) again and
  # again - at a moment chosen from outside, halfway through a checkpoint
  # write, between moving the last checkpoint aside and writing the new one,
  # between validation and checkpoint, halfway through another file's write -
  # and once with its last checkpoint damaged; each time resumed. The summary
  # numbers must equal the reference's.
  args=(--configs "$configs" --preset tiny --max-steps 100 --quiet --output killed/chain)
  "$bin" run --configs "$configs" --preset tiny --max-steps 100 --quiet --output ref/chain > /dev/null
  mkdir killed
  "$bin" run "${args[@]}" > killed.log 2>&1 &
  pid=$!
  for _ in $(seq 1 3000); do  # up to 5 minutes on a loaded machine
    if compgen -G "killed/interview_E1_*/ckpt_last.pt" > /dev/null; then break; fi
    sleep 0.1
  done
  kill -9 "$pid" 2> /dev/null || fail "the run ended before it could be killed"
  wait "$pid" 2> /dev/null || true
  [ ! -e killed/interview_E1_*/eval.json ] || fail "E1 finished before the kill"
  unfinished() { for d in killed/interview_*; do [ -e "$d/eval.json" ] || echo "$d"; done; }
  crash_then_resume() {  # MTL_CRASH_AT value; the run must die by SIGKILL there
    local status=0
    MTL_CRASH_AT=$1 "$bin" run "${args[@]}" --resume > "crash_$1.log" 2>&1 || status=$?
    [ "$status" = 137 ] || { cat "crash_$1.log"; fail "expected a SIGKILL (status 137) at $1, got status $status"; }
  }
  # The counts below are chosen so that each point falls where the check after it looks (a rotation
  # with a checkpoint to move aside; a validation after two saved checkpoints): a change to the tiny
  # preset's data or to when checkpoints are written can move them.
  crash_then_resume checkpoint_write:4
  compgen -G "$(unfinished)/ckpt_*.pt.tmp.*" > /dev/null || fail "no half-written checkpoint after checkpoint_write"
  crash_then_resume checkpoint_rotate:9
  d=$(unfinished)
  # Where the rotation was a run's first, it had nothing to move aside: the run's second one has.
  if [ ! -e "$d/ckpt_prev.pt" ] && [ ! -e "$d/ckpt_last.pt" ]; then
    crash_then_resume checkpoint_rotate:2
    d=$(unfinished)
  fi
  [ -e "$d/ckpt_prev.pt" ] && [ ! -e "$d/ckpt_last.pt" ] || fail "checkpoint_rotate should leave $d with ckpt_prev.pt only"
  crash_then_resume after_validation:7
  # Damage the last checkpoint of the interrupted experiment: resuming refuses it and takes the previous one.
  d=$(unfinished)
  [ -e "$d/ckpt_prev.pt" ] && [ -e "$d/ckpt_last.pt" ] || fail "expected $d to hold ckpt_last.pt and ckpt_prev.pt"
  truncate -s -100 "$d/ckpt_last.pt"
  crash_then_resume atomic_write:12
  expect_in "ckpt_last.pt' is not a readable tensor dict (truncated or corrupted?)" "$d/train.log"
  expect_in "resumed from $PWD/$d/ckpt_prev.pt" "$d/train.log"
  "$bin" run "${args[@]}" --resume > resumed.log
  expect_in "finished earlier" resumed.log
  [ "$(grep -c ',"finished",' killed/chain/summary.csv)" = 8 ] || { cat killed/chain/summary.csv; fail "not all eight finished"; }
  ! compgen -G "killed/interview_*/*.tmp.*" > /dev/null || fail "temporary files were left behind"
  diff <(numbers ref/chain) <(numbers killed/chain) || fail "resumed summary differs from the uninterrupted one"
  ;;

storage_faults)
  # An output folder that cannot be created, then a disk that fills up (a
  # file-size limit: writes fail with EFBIG as they would with ENOSPC) while
  # E1 saves its first checkpoint: a clear error, the chain stops, E0a's
  # finished results stay as they were, and a resumed run finishes.
  touch plain_file
  status=0
  "$bin" run --configs "$configs" --preset tiny --output plain_file/chain > out.txt 2>&1 || status=$?
  [ "$status" = 3 ] || fail "expected status 3 for an output folder below a file, got $status"
  expect_in "error: cannot create the output folder 'plain_file/chain': Not a directory" out.txt
  args=(--configs "$configs" --preset tiny --quiet --output chain)
  "$bin" run "${args[@]}" --only E0a > /dev/null
  cp interview_E0a_*/eval.json e0a_eval.json
  status=0
  (ulimit -f 64; trap '' XFSZ; "$bin" run "${args[@]}" --only E0a,E1 --resume) > full.txt 2>&1 || status=$?
  [ "$status" = 3 ] || { cat full.txt; fail "expected status 3 when the disk is full, got $status"; }
  expect_in "File too large" full.txt
  expect_in "finished results are kept" full.txt
  cmp -s e0a_eval.json interview_E0a_*/eval.json || fail "E0a's eval.json changed"
  [ ! -e interview_E1_*/eval.json ] || fail "E1 finished although its checkpoint could not be written"
  "$bin" run "${args[@]}" --only E0a,E1 --resume > resumed.txt
  expect_in "E0a: finished earlier" resumed.txt
  [ "$(grep -c ',"finished",' chain/summary.csv)" = 2 ] || { cat chain/summary.csv; fail "E0a and E1 should finish"; }
  ;;

validate)
  "$bin" validate --configs "$configs" > ok.txt || fail "validate failed on the shipped configs"
  expect_in "[ok]   optim.dense.lr = 0.0006" ok.txt
  cp -r "$configs" changed
  sed -i 's/^runtime:$/optim:\n  dense:\n    lr: 0.001\nruntime:/' changed/E3_deepfm_mmoe_esmm.yaml
  if "$bin" validate --configs changed > bad.txt; then fail "validate passed a changed locked field"; fi
  expect_in "[FAIL] optim.dense.lr differs:" bad.txt
  expect_in "0.001  in E3 at changed/E3_deepfm_mmoe_esmm.yaml:20" bad.txt
  if "$bin" run --configs changed --preset tiny --output refused > refused.txt 2>&1; then fail "run accepted differing configs"; fi
  expect_in "refusing to run" refused.txt
  # The synthetic scenario: null is a controlled field like any other; an unknown one is refused.
  "$bin" validate --configs "$configs" --data synthetic:null > null.txt || fail "validate failed with --data synthetic:null"
  expect_in '[ok]   data.synthetic.scenario = "null"' null.txt
  cp -r "$configs" yaml_null
  sed -i 's/    scenario: designed .*/    scenario: null/' yaml_null/base.yaml
  if "$bin" validate --configs yaml_null > yaml_null.txt 2>&1; then fail "validate took YAML's null for a scenario"; fi
  expect_in "base.yaml:11: field 'data.synthetic.scenario' reads YAML's null value here; to choose 'null', quote it" yaml_null.txt
  if "$bin" run --configs "$configs" --preset tiny --data synthetic:nul --output refused > nul.txt 2>&1; then
    fail "run accepted an unknown synthetic scenario"
  fi
  expect_in "--data synthetic:SCENARIO expects the scenario designed or null, got 'nul'" nul.txt
  ;;

config_errors)
  cp "$configs/base.yaml" base.yaml
  good="$configs/E5_deepfm_ple_lite_hetero_esmm.yaml"
  # Each case: a sed edit of E5's config and the message it must produce.
  check() {
    sed "$1" "$good" > case.yaml
    if "$bin" train --config case.yaml --preset tiny --run-dir run > out.txt 2>&1; then fail "accepted: $1"; fi
    expect_in "$2" out.txt
  }
  check 's/^use_esmm: true/use_esmn: true/' "case.yaml:24: unknown field 'use_esmn'; did you mean 'use_esmm'?"
  check 's/^  mixer: ple/  mtl: ple/' "case.yaml:6: field 'model.mtl' is now 'model.mixer'"
  check 's/^  align_outputs: true/  ple:\n    expert_output_align:\n      enabled: true/' \
    "field 'model.ple.expert_output_align.enabled' is now 'model.align_outputs'"
  check 's/    num_levels: 1/\tnum_levels: 1/' "case.yaml:10:1: not valid YAML (illegal tab when looking for indentation); check the indentation, and use spaces, not tabs"
  check 's/^base: base.yaml/base: nobase.yaml/' "case.yaml:1: config file 'nobase.yaml' does not exist"
  check "s/^base: base.yaml/base: $(printf 'a%.0s' $(seq 300)).yaml/" "case.yaml:1: config file 'aaaa"
  expect_in "cannot be read: File name too long" out.txt
  check 's/^esmm:/esmm: 3\nold_esmm:/' "case.yaml:25: 'esmm' is a section; it expects fields below it, like 'esmm.counterfactual'"
  check 's/      shared:/      [a, b]: 1\n      shared:/' "case.yaml:13: expected a field name, got a list"
  check 's/    expert_dim: 64/    expert_dim: 99999999999999999999/' "case.yaml:11: field 'model.ple.expert_dim' expects an integer, got '99999999999999999999'"
  check 's/    expert_dim: 64/    expert_dim: -4/' "case.yaml:11: field 'model.ple.expert_dim': expected a positive width"
  check 's/^use_esmm: true/use_esmm: maybe/' "field 'use_esmm' expects true or false, got 'maybe'"
  check 's/  enabled_heads: \[ctr, cvr\]/  enabled_heads: ctr/' "field 'model.enabled_heads' expects a list of strings"
  : > empty.yaml
  "$bin" train --config empty.yaml --run-dir run > out.txt 2>&1 && fail "accepted an empty config"
  expect_in "empty.yaml: expected a mapping of config sections at the top level" out.txt
  check 's/    num_levels: 1/      num_levels: 1/' "not valid YAML"
  check 's/    expert_dim: 64/    expert_dim: wide/' "case.yaml:11: field 'model.ple.expert_dim' expects an integer, got 'wide'"
  check 's/  enabled_heads: \[ctr, cvr\]/  enabled_heads: [ctr]/' "ESMM needs both a ctr and a cvr head"
  check '/^runtime:/,$d' "required field 'runtime.best_selection.primary_key' is missing"
  check 's/primary_key: auc_ctcvr/primary_key: auc_ctcvrr/' "cannot produce 'auc_ctcvrr'"
  check 's/^      shared:/      shared: []\n      unused:/' "unknown field 'model.ple.experts.unused'"
  check 's/        - {type: cross, layers: 3}/        - {type: cross, layers: 0}/' "a cross expert needs layers >= 1, got 0"
  check 's/        - {type: cross, layers: 3}/        - {type: cross,  [3]}/' "an expert's value has the wrong type"
  check 's/  lambda_cvr_aux: 0.1/  lambda_cvr_aux: -0.5/' "field 'esmm.lambda_cvr_aux': expected lambda >= 0"
  check 's/^use_esmm: true/use_esmm: true\nloss:\n  cvr_denominator: all_rows/' "field 'loss.cvr_denominator': applies to a model with ctr and cvr heads without ESMM"
  check 's/^use_esmm: true/use_esmm: true\nloss:\n  cvr_denominator: impressions/' "field 'loss.cvr_denominator'"
  sed 's/^  batch_size: 1024/  batch_size: 0/' "$configs/base.yaml" > base.yaml
  sed 's/^base: base.yaml/base: base.yaml/' "$good" > case.yaml
  "$bin" train --config case.yaml --run-dir run > out.txt 2>&1 && fail "accepted batch size 0"
  expect_in "base.yaml:6: field 'data.batch_size': expected a positive batch size, got 0" out.txt
  sed 's/^    lr: 0.0006/    lr: -0.1/' "$configs/base.yaml" > base.yaml
  "$bin" train --config case.yaml --run-dir run > out.txt 2>&1 && fail "accepted a negative learning rate"
  expect_in "field 'optim.dense.lr': expected a learning rate >= 0" out.txt
  sed 's/^  neg_keep_prob_train: 1.0 .*/  neg_keep_prob_train: 0.5/' "$configs/base.yaml" > base.yaml
  "$bin" train --config case.yaml --run-dir run > out.txt 2>&1 && fail "accepted down-sampling under ESMM"
  expect_in "ESMM models the entire impression space and needs every negative" out.txt
  cp "$configs/base.yaml" base.yaml
  sed 's/    num_experts: 4/    num_experts: 0/' "$configs/E3_deepfm_mmoe_esmm.yaml" > case.yaml
  "$bin" train --config case.yaml --run-dir run > out.txt 2>&1 && fail "accepted zero experts"
  expect_in "field 'model.mmoe.num_experts': expected at least one expert, got 0" out.txt
  ;;

report_renders)
  # The report is one self-contained file that headless Chromium renders.
  browser=$(command -v chromium || command -v chromium-browser || true)
  if [ -z "$browser" ]; then echo "skipped: no chromium on this machine (Debian package chromium)"; exit 77; fi
  "$bin" run --configs "$configs" --preset tiny --only E3,E5 --output chain --quiet > /dev/null
  ! grep -qE "(src|href)=['\"]?https?:" chain/report.html || fail "report.html refers to the network"
  timeout 120 "$browser" --headless --no-sandbox --disable-gpu --window-size=1250,2400 \
    --screenshot="$PWD/report.png" "file://$PWD/chain/report.html" > browser.log 2>&1 || { cat browser.log; fail "chromium failed"; }
  [ "$(stat -c %s report.png)" -gt 20000 ] || fail "the screenshot is nearly empty"
  ;;

aliccp_samples)
  "$bin" run --configs "$configs" --data "aliccp:$data/aliccp" --preset tiny --batch-size 16 --only E0a,E2 \
    --output chain --quiet > log.txt
  expect_in "aliccp from $data/aliccp: 100 train / 50 valid / 50 test rows" log.txt
  [ "$(grep -c ',"finished",' chain/summary.csv)" = 2 ] || { cat chain/summary.csv; fail "E0a and E2 should finish"; }
  expect_in 'E1,"","not run"' chain/summary.csv
  ;;

headerless_split)
  # PaddleRec's layout: train.csv with a header, test.csv without one, and rows with a conversion but no click.
  mkdir paddle
  awk -F, -v OFS=, 'NR == 3 || NR == 5 { $1 = 0; $2 = 1 } { print }' "$data/aliccp/ali_ccp_train_sample.csv" > paddle/train.csv
  tail -n +2 "$data/aliccp/ali_ccp_test_sample.csv" > paddle/test.csv
  ! "$bin" train --config "$configs/E2_deepfm_shared_esmm.yaml" --data aliccp:paddle --preset tiny --batch-size 16 \
    --run-dir refused --quiet > refused.txt 2>&1 || fail "a conversion without a click was accepted by default"
  expect_in "train.csv:3: purchase is 1 but click is 0; a conversion needs a click" refused.txt
  expect_in "data.labels.conversion_without_click: drop or as_click" refused.txt
  mkdir as_click
  cp "$configs"/*.yaml as_click/
  sed -i 's/^data:$/data:\n  labels:\n    conversion_without_click: as_click/' as_click/base.yaml
  "$bin" train --config as_click/E2_deepfm_shared_esmm.yaml --data aliccp:paddle --preset tiny --batch-size 16 \
    --run-dir run --quiet > train.txt
  expect_in "test.csv has no header line; using train.csv's columns" train.txt
  expect_in "train.csv: 2 conversion(s) without a click counted as clicks" train.txt
  python3 - run/eval.json <<'PY' || fail "eval.json does not say what reading changed"
import json, sys
reads = json.load(open(sys.argv[1]))["data"]["reads"]
assert reads["train.csv"]["conversions_without_click_as_click"] == 2 and reads["train.csv"]["header_line"], reads
assert reads["test.csv"]["header_line"] is False and reads["test.csv"]["rows"] == 50, reads
PY
  ;;

bundle)
  # A run exported to one file predicts what the run predicts, from raw CSV rows.
  "$bin" train --config "$configs/E5_deepfm_ple_lite_hetero_esmm.yaml" --data "aliccp:$data/aliccp" --preset tiny \
    --batch-size 16 --run-dir r5 --quiet > train.txt
  "$bin" predict --run r5 --out run.csv > /dev/null
  "$bin" export --run r5 --out model.mtl > export.txt
  expect_in "23 sparse and 8 dense fields" export.txt
  "$bin" predict --bundle model.mtl --data "$data/aliccp/ali_ccp_test_sample.csv" --out bundle.csv > /dev/null
  [ "$(wc -l < bundle.csv)" = 51 ] || fail "predict --bundle wrote $(wc -l < bundle.csv) lines, expected 51"
  cmp run.csv bundle.csv || fail "the bundle predicts differently from its run"
  # Rows without labels get probabilities only.
  cut -d, -f3- "$data/aliccp/ali_ccp_test_sample.csv" > unlabelled.csv
  "$bin" predict --bundle model.mtl --data unlabelled.csv --out scores.csv > /dev/null
  head -1 scores.csv | grep -q "^row,p_ctr,p_cvr,p_ctcvr$" || fail "the header of unlabelled scores"
  cut -d, -f1-4 run.csv | cmp - scores.csv || fail "unlabelled rows scored differently"
  # A file without a field the model reads, and a damaged bundle, are refused.
  cut -d, -f1-2,4- "$data/aliccp/ali_ccp_test_sample.csv" > no101.csv
  ! "$bin" predict --bundle model.mtl --data no101.csv --out x.csv 2> err.txt || fail "a missing field was accepted"
  expect_in "the header has no column '101'" err.txt
  head -c 100000 model.mtl > cut.mtl
  ! "$bin" predict --bundle cut.mtl --data unlabelled.csv --out x.csv 2> err.txt || fail "a damaged bundle was accepted"
  expect_in "cannot load model bundle 'cut.mtl'" err.txt
  # The 18 sparse fields most papers use, no dense columns, no validation file.
  aliccp_18_fields f18
  "$bin" train --config "$configs/E2_deepfm_shared_esmm.yaml" --data aliccp:f18 --preset tiny --batch-size 16 \
    --run-dir r18 --quiet > t18.txt
  expect_in "18 sparse and 0 dense fields" t18.txt
  expect_in "no validation file: 10% of the training file's rows" t18.txt
  "$bin" export --run r18 --out m18.mtl > /dev/null
  "$bin" predict --bundle m18.mtl --data f18/aliccp_test.csv --out s18.csv > /dev/null
  "$bin" predict --run r18 --out r18.csv > /dev/null
  cmp r18.csv s18.csv || fail "the 18-field bundle predicts differently from its run"
  ;;

onnx_export)
  # Every model of the chain as ONNX: ONNX Runtime scores the test rows (raw ids, through the vocabularies)
  # as `predict --run` does. ONNX Runtime and ONNX's checker come from PyPI (scripts/onnx-requirements.txt).
  python=$("$(dirname "$0")/../scripts/pinned-venv.sh" "$(dirname "$0")/../scripts/onnx-requirements.txt") ||
    { echo "skipped: no venv with onnxruntime (pip could not install scripts/onnx-requirements.txt)"; exit 77; }
  "$bin" run --configs "$configs" --data "aliccp:$data/aliccp" --preset tiny --batch-size 16 --output chain \
    --quiet > run.txt
  for run in interview_*; do
    id=${run#interview_} && id=${id%%_*}
    "$bin" predict --run "$run" --out "$id.csv" > /dev/null
    "$bin" export --run "$run" --format onnx --out "$id.onnx" > "$id.export.txt"
    expect_in "inputs 23 sparse and 8 dense fields" "$id.export.txt"
    "$python" "$(dirname "$0")/onnx_scores.py" "$id.onnx" "$data/aliccp/ali_ccp_test_sample.csv" "$id.csv" ||
      fail "ONNX Runtime scores $id's test rows differently from predict --run"
  done
  [ "$(ls ./*.onnx | wc -l)" = 8 ] || fail "expected 8 exported models, got $(ls ./*.onnx | wc -l)"
  expect_in "outputs p_ctr, p_cvr, p_ctcvr" E5.export.txt
  expect_in "outputs p_cvr" E0b.export.txt
  # No dense fields (the 18-field layout), and MMoE without the aligner.
  aliccp_18_fields f18
  mkdir plain
  cp "$configs"/*.yaml plain/
  printf 'base: E3_deepfm_mmoe_esmm.yaml\nmodel:\n  align_outputs: false\n' > plain/E3_plain.yaml
  "$bin" train --config plain/E3_plain.yaml --data aliccp:f18 --preset tiny --batch-size 16 --run-dir f18run \
    --quiet > /dev/null
  "$bin" predict --run f18run --out f18.csv > /dev/null
  "$bin" export --run f18run --format onnx --out f18.onnx > f18.export.txt
  expect_in "inputs 18 sparse and 0 dense fields" f18.export.txt
  "$python" "$(dirname "$0")/onnx_scores.py" f18.onnx f18/aliccp_test.csv f18.csv ||
    fail "ONNX Runtime scores an MMoE without dense fields or aligner differently from predict --run"
  # Synthetic ids are their own rows (no vocabulary): ids outside a field's rows take row 0, as in Predictor.
  # Two PLE levels and low-rank cross experts, which the seven do not use.
  mkdir deep
  cp "$configs"/*.yaml deep/
  sed -i -e 's/num_levels: 1/num_levels: 2/' -e 's/{type: cross, layers: 3}/{type: cross, layers: 3, low_rank: 8}/' \
    deep/E5_deepfm_ple_lite_hetero_esmm.yaml
  "$bin" train --config deep/E5_deepfm_ple_lite_hetero_esmm.yaml --preset tiny --run-dir synthetic --quiet > /dev/null
  "$bin" export --run synthetic --out synthetic.mtl > /dev/null
  "$bin" export --run synthetic --format onnx --out synthetic.onnx > /dev/null
  "$python" "$(dirname "$0")/onnx_scores.py" --make-rows synthetic.onnx rows.csv 500
  "$bin" predict --bundle synthetic.mtl --data rows.csv --out synthetic.csv > /dev/null
  "$python" "$(dirname "$0")/onnx_scores.py" synthetic.onnx rows.csv synthetic.csv ||
    fail "ONNX Runtime scores a two-level PLE with low-rank cross experts differently from the bundle"
  # Three PLE levels without private experts, and a tower without hidden layers.
  printf 'base: E4_deepfm_ple_lite_homo_esmm.yaml\nmodel:\n  ple:\n    num_levels: 3\n    private_experts_per_task: 0\n  tasks:\n    cvr:\n      tower_hidden_dims: []\n' \
    > deep/E4_three_levels.yaml
  "$bin" train --config deep/E4_three_levels.yaml --preset tiny --run-dir three --quiet > /dev/null
  "$bin" export --run three --out three.mtl > /dev/null
  "$bin" export --run three --format onnx --out three.onnx > /dev/null
  "$bin" predict --bundle three.mtl --data rows.csv --out three.csv > /dev/null
  "$python" "$(dirname "$0")/onnx_scores.py" three.onnx rows.csv three.csv ||
    fail "ONNX Runtime scores a three-level PLE without private experts differently from the bundle"
  ;;

extensions)
  # ESCM2's configs beside the chain train on synthetic data and on the AliExpress sample, logging their terms.
  for kind in ips dr; do
    config="$configs/extensions/E2_escm2_$kind.yaml"
    "$bin" train --config "$config" --preset tiny --run-dir "synthetic_$kind" --quiet > /dev/null
    "$bin" train --config "$config" --data "aliexpress:$data/aliexpress" --preset tiny --batch-size 16 \
      --run-dir "aliexpress_$kind" --quiet > /dev/null
    for run in "synthetic_$kind" "aliexpress_$kind"; do
      expect_in '"loss_counterfactual":' "$run/metrics.jsonl"
      [ -s "$run/eval.json" ] || fail "$run wrote no eval.json"
    done
  done
  expect_in '"loss_imputation":' synthetic_dr/metrics.jsonl
  ! grep -q '"loss_imputation":' synthetic_ips/metrics.jsonl || fail "ips logged an imputation loss"
  # Wrong combinations are refused, naming the field.
  expect_refused no_imputation 'base: E2_deepfm_shared_esmm.yaml\nesmm:\n  counterfactual: dr\n' \
    "esmm.counterfactual: dr needs a head named imputation"
  expect_refused floor 'base: E2_deepfm_shared_esmm.yaml\nesmm:\n  counterfactual: ips\n  propensity_floor: 0\n' \
    "expected a floor in (0, 1]"
  expect_refused no_esmm 'base: E1_deepfm_shared_dualhead.yaml\nesmm:\n  counterfactual: ips\n' \
    "ESCM2's counterfactual risk is an ESMM option"
  ;;

aitm_and_loss_weighting)
  # AITM and the learned loss weights train on synthetic data and on the AliExpress sample; the weights are
  # logged, drawn in the report, and the extensions run beside the chain when --only names them.
  for config in E2_aitm E5_uncertainty E5_gradnorm; do
    "$bin" train --config "$configs/extensions/$config.yaml" --preset tiny --run-dir "synthetic_$config" --quiet > /dev/null
    "$bin" train --config "$configs/extensions/$config.yaml" --data "aliexpress:$data/aliexpress" --preset tiny \
      --batch-size 16 --run-dir "aliexpress_$config" --quiet > /dev/null
    for run in "synthetic_$config" "aliexpress_$config"; do [ -s "$run/eval.json" ] || fail "$run wrote no eval.json"; done
  done
  for config in E5_uncertainty E5_gradnorm; do
    for term in ctr ctcvr cvr_aux; do expect_in "\"weight_$term\":" "synthetic_$config/metrics.jsonl"; done
  done
  ! grep -q '"weight_' synthetic_E2_aitm/metrics.jsonl || fail "a run without loss weighting logged weights"
  # An AITM model goes into a bundle, which loads and scores rows.
  "$bin" export --run aliexpress_E2_aitm --out aitm.mtl > /dev/null
  "$bin" predict --bundle aitm.mtl --data "$data/aliexpress/aliexpress_test_sample.csv" --out aitm.csv > /dev/null 2> err.txt ||
    { cat err.txt; fail "predict with an AITM bundle"; }
  "$bin" run --configs "$configs" --preset tiny --only E2,E2aitm,E5uw --output chain --quiet > log.txt
  [ "$(grep -c ',"finished",' chain/summary.csv)" = 3 ] || { cat chain/summary.csv; fail "not all three finished"; }
  expect_in "E5uw: weight of each loss term" chain/report.html
  expect_in "exploratory  E2aitm vs E2   auc_ctcvr" chain/delta_analysis.txt
  expect_in "exploratory  E5uw vs E5   auc_ctcvr" chain/delta_analysis.txt
  ! grep -q "E5gn vs" chain/delta_analysis.txt || fail "an extension that did not run was compared"
  "$bin" validate --configs "$configs" > validate.txt
  expect_in "all controlled fields agree" validate.txt
  # Bad weighting options are refused, naming the field.
  expect_refused negative 'base: E2_deepfm_shared_esmm.yaml\nloss:\n  weights:\n    ctr: -1\n' \
    "field 'loss.weights.ctr': expected a weight >= 0"
  expect_refused one_term 'base: E0a_deepfm_st_ctr.yaml\nloss:\n  weighting: gradnorm\n' \
    "field 'loss.weighting': loss weighting: gradnorm weighs terms against each other"
  expect_refused no_term 'base: E1_deepfm_shared_dualhead.yaml\nloss:\n  weights:\n    ctcvr: 2\n' \
    "the objective has no term 'ctcvr'; its terms are: ctr, cvr"
  expect_refused dr_risk 'base: E2_deepfm_shared_esmm.yaml\nmodel:\n  enabled_heads: [ctr, cvr, imputation]\nesmm:\n  counterfactual: dr\nloss:\n  weighting: uncertainty\n  weighted_terms: [ctr, counterfactual]\n' \
    "the term 'counterfactual' can be negative"
  expect_refused widths 'base: E1_deepfm_shared_dualhead.yaml\nmodel:\n  adaptive_transfer: true\n  tasks:\n    cvr:\n      tower_hidden_dims: [32]\n' \
    "field 'model.adaptive_transfer'"
  ;;

output_lock)
  # Two chains into one folder: the second stops at once; a killed chain's lock blocks nothing.
  "$bin" run --configs "$configs" --preset tiny --only E5 --max-steps 2000 --output chain --quiet > first.txt 2>&1 &
  first=$!
  for _ in $(seq 600); do [ -s chain/.chain.lock ] && break; sleep 0.1; done
  ! "$bin" run --configs "$configs" --preset tiny --only E0a --output chain --quiet > second.txt 2>&1 ||
    fail "a second chain ran in a folder another chain was writing"
  expect_in "another interview_chain run (pid $first) is writing to 'chain'" second.txt
  kill -9 "$first" 2> /dev/null || true  # a fast machine may have finished it already
  wait "$first" || true
  "$bin" run --configs "$configs" --preset tiny --only E0a --output chain --quiet > third.txt 2>&1 ||
    { cat third.txt; fail "a killed chain's lock blocked the next chain"; }
  ;;

*) fail "unknown test $name" ;;
esac
echo "PASS: $name"
