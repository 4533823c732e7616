"""Export a trained ``.keras`` model to ONNX with tf2onnx; the model is run in onnxruntime and compared with Keras
before the file (and its ``.json`` sidecar) is written.

The options and examples: ``python tools/export_onnx.py --help`` (`kerasseg.cli.export_onnx`).
"""

from kerasseg.cli.export_onnx import main

if __name__ == "__main__":
    raise SystemExit(main())
