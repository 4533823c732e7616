"""Prints the README model table: registry name, paper, trainable parameters and GMACs at a stated size.

The options and examples: ``python tools/model_table.py --help`` (`kerasseg.cli.model_table`).
"""

from kerasseg.cli.model_table import main

if __name__ == "__main__":
    raise SystemExit(main())
