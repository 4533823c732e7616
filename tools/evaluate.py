"""Evaluate a saved kerasseg model on a dataset split: mIoU, per-class IoU, accuracies and Dice.

The options and examples: ``python tools/evaluate.py --help`` (`kerasseg.cli.evaluate`).
"""

from kerasseg.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
