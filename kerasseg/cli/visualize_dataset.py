"""Writes a PNG grid of dataset examples with colour-overlaid labels and a legend of class names.

Example::

    python tools/visualize_dataset.py --format camvid --root ../shared/camvid --split train --num 6 \\
        --augment --crop-size 360x480 --output /tmp/camvid.png

With ``--augment`` the examples are drawn after the training augmentation (scale, crop, flip, photometric), read
back from the same pipeline as training, so one can see that image and label stay aligned.
"""

from __future__ import annotations

import argparse

import numpy as np

from kerasseg.cli.common import at_least, image_size, tool_parser
from kerasseg.data import DATASET_FORMATS


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__)
    p.add_argument("--format", required=True, choices=DATASET_FORMATS, help="dataset format")
    p.add_argument("--root", required=True, help="dataset folder")
    p.add_argument("--split", default="train", help="split name (default: train)")
    p.add_argument("--output", required=True, help="PNG file to write")
    p.add_argument("--num", type=at_least(1), default=6, help="number of examples (default 6)")
    p.add_argument("--columns", type=int, default=2, help="examples per row (default 2)")
    p.add_argument("--augment", action="store_true", help="draw after the training augmentation")
    p.add_argument("--crop-size", type=image_size("--crop-size"),
                   help="HEIGHTxWIDTH crop (random with --augment)")
    p.add_argument("--scale", type=float, nargs=2, default=(0.5, 2.0), metavar=("MIN", "MAX"),
                   help="random scale range with --augment (default 0.5 2.0)")
    p.add_argument("--seed", type=int, default=0, help="augmentation / shuffle seed (default 0)")
    p.add_argument("--shuffle", action="store_true", help="draw a random sample instead of the first files")
    p.add_argument("--max-width", type=int, default=640, help="downscale tiles wider than this (default 640)")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    from PIL import Image

    from kerasseg.data import dataset_classes, load_dataset
    from kerasseg.preprocessing import NORMALIZATIONS
    from kerasseg.visualize import dataset_grid, denormalize, save_image

    try:
        classes = dataset_classes(args.format, args.root, args.split)
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
    raise SystemExit(main())
