"""Writes the synthetic street-scene dataset in the plain folder layout.

Example::

    python tools/make_synthetic.py --output data/synthetic --num-train 300 --num-val 60 --size 128x256 --seed 0

Running it again with the same arguments reuses the existing dataset; other arguments need ``--overwrite``.
"""

from __future__ import annotations

import argparse
import time

from kerasseg.cli.common import image_size, tool_parser
from kerasseg.data import synthetic


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__)
    p.add_argument("--output", required=True, help="dataset folder to write")
    p.add_argument("--num-train", type=int, default=300, help="training scenes (default 300)")
    p.add_argument("--num-val", type=int, default=60, help="validation scenes (default 60)")
    p.add_argument("--size", type=image_size("--size"), default=(128, 256),
                   help="HEIGHTxWIDTH (default 128x256)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing, different dataset")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    height, width = args.size
    start = time.perf_counter()
    before = synthetic.read_params(args.output)
    try:
        root = synthetic.write_dataset(args.output, num_train=args.num_train, num_val=args.num_val, height=height,
                                       width=width, seed=args.seed, overwrite=args.overwrite)
    except ValueError as e:
        parser.error(str(e))
    reused = before is not None and before == synthetic.read_params(root)
    what = "Reused the existing dataset" if reused else f"Wrote in {time.perf_counter() - start:.1f} s"
    print(f"{what}: {root} ({args.num_train} train / {args.num_val} val scenes of {height}x{width}, "
          f"seed {args.seed}; classes: {', '.join(synthetic.CLASS_NAMES)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
