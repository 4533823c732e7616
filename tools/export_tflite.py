"""Export a trained ``.keras`` model to TFLite, check its accuracy against Keras, and install it only if it holds up.

The options and examples: ``python tools/export_tflite.py --help`` (`kerasseg.cli.export_tflite`).
"""

from kerasseg.cli.export_tflite import main

if __name__ == "__main__":
    raise SystemExit(main())
