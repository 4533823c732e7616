#!/usr/bin/env python
"""Parity of a trained model across runtimes: Keras, each TFLite mode and ONNX, scored on the same validation images
with the same metric code.

Example::

    python tools/parity.py runs/erfnet/best.keras --dataset folder --data-dir runs/streets \
        --variants fp32,fp16,dynamic,int8,onnx --threads 2 --output-dir runs/parity

The table gives each runtime's mIoU, its difference to Keras (in mIoU points) against the variant's bound (fp32 and
ONNX 0.01, fp16 0.1, dynamic and int8 1.0, the ``--qat`` int8 file may lose 0.5 at most), the largest per-class IoU difference, the pixel agreement with Keras, the
largest logit difference, the file size and the latency of one image (median and 90th percentile) with the speed-up
over Keras, followed by the per-class IoU differences. Int8 calibration images come from the train split.
Exit status: 0 every variant within its bound, 1 some variant outside it, 2 bad arguments or input.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # tflite/, the device runtime, is a folder of scripts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="the trained .keras model")
    p.add_argument("--dataset", default="synthetic",
                   choices=["synthetic", "folder", "camvid", "cityscapes", "voc", "ade20k"],
                   help="dataset format (default synthetic)")
    p.add_argument("--data-dir", default="runs/synthetic", help="dataset root (train split: calibration, val: scoring)")
    p.add_argument("--variants", default="fp32,fp16,dynamic,int8,onnx",
                   help="comma-separated subset of fp32,fp16,dynamic,int8,onnx (default all), and of the further "
                        "quantised variants int8-per-tensor, int16x8 (bound 0.25), onnx-int8 (QDQ) and "
                        "int8-float<N> (int8 with the N worst layers of the per-layer report kept in float)")
    p.add_argument("--qat", help="also score this int8 .tflite from quantisation-aware training (tools/qat.py), "
                                 "bound 0.5 mIoU points")
    p.add_argument("--num-calibration", type=int, default=100, help="int8 calibration images (default 100)")
    p.add_argument("--max-eval-images", type=int, default=None, help="score at most this many val images")
    p.add_argument("--threads", type=int, default=2, help="threads of every runtime, TensorFlow included (default 2)")
    p.add_argument("--runs", type=int, default=10,
                   help="timed runs per runtime for the latency, 0 to skip (default 10)")
    p.add_argument("--host-upsample", action="store_true",
                   help="export logits without the model's final bilinear resize and up-sample them on the host")
    p.add_argument("--device-runtime", action="store_true",
                   help="also score every TFLite file through tflite/runtime.py's Segmenter.predict on the full-size "
                        "frames (it resizes them itself), rows runtime-<variant>")
    p.add_argument("--delegate", help="with --device-runtime: a LiteRT external delegate library (.so) the runtime "
                                      "rows run on (operators it does not take run on the CPU)")
    p.add_argument("--delegate-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of --delegate (repeatable)")
    p.add_argument("--hardware", choices=["cpu", "gpu"], default=None,
                   help="with --device-runtime: run the runtime rows through LiteRT's CompiledModel on this "
                        "accelerator (gpu keeps the CPU as fallback)")
    p.add_argument("--output-dir", default=None, help="keep the exported models here (default: a temporary folder)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    known = ("fp32", "fp16", "dynamic", "int8", "onnx", "int8-per-tensor", "int16x8", "onnx-int8")
    if not variants or len(set(variants)) != len(variants) or any(
            v not in known and not re.fullmatch(r"int8-float\d+", v) for v in variants):
        parser.error(f"Expected --variants to be distinct names from {','.join(known)},int8-float<N>. "
                     f"Received: --variants={args.variants!r}")
    for arg, value, low in (("--threads", args.threads, 1), ("--num-calibration", args.num_calibration, 1),
                            ("--runs", args.runs, 0)):
        if value < low:
            parser.error(f"Expected {arg} >= {low}. Received: {arg}={value}")
    if args.max_eval_images is not None and args.max_eval_images < 1:
        parser.error(f"Expected --max-eval-images >= 1. Received: --max-eval-images={args.max_eval_images}")

    import tensorflow as tf

    try:
        # Only possible before TensorFlow runs its first operation; then Keras is timed like the other runtimes.
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        print("warning: TensorFlow was already initialised; the Keras row uses its default threads", file=sys.stderr)

    import kerasseg
    from kerasseg.export import parity
    from kerasseg.export.datasets import export_data

    frame_runtime = None
    if (args.delegate or args.hardware) and not args.device_runtime:
        parser.error("Expected --delegate / --hardware with --device-runtime (the runtime rows run on them). "
                     "Received: them alone")
    if args.device_runtime:
        from tflite.runtime import Segmenter, parse_delegate_options

        try:
            options = parse_delegate_options(args.delegate_option)
        except ValueError as e:
            parser.error(str(e))
        frame_runtime = lambda path: Segmenter(path, num_threads=args.threads, delegate=args.delegate,  # noqa: E731
                                               delegate_options=options, hardware=args.hardware).predict

    try:
        model = kerasseg.load_model(args.model)
        metadata, calibration, val = export_data(model, args.dataset, args.data_dir,
                                                 calibration=bool(set(variants) - {"fp32", "fp16", "dynamic",
                                                                                   "onnx"}))
        result = parity(model, val, variants=variants, representative_data=calibration,
                        num_calibration_samples=args.num_calibration, output_dir=args.output_dir, metadata=metadata,
                        host_upsample=args.host_upsample, max_images=args.max_eval_images, num_threads=args.threads,
                        latency_runs=args.runs, model_path=args.model,
                        files={"qat": args.qat} if args.qat else None, frame_runtime=frame_runtime)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result.format())
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(folder, exist_ok=True)
        from kerasseg.saving import atomic_path

        with atomic_path(args.json) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(result.to_json())
        print(f"wrote {args.json}")
    if not result.ok:
        outside = [r.name for r in result.rows if r.within_bound is False]
        print(f"outside their bounds: {', '.join(outside)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
