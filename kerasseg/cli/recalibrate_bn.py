"""Re-estimates the batch-norm statistics of a trained ``.keras`` model on its training images.

Example::

    python tools/recalibrate_bn.py runs/deeplabv3plus_camvid/final.keras --dataset camvid \
        --data-dir PATH/TO/CamVid --output runs/deeplabv3plus_camvid/recalibrated.keras --evaluate

Batch norm's moving averages lag the weights after short or high-learning-rate schedules (the model is then right in
training mode and wrong in inference mode); `kerasseg.training.recalibrate_batch_norm` replaces them by the
statistics of the training images under the final weights, with dropout off. The weights are unchanged. The
training images are centre-cropped or padded to the model input, unaugmented (``--augment`` applies the training
augmentation instead). With ``--evaluate`` the validation mIoU is printed before and after. The report is stored in
the saved model's metadata (``extra["batch_norm_recalibration"]``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from kerasseg.cli.common import add_data_dir, add_dataset, add_model_file, at_least, tool_parser


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__)
    add_model_file(p, "trained .keras model saved by kerasseg")
    add_dataset(p, help="dataset format (see kerasseg.data.load_dataset)")
    add_data_dir(p)
    p.add_argument("--output", required=True, help="destination .keras file (may equal the input)")
    p.add_argument("--split", default="train", help="split whose images give the statistics")
    p.add_argument("--batches", type=at_least(1), default=None, help="batches to use (default: the whole split once)")
    p.add_argument("--batch-size", type=at_least(1), default=8)
    p.add_argument("--augment", action="store_true", help="apply the training augmentation to the images")
    p.add_argument("--evaluate", action="store_true", help="score the validation split before and after")
    p.add_argument("--eval-split", default="val")
    p.add_argument("--seed", type=int, default=0)
    return p


def run(args) -> dict:
    """Recalibrates, saves and returns the report (with ``miou_before`` / ``miou_after`` when evaluating)."""
    from kerasseg import data as ksdata
    from kerasseg.evaluation import evaluate, keras_predict_fn
    from kerasseg.export.datasets import export_data
    from kerasseg.saving import load_model, save_model
    from kerasseg.training import recalibrate_batch_norm

    model = load_model(args.model)
    meta, _, eval_data = export_data(model, args.dataset, args.data_dir, calibration=False,
                                     eval_split=args.eval_split)
    height, width = meta.input_shape[:2]
    images = ksdata.load_dataset(args.dataset, args.data_dir, args.split, batch_size=args.batch_size,
                                 crop_size=(height, width), augment=args.augment, shuffle=True, seed=args.seed,
                                 normalization=(list(meta.mean), list(meta.std)))

    def score():
        return float(evaluate(keras_predict_fn(model), eval_data, num_classes=meta.num_classes,
                              ignore_label=meta.ignore_label).miou)

    before = score() if args.evaluate else None
    report = recalibrate_batch_norm(model, images, steps=args.batches)
    report.update(split=args.split, augment=args.augment, source=os.path.basename(args.model))
    if args.evaluate:
        report.update(miou_before=before, miou_after=score())
    saved = getattr(model, "kerasseg_metadata", None)
    metadata = None
    if saved is not None:
        metadata = dataclasses.replace(saved, extra={**saved.extra, "batch_norm_recalibration": report})
    save_model(model, args.output, metadata)
    return report


def summary(report: dict) -> str:
    """One line of a `run` report: the layers, the images, the largest shift and the mIoU before and after."""
    scores = (f"; validation mIoU {100 * report['miou_before']:.2f} -> {100 * report['miou_after']:.2f}"
              if "miou_after" in report else "")
    return (f"recalibrated {report['layers']} batch norms on {report['images']} {report['split']} images "
            f"(largest mean shift {report['max_mean_shift']:.2f} standard deviations){scores}")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.output.endswith(".keras"):
        parser.error(f"Expected --output to end in '.keras'. Received: --output={args.output!r}")
    if not os.path.isfile(args.model):
        parser.error(f"Expected an existing .keras file. Received: model={args.model!r}")
    print(f"{summary(run(args))}; wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
