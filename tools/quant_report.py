"""Per-layer int8 quantisation report of a trained model: which layers lose most when quantised, worst first.

The options and examples: ``python tools/quant_report.py --help`` (`kerasseg.cli.quant_report`).
"""

from kerasseg.cli.quant_report import main

if __name__ == "__main__":
    raise SystemExit(main())
