"""Writes a PNG grid of dataset examples with colour-overlaid labels and a legend of class names.

Example::

    python tools/visualize_dataset.py --format camvid --root ../shared/camvid --split train --num 6 \\
        --augment --crop-size 360x480 --output /tmp/camvid.png

With ``--augment`` the examples are drawn after the training augmentation (scale, crop, flip, photometric), read
back from the same pipeline as training, so one can see that image and label stay aligned.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from kerasseg.data.formats import FORMAT_NAMES  # noqa: E402


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"Expected HEIGHTxWIDTH such as 512x1024. Received: {text!r}")
    return h, w


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", required=True, choices=FORMAT_NAMES, help="dataset format")
    parser.add_argument("--root", required=True, help="dataset folder")
    parser.add_argument("--split", default="train", help="split name (default: train)")
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--num", type=int, default=6, help="number of examples (default 6)")
    parser.add_argument("--columns", type=int, default=2, help="examples per row (default 2)")
    parser.add_argument("--augment", action="store_true", help="draw after the training augmentation")
    parser.add_argument("--crop-size", type=_size, help="HEIGHTxWIDTH crop (random with --augment)")
    parser.add_argument("--scale", type=float, nargs=2, default=(0.5, 2.0), metavar=("MIN", "MAX"),
                        help="random scale range with --augment (default 0.5 2.0)")
    parser.add_argument("--seed", type=int, default=0, help="augmentation / shuffle seed (default 0)")
    parser.add_argument("--shuffle", action="store_true", help="draw a random sample instead of the first files")
    parser.add_argument("--max-width", type=int, default=640, help="downscale tiles wider than this (default 640)")
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error(f"Expected --num >= 1. Received: --num {args.num}")

    from PIL import Image

    from kerasseg.data import load_dataset
    from kerasseg.data.formats import resolve
    from kerasseg.preprocessing import NORMALIZATIONS
    from kerasseg.visualize import dataset_grid, denormalize, save_image

    try:
        classes = resolve(args.format, args.root, args.split).classes
        ds = load_dataset(args.format, args.root, args.split, batch_size=1, crop_size=args.crop_size,
                          augment=args.augment, scale_range=tuple(args.scale) if args.augment else None,
                          photometric=args.augment, shuffle=args.shuffle or args.augment, seed=args.seed,
                          drop_remainder=False, normalization="imagenet")
    except ValueError as e:
        parser.error(str(e))
    mean, std = NORMALIZATIONS["imagenet"]
    images, labels = [], []
    for image, label in ds.take(args.num):
        image, label = denormalize(image[0].numpy(), mean, std), label[0].numpy()
        if image.shape[1] > args.max_width:
            # Only for display: the label is resized with nearest neighbour so it keeps its values.
            size = (args.max_width, max(1, round(image.shape[0] * args.max_width / image.shape[1])))
            image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
            label = np.asarray(Image.fromarray(label.astype(np.int32)).resize(size, Image.NEAREST)).astype(np.int64)
        images.append(image)
        labels.append(label)
    title = (f"{args.format} {args.split}: {len(images)} examples"
             f"{', augmented' if args.augment else ''} (left: image, right: label overlay)")
    grid = dataset_grid(images, labels, classes.names, classes.colors, ignore_label=classes.ignore_label,
                        columns=args.columns, title=title)
    save_image(grid, args.output)
    print(f"Wrote {args.output} ({grid.width}x{grid.height}, {len(images)} examples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
