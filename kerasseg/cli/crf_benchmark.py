"""Measure the dense-CRF refinement: mIoU, boundary mIoU and time per frame with and without it, and a grid.

Example (the figures of docs/crf.md)::

    python tools/crf_benchmark.py --data-dir /data/camvid                      # shipped erfnet_camvid, Keras
    python tools/crf_benchmark.py --data-dir /data/camvid --model erfnet_camvid_int8.tflite
    python tools/crf_benchmark.py --data-dir /data/camvid --grid-w1 2 4 8 --grid-theta-alpha 40 80 121

``--model`` is a shipped model's name (`kerasseg.list_pretrained`) or a ``.keras``, ``.tflite`` or ``.onnx`` file
(the exported ones with their metadata sidecar); every frame is scored through `kerasseg.evaluation.evaluate`, once
without and once with the CRF (``--crf-*`` flags, DeepLab's defaults), and the pixels within ``--boundary-width`` of
a label edge are scored separately (trimap). Prints a per-class IoU table, the means with a paired-bootstrap
interval of the differences (`kerasseg.evaluation.paired_bootstrap`), and seconds per frame. With
``--grid-w1`` / ``--grid-theta-alpha`` it also prints mIoU and boundary mIoU for every (w1, θα) pair, the other
parameters as given.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import time

from kerasseg.cli.common import add_data_dir, add_dataset, add_threads, report_errors, tool_parser
from kerasseg.data import DATASET_FORMATS
from kerasseg.evaluation import DenseCRFMissingError, add_crf_arguments, crf_from_arguments


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(__doc__)
    add_data_dir(p)
    add_dataset(p, "camvid", formats=[f for f in DATASET_FORMATS if f != "synthetic"])
    p.add_argument("--split", default="val")
    p.add_argument("--model", default="erfnet_camvid",
                   help="a shipped model's name, or a .keras / .tflite / .onnx file (default erfnet_camvid)")
    p.add_argument("--boundary-width", type=int, default=5,
                   help="half-width in pixels of the band around label edges scored as boundary quality")
    p.add_argument("--max-images", type=int, default=None, help="score only the first N frames")
    add_threads(p, None, "TFLite / ONNX runtime threads")
    p.add_argument("--grid-w1", type=float, nargs="+", default=None, help="w1 values of the grid")
    p.add_argument("--grid-theta-alpha", type=float, nargs="+", default=None, help="θα values of the grid")
    p.add_argument("--skip-defaults", action="store_true",
                   help="only the grid: no per-class comparison at the --crf-* parameters")
    add_crf_arguments(p)
    return p


def load_runtime(model: str, threads: int | None):
    """``(predict_fn, metadata, output)`` of a shipped model name or a .keras / .tflite / .onnx file."""
    import kerasseg
    from kerasseg.evaluation import keras_predict_fn

    if model in kerasseg.list_pretrained():
        model = kerasseg.pretrained_files(model)["keras"]
    if not os.path.isfile(model):
        raise FileNotFoundError(f"Expected a shipped model name {kerasseg.list_pretrained()} or a model file. "
                                f"Received: --model {model!r}")
    ext = os.path.splitext(model)[1].lower()
    if ext == ".keras":
        keras_model = kerasseg.load_model(model)
        return keras_predict_fn(keras_model), keras_model.kerasseg_metadata, "logits"
    if ext not in (".tflite", ".onnx"):
        raise ValueError(f"Expected a .keras, .tflite or .onnx file. Received: --model {model!r}")
    from kerasseg.export import ONNXModel, TFLiteModel, read_sidecar

    metadata = read_sidecar(model)
    runner = (TFLiteModel if ext == ".tflite" else ONNXModel)(model, num_threads=threads)
    return runner, metadata, metadata.extra.get("export", {}).get("output", "logits")


def _pct(value) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def comparison_table(plain, refined, cpu_seconds) -> str:
    """Per-class IoU and boundary IoU (percent) without and with the CRF, then the means and seconds per frame
    (wall time, and the process's CPU time, which a busy machine disturbs less)."""
    from kerasseg.evaluation import paired_bootstrap

    names = plain.class_names
    width = max(len("class"), len("mean"), *(len(n) for n in names))
    head = f"| {'class':<{width}} | IoU | IoU + CRF | boundary IoU | boundary IoU + CRF |"
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for c, name in enumerate(names):
        cells = [plain.iou[c], refined.iou[c], plain.boundary_scores["iou"][c], refined.boundary_scores["iou"][c]]
        lines.append(f"| {name:<{width}} | " + " | ".join(_pct(v) for v in cells) + " |")
    means = [plain.miou, refined.miou, plain.boundary_miou, refined.boundary_miou]
    lines.append(f"| {'mean':<{width}} | " + " | ".join(f"**{_pct(v)}**" for v in means) + " |")
    n = plain.num_images
    wall = [r.seconds / n for r in (plain, refined)]
    cpu = [c / n for c in cpu_seconds]
    lines.append("")
    lines.append(f"{n} frames; pixel accuracy {_pct(plain.pixel_accuracy)} -> {_pct(refined.pixel_accuracy)}")
    if n >= 2:
        for what, a, b in (("mIoU", refined.image_confusion, plain.image_confusion),
                           ("boundary mIoU", refined.image_boundary_confusion, plain.image_boundary_confusion)):
            boot = paired_bootstrap(a, b)
            lines.append(f"{what} with CRF minus without: {boot['difference']:+.2f} points, 95 % interval "
                         f"[{boot['low']:+.2f}, {boot['high']:+.2f}] (paired bootstrap over frames), CRF better in "
                         f"{100 * boot['prob_a_better']:.1f} % of resamples")
    lines.append(f"seconds per frame, wall: {wall[0]:.3f} network, {wall[1]:.3f} network + CRF "
                 f"({wall[1] - wall[0]:.3f} CRF); CPU: {cpu[0]:.3f} network, {cpu[1]:.3f} network + CRF "
                 f"({cpu[1] - cpu[0]:.3f} CRF)")
    return "\n".join(lines)


def run(args) -> int:
    from kerasseg import data as ksdata
    from kerasseg.evaluation import DenseCRF, evaluate

    args.crf = True
    crf = crf_from_arguments(args)
    if (args.grid_w1 is None) != (args.grid_theta_alpha is None):
        raise ValueError(f"Expected both --grid-w1 and --grid-theta-alpha, or neither. Received: --grid-w1 "
                         f"{args.grid_w1} --grid-theta-alpha {args.grid_theta_alpha}")
    if args.skip_defaults and args.grid_w1 is None:
        raise ValueError("Expected a grid (--grid-w1, --grid-theta-alpha) with --skip-defaults. Received: none")
    predict_fn, metadata, output = load_runtime(args.model, args.threads)
    classes = ksdata.dataset_classes(args.dataset, args.data_dir, args.split)
    if classes.num_classes != metadata.num_classes:
        raise ValueError(f"Expected a dataset with the model's {metadata.num_classes} classes. Received: "
                         f"{classes.num_classes} classes in --data-dir {args.data_dir!r}")

    def score(refine=None):
        """The `EvaluationResult` and the CPU seconds it took."""
        dataset = ksdata.load_dataset(args.dataset, args.data_dir, args.split, batch_size=1, augment=False,
                                      shuffle=False, normalization=(list(metadata.mean), list(metadata.std)))
        start = time.process_time()
        result = evaluate(predict_fn, dataset, num_classes=classes.num_classes, ignore_label=classes.ignore_label,
                          class_names=metadata.class_names or list(classes.names), output=output,
                          max_images=args.max_images, boundary_width=args.boundary_width, refine=refine,
                          per_image=True)
        return result, time.process_time() - start

    print(f"model {args.model}, {args.dataset} {args.split}, boundary band {args.boundary_width} px, "
          f"CRF {crf.settings()}")
    if not args.skip_defaults:
        # A first pass warms the runtime up (tracing, thread pools), so that neither timing includes it.
        score()
        (plain, plain_cpu), (refined, refined_cpu) = score(), score(crf.for_normalized_images(metadata.mean,
                                                                                                metadata.std))
        print(comparison_table(plain, refined, (plain_cpu, refined_cpu)))
    if args.grid_w1 is not None:
        print("\n| w1 | θα | mIoU | boundary mIoU |\n|---|---|---|---|")
        for w1, theta in itertools.product(args.grid_w1, args.grid_theta_alpha):
            params = dict(crf.settings(), appearance_weight=w1, appearance_xy_std=theta)
            result, _ = score(DenseCRF(**params).for_normalized_images(metadata.mean, metadata.std))
            print(f"| {w1:g} | {theta:g} | {_pct(result.miou)} | {_pct(result.boundary_miou)} |", flush=True)
    return 0


def main(argv=None) -> int:
    return report_errors(run, build_parser().parse_args(argv), (FileNotFoundError, ValueError, DenseCRFMissingError))


if __name__ == "__main__":
    raise SystemExit(main())
