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

Frames in, labels out (`end_to_end`, ``--frame-size 1080 1920``): the device runtime's ``Segmenter.predict`` on a
camera-sized uint8 frame (decoding excluded; resize, model, up-sampling and argmax included), next to the bare
inference (set input, invoke, get output) of the same file, with the split between preprocessing, inference and
postprocessing. ``--frames DIR`` segments every image of a folder (a dash-camera sequence) in one call and reports
frames per second. ``--hardware cpu|gpu`` runs both through LiteRT's ``CompiledModel`` instead of the interpreter;
``--host-threads N`` sets the runtime's threads for the work around the model (resize, argmax, up-sampling).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from PIL import Image

try:
    from .runtime import HARDWARE, Segmenter, external_delegate, load_image, parse_delegate_options
except ImportError:  # run as a script: runtime.py sits beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from runtime import HARDWARE, Segmenter, external_delegate, load_image, parse_delegate_options

__all__ = ["benchmark", "time_model", "format_table", "end_to_end", "segment_folder", "main"]


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


def end_to_end(path, frame_size=(1080, 1920), *, num_threads: int = 2, runs: int = 20, warmup: int = 3,
               upsample: str = "bilinear", delegate=None, delegate_options: dict | None = None,
               hardware: str | None = None, frame=None, host_threads: int | None = None) -> dict:
    """Frame -> label map through `runtime.Segmenter.predict`, next to the bare inference of the same file.

    The frame is random pixels of ``frame_size``, or ``frame`` (an image file or uint8 ``(H, W, 3)`` array, e.g. a
    real street scene, whose predicted labels form regions as a camera's do) resized to ``frame_size`` with Pillow's
    bicubic filter (``frame_size=None`` keeps its own size).

    ``host_threads`` is the runtime's thread count for the host work (resize, argmax, up-sampling; see
    `runtime.Segmenter`), by default the cores this process may use, at most 4.

    Both are timed in one process on the same runtime (``Segmenter.invoke``: set the input, invoke, get the raw
    output), runs interleaved (one bare inference, one prediction) so that a shared machine's load hits both alike.

    Returns:
        dict with ``path``, ``frame_size``, ``input_size``, ``threads``, ``runs``, ``invoke_ms`` (median bare invoke),
        ``end_to_end_ms`` (median prediction), ``ratio`` (their quotient), ``split_ms`` (median ``preprocess``,
        ``inference`` and ``postprocess`` of the predictions), ``host_threads`` and ``accelerator``.
    """
    source = frame if frame is None or not isinstance(frame, np.ndarray) else "array"
    if frame is not None:
        frame = load_image(frame) if not isinstance(frame, np.ndarray) else frame
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"Expected a uint8 (H, W, 3) frame. Received: dtype {frame.dtype}, shape {frame.shape}")
        if frame_size is None:
            frame_size = frame.shape[:2]
    height, width = (int(v) for v in frame_size)
    if height < 1 or width < 1:
        raise ValueError(f"Expected a positive frame size (height, width). Received: frame_size={frame_size!r}")
    seg = Segmenter(path, num_threads=num_threads, delegate=delegate, delegate_options=delegate_options,
                    hardware=hardware, host_threads=host_threads)
    if frame is None:
        frame = np.random.default_rng(0).integers(0, 256, size=(height, width, 3)).astype(np.uint8)
    elif frame.shape[:2] != (height, width):
        frame = np.asarray(Image.fromarray(frame).resize((width, height), Image.BICUBIC))
    model_input = seg.preprocess(frame)
    for _ in range(warmup):
        seg.predict(frame, upsample=upsample)
    invoke, total, split = [], [], {"preprocess": [], "inference": [], "postprocess": []}
    for _ in range(runs):
        t = time.perf_counter()
        seg.invoke(model_input)
        invoke.append(1e3 * (time.perf_counter() - t))
        t = time.perf_counter()
        seg.predict(frame, upsample=upsample)
        total.append(1e3 * (time.perf_counter() - t))
        for k in split:
            split[k].append(seg.timings[k])
    invoke_ms, total_ms = float(np.median(invoke)), float(np.median(total))
    return {"path": os.fspath(path), "frame_size": [height, width], "input_size": list(seg.input_size),
            "threads": num_threads, "runs": runs, "upsample": upsample, "invoke_ms": invoke_ms,
            "frame": "random" if source is None else os.path.basename(os.fspath(source)),
            "end_to_end_ms": total_ms, "ratio": total_ms / invoke_ms if invoke_ms > 0 else float("inf"),
            "split_ms": {k: float(np.median(v)) for k, v in split.items()}, "host_threads": seg.host_threads,
            "accelerator": seg.accelerator}


def segment_folder(path, folder, *, num_threads: int = 2, upsample: str = "bilinear", delegate=None,
                   delegate_options: dict | None = None, hardware: str | None = None,
                   host_threads: int | None = None) -> dict:
    """Segments every image of ``folder`` (sorted by name) in one call; decoding is included, as on a recorder.

    Returns:
        dict with ``frames``, ``seconds``, ``frames_per_second`` and ``labels`` (the label maps, in order).
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Expected a folder of frames. Received: frames={folder!r}")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".png", ".jpg", ".jpeg", ".bmp")))
    if not names:
        raise ValueError(f"Expected image files (.png, .jpg, .jpeg, .bmp) in the frames folder. Received: none in "
                         f"{folder!r}")
    seg = Segmenter(path, num_threads=num_threads, delegate=delegate, delegate_options=delegate_options,
                    hardware=hardware, host_threads=host_threads)
    start = time.perf_counter()
    labels = [seg.predict(load_image(os.path.join(folder, n)), upsample=upsample) for n in names]
    seconds = time.perf_counter() - start
    return {"frames": len(names), "seconds": seconds, "frames_per_second": len(names) / seconds, "labels": labels,
            "accelerator": seg.accelerator}


def format_end_to_end(row: dict) -> str:
    """The frame -> labels split of an `end_to_end` row, as plain text."""
    split = row["split_ms"]
    h, w = row["frame_size"]
    ih, iw = row["input_size"]
    return (f"{os.path.basename(row['path'])}: {w}x{h} frame ({row['frame']}) -> {iw}x{ih} model -> {w}x{h} labels "
            f"({row['upsample']} up-sampling), {row['threads']} threads, on {row['accelerator']}\n"
            f"  bare inference  {row['invoke_ms']:.1f} ms (median of {row['runs']})\n"
            f"  frame -> labels {row['end_to_end_ms']:.1f} ms = x{row['ratio']:.2f} the bare inference (preprocess "
            f"{split['preprocess']:.1f}, inference {split['inference']:.1f}, postprocess {split['postprocess']:.1f}; "
            f"host work on {row['host_threads']} threads)")


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
    parser.add_argument("--frame-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                        help="also time frame -> label map through the runtime on a frame of this size (e.g. 1080 "
                             "1920), next to the bare invoke")
    parser.add_argument("--upsample", choices=["bilinear", "nearest"], default="bilinear",
                        help="the runtime's up-sampling for --frame-size / --frames (default bilinear)")
    parser.add_argument("--host-threads", type=int, default=None,
                        help="the runtime's threads for the resize and the label work of --frame-size / --frames "
                             "(default: the cores this process may use, at most 4)")
    parser.add_argument("--frame", help="time frame -> label map on this image file (resized to --frame-size "
                                            "when given) instead of random pixels")
    parser.add_argument("--frames", help="segment every image of this folder in one call and report frames/s")
    parser.add_argument("--hardware", choices=HARDWARE, default=None,
                        help="--frame-size / --frames through LiteRT's CompiledModel on this accelerator (gpu keeps "
                             "the CPU as fallback; gpu-fp32 at full float precision) instead of the interpreter")
    args = parser.parse_args(argv)
    try:
        options = parse_delegate_options(args.delegate_option)
        rows = benchmark(args.models, num_threads=args.threads, runs=args.runs, warmup=args.warmup,
                         delegate=args.delegate, delegate_options=options)
        extra = {}
        if args.frame_size or args.frame:
            extra["end_to_end"] = [end_to_end(p, args.frame_size, num_threads=args.threads, runs=args.runs,
                                              warmup=args.warmup, upsample=args.upsample, delegate=args.delegate,
                                              delegate_options=options, hardware=args.hardware, frame=args.frame,
                                              host_threads=args.host_threads)
                                   for p in args.models]
        if args.frames:
            extra["frames"] = []
            for p in args.models:
                done = segment_folder(p, args.frames, num_threads=args.threads, upsample=args.upsample,
                                      delegate=args.delegate, delegate_options=options, hardware=args.hardware,
                                      host_threads=args.host_threads)
                done.pop("labels")
                extra["frames"].append(dict(done, path=p))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(rows))
    for row in extra.get("end_to_end", []):
        print(format_end_to_end(row))
    for row in extra.get("frames", []):
        print(f"{os.path.basename(row['path'])}: {row['frames']} frames of {args.frames} in {row['seconds']:.2f} s, "
              f"{row['frames_per_second']:.1f} frames/s (decoding included), on {row['accelerator']}")
    rows = rows + [dict(r, kind="end_to_end") for r in extra.get("end_to_end", [])] + [
        dict(r, kind="frames") for r in extra.get("frames", [])]
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
