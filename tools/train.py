"""Train a kerasseg model with ``model.fit``.

The options and examples: ``python tools/train.py --help`` (`kerasseg.cli.train`).
"""

from kerasseg.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
