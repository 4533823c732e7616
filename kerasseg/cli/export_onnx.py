"""Export a trained ``.keras`` model to ONNX with tf2onnx; the model is run in onnxruntime and compared with Keras
before the file (and its ``.json`` sidecar) is written.

Example::

    python tools/export_onnx.py runs/erfnet/best.keras --output runs/erfnet.onnx --opset 17
    python tools/export_onnx.py runs/erfnet/best.keras --output runs/erfnet_int8.onnx --mode int8 \
        --dataset folder --data-dir runs/streets          # QDQ int8, calibrated on the train split

``--mode int8`` writes a QDQ int8 model (symmetric int8 activations, per-channel int8 weights) from onnxruntime's
static quantiser, the form TensorRT takes; its accuracy bound is checked by ``tools/parity.py --variants onnx-int8``.

Exit status: 0 written, 1 refused (onnxruntime disagrees with Keras), 2 bad arguments or input.
"""

from __future__ import annotations

import argparse
import os
import sys

from kerasseg.cli.common import (add_data_dir, add_dataset, add_host_upsample, add_model_file, add_num_calibration,
                                 add_output_head, tool_parser)
from kerasseg.export.onnx import DEFAULT_OPSET, MODES, OPSETS


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__)
    add_model_file(p)
    p.add_argument("--output", required=True, help="destination .onnx file (a .json sidecar is written beside it)")
    # Not choices=OPSETS: an opset out of range is bad input like a bad model file (exit status 2, the export's
    # own message), not a usage error.
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {OPSETS[0]}..{OPSETS[-1]} (default {DEFAULT_OPSET})")
    add_output_head(p)
    add_host_upsample(p)
    p.add_argument("--mode", default="fp32", choices=MODES, help="fp32 (default) or QDQ int8")
    add_dataset(p, help="int8: dataset format of the calibration images (default synthetic)")
    add_data_dir(p, "runs/synthetic", help="int8: dataset root (train split: calibration)")
    add_num_calibration(p, help="int8: calibration images (default 100)")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.output.endswith(".onnx"):
        parser.error(f"Expected --output to end in '.onnx'. Received: --output={args.output!r}")

    import kerasseg
    from kerasseg.export import ONNXMismatchError, read_sidecar, to_onnx

    try:
        model = kerasseg.load_model(args.model)
        metadata = calibration = None
        if args.mode == "int8":
            from kerasseg.export.datasets import export_data

            metadata, calibration, _ = export_data(model, args.dataset, args.data_dir)
        to_onnx(model, args.output, args.opset, output=args.output_head, label_dtype=args.label_dtype,
                host_upsample=args.host_upsample, metadata=metadata, mode=args.mode,
                representative_data=calibration, num_calibration_samples=args.num_calibration, verbose=True)
    except ONNXMismatchError as e:
        print(f"refused: {e}; {args.output!r} was not written", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    record = read_sidecar(args.output).extra["export"]
    check = record["verification"]
    agreement = f"labels agree on {100 * check['pixel_agreement']:.2f} % of pixels"
    if "max_abs_error" in check:
        agreement = (f"max |onnxruntime - Keras| = {check['max_abs_error']:.3g} (99th percentile "
                     f"{check['p99_abs_error']:.3g}), argmax agrees on {100 * check['pixel_agreement']:.2f} % "
                     f"of pixels")
    if record.get("mode") == "int8":
        q = record["quantization"]
        print(f"int8 {q['format']}: symmetric int8 activations, per-channel int8 weights, {q['calibration']} "
              f"calibration on {q['calibration_images']} images")
    print(f"opset {record['opset']}, input {record['input_name']} {record['input_shape']}, output "
          f"{record['output_name']} {record['output_shape']} ({record['output']})")
    print(f"operators: {', '.join(record['ops'])}")
    print(f"onnxruntime check: {agreement}")
    print(f"wrote {args.output} ({os.path.getsize(args.output) / 2 ** 20:.2f} MiB) and "
          f"{os.path.splitext(args.output)[0]}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
