"""Export a trained ``.keras`` model to TFLite, check its accuracy against Keras, and install it only if it holds up.

Example::

    python tools/export_tflite.py runs/erfnet/best.keras --mode int8 --dataset synthetic \
        --data-dir runs/synthetic --output runs/erfnet/erfnet_int8.tflite --max-miou-drop 1.0

Calibration images (int8) come from the train split, evaluation images from the val split, both normalised with
the mean / std recorded in the model. The model is converted into a temporary file, scored with Keras and with the
LiteRT interpreter on the same images, and moved (with its ``.json`` sidecar) onto ``--output`` only when the TFLite
mIoU is at most ``--max-miou-drop`` points below the Keras mIoU (by default the mode's parity bound: fp32 0.01,
fp16 0.1, dynamic and int8 1.0, int16x8 0.25), or with ``--force``. With ``--target`` the converted model must also
pass that target's edge-compatibility rules (see ``tools/check_tflite.py``). Exit status: 0 written, 1 refused
(accuracy or target rules), 2 bad arguments or input.
"""

from __future__ import annotations

import argparse
import os
import sys

from kerasseg.cli.common import (add_dataset, add_data_dir, add_host_upsample, add_model_file, add_num_calibration,
                                 add_output_head, add_threads, at_least, tool_parser)
from kerasseg.export import MODES, TARGETS
from kerasseg.export.tflite import INPUT_FORMATS, INTEGER_MODES, IO_DTYPES


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__)
    add_model_file(p)
    p.add_argument("--mode", required=True, choices=MODES,
                   help="int16x8: int16 activations, int8 weights (bound 0.25)")
    p.add_argument("--per-tensor", action="store_true", help="int8: one weight scale per tensor (for NPUs that "
                                                             "require it) instead of one per output channel")
    p.add_argument("--float-layers", default=None,
                   help="int8: keep layers in float, either a number N (the N worst of tools/quant_report.py) or "
                        "comma-separated Keras layer names; the file is then not fully integer (no NPU)")
    add_dataset(p)
    add_data_dir(p, "runs/synthetic", help="dataset root (train split: calibration, val: check)")
    p.add_argument("--output", required=True, help="destination .tflite file (a .json sidecar is written beside it)")
    add_num_calibration(p, help="calibration images for int8 (default 100)")
    p.add_argument("--max-miou-drop", type=float, default=None,
                   help="largest accepted Keras-to-TFLite mIoU drop, in points (default: the mode's bound, fp32 "
                        "0.01, fp16 0.1, dynamic / int8 1.0)")
    p.add_argument("--force", action="store_true", help="write the file even when the mIoU drop is larger")
    add_output_head(p)
    add_host_upsample(p)
    p.add_argument("--target", choices=TARGETS, default=None,
                   help="refuse the model unless it passes this target's check by the real tool (LiteRT's GPU "
                        "accelerator for gpu, Arm Vela for npu and the Ethos-U configurations)")
    p.add_argument("--allow-cpu-fallback", action="store_true",
                   help="with --target: write the model even where the tool leaves operators to the CPU")
    p.add_argument("--io-dtype", default=None, choices=IO_DTYPES,
                   help="int8 mode: input/output type (default uint8 for pixel input, int8 for normalised input)")
    p.add_argument("--input-format", default="pixels", choices=INPUT_FORMATS,
                   help="model input: RGB pixels 0..255, normalised in the graph (default), or normalised values")
    p.add_argument("--max-eval-images", type=at_least(1), default=None, help="score at most this many val images")
    add_threads(p, 2, "LiteRT interpreter threads for the check (default 2)")
    return p


def _float_layers(value):
    if value is None:
        return None
    return int(value) if value.strip().isdigit() else [name.strip() for name in value.split(",") if name.strip()]


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:.2f} MiB"


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.output.endswith(".tflite"):
        parser.error(f"Expected --output to end in '.tflite'. Received: --output={args.output!r}")
    if os.path.abspath(args.output) == os.path.abspath(args.model):
        parser.error("Expected --output to differ from the model file. Received: the same path")

    import kerasseg
    from kerasseg.export import AccuracyDropError, EdgeCompatibilityError, GpuUnavailableError, export_verified
    from kerasseg.export.datasets import export_data

    try:
        model = kerasseg.load_model(args.model)
        metadata, calibration, val = export_data(model, args.dataset, args.data_dir,
                                                 calibration=args.mode in INTEGER_MODES)
        report = export_verified(model, args.output, args.mode, data=val, representative_data=calibration,
                                 num_calibration_samples=args.num_calibration, output=args.output_head,
                                 metadata=metadata, io_dtype=args.io_dtype, label_dtype=args.label_dtype,
                                 host_upsample=args.host_upsample, per_channel=not args.per_tensor,
                                 float_layers=_float_layers(args.float_layers), target=args.target,
                                 allow_cpu_fallback=args.allow_cpu_fallback, input_format=args.input_format,
                                 max_miou_drop=args.max_miou_drop, force=args.force,
                                 max_images=args.max_eval_images, num_threads=args.threads)
    except AccuracyDropError as e:
        _print_report(e.report, args)
        print(f"refused: {e}", file=sys.stderr)
        return 1
    except EdgeCompatibilityError as e:
        print(e.report.format(), file=sys.stderr)
        print(f"refused: {e}; {args.output!r} was not written", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError, GpuUnavailableError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _print_report(report, args)
    note = " (forced past the mIoU bound)" if report["forced"] else ""
    if args.target:
        note += f" (passes the {args.target} target's check)" if not args.allow_cpu_fallback else \
            f" (checked for {args.target}, operators on the CPU allowed)"
    print(f"wrote {args.output} and {os.path.splitext(args.output)[0]}.json{note}")
    return 0


def _print_report(report: dict, args) -> None:
    err = report.get("max_abs_logit_error")
    if err is None:
        err = report.get("max_abs_probability_error")
    rows = [
        ("mode / output head", f"{args.mode} / {args.output_head}"),
        ("val images scored", str(report["num_images"])),
        ("Keras mIoU", f"{100 * report['keras_miou']:.2f}"),
        ("TFLite mIoU", f"{100 * report['tflite_miou']:.2f}"),
        ("mIoU drop", f"{report['miou_drop']:+.2f} points (bound {report['max_miou_drop']:g})"),
        ("pixel agreement", f"{100 * report['pixel_agreement']:.2f} %"),
        ("max abs output error", "n/a (label head)" if err is None else f"{err:.4g}"),
        ("size .keras / .tflite", f"{_mib(os.path.getsize(args.model))} / {_mib(report['tflite_bytes'])}"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")


if __name__ == "__main__":
    raise SystemExit(main())
