"""Evaluate a saved kerasseg model on a dataset split: mIoU, per-class IoU, accuracies and Dice.

Example::

    python tools/evaluate.py runs/erfnet/best.keras --dataset synthetic --data-dir runs/synthetic --split val \
        --mode slide --output-dir runs/erfnet/eval

Every image is predicted at its own size (``--mode whole``: resized to the model input and back; ``slide``:
overlapping tiles of the model input size; ``multiscale``: sliding window at several scales, with ``--flip``
mirroring by default). The normalisation, class names and ignore label come from the model's metadata.

Prints a table and writes ``OUT/metrics.json`` and ``OUT/confusion.png`` (row-normalised heat map).
"""

from __future__ import annotations

import argparse
import os

from kerasseg.cli.common import (add_data_dir, add_dataset, add_model_file, model_metadata, report_errors,
                                 size_option, tool_parser)
from kerasseg.evaluation import MODES, DenseCRFMissingError, add_crf_arguments, crf_from_arguments


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__)
    add_model_file(p, "a .keras file saved by kerasseg (tools/train.py writes best.keras)")
    add_dataset(p, "folder",
                help="'folder': images/SPLIT, masks/SPLIT and classes.json under --data-dir; 'synthetic': the "
                     "generated street scenes, used as they are when --data-dir holds them, generated there "
                     "otherwise (with --num-train, --num-val, --seed and the model's input size); the others: "
                     "the public datasets' own layouts (see kerasseg.data)")
    add_data_dir(p)
    p.add_argument("--split", default="val")
    p.add_argument("--mode", default="whole", choices=MODES)
    p.add_argument("--scales", type=float, nargs="+", default=None,
                   help="image scales of --mode multiscale (default 0.5 0.75 1.0 1.25 1.5 1.75)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="also predict mirrored images (default: on for multiscale, off otherwise)")
    p.add_argument("--stride", default=None, help="sliding-window stride, N or HxW (default 2/3 of the tile)")
    p.add_argument("--input-size", default=None,
                   help="HEIGHTxWIDTH of the model input, only for models built without a static input size")
    p.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass")
    p.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--output-dir", default=None,
                   help="where metrics.json and confusion.png go (default: MODEL_DIR/eval_SPLIT_MODE)")
    p.add_argument("--num-train", type=int, default=300, help="synthetic training scenes, when generating")
    p.add_argument("--num-val", type=int, default=60, help="synthetic validation scenes, when generating")
    p.add_argument("--seed", type=int, default=0, help="synthetic dataset seed, when generating")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_crf_arguments(p)
    return p


def run(args) -> int:
    import kerasseg
    from kerasseg import data as ksdata
    from kerasseg.evaluation import DEFAULT_SCALES, evaluate, format_table, keras_predict_fn, write_report

    crf = crf_from_arguments(args)

    stride = size_option(args.stride, "--stride", square=True)
    input_size = size_option(args.input_size, "--input-size", square=True)
    model = kerasseg.load_model(args.model)
    metadata = model_metadata(model, args.model)
    num_classes = int(model.outputs[0].shape[-1])

    root = args.data_dir
    generation = {}
    if args.dataset == "synthetic":
        if ksdata.synthetic.read_params(root) is None:
            # Generated with the training defaults and the model's input size, so that it matches what
            # tools/train.py would have written; an existing synthetic dataset is used as it is.
            h, w = input_size or tuple(model.inputs[0].shape[1:3])
            generation = dict(num_train=args.num_train, num_val=args.num_val, height=h, width=w,
                              dataset_seed=args.seed)
    elif not os.path.isdir(root):
        raise FileNotFoundError(f"Expected a dataset folder. Received: --data-dir {root!r} (not found)")
    dataset = ksdata.load_dataset(args.dataset, root, args.split, batch_size=1, augment=False, shuffle=False,
                                  normalization=(list(metadata.mean), list(metadata.std)), **generation)

    # The format's own classes: classes.json for the folder layouts, the fixed class list of a public dataset.
    classes = ksdata.dataset_classes(args.dataset, root, args.split)
    if classes.num_classes != num_classes:
        raise ValueError(f"Expected a dataset with the model's {num_classes} classes. Received: "
                         f"{classes.num_classes} classes in --dataset {args.dataset} --data-dir {root}")
    # The labels use the dataset's ignore value; the class names are the ones the model was trained with.
    class_names = metadata.class_names or list(classes.names)
    ignore_label = classes.ignore_label

    result = evaluate(keras_predict_fn(model), dataset, num_classes=num_classes, ignore_label=ignore_label,
                      class_names=class_names, mode=args.mode, input_size=input_size,
                      scales=tuple(args.scales) if args.scales else DEFAULT_SCALES, flip=args.flip, stride=stride,
                      batch_size=args.batch_size, max_images=args.max_images, progress=not args.quiet,
                      refine=crf.for_normalized_images(metadata.mean, metadata.std) if crf else None)
    result.settings.update(model=os.path.abspath(args.model), data_dir=os.path.abspath(root), split=args.split)
    print(format_table(result))
    output_dir = args.output_dir or os.path.join(os.path.dirname(os.path.abspath(args.model)),
                                                 f"eval_{args.split}_{args.mode}")
    paths = write_report(result, output_dir)
    print(f"wrote {paths['metrics']} and {paths['confusion']}")
    return 0


def main(argv=None) -> int:
    return report_errors(run, build_parser().parse_args(argv), (FileNotFoundError, ValueError, DenseCRFMissingError))


if __name__ == "__main__":
    raise SystemExit(main())
