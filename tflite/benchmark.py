#!/usr/bin/env python
"""Latency of several ``.tflite`` models (or modes of one model) in one run: numpy and LiteRT (``ai_edge_litert``) only.

Every model is timed in the same process, one after the other, on a fixed random input of its own input type, with
the same thread count: ``warmup`` untimed invocations (the first one also plans memory and packs weights), then
``runs`` timed ones. The table gives the median, the 90th percentile and the mean of ``interpreter.invoke()``, and
each model's speed-up over the first one (the baseline) as the ratio of medians. Ratios measured in one run are what
to compare on a shared or throttled machine; absolute figures move with the load.

Library use::

    rows = benchmark(["erfnet_fp32.tflite", "erfnet_int8.tflite"], num_threads=2, runs=20)
    print(format_table(rows))

Command line::

    python benchmark.py erfnet_fp32.tflite erfnet_fp16.tflite erfnet_int8.tflite --threads 2 --runs 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

try:
    from .runtime import external_delegate, parse_delegate_options
except ImportError:  # run as a script: runtime.py sits beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from runtime import external_delegate, parse_delegate_options

__all__ = ["benchmark", "time_model", "format_table", "main"]


def _random_input(detail, rng) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    shape = tuple(int(d) for d in detail["shape"])
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)
    return rng.normal(size=shape).astype(dtype)


def time_model(path, *, num_threads: int = 2, runs: int = 20, warmup: int = 3, seed: int = 0, delegate=None,
               delegate_options: dict | None = None) -> dict:
    """Times ``interpreter.invoke()`` of one ``.tflite`` model.

    Args:
        delegate, delegate_options: a LiteRT external delegate library and its options (see
            `runtime.external_delegate`); operators it does not take run on the CPU.

    Returns:
        dict with ``path``, ``size_bytes``, ``input_dtype``, ``input_shape``, ``threads``, ``runs``, ``median_ms``,
        ``p90_ms``, ``mean_ms``, ``min_ms``, ``accelerator``.
    """
    from ai_edge_litert.interpreter import Interpreter

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected an existing .tflite file. Received: path={path!r}")
    delegates = [external_delegate(delegate, delegate_options)] if delegate is not None else None
    interpreter = Interpreter(model_path=path, num_threads=num_threads, experimental_delegates=delegates)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(seed)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], _random_input(detail, rng))
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        interpreter.invoke()
        times.append(1e3 * (time.perf_counter() - t))
    first = interpreter.get_input_details()[0]
    return {
        "path": path,
        "size_bytes": os.path.getsize(path),
        "input_dtype": np.dtype(first["dtype"]).name,
        "input_shape": [int(d) for d in first["shape"]],
        "threads": num_threads,
        "runs": runs,
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
        "mean_ms": float(np.mean(times)),
        "min_ms": float(np.min(times)),
        "accelerator": (f"delegate {os.path.basename(os.fspath(delegate))}, CPU fallback" if delegate is not None
                        else "CPU (XNNPACK)"),
    }


def benchmark(paths, *, num_threads: int = 2, runs: int = 20, warmup: int = 3, delegate=None,
              delegate_options: dict | None = None) -> list[dict]:
    """Times every model (see `time_model`) and adds ``speedup``: the first model's median over this one's.

    Raises:
        ValueError: no models, or a non-positive thread / run count or negative warm-up.
        FileNotFoundError: a missing model file.
    """
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("Expected at least one .tflite model. Received: none")
    for arg, value, low in (("num_threads", num_threads, 1), ("runs", runs, 1), ("warmup", warmup, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"Expected {arg} to be an integer >= {low}. Received: {arg}={value!r}")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"Expected existing .tflite files. Received: missing {missing}")
    rows = [time_model(p, num_threads=num_threads, runs=runs, warmup=warmup, delegate=delegate,
                       delegate_options=delegate_options) for p in paths]
    base = rows[0]["median_ms"]
    for row in rows:
        row["speedup"] = base / row["median_ms"] if row["median_ms"] > 0 else float("inf")
    return rows


def format_table(rows: list[dict]) -> str:
    """A plain-text table of `benchmark` rows."""
    header = ("model", "input", "size MiB", "median ms", "p90 ms", "mean ms", "speed-up")
    lines = [(os.path.basename(r["path"]), f"{r['input_dtype']} {'x'.join(map(str, r['input_shape']))}",
              f"{r['size_bytes'] / 2 ** 20:.2f}", f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}",
              f"{r['mean_ms']:.2f}", f"×{r['speedup']:.2f}") for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    threads, runs = rows[0]["threads"], rows[0]["runs"]
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines]
                     + [f"{runs} timed runs each after warm-up, {threads} threads, on {rows[0]['accelerator']}; "
                        f"speed-up = median of the first model / median of the row"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Latency of .tflite models, measured in one run, with the ratios "
                                                 "between them (the first model is the baseline).")
    parser.add_argument("models", nargs="+", help=".tflite files")
    parser.add_argument("--threads", type=int, default=2, help="LiteRT CPU threads (default 2)")
    parser.add_argument("--runs", type=int, default=20, help="timed invocations per model (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed invocations first (default 3)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--delegate", help="a LiteRT external delegate library (.so); operators it does not take run "
                                           "on the CPU")
    parser.add_argument("--delegate-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of --delegate (repeatable)")
    args = parser.parse_args(argv)
    try:
        rows = benchmark(args.models, num_threads=args.threads, runs=args.runs, warmup=args.warmup,
                         delegate=args.delegate, delegate_options=parse_delegate_options(args.delegate_option))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
