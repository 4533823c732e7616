"""Parity of a trained model across runtimes: Keras, each TFLite mode and ONNX, scored on the same validation images
with the same metric code.

Example::

    python tools/parity.py runs/erfnet/best.keras --dataset folder --data-dir runs/streets \
        --variants fp32,fp16,dynamic,int8,onnx --threads 2 --output-dir runs/parity

The table gives each runtime's mIoU, its difference to Keras (in mIoU points) against the variant's bound (fp32 and
ONNX 0.01, fp16 0.1, dynamic and int8 1.0, the ``--qat`` int8 file may lose 0.5 at most), the largest per-class IoU
difference, the pixel agreement with Keras, the largest logit difference, the file size and the latency of one image
(median and 90th percentile) with the speed-up over Keras, followed by the per-class IoU differences. Int8
calibration images come from the train split.
Exit status: 0 every variant within its bound, 1 some variant outside it, 2 bad arguments or input.
"""

from __future__ import annotations

import argparse
import re
import sys

from kerasseg.cli.common import (add_data_dir, add_dataset, add_host_upsample, add_json, add_model_file,
                                 add_num_calibration, add_threads, at_least, import_device_runtime, tool_parser,
                                 write_text)
from kerasseg.export.harness import QUANT_VARIANTS, VARIANTS


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__)
    add_model_file(p)
    add_dataset(p)
    add_data_dir(p, "runs/synthetic", help="dataset root (train split: calibration, val: scoring)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated subset of {','.join(VARIANTS)} (default all), and of the further "
                        "quantised variants int8-per-tensor, int16x8 (bound 0.25), onnx-int8 (QDQ) and "
                        "int8-float<N> (int8 with the N worst layers of the per-layer report kept in float)")
    p.add_argument("--qat", help="also score this int8 .tflite from quantisation-aware training (tools/qat.py), "
                                 "bound 0.5 mIoU points")
    add_num_calibration(p)
    p.add_argument("--max-eval-images", type=at_least(1), default=None, help="score at most this many val images")
    add_threads(p, 2, "threads of every runtime, TensorFlow included (default 2)")
    p.add_argument("--runs", type=at_least(0), default=10,
                   help="timed runs per runtime for the latency, 0 to skip (default 10)")
    add_host_upsample(p, "export logits without the model's final bilinear resize and up-sample them on the host")
    p.add_argument("--device-runtime", action="store_true",
                   help="also score every TFLite file through tflite/runtime.py's Segmenter.predict on the full-size "
                        "frames (it resizes them itself), rows runtime-<variant>")
    p.add_argument("--delegate", help="a LiteRT external delegate library (.so) the TFLite rows (and with "
                                      "--device-runtime the runtime rows) run on; operators it does not take run on "
                                      "the CPU")
    p.add_argument("--delegate-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of --delegate (repeatable)")
    p.add_argument("--hardware", choices=["cpu", "gpu", "gpu-fp32"], default=None,
                   help="run the TFLite rows (and with --device-runtime the runtime rows) through LiteRT's "
                        "CompiledModel on this accelerator (only cpu here: LiteRT's GPU accelerator cannot run in "
                        "this process, which has loaded TensorFlow)")
    p.add_argument("--output-dir", default=None, help="keep the exported models here (default: a temporary folder)")
    add_json(p, "also write the figures to this JSON file")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    # int8-float<N> stands for every N: matched as a pattern, the other names as they are.
    names = VARIANTS + tuple(v for v in QUANT_VARIANTS if "<" not in v)
    if not variants or len(set(variants)) != len(variants) or any(
            v not in names and not re.fullmatch(r"int8-float\d+", v) for v in variants):
        parser.error(f"Expected --variants to be distinct names from {','.join(VARIANTS + QUANT_VARIANTS)}. "
                     f"Received: --variants={args.variants!r}")

    from kerasseg.errors import GpuUnavailableError
    from kerasseg.runtimes import parse_delegate_options

    if args.hardware not in (None, "cpu"):
        # Refused before TensorFlow starts: LiteRT's GPU accelerator crashes in a process that has loaded it.
        parser.error(f"Expected --hardware cpu: LiteRT's GPU accelerator cannot run in this process, which has loaded "
                     f"TensorFlow (run tflite/runtime.py --hardware {args.hardware}, or kerasseg.export.check(path, "
                     f"'gpu', run=True), on the exported files instead). Received: --hardware {args.hardware}")
    try:
        options = parse_delegate_options(args.delegate_option)
    except ValueError as e:
        parser.error(str(e))
    if args.delegate and args.hardware:
        parser.error(f"Expected either --delegate or --hardware. Received: --delegate={args.delegate} and "
                     f"--hardware={args.hardware}")
    tflite_options = {"delegate": args.delegate, "delegate_options": options, "hardware": args.hardware}

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
    if args.device_runtime:
        runtime = import_device_runtime()
        frame_runtime = lambda path: runtime.Segmenter(  # noqa: E731
            path, num_threads=args.threads, delegate=args.delegate, delegate_options=options,
            hardware=args.hardware).predict

    try:
        model = kerasseg.load_model(args.model)
        metadata, calibration, val = export_data(model, args.dataset, args.data_dir,
                                                 calibration=bool(set(variants) - {"fp32", "fp16", "dynamic",
                                                                                   "onnx"}))
        result = parity(model, val, variants=variants, representative_data=calibration,
                        num_calibration_samples=args.num_calibration, output_dir=args.output_dir, metadata=metadata,
                        host_upsample=args.host_upsample, max_images=args.max_eval_images, num_threads=args.threads,
                        latency_runs=args.runs, model_path=args.model,
                        files={"qat": args.qat} if args.qat else None, frame_runtime=frame_runtime,
                        tflite_options=tflite_options)
    except (FileNotFoundError, ValueError, GpuUnavailableError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result.format())
    if args.json:
        write_text(args.json, result.to_json())
        print(f"wrote {args.json}")
    if not result.ok:
        outside = [r.name for r in result.rows if r.within_bound is False]
        print(f"outside their bounds: {', '.join(outside)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
