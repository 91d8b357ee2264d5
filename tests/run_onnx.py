"""Check an ONNX file gantry exported and run it in onnxruntime (tests/export.rs).

Usage: run_onnx.py MODEL Z_F32 N LATENT CLASS_I64_OR_DASH OUT_F32
Reads the noise (and classes) as raw little-endian arrays, checks the model with onnx's full
checker, runs it on the CPU and writes the images as raw float32; prints what it saw as JSON.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort

model_path, z_path, n, latent, class_path, out_path = sys.argv[1:7]
model = onnx.load(model_path)
onnx.checker.check_model(model, full_check=True)
session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
feeds = {"z": np.fromfile(z_path, dtype="<f4").reshape(int(n), int(latent))}
if class_path != "-":
    feeds["class"] = np.fromfile(class_path, dtype="<i8")
(image,) = session.run(["image"], feeds)
image.astype("<f4").tofile(out_path)
print(json.dumps({
    "opset": model.opset_import[0].version,
    "inputs": [i.name for i in model.graph.input],
    "outputs": [o.name for o in model.graph.output],
    "batch_axis": model.graph.input[0].type.tensor_type.shape.dim[0].dim_param,
    "shape": list(image.shape),
    "metadata": {p.key: p.value for p in model.metadata_props},
}))
