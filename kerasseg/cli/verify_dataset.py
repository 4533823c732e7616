"""Scans a dataset split: counts, pairing problems, size mismatches, unexpected label values, class histogram.

Example::

    python tools/verify_dataset.py --format camvid --root ../shared/camvid --split train

Every image and label is decoded. Exits with status 1 when anything is wrong (the problems are listed with their
files), 0 otherwise.
"""

from __future__ import annotations

import argparse

from kerasseg.cli.common import add_json, tool_parser, write_json
from kerasseg.data import DATASET_FORMATS
from kerasseg.data.verify import verify_dataset


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__)
    p.add_argument("--format", required=True, choices=DATASET_FORMATS, help="dataset format")
    p.add_argument("--root", required=True, help="dataset folder")
    p.add_argument("--split", nargs="+", default=["train"], help="split name(s) (default: train)")
    p.add_argument("--train-ids", action="store_true", help="cityscapes: read *_labelTrainIds.png")
    p.add_argument("--augmented", action="store_true", help="voc: SegmentationClassAug labels")
    p.add_argument("--workers", type=int, default=4, help="decoding threads (default 4)")
    add_json(p)
    return p


def main(argv=None) -> int:
    parser = build_parser()
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
        reports.append(report.to_dict())
    if args.json:
        write_json(args.json, {"format": args.format, "root": args.root, "splits": reports})
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
