"""Per-layer int8 quantisation report of a trained model: which layers lose most when quantised, worst first.

Example::

    python tools/quant_report.py runs/erfnet/best.keras --dataset folder --data-dir runs/streets \
        --num-calibration 50 --output runs/erfnet_quant_report.json --top 15

TFLite's QuantizationDebugger quantises the model exactly as ``tools/export_tflite.py --mode int8`` would
(calibration images from the train split, normalised with the model's own mean / std) and measures, after every
quantised operator, the difference between its int8 output and its float output on the same input; operators are
ranked by that error in units of their quantisation step (``rmse/scale``; rounding alone gives 0.289). The table
names the Keras layers each operator carries. ``--output`` writes the full ranking as JSON and the table as ``.txt``
next to it. Keep the worst layers in float with ``to_tflite(..., float_layers=N)`` and compare with
``tools/parity.py --variants int8,int8-float1,int8-float2``.
Exit status: 0 done, 2 bad arguments or input.
"""

from __future__ import annotations

import argparse

from kerasseg.cli.common import (add_data_dir, add_dataset, add_host_upsample, add_model_file, add_num_calibration,
                                 at_least, report_errors, tool_parser)


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__)
    add_model_file(p)
    add_dataset(p)
    add_data_dir(p, "runs/synthetic", help="dataset root (train split: calibration)")
    add_num_calibration(p, help="calibration images, also those the errors are averaged over (default 100)")
    p.add_argument("--per-tensor", action="store_true", help="quantise weights per tensor instead of per channel")
    add_host_upsample(p, "export logits without the model's final bilinear resize (as tools/export_tflite.py)")
    p.add_argument("--top", type=at_least(0), default=20, help="layers shown in the table (default 20; 0 for all)")
    p.add_argument("--output", help="write the ranking to this .json file and the table to the matching .txt")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output is not None and not args.output.endswith(".json"):
        parser.error(f"Expected --output to end in '.json'. Received: --output={args.output!r}")
    return report_errors(run, args, (FileNotFoundError, ValueError))


def run(args) -> int:
    import kerasseg
    from kerasseg.export.datasets import export_data
    from kerasseg.export.quant_report import quant_report

    model = kerasseg.load_model(args.model)
    _, calibration, _ = export_data(model, args.dataset, args.data_dir)
    report = quant_report(model, calibration, num_calibration_samples=args.num_calibration,
                          per_channel=not args.per_tensor, host_upsample=args.host_upsample, verbose=True)
    top = args.top or None
    print(report.format(top=top))
    if args.output:
        json_path, text_path = report.write(args.output, top=top)
        print(f"wrote {json_path} and {text_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
