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
    from kerasseg.export.compat import TARGETS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help=".tflite files")
    p.add_argument("--target", default="gpu", choices=TARGETS,
                   help="cpu: builtin ops and static shapes; gpu: plus a GPU-only compilation on LiteRT's GPU "
                        "accelerator; npu or an Ethos-U configuration: plus a fully integer graph and Arm Vela with no "
                        "operator on the CPU (npu: ethos-u85-256; default gpu)")
    p.add_argument("--precheck-only", action="store_true",
                   help="only the hand-written rules, without running LiteRT's GPU accelerator or Vela")
    p.add_argument("--run", action="store_true",
                   help="gpu: also run one input on the GPU at full float precision and compare with the CPU")
    p.add_argument("--system-config", help="Ethos-U: Vela's system config (default per NPU family)")
    p.add_argument("--memory-mode", help="Ethos-U: Vela's memory mode (default per NPU family)")
    p.add_argument("--sram-budget-kib", type=float, help="Ethos-U: SRAM available to the model, in KiB")
    p.add_argument("--json", help="also write the reports to this JSON file")
    p.add_argument("--quiet", action="store_true", help="one line per model instead of the full report")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sram_budget_kib is not None and args.sram_budget_kib <= 0:
        parser.error(f"Expected --sram-budget-kib > 0. Received: --sram-budget-kib={args.sram_budget_kib}")
    from kerasseg.export.compat import check
    from kerasseg.export.gpu import GpuUnavailableError

    reports = []
    for path in args.models:
        try:
            report = check(path, args.target, toolchain=not args.precheck_only, run=args.run,
                           system_config=args.system_config, memory_mode=args.memory_mode,
                           sram_budget=None if args.sram_budget_kib is None else round(args.sram_budget_kib * 1024))
        except (FileNotFoundError, ValueError, GpuUnavailableError) as e:
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
