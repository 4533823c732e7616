"""Quantization-aware fine-tuning of a trained ``.keras`` model, exported as a full-integer int8 TFLite file.

The options and examples: ``python tools/qat.py --help`` (`kerasseg.cli.qat`).
"""

from kerasseg.cli.qat import main

if __name__ == "__main__":
    raise SystemExit(main())
