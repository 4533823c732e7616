"""Writes a PNG grid of dataset examples with colour-overlaid labels and a legend of class names.

The options and examples: ``python tools/visualize_dataset.py --help`` (`kerasseg.cli.visualize_dataset`).
"""

from kerasseg.cli.visualize_dataset import main

if __name__ == "__main__":
    raise SystemExit(main())
