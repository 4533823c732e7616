"""Scans a dataset split: counts, pairing problems, size mismatches, unexpected label values, class histogram.

Example::

    python tools/verify_dataset.py --format camvid --root ../shared/camvid --split train

Every image and label is decoded. Exits with status 1 when anything is wrong (the problems are listed with their
files), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kerasseg.data.formats import FORMAT_NAMES  # noqa: E402
from kerasseg.data.verify import verify_dataset  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", required=True, choices=FORMAT_NAMES, help="dataset format")
    parser.add_argument("--root", required=True, help="dataset folder")
    parser.add_argument("--split", nargs="+", default=["train"], help="split name(s) (default: train)")
    parser.add_argument("--train-ids", action="store_true", help="cityscapes: read *_labelTrainIds.png")
    parser.add_argument("--augmented", action="store_true", help="voc: SegmentationClassAug labels")
    parser.add_argument("--workers", type=int, default=4, help="decoding threads (default 4)")
    parser.add_argument("--json", help="also write the reports to this JSON file")
    args = parser.parse_args(argv)
    options = {}
    if args.train_ids:
        if args.format != "cityscapes":
            parser.error(f"Expected --train-ids only with --format cityscapes. Received: --format {args.format}")
        options["train_ids"] = True
    if args.augmented:
        if args.format != "voc":
            parser.error(f"Expected --augmented only with --format voc. Received: --format {args.format}")
        options["augmented"] = True
    ok = True
    reports = []
    for split in args.split:
        report = verify_dataset(args.format, args.root, split, workers=args.workers, **options)
        print(report.format_text())
        ok &= report.ok
        reports.append({"split": split, "pairs": report.num_pairs, "errors": [list(e) for e in report.errors],
                        "histogram": dict(zip(report.class_names, report.histogram.tolist())),
                        "ignored_pixels": report.ignored_pixels,
                        "unexpected_values": {str(k): v for k, v in report.unexpected_values.items()},
                        "sizes": {f"{h}x{w}": n for (h, w), n in report.sizes.items()}})
    if args.json:
        from kerasseg.saving import atomic_path

        with atomic_path(args.json) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump({"format": args.format, "root": args.root, "splits": reports}, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
