"""Export with an accuracy check: the TFLite file is installed only if it scores close enough to Keras."""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

from kerasseg.errors import AccuracyDropError
from kerasseg.evaluation.compare import compare_keras_tflite
from kerasseg.evaluation.deprecation import renamed_arguments
from kerasseg.export.conversion import to_tflite
from kerasseg.export.harness import MIOU_BOUNDS
from kerasseg.export.heads import output_layer
from kerasseg.export.metadata import embed_metadata
from kerasseg.export.options import TFLITE_MODES, check_choice, export_metadata
from kerasseg.preprocessing import ModelMetadata
from kerasseg.runtimes.tflite import read_sidecar, sidecar_path
from kerasseg.saving import resolve_model, write_with_sidecar

__all__ = ["export_verified"]


@renamed_arguments(eval_data="data", max_eval_images="max_images")
def export_verified(model, path, mode: str = "fp32", *, data, representative_data=None,
                    num_calibration_samples: int = 100, output: str = "logits", metadata: ModelMetadata | None = None,
                    io_dtype: str | None = None, label_dtype: str = "int32", host_upsample: bool = False,
                    per_channel: bool = True, float_layers=None, float_ops=None,
                    target: str | None = None, allow_cpu_fallback: bool = False, max_miou_drop: float | None = None,
                    force: bool = False, max_images: int | None = None, num_threads: int | None = None,
                    verbose: bool = True, input_format: str = "pixels") -> dict:
    """Exports like `to_tflite`, scores Keras and TFLite on ``data``, and installs the file only if it holds up.

    The model is converted into a temporary folder next to ``path``; the file and its sidecar are moved onto
    ``path`` only when the TFLite mIoU is at most ``max_miou_drop`` points below the Keras mIoU (or ``force``).
    The evaluation figures are added to the sidecar under ``extra["export"]["evaluation"]``.

    Args:
        model, path, mode, representative_data, num_calibration_samples, output, metadata, io_dtype, label_dtype,
            host_upsample, per_channel, float_layers, float_ops, target, allow_cpu_fallback, verbose, input_format:
            see `to_tflite`.
        data: iterable / ``tf.data.Dataset`` of ``(normalised images, labels)``, batched or not (``eval_data``,
            the older name, is accepted with a ``DeprecationWarning``).
        max_miou_drop: the largest accepted mIoU drop, in points (1.0 = one mIoU percentage point); ``None`` takes
            the mode's bound from `kerasseg.export.harness.MIOU_BOUNDS` (fp32 0.01, fp16 0.1, dynamic and int8 1.0).
        force: install the file even when the drop is larger.
        max_images: score at most this many images (older name ``max_eval_images``).
        num_threads: LiteRT interpreter threads for the evaluation.

    Returns:
        The `kerasseg.evaluation.compare.compare_keras_tflite` report plus ``miou_drop`` (points), ``path``,
        ``tflite_bytes``, ``accepted`` (bool) and ``forced`` (bool).

    Raises:
        AccuracyDropError: (a ``ValueError`` and a ``RuntimeError``) the drop exceeds ``max_miou_drop`` and
            ``force`` is false; nothing is written.
    """
    from kerasseg.layers.argmax import ArgMax

    path = os.fspath(path)
    if not path.endswith(".tflite"):
        raise ValueError(f"Expected a path ending in '.tflite'. Received: path={path!r}")
    model = resolve_model(model)
    mode = check_choice("mode", mode, TFLITE_MODES)
    if isinstance(output_layer(model), ArgMax):
        raise ValueError(f"Expected a logits model to verify the export against. Received: model {model.name!r}, "
                         f"which ends in an ArgMax label head; export its logits model with output='labels'")
    if max_miou_drop is None:
        max_miou_drop = MIOU_BOUNDS[mode]
    try:
        max_miou_drop = float(max_miou_drop)
    except (TypeError, ValueError):
        raise ValueError(f"Expected max_miou_drop to be a number of mIoU points. "
                         f"Received: max_miou_drop={max_miou_drop!r}") from None
    meta = export_metadata(model, metadata)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    try:
        tmp_path = os.path.join(tmp_dir, os.path.basename(path))
        to_tflite(model, tmp_path, mode, representative_data=representative_data,
                  num_calibration_samples=num_calibration_samples, output=output, metadata=meta,
                  io_dtype=io_dtype, label_dtype=label_dtype, host_upsample=host_upsample, per_channel=per_channel,
                  float_layers=float_layers, float_ops=float_ops, target=target,
                  allow_cpu_fallback=allow_cpu_fallback, verbose=verbose, input_format=input_format)
        report = compare_keras_tflite(model, tmp_path, data, meta.num_classes, meta.ignore_label,
                                      max_images=max_images, num_threads=num_threads)
        report.update(path=path, mode=mode, tflite_bytes=os.path.getsize(tmp_path),
                      max_miou_drop=max_miou_drop, forced=False)
        drop = report["miou_drop"]
        report["accepted"] = bool(np.isfinite(drop) and drop <= max_miou_drop)
        if not report["accepted"]:
            if not force:
                raise AccuracyDropError(
                    f"Expected the TFLite ({mode}) mIoU to be at most {max_miou_drop:g} points below the Keras "
                    f"mIoU. Received: Keras {100 * report['keras_miou']:.2f}, TFLite {100 * report['tflite_miou']:.2f}"
                    f" (a drop of {drop:.2f} points); {path!r} was not written (force=True overrides)", report)
            report["forced"] = True
        written = read_sidecar(sidecar_path(tmp_path))
        written.extra["export"]["evaluation"] = {
            k: report[k] for k in ("keras_miou", "tflite_miou", "miou_drop", "pixel_agreement",
                                   "max_abs_logit_error", "num_images", "forced")}
        # The embedded record carries the same figures as the sidecar.
        with open(tmp_path, "rb") as f:
            model_data = embed_metadata(f.read(), written)
        write_with_sidecar(path, model_data, written)
        return report
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
