"""Runs ONNX models in onnxruntime for the whittle-export tests.

Usage: python3 ort_run.py manifest.json (written by runtimes.rs::onnxruntime_run)
The manifest is a list of {"model", "input", "shape", "output"}: the input is raw
little-endian float32 of the given shape; the first model output is written as raw float32.
"""
import json
import sys

import numpy as np
import onnxruntime as ort


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    for case in cases:
        sess = ort.InferenceSession(case["model"], opts, providers=["CPUExecutionProvider"])
        x = np.fromfile(case["input"], dtype="<f4").reshape(case["shape"])
        (y,) = sess.run(None, {sess.get_inputs()[0].name: x})
        np.asarray(y, dtype="<f4").tofile(case["output"])
    print("ok", len(cases))


if __name__ == "__main__":
    main()
