"""Benchmarks that print figures (not timed tests).

The options and examples: ``python tools/benchmark.py --help`` (`kerasseg.cli.benchmark`).
"""

from kerasseg.cli.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
