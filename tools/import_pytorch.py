"""Import a PyTorch checkpoint of a paper's own code into a kerasseg ``.keras`` model, without torch.

The options and examples: ``python tools/import_pytorch.py --help`` (`kerasseg.cli.import_pytorch`).
"""

from kerasseg.cli.import_pytorch import main

if __name__ == "__main__":
    raise SystemExit(main())
