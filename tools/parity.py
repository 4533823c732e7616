"""Parity of a trained model across runtimes: Keras, each TFLite mode and ONNX, scored on the same validation images
with the same metric code.

The options and examples: ``python tools/parity.py --help`` (`kerasseg.cli.parity`).
"""

from kerasseg.cli.parity import main

if __name__ == "__main__":
    raise SystemExit(main())
