#!/usr/bin/env python
"""Edge-compatibility report of ``.tflite`` files: operators, Flex / custom operators, float tensors, dynamic shapes
and the TFLite GPU delegate's rules, judged for a CPU, GPU or NPU target.

Example::

    python tools/check_tflite.py runs/erfnet_int8.tflite --target gpu
    python tools/check_tflite.py runs/*.tflite --target npu --json report.json

Exit status: 0 every model passes the target's rules, 1 at least one fails, 2 bad arguments or input.
"""

from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help=".tflite files")
    p.add_argument("--target", default="gpu", choices=["cpu", "gpu", "npu"],
                   help="cpu: builtin ops and static shapes; gpu: plus the GPU delegate's rules; npu: plus a fully "
                        "integer graph (default gpu)")
    p.add_argument("--json", help="also write the reports to this JSON file")
    p.add_argument("--quiet", action="store_true", help="one line per model instead of the full report")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from kerasseg.export.check import check

    reports = []
    for path in args.models:
        try:
            report = check(path, args.target)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        reports.append(report)
        print(report.summary() if args.quiet else report.format())
        if not args.quiet and len(args.models) > 1:
            print()
    if args.json:
        from kerasseg.saving import atomic_path

        with atomic_path(args.json) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump([r.to_dict() for r in reports], f, indent=2)
        print(f"wrote {args.json}")
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
