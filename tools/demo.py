"""The main job: synthetic streets → ERFNet trained with ``model.fit`` → int8 TFLite → device runtime.

The options and examples: ``python tools/demo.py --help`` (`kerasseg.cli.demo`).
"""

from kerasseg.cli.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
