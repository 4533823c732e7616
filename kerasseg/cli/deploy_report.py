"""Deployment report: which architectures run in full on which edge accelerator, by the real toolchains.

For each model (a registry architecture at an input size, with random weights: placement and memory depend on the
graph, not on the weights) the tool exports an fp16 and an int8 ``.tflite`` file, compiles the fp16 file GPU-only on
LiteRT's GPU accelerator and the int8 file with Arm Vela for Ethos-U55, U65 and U85, and writes a table
architecture × target: operators on the accelerator / total, Vela's estimated latency and SRAM, and the reasons of
every operator left to the CPU, as JSON and markdown (both written atomically).

Examples::

    python tools/deploy_report.py --model erfnet@512x1024 --model erfnet@360x480 --output-dir runs/deploy
    # The README's deployment matrix: the model table's configurations, one process per model, merged; then the
    # README's table is rewritten from the merged report.
    python tools/deploy_report.py --reference erfnet --output-dir docs --append --readme README.md
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import tempfile

from kerasseg.cli.common import at_least, parse_image_size, tool_parser, write_text
from kerasseg.cli.model_table import REFERENCE

NPU_TARGETS = ("ethos-u55-128", "ethos-u65-256", "ethos-u85-256")
TARGETS = ("gpu", *NPU_TARGETS)
REPORT = "deploy_report.json"
# The README's table lies between these two lines; everything between them is rewritten by --readme.
BEGIN, END = "<!-- deploy-report -->", "<!-- /deploy-report -->"


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__)
    p.add_argument("--model", action="append", default=[],
                   help="NAME@HEIGHTxWIDTH, a registry architecture at an input size with its default options "
                        "(repeatable)")
    p.add_argument("--num-classes", type=at_least(1), default=19, help="classes of the --model models (default 19)")
    p.add_argument("--reference", nargs="*", metavar="NAME",
                   help="the configurations of the README's model table (tools/model_table.py): all of them, or "
                        "those of the registry names given")
    p.add_argument("--output-dir", required=True, help=f"folder for {REPORT} and deploy_report.md")
    p.add_argument("--append", action="store_true",
                   help=f"merge into the output folder's {REPORT}: rows of the same model, size and classes are "
                        "replaced, the others kept")
    p.add_argument("--readme", help=f"rewrite the table between the lines {BEGIN} and {END} of this markdown file "
                                    "from the whole report")
    return p


def _parse_model(text: str):
    name, _, size = text.partition("@")
    if not name or not size:
        raise ValueError(f"Expected --model NAME@HEIGHTxWIDTH, e.g. erfnet@512x1024. Received: --model={text!r}")
    return name, parse_image_size(size)


def _configurations(args) -> list:
    """``(label, registry name, classes, (height, width), builder kwargs)`` of every model the arguments ask for."""
    # A --model row takes the model table's label of the architecture's default build ("ERFNet"), if it has one.
    labels = {name: label for name, _, _, kwargs, label in reversed(REFERENCE) if not kwargs}
    configs = [(labels.get(name, name), name, args.num_classes, size, {})
               for name, size in map(_parse_model, args.model)]
    if args.reference is not None:
        known = {name for name, *_ in REFERENCE}
        unknown = sorted(set(args.reference) - known)
        if unknown:
            raise ValueError(f"Expected --reference names among {sorted(known)}. Received: {unknown}")
        configs += [(label, name, classes, shape[:2], kwargs) for name, classes, shape, kwargs, label in REFERENCE
                    if not args.reference or name in args.reference]
    if not configs:
        raise ValueError("Expected at least one --model or --reference. Received: neither")
    return configs


def _row(label: str, name: str, num_classes: int, size, kwargs: dict) -> dict:
    import keras
    import numpy as np

    import kerasseg
    from kerasseg.export import check, to_tflite

    keras.utils.set_random_seed(0)
    model = kerasseg.build_model(name, num_classes, input_shape=(*size, 3), **kwargs)
    calibration = np.random.default_rng(0).normal(size=(4, *size, 3)).astype(np.float32)
    row = {"model": label, "architecture": name, "options": kwargs, "classes": num_classes,
           "input": f"{size[0]}x{size[1]}", "targets": {}}
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


def markdown(rows: list, *, reasons: bool = True) -> str:
    """The report as a markdown table, the tools that made it and (``reasons``) the reason of every fallback."""
    lines = ["| model | classes | input | " + " | ".join(TARGETS) + " |", "|---|---|---|" + "---|" * len(TARGETS)]
    for row in rows:
        lines.append(f"| {row['model']} | {row['classes']} | {row['input']} | "
                     + " | ".join(_cell(row["targets"][t]) for t in TARGETS) + " |")
    lines += ["", "GPU: fp16 export, GPU-only compilation, operators on the GPU / total where the delegate counts "
                  "them. Ethos-U: int8 export, operators on the NPU / total, Vela's estimated latency and SRAM.", ""]
    tools = sorted({r["targets"][t]["tool"] for r in rows for t in TARGETS})
    lines += [f"Tools: {'; '.join(tools)}.", ""]
    if reasons:
        for row in rows:
            for target in TARGETS:
                for reason in dict.fromkeys(row["targets"][target]["reasons"]):
                    lines.append(f"- {row['model']} {row['input']}, {target}: {reason}")
    return "\n".join(lines).rstrip("\n") + "\n"


def _key(row: dict) -> tuple:
    return row["model"], row["input"], row["classes"]


def read_report(path: str) -> list:
    """The rows of a ``deploy_report.json`` this tool wrote.

    Raises:
        InvalidFileError: the file is not such a report.
    """
    from kerasseg.errors import InvalidFileError

    with open(path, encoding="utf-8") as f:
        try:
            rows = json.load(f)
        except json.JSONDecodeError as e:
            raise InvalidFileError(f"Expected {path} to be a deployment report (JSON). Received: {e}") from None
    needed = {"model", "classes", "input", "targets"}
    if not isinstance(rows, list) or not all(isinstance(r, dict) and needed <= set(r) and set(TARGETS) <= set(
            r["targets"]) for r in rows):
        raise InvalidFileError(f"Expected {path} to be a list of rows with {sorted(needed)} and the targets "
                               f"{list(TARGETS)}. Received: a file that is not")
    return rows


def merge(rows: list, row: dict) -> list:
    """``rows`` with ``row`` in place of the row of the same model, size and classes (or added), ordered by
    architecture as the model table is (architectures it lacks last), the rows of one architecture as they came."""
    keys = [_key(r) for r in rows]
    merged = [row if k == _key(row) else r for r, k in zip(rows, keys)]
    if _key(row) not in keys:
        merged.append(row)
    order = list(dict.fromkeys(name for name, *_ in REFERENCE))
    return sorted(merged, key=lambda r: order.index(r["architecture"]) if r["architecture"] in order else len(order))


def readme_block(text: str, source: str = "the file") -> tuple[int, int]:
    """Start and end offsets of what lies between the deploy-report markers of ``text``.

    Raises:
        ValueError: the markers are not there once each, in order.
    """
    begins, ends = [m.end() for m in re.finditer(re.escape(BEGIN), text)], [m.start() for m in re.finditer(
        re.escape(END), text)]
    if len(begins) != 1 or len(ends) != 1 or begins[0] > ends[0]:
        raise ValueError(f"Expected {source} to contain the line {BEGIN} once, followed by {END} once. Received: "
                         f"{len(begins)} and {len(ends)}")
    return begins[0], ends[0]


def update_readme(path: str, table: str) -> None:
    """Rewrites the table between the deploy-report markers of the markdown file ``path`` (atomically)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start, end = readme_block(text, path)
    write_text(path, text[:start] + "\n" + table + text[end:])


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        configs = _configurations(args)
        if args.readme:
            with open(args.readme, encoding="utf-8") as f:
                readme_block(f.read(), args.readme)
    except (ValueError, OSError) as e:
        parser.error(str(e))
    report = os.path.join(args.output_dir, REPORT)
    rows = read_report(report) if args.append and os.path.isfile(report) else []
    for config in configs:
        row = _row(*config)
        rows = merge(rows, row)
        print(markdown([row]).splitlines()[2], flush=True)
        # Written after every model: a long run that stops keeps what it measured.
        write_text(report, json.dumps(rows, indent=2, ensure_ascii=False))
    table = markdown(rows)
    write_text(os.path.join(args.output_dir, "deploy_report.md"), table)
    if args.readme:
        update_readme(args.readme, markdown(rows, reasons=False))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
