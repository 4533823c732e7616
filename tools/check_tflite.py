"""Edge-compatibility report of ``.tflite`` files: operators, Flex / custom operators, float tensors, dynamic shapes
and the TFLite GPU delegate's rules, judged for a CPU, GPU or NPU target.

The options and examples: ``python tools/check_tflite.py --help`` (`kerasseg.cli.check_tflite`).
"""

from kerasseg.cli.check_tflite import main

if __name__ == "__main__":
    raise SystemExit(main())
