"""Benchmarks that print figures (not timed tests).

Subcommands::

    python tools/benchmark.py data     # train-pipeline throughput vs. the train step at 512x1024
    python tools/benchmark.py export --model erfnet --input-size 512x1024 --output-dir runs/bench
    python tools/benchmark.py latency --dir runs/bench --threads 2 --runs 10

``data`` times the full training pipeline (decode, random scale 0.5-2.0, pad, 512x1024 random crop, flip,
photometric distortion, normalise, batch) on Cityscapes-sized scenes, next to the train-step throughput of a model
at the same size on this machine, and prints their ratio (the pipeline should be at least 3x faster, so that it
never starves training).

``export`` and ``latency`` measure inference on the CPU across runtimes, in two steps so that exporting (minutes
for int8 calibration) and timing (sensitive to load) are separate. ``export`` builds the model (seeded random
weights: latency does not depend on their values), saves it as ``.keras`` and exports TFLite fp32 / fp16 / int8
(int8 calibrated on ``--num-calibration`` images of ``--dataset`` / ``--data-dir``, or on random normalised images
without one) and ONNX, listing the files in ``manifest.json``. ``latency`` loads them in one process with the same
thread count everywhere (TensorFlow's intra-op pool, the LiteRT interpreter, onnxruntime) and times batch-1
inference of the Keras model (``tf.function``, and with XLA with ``--xla``), each TFLite file and the ONNX model,
interleaved (per round, one untimed and one timed run of each): median and 90th percentile over ``--runs`` rounds
after warm-up. A TFLite run is set-input, invoke, get-output, with the input quantised beforehand and an int8
output left as it is, as on the device. It also measures TensorFlow's fp32 matmul rate at the same thread count
(best of square products of a few sizes) and prints, per runtime, the speed-up over Keras fp32, the achieved
GFLOP/s (2 x the model's multiply-accumulates per image, `kerasseg.analysis.count_macs`) and its share of that
matmul peak. Ratios, not absolute figures, are what to compare on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from kerasseg.cli.common import (add_json, add_num_calibration, add_threads, at_least, image_size, tool_parser,
                                 write_json)
from kerasseg.data import DATASET_FORMATS
from kerasseg.export import MODES


def _write_benchmark_scenes(folder: str, count: int, height: int, width: int) -> str:
    """Writes ``count`` synthetic street scenes of ``height x width`` in the folder layout (a Cityscapes-sized
    stand-in when no dataset is given)."""
    from PIL import Image

    from kerasseg.data import ClassInfo, write_classes
    from kerasseg.data import synthetic

    for sub in ("images", "masks"):
        os.makedirs(os.path.join(folder, sub, "train"), exist_ok=True)
    for i, seed in enumerate(synthetic.scene_seeds(0, "train", count)):
        image, label = synthetic.generate_scene(seed, height, width)
        Image.fromarray(image).save(os.path.join(folder, "images", "train", f"{i:03d}.png"))
        Image.fromarray(label).save(os.path.join(folder, "masks", "train", f"{i:03d}.png"))
    write_classes(folder, ClassInfo(synthetic.CLASS_NAMES, synthetic.PALETTE, synthetic.IGNORE_LABEL))
    return folder


def _pipeline_throughput(ds, batch_size: int, warmup: int, steps: int) -> float:
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(steps):
        next(it)
    return steps * batch_size / (time.perf_counter() - start)


def _train_step_throughput(model_name: str, num_classes: int, crop, batch_size: int, warmup: int, steps: int) -> float:
    import keras
    import numpy as np

    import kerasseg
    from kerasseg.losses import SparseCategoricalCrossentropyIgnore

    model = kerasseg.build_model(model_name, num_classes, input_shape=(*crop, 3))
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=SparseCategoricalCrossentropyIgnore(ignore_label=255))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch_size, *crop, 3)).astype("float32")
    y = rng.integers(0, num_classes, (batch_size, *crop)).astype("int32")
    for _ in range(warmup):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch_size / (time.perf_counter() - start)


def run_data(args) -> int:
    """Train-pipeline throughput next to the train-step throughput of a model at the same crop size."""
    import tempfile

    from kerasseg.data import load_dataset

    crop = tuple(args.crop_size)
    with tempfile.TemporaryDirectory() as tmp:
        if args.root is None:
            h, w = args.scene_size
            print(f"Writing {args.scenes} synthetic scenes of {h}x{w} (no --root given) ...", flush=True)
            fmt, root = "folder", _write_benchmark_scenes(tmp, args.scenes, h, w)
        else:
            fmt, root = args.format, args.root
        ds = load_dataset(fmt, root, args.split, batch_size=args.batch_size, crop_size=crop, augment=True,
                          scale_range=(0.5, 2.0), photometric=True, blur=args.blur, repeat=True,
                          cache=args.cache, seed=0)
        pipeline = _pipeline_throughput(ds, args.batch_size, args.warmup, args.steps)
    print(f"pipeline ({fmt}, {crop[0]}x{crop[1]} crops, scale 0.5-2.0, flip, photometric"
          f"{' + blur' if args.blur else ''}, batch {args.batch_size}): {pipeline:.2f} images/s", flush=True)
    step = _train_step_throughput(args.model, args.num_classes, crop, args.batch_size, args.train_warmup,
                                  args.train_steps)
    print(f"{args.model} train step ({crop[0]}x{crop[1]}, batch {args.batch_size}): {step:.2f} images/s")
    ratio = round(pipeline, 2) / step  # the ratio of the figures as printed
    print(f"ratio pipeline / train step: {ratio:.2f}x (target >= 3x: {'met' if ratio >= 3 else 'NOT met'})")
    return 0


def _add_data_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="train-pipeline throughput vs. train-step throughput",
                              description=run_data.__doc__)
    p.add_argument("--format", default="folder", choices=DATASET_FORMATS,
                   help="dataset format with --root (default folder)")
    p.add_argument("--root", help="dataset folder; synthetic scenes are generated when omitted")
    p.add_argument("--split", default="train", help="split (default train)")
    p.add_argument("--crop-size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"))
    p.add_argument("--scene-size", type=int, nargs=2, default=(1024, 2048), metavar=("H", "W"),
                   help="size of the generated scenes (default 1024 2048, Cityscapes)")
    p.add_argument("--scenes", type=int, default=8, help="generated scenes (default 8)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=20, help="timed pipeline batches (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed pipeline batches (default 3)")
    p.add_argument("--cache", action="store_true", help="cache decoded images in memory")
    p.add_argument("--blur", action="store_true", help="include the random blur")
    p.add_argument("--model", default="erfnet", help="model of the train step (default erfnet)")
    p.add_argument("--num-classes", type=int, default=19)
    p.add_argument("--train-steps", type=int, default=5, help="timed train steps (default 5)")
    p.add_argument("--train-warmup", type=int, default=2, help="untimed train steps (default 2)")
    p.set_defaults(func=run_data)


MANIFEST = "manifest.json"


# --------------------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------------------

def _trained_at_size(weights: str, input_size):
    """The trained model ``weights`` (a pretrained name or a ``.keras`` file) rebuilt at ``input_size``.

    Fully convolutional models take the same weights at any input size; latency then reflects a trained model's
    outputs (class regions), which the runtime's boundary-only up-sampling depends on, instead of random ones.
    """
    import kerasseg
    from kerasseg.training.callbacks import copy_model_weights

    source = kerasseg.pretrained(weights) if weights in kerasseg.list_pretrained() else kerasseg.load_model(weights)
    meta = source.kerasseg_metadata
    model = kerasseg.build_model(meta.model_name, num_classes=meta.num_classes, input_shape=(*input_size, 3),
                                 **meta.extra.get("builder_kwargs", {}))
    copy_model_weights(source, model)
    model.kerasseg_metadata = meta.with_input_shape((*input_size, 3))
    return model


def _export(args) -> int:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        print(f"error: Expected --modes from {','.join(MODES)}. Received: --modes={args.modes!r}", file=sys.stderr)
        return 2
    if (args.dataset is None) != (args.data_dir is None):
        print("error: Expected --dataset and --data-dir together", file=sys.stderr)
        return 2

    import keras
    import numpy as np

    import kerasseg
    from kerasseg.analysis import count_macs
    from kerasseg.export import to_onnx, to_tflite

    try:
        keras.utils.set_random_seed(args.seed)
        if args.weights:
            model = _trained_at_size(args.weights, args.input_size)
        else:
            model = kerasseg.build_model(args.model, num_classes=args.num_classes,
                                         input_shape=(*args.input_size, 3))
    except (TypeError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.output_dir, exist_ok=True)
    name = model.kerasseg_metadata.model_name if args.weights else args.model
    stem = f"{name}_{args.input_size[0]}x{args.input_size[1]}"
    files = {"keras": kerasseg.save_model(model, os.path.join(args.output_dir, f"{stem}.keras"))}
    calibration = None
    if "int8" in modes:
        if args.dataset:
            from kerasseg.export.datasets import export_data

            _, calibration, _ = export_data(model, args.dataset, args.data_dir)
        else:
            # Latency does not depend on the calibration; noise in the normalised range keeps it self-contained.
            calibration = np.random.default_rng(args.seed).normal(
                size=(args.num_calibration, *args.input_size, 3)).astype(np.float32)
    for mode in modes:
        t = time.perf_counter()
        files[mode] = to_tflite(model, os.path.join(args.output_dir, f"{stem}_{mode}.tflite"), mode,
                                representative_data=calibration, num_calibration_samples=args.num_calibration)
        print(f"exported {mode} in {time.perf_counter() - t:.0f} s: {files[mode]}")
    if not args.no_onnx:
        t = time.perf_counter()
        files["onnx"] = to_onnx(model, os.path.join(args.output_dir, f"{stem}.onnx"))
        print(f"exported onnx in {time.perf_counter() - t:.0f} s: {files['onnx']}")
    manifest = {"model": name, "num_classes": model.kerasseg_metadata.num_classes, "weights": args.weights,
                "input_size": list(args.input_size), "macs": count_macs(model),
                "files": {k: os.path.basename(v) for k, v in files.items()}}
    print(f"wrote {write_json(os.path.join(args.output_dir, MANIFEST), manifest)}")
    return 0


# --------------------------------------------------------------------------------------------------------------
# latency
# --------------------------------------------------------------------------------------------------------------

def _timed_round_robin(runners: dict, runs: int, warmup: int) -> dict:
    """``{name: (median ms, p90 ms)}``: every runner warmed up, then timed once per round for ``runs`` rounds.

    Interleaving the runtimes spreads the load changes of a shared machine over all of them instead of over whichever
    happens to run during a busy spell, so the ratios between them stay meaningful. Within a round each runner is
    called once untimed right before its timed call: on a device a model runs back to back, with its weights in cache
    and its threads awake, not just after three other runtimes.
    """
    import numpy as np

    for fn in runners.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in runners}
    for _ in range(runs):
        for name, fn in runners.items():
            fn()
            t = time.perf_counter()
            fn()
            times[name].append(1e3 * (time.perf_counter() - t))
    return {name: (float(np.median(v)), float(np.percentile(v, 90))) for name, v in times.items()}


def _tflite_runner(path: str, threads: int, image):
    """One inference as the device does it: set the input, invoke, read the raw output.

    The input is quantised once beforehand (the device's preprocessing produces int8 directly), and an int8 output
    is read as it is: its argmax needs no dequantisation, since the scale is positive.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    data = image
    scale, zero_point = inp["quantization"]
    if scale:
        info = np.iinfo(inp["dtype"])
        data = np.clip(np.round(image / scale) + zero_point, info.min, info.max)
    data = data.astype(inp["dtype"])

    def run():
        interpreter.set_tensor(inp["index"], data)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])

    return run


def matmul_peak(tf, sizes=(1024, 2048, 3072), repeats: int = 5) -> dict:
    """Best fp32 GFLOP/s of ``tf.linalg.matmul`` on square matrices, with TensorFlow's current threads."""
    best = {"gflops": 0.0, "size": None}
    for n in sizes:
        a = tf.random.normal((n, n), dtype=tf.float32)
        b = tf.random.normal((n, n), dtype=tf.float32)
        product = tf.function(lambda x, y: tf.linalg.matmul(x, y))
        product(a, b).numpy()
        for _ in range(repeats):
            t = time.perf_counter()
            product(a, b).numpy()
            rate = 2.0 * n ** 3 / (time.perf_counter() - t) / 1e9
            if rate > best["gflops"]:
                best = {"gflops": rate, "size": n}
    return best


def _latency(args) -> int:
    manifest_path = os.path.join(args.dir, MANIFEST)
    if not os.path.isfile(manifest_path):
        print(f"error: Expected {manifest_path!r} (written by the export subcommand). Received: no such file",
              file=sys.stderr)
        return 2
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    files = {k: os.path.join(args.dir, v) for k, v in manifest["files"].items()}

    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        print("warning: TensorFlow already initialised; its default threads apply", file=sys.stderr)
    import numpy as np

    import kerasseg
    from kerasseg.export import ONNXModel

    flops = 2.0 * manifest["macs"]
    height, width = manifest["input_size"]
    x = np.random.default_rng(0).normal(size=(1, height, width, 3)).astype(np.float32)
    peak = matmul_peak(tf)
    print(f"fp32 matmul peak: {peak['gflops']:.1f} GFLOP/s (TensorFlow, {peak['size']}², {args.threads} threads)")

    model = kerasseg.load_model(files["keras"])
    xt = tf.constant(x)
    keras_fn = tf.function(lambda v: model(v, training=False))
    runners = {"Keras fp32 (tf.function)": lambda: keras_fn(xt).numpy()}
    sizes = {"Keras fp32 (tf.function)": None}
    if args.xla:
        xla_fn = tf.function(lambda v: model(v, training=False), jit_compile=True)
        runners["Keras fp32 (tf.function, XLA)"] = lambda: xla_fn(xt).numpy()
        sizes["Keras fp32 (tf.function, XLA)"] = None
    for mode in MODES:
        if mode in files:
            runners[f"TFLite {mode}"] = _tflite_runner(files[mode], args.threads, x)
            sizes[f"TFLite {mode}"] = os.path.getsize(files[mode])
    if "onnx" in files:
        onnx_runner = ONNXModel(files["onnx"], num_threads=args.threads)
        runners["ONNX (onnxruntime)"] = lambda: onnx_runner(x)
        sizes["ONNX (onnxruntime)"] = os.path.getsize(files["onnx"])
    timings = _timed_round_robin(runners, args.runs, args.warmup)
    rows = [(name, *timings[name], sizes[name]) for name in runners]

    base = rows[0][1]
    table = [f"{manifest['model']} at {height}×{width}, batch 1, {args.threads} threads, {flops / 1e9:.1f} GFLOP per "
             f"image; fp32 matmul peak {peak['gflops']:.1f} GFLOP/s",
             "",
             "| runtime | median ms | p90 ms | vs Keras fp32 | GFLOP/s | % of matmul peak | size MiB |",
             "|---|---|---|---|---|---|---|"]
    results = []
    for name, median, p90, size in rows:
        rate = flops / (median / 1e3) / 1e9
        share = 100.0 * rate / peak["gflops"]
        size_text = "-" if size is None else f"{size / 2 ** 20:.1f}"
        table.append(f"| {name} | {median:.0f} | {p90:.0f} | ×{base / median:.2f} | {rate:.1f} | {share:.0f} % | "
                     f"{size_text} |")
        results.append({"runtime": name, "median_ms": median, "p90_ms": p90, "speedup_vs_keras": base / median,
                        "gflops": rate, "percent_of_peak": share, "size_bytes": size})
    print("\n".join(table))
    print("GFLOP/s of the quantised models count the same operations as fp32 (integer ops are not FLOPs); "
          "their share of the fp32 peak is for comparison only.")
    if args.json:
        write_json(args.json, {"manifest": manifest, "threads": args.threads, "runs": args.runs,
                               "matmul_peak": peak, "rows": results})
        print(f"wrote {args.json}")
    return 0


def _add_export_parser(subparsers) -> None:
    e = subparsers.add_parser("export", help="build a model and export it to every runtime of the latency table")
    e.add_argument("--model", default="erfnet", help="registry name (default erfnet)")
    e.add_argument("--weights", help="export this trained model instead (a pretrained name such as erfnet_camvid, or "
                                     "a .keras file), rebuilt at --input-size; --model and --num-classes are its own")
    e.add_argument("--num-classes", type=at_least(1), default=19)
    e.add_argument("--input-size", type=image_size("--input-size"), default=(512, 1024),
                   help="HEIGHTxWIDTH (default 512x1024)")
    e.add_argument("--output-dir", required=True)
    e.add_argument("--modes", default="fp32,fp16,int8", help="TFLite modes (default fp32,fp16,int8)")
    e.add_argument("--no-onnx", action="store_true", help="skip the ONNX export")
    e.add_argument("--dataset", default=None, choices=DATASET_FORMATS,
                   help="int8 calibration data (default: random normalised images)")
    e.add_argument("--data-dir", default=None, help="dataset root for --dataset")
    add_num_calibration(e, 8, "int8 calibration images (default 8)")
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=_export)


def _add_latency_parser(subparsers) -> None:
    lat = subparsers.add_parser("latency", help="time every exported runtime in one run, next to the matmul peak")
    lat.add_argument("--dir", required=True, help="the export subcommand's --output-dir")
    add_threads(lat, 2, "threads of every runtime (default 2)")
    lat.add_argument("--runs", type=at_least(1), default=10,
                     help="rounds; each times one run of every runtime after an untimed one (default 10)")
    lat.add_argument("--warmup", type=at_least(0), default=2, help="untimed runs of each runtime first (default 2)")
    lat.add_argument("--xla", action="store_true", help="also time the Keras model compiled with XLA")
    add_json(lat, "also write the figures to this JSON file")
    lat.set_defaults(func=_latency)


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_data_parser(subparsers)
    _add_export_parser(subparsers)
    _add_latency_parser(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
