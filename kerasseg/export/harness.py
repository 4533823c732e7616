"""Parity harness (`kerasseg.export.parity`): the Keras model, each TFLite mode and the ONNX export scored on the
same images, by the same code (the paired scoring loop of `kerasseg.evaluation.paired`).

Every runtime's logits go through the same steps (bilinear resize to the label size, argmax) into one
`kerasseg.evaluation.ConfusionMatrix` per runtime, so differences in the table come from the runtimes alone. The
harness reports, per variant: mIoU, its difference to Keras, the per-class IoU differences, the pixel agreement with
Keras' prediction, the largest logit difference, the file size and the latency (median and 90th percentile over
timed runs after warm-up, at a fixed thread count), and whether the mIoU is within the variant's bound
(`MIOU_BOUNDS`).

Example::

    result = parity(model, val_data, representative_data=train_data, output_dir="runs/parity")
    print(result.format())
    assert result.ok
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
import time

import numpy as np

from kerasseg.evaluation.deprecation import renamed_arguments
from kerasseg.evaluation.paired import WholeImage, check_max_images, score_pairs
from kerasseg.evaluation.significance import paired_bootstrap
from kerasseg.export.conversion import to_tflite
from kerasseg.export.onnx import to_onnx
from kerasseg.export.options import export_metadata
from kerasseg.runtimes import KerasPredictor, ONNXModel, TFLiteModel
from kerasseg.saving import resolve_model

__all__ = ["MIOU_BOUNDS", "INT8_GOAL", "VARIANTS", "QUANT_VARIANTS", "FILE_VARIANTS", "ParityRow", "ParityResult",
           "parity", "time_runs"]

# Largest accepted |mIoU(variant) - mIoU(Keras)|, in mIoU points. Dynamic-range quantisation is post-training
# quantisation of the weights only, held to the int8 bound.
MIOU_BOUNDS = {"fp32": 0.01, "fp16": 0.1, "dynamic": 1.0, "int8": 1.0, "onnx": 0.01, "qat": 0.5,
               # int16 activations have 256 times finer steps than int8: only the int8 weights lose accuracy.
               "int16x8": 0.25, "int8-per-tensor": 1.0, "int8-float": 1.0, "onnx-int8": 1.0}
# What full-integer post-training quantisation should reach; reported, not enforced.
INT8_GOAL = 0.5
VARIANTS = ("fp32", "fp16", "dynamic", "int8", "onnx")
# Further quantised variants, not in the default set: int8 with per-tensor weights, int16 activations, the ONNX QDQ
# int8 model, and ``"int8-float<N>"``, int8 with the N worst layers of the per-layer report kept in float
# (`kerasseg.export.quant_report`; bound ``MIOU_BOUNDS["int8-float"]``).
QUANT_VARIANTS = ("int8-per-tensor", "int16x8", "onnx-int8", "int8-float<N>")
_FALLBACK = re.compile(r"int8-float(\d+)$")
# Variants scored from files made elsewhere (``parity(..., files=...)``): the int8 model of quantisation-aware
# training (`kerasseg.export.quantize_aware`, ``tools/qat.py``), held to its tighter bound on the loss only (its
# fine-tune may also improve on the float model).
FILE_VARIANTS = ("qat",)


@dataclasses.dataclass
class ParityRow:
    """The figures of one runtime.

    Attributes:
        name: ``"keras"``, ``"tflite-fp32"`` ... ``"tflite-int8"``, ``"onnx"``, or ``"runtime-<variant>"`` for a
            TFLite file run by a device runtime on full-size frames (``parity(..., frame_runtime=...)``).
        variant: ``"keras"`` or a key of `MIOU_BOUNDS`.
        path: the exported file (``None`` for Keras).
        miou: mean IoU in [0, 1].
        iou: per-class IoU (NaN for classes absent from labels and predictions).
        miou_delta: ``miou - keras miou`` in mIoU points.
        iou_delta: per-class IoU differences to Keras, in points.
        pixel_agreement: fraction of scored pixels where the prediction equals Keras'.
        max_logit_error: largest absolute logit difference to Keras (at the model's output size).
        size_bytes: file size (the ``.keras`` file's, when known, for Keras).
        latency_ms: median latency of one image, in milliseconds.
        latency_p90_ms: its 90th percentile.
        bound: the accepted |miou_delta| (``None`` for Keras).
        within_bound: whether |miou_delta| <= bound (``None`` for Keras).
        delta_interval: ``[low, high]``, the 95 % paired-bootstrap interval of ``miou_delta`` over the scored images
            (`kerasseg.evaluation.paired_bootstrap`; ``None`` for Keras or a single image).
    """

    name: str
    variant: str
    path: str | None
    miou: float
    iou: list
    miou_delta: float
    iou_delta: list
    pixel_agreement: float
    max_logit_error: float
    size_bytes: int | None
    latency_ms: float | None
    latency_p90_ms: float | None
    bound: float | None
    within_bound: bool | None
    delta_interval: list | None = None

    def to_dict(self) -> dict:
        """The fields as JSON-ready values (non-finite numbers as ``None``)."""
        def clean(v):
            if isinstance(v, float) and not np.isfinite(v):
                return None
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v

        return {k: clean(v) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class ParityResult:
    """All rows of a parity run, Keras first.

    Attributes:
        rows: one `ParityRow` per runtime.
        num_images: images scored.
        class_names: names of the classes (or their indices).
        num_threads: threads of the TFLite, ONNX and TensorFlow runtimes.
        qat_vs_int8: with both an ``"int8"`` and a ``"qat"`` row, `kerasseg.evaluation.paired_bootstrap` of the QAT
            file against the post-training one on the same images (mIoU points), else ``None``.
        float_layers: with ``"int8-float<N>"`` rows, ``{"int8-float<N>": Keras layers kept in float}`` (worst
            first, from the per-layer report), else ``None``.
    """

    rows: list
    num_images: int
    class_names: list
    num_threads: int | None
    qat_vs_int8: dict | None = None
    float_layers: dict | None = None

    @property
    def ok(self) -> bool:
        """Every variant within its bound."""
        return all(r.within_bound for r in self.rows if r.within_bound is not None)

    def row(self, name: str) -> ParityRow:
        for r in self.rows:
            if r.name == name or r.variant == name:
                return r
        raise KeyError(f"Expected one of {[r.name for r in self.rows]}. Received: name={name!r}")

    def to_dict(self) -> dict:
        return {"ok": self.ok, "num_images": self.num_images, "class_names": self.class_names,
                "num_threads": self.num_threads, "bounds": MIOU_BOUNDS, "int8_goal": INT8_GOAL,
                "qat_vs_int8": self.qat_vs_int8, "float_layers": self.float_layers,
                "rows": [r.to_dict() for r in self.rows]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        """The summary table and the per-class IoU differences, as plain text."""
        header = ("runtime", "mIoU", "Δ mIoU", "95 % interval", "bound", "ok", "worst Δ IoU (class)", "agree %", "max |Δ logit|",
                  "size MiB", "latency ms (p90)")
        lines = []
        keras_latency = self.rows[0].latency_ms
        for r in self.rows:
            worst = "-"
            if r.variant != "keras" and any(np.isfinite(r.iou_delta)):
                c = int(np.nanargmax(np.abs(r.iou_delta)))
                worst = f"{r.iou_delta[c]:+.2f} ({self.class_names[c]})"
            latency = "-" if r.latency_ms is None else f"{r.latency_ms:.1f} ({r.latency_p90_ms:.1f})"
            if r.latency_ms and keras_latency and r.variant != "keras":
                latency += f" ×{keras_latency / r.latency_ms:.2f}"
            lines.append((
                r.name, f"{100 * r.miou:.2f}", "-" if r.variant == "keras" else f"{r.miou_delta:+.3f}",
                "-" if r.delta_interval is None else f"[{r.delta_interval[0]:+.2f}, {r.delta_interval[1]:+.2f}]",
                "-" if r.bound is None else f"{r.bound:g}",
                "-" if r.within_bound is None else ("yes" if r.within_bound else "NO"), worst,
                "-" if r.variant == "keras" else f"{100 * r.pixel_agreement:.2f}",
                "-" if r.variant == "keras" or not np.isfinite(r.max_logit_error) else f"{r.max_logit_error:.3g}",
                "-" if r.size_bytes is None else f"{r.size_bytes / 2 ** 20:.2f}", latency))
        widths = [max(len(h), *(len(row[i]) for row in lines)) for i, h in enumerate(header)]
        fmt = lambda row: " | ".join(cell.ljust(w) for cell, w in zip(row, widths))  # noqa: E731
        out = [fmt(header), "-+-".join("-" * w for w in widths)] + [fmt(row) for row in lines]
        out.append(f"{self.num_images} images; mIoU in %, differences in mIoU points vs Keras; latency for one "
                   f"image at {self.num_threads or 'default'} threads, ×: speed-up over Keras")
        int8 = [r for r in self.rows if r.variant == "int8"]
        if int8:
            met = abs(int8[0].miou_delta) <= INT8_GOAL
            out.append(f"int8 goal |Δ mIoU| <= {INT8_GOAL}: {'met' if met else 'not met'}")
        if self.qat_vs_int8 is not None:
            b = self.qat_vs_int8
            out.append(f"QAT - PTQ int8: {b['difference']:+.3f} points, {100 * b['confidence']:.0f} % interval "
                       f"[{b['low']:+.2f}, {b['high']:+.2f}] (QAT higher in {100 * b['prob_a_better']:.0f} % of "
                       f"resamples)")
        for variant, layers in (self.float_layers or {}).items():
            out.append(f"{variant}: kept in float {', '.join(layers) or 'nothing'}")
        out.append("")
        out.append("per-class IoU (Keras, %) and differences (points):")
        names = [r.name for r in self.rows[1:]]
        cw = max(len("class"), *(len(str(n)) for n in self.class_names))
        widths = [max(7, len(n)) for n in names]
        out.append("  " + "class".ljust(cw) + " | keras  | " + " | ".join(n.rjust(w) for n, w in zip(names, widths)))
        for c, name in enumerate(self.class_names):
            keras_iou = self.rows[0].iou[c]
            cells = [f"{r.iou_delta[c]:+{w}.2f}" if np.isfinite(r.iou_delta[c]) else "-".rjust(w)
                     for r, w in zip(self.rows[1:], widths)]
            k = f"{100 * keras_iou:6.2f}" if np.isfinite(keras_iou) else "     -"
            out.append("  " + str(name).ljust(cw) + f" | {k} | " + " | ".join(cells))
        return "\n".join(out)


def time_runs(fn, runs: int = 10, warmup: int = 2) -> tuple[float, float]:
    """Median and 90th-percentile wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    if not isinstance(runs, int) or runs < 1:
        raise ValueError(f"Expected runs to be a positive integer. Received: runs={runs!r}")
    for _ in range(max(0, int(warmup))):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t))
    return float(np.median(times)), float(np.percentile(times, 90))


@renamed_arguments(eval_data="data", max_eval_images="max_images")
def parity(model, data, *, variants=VARIANTS, representative_data=None, num_calibration_samples: int = 100,
           output_dir=None, metadata=None, io_dtype: str | None = None, opset: int = 17, host_upsample: bool = False,
           max_images: int | None = None, num_threads: int | None = 2, latency_runs: int = 10,
           model_path=None, files=None, frame_runtime=None, tflite_options: dict | None = None,
           verbose: bool = True) -> ParityResult:
    """Exports ``model`` to each variant and scores all runtimes on ``data`` with the same metric code.

    Args:
        model: the Keras model (one logits output).
        data: iterable / ``tf.data.Dataset`` of ``(normalised images, int labels)``, batched or not (``eval_data``,
            the older name, is accepted with a ``DeprecationWarning``).
        variants: any of ``"fp32"``, ``"fp16"``, ``"dynamic"``, ``"int8"`` (TFLite modes) and ``"onnx"``, and of
            `QUANT_VARIANTS`: ``"int8-per-tensor"``, ``"int16x8"``, ``"onnx-int8"`` (QDQ) and ``"int8-float<N>"``
            (int8 with the N worst layers of one per-layer report in float, e.g. ``"int8-float2"``).
        representative_data: calibration images for the integer variants (see `kerasseg.export.to_tflite`).
        num_calibration_samples: number of calibration images.
        output_dir: keep the exported files (``{model name}_{variant}.tflite`` / ``.onnx`` and sidecars) here;
            a temporary folder, removed afterwards, when ``None``.
        metadata: overrides ``model.kerasseg_metadata`` (class count, names, ignore label).
        io_dtype: int8 input / output type of the int8 model (see `kerasseg.export.to_tflite`).
        opset: ONNX opset.
        host_upsample: export the TFLite / ONNX logits without the model's final bilinear resize and apply it on
            the host (see `kerasseg.export.tflite.with_head`).
        max_images: score at most this many images.
        num_threads: threads of the TFLite interpreter and of onnxruntime. The Keras row runs with TensorFlow's
            own thread settings, which can only be set before TensorFlow starts (``tools/parity.py --threads``
            sets both).
        latency_runs: timed runs per runtime (after two warm-up runs); 0 skips the latency.
        model_path: the ``.keras`` file, for the Keras row's size.
        files: already exported models to score as well, ``{variant: path}`` with a variant of `FILE_VARIANTS`,
            e.g. ``{"qat": "erfnet_qat_int8.tflite"}`` (a ``.tflite`` file of this model at its input size).
        frame_runtime: also score every TFLite file through a device runtime on the full-size frames, as the car
            runs it: a callable ``path -> predict``, where ``predict(frame)`` maps a uint8 RGB frame ``(H, W, 3)`` to
            its label map ``(H, W)`` (e.g. ``lambda p: tflite.runtime.Segmenter(p).predict``, which resizes the
            frame itself). The frames are the evaluation images turned back into pixels (``x * std + mean``,
            rounded), before any resize; each gets a row ``"runtime-<variant>"`` held to its variant's bound, with
            no logit error (labels only).
        tflite_options: where the TFLite rows run: keyword arguments of `kerasseg.runtimes.TFLiteModel`
            (``delegate``, ``delegate_options``, ``hardware``); the interpreter on the CPU when ``None``.
            ``hardware="gpu"`` cannot run here (TensorFlow is loaded) and raises `GpuUnavailableError`.
        verbose: progress to stderr.

    Returns:
        A `ParityResult`.

    Raises:
        ValueError: unknown variants, bad arguments, data without scored pixels, or an export error.
    """
    model = resolve_model(model)
    variants = list(variants)
    unknown = [v for v in variants if v not in VARIANTS + QUANT_VARIANTS[:-1] and not _FALLBACK.match(str(v))]
    if unknown or len(set(variants)) != len(variants) or not (variants or files):
        raise ValueError(f"Expected variants to be distinct names from {list(VARIANTS + QUANT_VARIANTS)}. "
                         f"Received: variants={variants!r}")
    files = dict(files or {})
    for variant, path in files.items():
        if variant not in FILE_VARIANTS:
            raise ValueError(f"Expected files keyed by one of {list(FILE_VARIANTS)}. Received: files key "
                             f"{variant!r}")
        if not str(path).endswith(".tflite") or not os.path.isfile(path):
            raise ValueError(f"Expected an existing .tflite file for files[{variant!r}]. Received: {path!r}")
    check_max_images(max_images)
    if not isinstance(latency_runs, int) or latency_runs < 0:
        raise ValueError(f"Expected latency_runs to be a non-negative integer. Received: latency_runs={latency_runs!r}")
    calibrated = [v for v in variants if v not in ("fp32", "fp16", "dynamic", "onnx")]
    if calibrated and representative_data is None:
        raise ValueError(f"Expected representative_data (calibration images) for the {calibrated} variants. "
                         f"Received: representative_data=None")
    meta = export_metadata(model, metadata)
    num_classes, ignore_label = meta.num_classes, meta.ignore_label
    class_names = list(meta.class_names) if meta.class_names else [str(c) for c in range(num_classes)]
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if verbose else (lambda msg: None)

    folder = os.fspath(output_dir) if output_dir is not None else tempfile.mkdtemp(prefix="kerasseg-parity-")
    os.makedirs(folder, exist_ok=True)
    try:
        runners, paths = {}, {}
        calibration = dict(representative_data=representative_data, num_calibration_samples=num_calibration_samples)
        worst = float_layers = None
        if any(_FALLBACK.match(v) for v in variants):
            from kerasseg.export.quant_report import quant_report

            log("ranking the layers by their int8 error (QuantizationDebugger)")
            worst = quant_report(model, io_dtype=io_dtype, host_upsample=host_upsample, **calibration).layers
            float_layers = {}
            too_many = [v for v in variants if _FALLBACK.match(v) and int(_FALLBACK.match(v).group(1)) > len(worst)]
            if too_many:
                raise ValueError(f"Expected at most {len(worst)} float layers (the quantised operators of model "
                                 f"{model.name!r}). Received: variants {too_many}")
        for variant in variants:
            if variant in ("onnx", "onnx-int8"):
                path = os.path.join(folder, f"{model.name}{variant[4:]}.onnx")
                log(f"exporting {variant} -> {path}")
                to_onnx(model, path, opset, host_upsample=host_upsample, metadata=meta,
                        mode="int8" if variant == "onnx-int8" else "fp32", verbose=verbose,
                        **(calibration if variant == "onnx-int8" else {}))
                runners[variant] = ONNXModel(path, num_threads=num_threads)
            else:
                path = os.path.join(folder, f"{model.name}_{variant}.tflite")
                log(f"exporting {variant} -> {path}")
                options = {"mode": variant}
                if variant == "int8-per-tensor":
                    options = {"mode": "int8", "per_channel": False}
                elif _FALLBACK.match(variant):
                    kept = worst[:int(_FALLBACK.match(variant).group(1))]
                    float_layers[variant] = [",".join(e.layers) or e.tensor for e in kept]
                    options = {"mode": "int8", "float_layers": [e.tensor for e in kept]}
                to_tflite(model, path, metadata=meta, io_dtype=io_dtype, host_upsample=host_upsample, verbose=verbose,
                          **calibration, **options)
                runners[variant] = TFLiteModel(path, num_threads=num_threads, **(tflite_options or {}))
            paths[variant] = path
        for variant, path in files.items():
            runners[variant] = TFLiteModel(os.fspath(path), num_threads=num_threads, **(tflite_options or {}))
            paths[variant] = os.fspath(path)
        variants = variants + list(files)
        devices = {}
        if frame_runtime is not None:
            devices = {f"runtime-{v}": frame_runtime(paths[v]) for v in variants if not v.startswith("onnx")}
            paths.update({d: paths[d[len("runtime-"):]] for d in devices})
            mean, std = np.asarray(meta.mean, np.float32), np.asarray(meta.std, np.float32)

        keras_fn = KerasPredictor(model)
        input_size = keras_fn.input_shape[:2]
        # Exports with host_upsample are resized on the host to the Keras output size, as the Keras graph does.
        output_size = tuple(int(d) for d in model.outputs[0].shape[1:3])
        predictors = {"keras": WholeImage(keras_fn, output_size=output_size)}
        for v in variants:
            predictors[v] = WholeImage(runners[v], input_size=input_size, output_size=output_size)
        first_frames = []

        def frame_predictor(predict):
            def run(image, size):
                # The car's frames: the evaluation images turned back into pixels, before any resize.
                frame = np.clip(np.rint(image * std + mean), 0, 255).astype(np.uint8)
                if not first_frames:
                    first_frames.append(frame)
                return np.asarray(predict(frame), np.int64)

            return run

        for d, predict in devices.items():
            predictors[d] = frame_predictor(predict)
        names = list(predictors)
        counted = score_pairs(data, predictors, num_classes=num_classes, ignore_label=ignore_label,
                              max_images=max_images, per_image=True, same_size=False, require_scored=True)
        done = counted.num_images
        log(f"scored {done} images")
        max_err = {n: float("nan") if e is None else e for n, e in counted.max_abs_error.items()}
        first_image = predictors["keras"].first_input
        first_frame = first_frames[0] if first_frames else None

        latency = {n: (None, None) for n in names}
        if latency_runs:
            log(f"timing {latency_runs} runs per runtime")
            latency["keras"] = time_runs(lambda: keras_fn(first_image), latency_runs)
            for v in variants:
                latency[v] = time_runs(lambda r=runners[v]: r(first_image), latency_runs)
            for d, predict in devices.items():
                latency[d] = time_runs(lambda p=predict: p(first_frame), latency_runs)

        keras_scores = counted.scores("keras")
        per_image = counted.image_confusion
        # Whether a fraction of a point is a difference or the luck of the images: same images, resampled together.
        boot = (lambda a, b: paired_bootstrap(per_image[a], per_image[b])) if done > 1 else (lambda a, b: None)
        rows = []
        keras_size = os.path.getsize(model_path) if model_path is not None and os.path.isfile(model_path) else None
        for n in names:
            scores = counted.scores(n)
            iou = [float(v) for v in scores["iou"]]
            delta = [100.0 * (a - b) for a, b in zip(iou, keras_scores["iou"])]
            if n == "keras":
                rows.append(ParityRow("keras", "keras", model_path, scores["miou"], iou, 0.0, [0.0] * num_classes,
                                      1.0, 0.0, keras_size, *latency[n], None, None))
                continue
            miou_delta = 100.0 * (scores["miou"] - keras_scores["miou"])
            variant = n[len("runtime-"):] if n in devices else n
            bound = MIOU_BOUNDS["int8-float" if _FALLBACK.match(variant) else variant]
            name = n if n in devices else {"onnx": "onnx", "onnx-int8": "onnx-int8",
                                           "qat": "tflite-int8-qat"}.get(n, f"tflite-{n}")
            # A quantisation-aware file comes from a fine-tuned copy of the model: it may score better than the float
            # model it started from, and only a loss counts against its bound.
            within = miou_delta >= -bound if variant in FILE_VARIANTS else abs(miou_delta) <= bound
            interval = boot(n, "keras")
            rows.append(ParityRow(name, variant, paths[n], scores["miou"], iou,
                                  miou_delta, delta, counted.agreement[n], max_err[n], os.path.getsize(paths[n]),
                                  *latency[n], bound, bool(within),
                                  None if interval is None else [interval["low"], interval["high"]]))
        qat_vs_int8 = boot("qat", "int8") if "qat" in names and "int8" in names else None
        return ParityResult(rows, done, class_names, num_threads, qat_vs_int8, float_layers)
    finally:
        if output_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
