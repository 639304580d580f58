"""Scores a CSV file's rows with an exported ONNX model in ONNX Runtime and
compares the probabilities with mtl's own predictions of the same rows.

  onnx_scores.py MODEL.onnx DATA.csv PREDICTIONS.csv [TOLERANCE]
  onnx_scores.py --make-rows MODEL.onnx OUT.csv ROWS


DATA.csv holds raw ids and dense values under the model's input names (its
header line names them); PREDICTIONS.csv is `interview_chain predict`'s output
for the same rows in the same order. Exits 1 when ONNX's checker refuses the
model or a probability differs by more than TOLERANCE (default 1e-5).
--make-rows writes ROWS random rows under the model's input names: ids in
[0, 300) (past the end of the small vocabularies) and dense values in [0, 1).
"""
import csv
import sys

import numpy as np
import onnx
import onnxruntime


def runtime_for(model_path):
    return onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])


def make_rows(model_path, out_path, count):
    inputs = runtime_for(model_path).get_inputs()
    generator = np.random.default_rng(7)
    with open(out_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([i.name for i in inputs])
        for _ in range(count):
            writer.writerow([int(generator.integers(0, 300)) if i.type == "tensor(int64)"
                             else f"{generator.random():.6f}" for i in inputs])
    return 0


def main():
    if sys.argv[1] == "--make-rows":
        return make_rows(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    model_path, data_path, predictions_path = sys.argv[1:4]
    tolerance = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-5
    onnx.checker.check_model(onnx.load(model_path), full_check=True)

    scorer = runtime_for(model_path)
    with open(data_path, newline="") as f:
        rows = list(csv.DictReader(f))
    feeds = {}
    for model_input in scorer.get_inputs():
        column = [row[model_input.name] for row in rows]
        if model_input.type == "tensor(int64)":
            feeds[model_input.name] = np.array([int(float(v)) for v in column], dtype=np.int64)
        else:
            feeds[model_input.name] = np.array([float(v) for v in column], dtype=np.float32)
    names = [o.name for o in scorer.get_outputs()]
    scores = dict(zip(names, scorer.run(names, feeds)))

    with open(predictions_path, newline="") as f:
        expected = list(csv.DictReader(f))
    assert len(expected) == len(rows), f"{len(expected)} predictions for {len(rows)} rows"
    worst = 0.0
    for name in ("p_ctr", "p_cvr", "p_ctcvr"):
        if expected[0][name] == "":
            assert name not in scores, f"the model outputs {name}, which mtl's predictions lack"
            continue
        assert name in scores, f"the model does not output {name}; it outputs {names}"
        want = np.array([float(row[name]) for row in expected], dtype=np.float64)
        difference = float(np.max(np.abs(scores[name].astype(np.float64) - want)))
        print(f"{name}: max |onnxruntime - mtl| = {difference:.2e} over {len(want)} rows")
        worst = max(worst, difference)
    if worst > tolerance:
        print(f"FAIL: a probability differs by {worst:.2e} > {tolerance:.0e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
