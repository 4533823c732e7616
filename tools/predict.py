"""Segment images, folders of images or video frames with a saved kerasseg model.

The options and examples: ``python tools/predict.py --help`` (`kerasseg.cli.predict`).
"""

from kerasseg.cli.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
