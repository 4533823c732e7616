"""Writes the synthetic street-scene dataset in the plain folder layout.

The options and examples: ``python tools/make_synthetic.py --help`` (`kerasseg.cli.make_synthetic`).
"""

from kerasseg.cli.make_synthetic import main

if __name__ == "__main__":
    raise SystemExit(main())
