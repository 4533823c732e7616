"""Deployment report: which architectures run in full on which edge accelerator, by the real toolchains.

For each model (a registry architecture at an input size, with random weights: placement and memory depend on the
graph, not on the weights) the tool exports an fp16 and an int8 ``.tflite`` file, compiles the fp16 file GPU-only on
LiteRT's GPU accelerator and the int8 file with Arm Vela for Ethos-U55, U65 and U85, and writes a table
architecture × target: operators on the accelerator / total, Vela's estimated latency and SRAM, and the reasons of
every operator left to the CPU, as JSON and markdown (both written atomically).

Example::

    python tools/deploy_report.py --model erfnet@512x1024 --model erfnet@360x480 --model deeplabv3plus@512x1024 \\
        --output-dir runs/deploy
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile

from kerasseg.cli.common import at_least, parse_image_size, tool_parser, write_text

NPU_TARGETS = ("ethos-u55-128", "ethos-u65-256", "ethos-u85-256")


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__)
    p.add_argument("--model", action="append", required=True,
                   help="NAME@HEIGHTxWIDTH, a registry architecture at an input size (repeatable)")
    p.add_argument("--num-classes", type=at_least(1), default=19, help="classes of every model (default 19)")
    p.add_argument("--output-dir", required=True, help="folder for deploy_report.json and deploy_report.md")
    return p


def _parse_model(text: str):
    name, _, size = text.partition("@")
    if not name or not size:
        raise ValueError(f"Expected --model NAME@HEIGHTxWIDTH, e.g. erfnet@512x1024. Received: --model={text!r}")
    return name, parse_image_size(size)


def _row(name: str, size, num_classes: int) -> dict:
    import keras
    import numpy as np

    import kerasseg
    from kerasseg.export import check, to_tflite

    keras.utils.set_random_seed(0)
    model = kerasseg.build_model(name, num_classes, input_shape=(*size, 3))
    calibration = np.random.default_rng(0).normal(size=(4, *size, 3)).astype(np.float32)
    row = {"architecture": name, "input": f"{size[0]}x{size[1]}", "targets": {}}
    with tempfile.TemporaryDirectory(prefix="kerasseg-deploy-") as folder:
        paths = {mode: to_tflite(model, os.path.join(folder, f"{mode}.tflite"), mode, representative_data=calibration,
                                 num_calibration_samples=4, verbose=False) for mode in ("fp16", "int8")}
        gpu = check(paths["fp16"], "gpu").gpu
        total = gpu.ops_on_gpu + gpu.ops_on_cpu if gpu.ops_on_gpu is not None else None
        row["targets"]["gpu"] = {"ok": gpu.ok, "on_accelerator": gpu.ops_on_gpu if total else None, "total": total,
                                 "reasons": gpu.problems(), "tool": f"LiteRT {gpu.litert_version}"}
        for target in NPU_TARGETS:
            vela = check(paths["int8"], target).vela
            row["targets"][target] = {"ok": vela.ok, "on_accelerator": len(vela.npu_ops),
                                      "total": len(vela.operators), "latency_ms": 1000 * vela.inference_time_s,
                                      "sram_kib": vela.sram_bytes / 1024, "reasons": vela.problems(),
                                      "tool": f"Vela {vela.version} ({vela.system_config}, {vela.memory_mode})"}
    del model
    keras.backend.clear_session()
    gc.collect()
    return row


def _cell(result: dict) -> str:
    if result["total"] is None:
        ops = "all" if result["ok"] else "?"
    else:
        ops = f"{result['on_accelerator']}/{result['total']}"
    text = f"{'✓' if result['ok'] else '✗'} {ops}"
    if "latency_ms" in result:
        text += f", {result['latency_ms']:.1f} ms, {result['sram_kib']:.0f} KiB"
    return text


def markdown(rows: list) -> str:
    """The report as a markdown table plus the fallback reasons."""
    targets = ["gpu", *NPU_TARGETS]
    lines = ["| architecture | input | " + " | ".join(targets) + " |", "|---|---|" + "---|" * len(targets)]
    for row in rows:
        lines.append(f"| {row['architecture']} | {row['input']} | "
                     + " | ".join(_cell(row["targets"][t]) for t in targets) + " |")
    lines += ["", "GPU: fp16 export, GPU-only compilation, operators on the GPU / total where the delegate counts "
                  "them. Ethos-U: int8 export, operators on the NPU / total, Vela's estimated latency and SRAM.", ""]
    tools = sorted({r["targets"][t]["tool"] for r in rows for t in targets})
    lines += [f"Tools: {'; '.join(tools)}.", ""]
    for row in rows:
        for target in targets:
            for reason in dict.fromkeys(row["targets"][target]["reasons"]):
                lines.append(f"- {row['architecture']} {row['input']}, {target}: {reason}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        models = [_parse_model(text) for text in args.model]
    except ValueError as e:
        parser.error(str(e))
    rows = []
    for name, size in models:
        rows.append(_row(name, size, args.num_classes))
        print(markdown(rows[-1:]).splitlines()[2], flush=True)
    table = markdown(rows)
    for filename, text in (("deploy_report.json", json.dumps(rows, indent=2)), ("deploy_report.md", table)):
        write_text(os.path.join(args.output_dir, filename), text)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
