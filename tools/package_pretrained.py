"""Package a trained model as a kerasseg pretrained asset: ``.keras`` + int8 ``.tflite`` + preprocessing sidecar.

The options and examples: ``python tools/package_pretrained.py --help`` (`kerasseg.cli.package_pretrained`).
"""

from kerasseg.cli.package_pretrained import main

if __name__ == "__main__":
    raise SystemExit(main())
