"""Measure the dense-CRF refinement: mIoU, boundary mIoU and time per frame with and without it, and a grid.

The options and examples: ``python tools/crf_benchmark.py --help`` (`kerasseg.cli.crf_benchmark`).
"""

from kerasseg.cli.crf_benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
