"""Scans a dataset split: counts, pairing problems, size mismatches, unexpected label values, class histogram.

The options and examples: ``python tools/verify_dataset.py --help`` (`kerasseg.cli.verify_dataset`).
"""

from kerasseg.cli.verify_dataset import main

if __name__ == "__main__":
    raise SystemExit(main())
