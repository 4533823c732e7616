"""Re-estimates the batch-norm statistics of a trained ``.keras`` model on its training images.

The options and examples: ``python tools/recalibrate_bn.py --help`` (`kerasseg.cli.recalibrate_bn`).
"""

from kerasseg.cli.recalibrate_bn import main

if __name__ == "__main__":
    raise SystemExit(main())
