"""Scoring a predict function on a dataset: `evaluate` and its `EvaluationResult`.

The same `ConfusionMatrix` accumulates the predictions of a Keras model, a TFLite file or an ONNX model, so their
scores are directly comparable; see `kerasseg.evaluation.inference` for the predict-function interface.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Callable, Sequence

import numpy as np

from kerasseg.evaluation.confusion import scores_from_confusion
from kerasseg.evaluation.inference import DEFAULT_SCALES, INFERENCE_MODES, as_pair, predict_logits, tile_size
from kerasseg.evaluation.paired import check_max_images, score_pairs

__all__ = ["EvaluationResult", "evaluate"]


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


# eq=False: the numpy fields make field-wise equality ambiguous; compare `confusion` explicitly instead.
@dataclasses.dataclass(eq=False)
class EvaluationResult:
    """A confusion matrix and every score derived from it.

    Attributes:
        confusion: ``(C, C)`` int64 pixel counts, rows ground truth, columns prediction.
        class_names: one name per class.
        ignore_label: the label value that was not scored.
        num_images: number of images evaluated.
        settings: how the predictions were made (mode, scales, flip, stride, input size, CRF, boundary width...).
        seconds: wall time of the evaluation.
        boundary_confusion: ``(C, C)`` counts of the pixels near label edges only (see
            `kerasseg.evaluation.boundary`), or ``None``; its scores are ``boundary_scores``.
        image_confusion: ``(num_images, C, C)`` per-image matrices (``evaluate(per_image=True)``) for
            `kerasseg.evaluation.paired_bootstrap`, or ``None``; not written to JSON.
        image_boundary_confusion: the same for the boundary band, or ``None``.

    The scores (`scores_from_confusion`) are available as attributes: ``miou``, ``iou`` (per class, NaN for a class
    absent from labels and predictions), ``pixel_accuracy``, ``mean_accuracy``, ``accuracy`` (per class),
    ``dice`` (per class), ``mean_dice`` and ``frequency_weighted_iou``.
    """

    confusion: np.ndarray
    class_names: list
    ignore_label: int | None = 255
    num_images: int = 0
    settings: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    boundary_confusion: np.ndarray | None = None
    image_confusion: np.ndarray | None = None
    image_boundary_confusion: np.ndarray | None = None

    def __post_init__(self):
        self.confusion = np.asarray(self.confusion, np.int64)
        if self.confusion.ndim != 2 or self.confusion.shape[0] != self.confusion.shape[1]:
            raise ValueError(f"Expected a square (C, C) confusion matrix. Received: confusion of shape "
                             f"{self.confusion.shape}")
        if self.class_names is None:
            self.class_names = [str(i) for i in range(self.confusion.shape[0])]
        self.class_names = [str(n) for n in self.class_names]
        if len(self.class_names) != self.confusion.shape[0]:
            raise ValueError(f"Expected {self.confusion.shape[0]} class names (one per class). Received: "
                             f"{len(self.class_names)} names {self.class_names}")
        self.scores = scores_from_confusion(self.confusion)
        self.boundary_scores = None
        if self.boundary_confusion is not None:
            self.boundary_confusion = np.asarray(self.boundary_confusion, np.int64)
            if self.boundary_confusion.shape != self.confusion.shape:
                raise ValueError(f"Expected a boundary confusion matrix of the shape of the confusion matrix "
                                 f"{self.confusion.shape}. Received: boundary_confusion of shape "
                                 f"{self.boundary_confusion.shape}")
            self.boundary_scores = scores_from_confusion(self.boundary_confusion)

    # The scores as attributes, for code such as ``result.miou`` or ``result.iou[c]``.
    miou = property(lambda self: self.scores["miou"], doc="Mean IoU over the classes with a non-empty union.")
    iou = property(lambda self: self.scores["iou"], doc="Per-class IoU (NaN where the union is empty).")
    pixel_accuracy = property(lambda self: self.scores["pixel_accuracy"], doc="Fraction of correct pixels.")
    mean_accuracy = property(lambda self: self.scores["mean_accuracy"], doc="Mean per-class accuracy.")
    accuracy = property(lambda self: self.scores["accuracy"], doc="Per-class accuracy (recall).")
    dice = property(lambda self: self.scores["dice"], doc="Per-class Dice / F1.")
    mean_dice = property(lambda self: self.scores["mean_dice"], doc="Mean Dice / F1.")
    frequency_weighted_iou = property(lambda self: self.scores["frequency_weighted_iou"],
                                      doc="IoU weighted by ground-truth class frequency.")

    @property
    def num_classes(self) -> int:
        return self.confusion.shape[0]

    @property
    def num_pixels(self) -> int:
        """Number of scored pixels."""
        return int(self.confusion.sum())

    def per_class(self) -> list[dict]:
        """One dict per class: ``name``, ``iou``, ``accuracy``, ``dice`` (``None`` where undefined),
        ``gt_pixels`` and ``predicted_pixels``."""
        gt = self.confusion.sum(axis=1)
        pred = self.confusion.sum(axis=0)
        return [{"name": name, "iou": _finite_or_none(self.scores["iou"][c]),
                 "accuracy": _finite_or_none(self.scores["accuracy"][c]),
                 "dice": _finite_or_none(self.scores["dice"][c]),
                 "gt_pixels": int(gt[c]), "predicted_pixels": int(pred[c])}
                for c, name in enumerate(self.class_names)]

    @property
    def boundary_miou(self) -> float | None:
        """mIoU of the pixels near label edges (``None`` unless evaluated with a ``boundary_width``)."""
        return None if self.boundary_scores is None else self.boundary_scores["miou"]

    def to_dict(self) -> dict:
        """JSON-ready summary (undefined scores as ``None``), including the confusion matrix."""
        d = {
            "miou": _finite_or_none(self.scores["miou"]),
            "pixel_accuracy": _finite_or_none(self.scores["pixel_accuracy"]),
            "mean_accuracy": _finite_or_none(self.scores["mean_accuracy"]),
            "mean_dice": _finite_or_none(self.scores["mean_dice"]),
            "frequency_weighted_iou": _finite_or_none(self.scores["frequency_weighted_iou"]),
            "num_images": int(self.num_images),
            "num_pixels": self.num_pixels,
            "ignore_label": self.ignore_label,
            "seconds": float(self.seconds),
            "settings": self.settings,
            "classes": self.per_class(),
            "confusion_matrix": self.confusion.tolist(),
        }
        if self.boundary_scores is not None:
            d["boundary"] = {"miou": _finite_or_none(self.boundary_scores["miou"]),
                             "pixel_accuracy": _finite_or_none(self.boundary_scores["pixel_accuracy"]),
                             "iou": [_finite_or_none(v) for v in self.boundary_scores["iou"]],
                             "confusion_matrix": self.boundary_confusion.tolist()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EvaluationResult":
        """Rebuilds a result from `to_dict` output (the scores are recomputed from the confusion matrix)."""
        try:
            return cls(confusion=np.asarray(d["confusion_matrix"], np.int64),
                       class_names=[c["name"] for c in d["classes"]], ignore_label=d.get("ignore_label"),
                       num_images=int(d.get("num_images", 0)), settings=dict(d.get("settings", {})),
                       seconds=float(d.get("seconds", 0.0)),
                       boundary_confusion=d["boundary"]["confusion_matrix"] if d.get("boundary") else None)
        except (KeyError, TypeError) as e:
            raise ValueError(f"Expected an evaluation result dict with 'confusion_matrix' and 'classes'. "
                             f"Received: a dict with keys {sorted(d) if isinstance(d, dict) else type(d)} ({e})") \
                from None

    def to_json(self, path) -> str:
        """Writes `to_dict` as JSON to ``path`` atomically; returns the path."""
        from kerasseg.saving import atomic_path

        path = os.fspath(path)
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")
        return path

    @classmethod
    def from_json(cls, path) -> "EvaluationResult":
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Expected an existing metrics JSON file. Received: path={path!r}")
        with open(path) as f:
            return cls.from_dict(json.load(f))


def evaluate(predict_fn: Callable, data, *, num_classes: int, ignore_label: int | None = 255,
             class_names: Sequence[str] | None = None, mode: str = "whole", input_size=None,
             scales: Sequence[float] = DEFAULT_SCALES, flip: bool | None = None, stride=None,
             output: str = "logits", batch_size: int = 1, max_images: int | None = None,
             progress: bool = False, refine: Callable | None = None,
             boundary_width: int | None = None, per_image: bool = False) -> EvaluationResult:
    """Predicts every image of ``data`` at its own size and scores the predictions against the labels.

    Args:
        predict_fn: the model as a predict function (see `kerasseg.evaluation.inference`; `keras_predict_fn` for a
            Keras model).
        data: a ``tf.data.Dataset`` or any iterable of ``(image, label)`` pairs: normalised float32 images
            ``(H, W, 3)`` and integer labels ``(H, W)`` (or ``(H, W, 1)``), unbatched or batched; images may differ
            in size.
        num_classes: number of classes.
        ignore_label: label value that is not scored (labels outside ``[0, num_classes)`` are skipped as well).
        class_names: one name per class (class indices when omitted).
        mode, input_size, scales, flip, stride, output, batch_size: as in `predict_logits`.
        max_images: stop after this many images.
        progress: show a `keras.utils.Progbar` of the images.
        refine: called as ``refine(probabilities, image)`` with each image's ``(H, W, C)`` probabilities and the
            normalised image, returns refined probabilities; e.g. ``DenseCRF().for_normalized_images(mean, std)``
            (`kerasseg.evaluation.crf`). Its ``settings()``, if any, are recorded under ``settings["refine"]``.
        boundary_width: also score the pixels within this many pixels of a label edge
            (`kerasseg.evaluation.boundary`; ``boundary_confusion`` and ``boundary_miou`` of the result).
        per_image: also keep each image's confusion matrices (``image_confusion``, and
            ``image_boundary_confusion`` with ``boundary_width``), e.g. for `kerasseg.evaluation.paired_bootstrap`.

    Returns:
        An `EvaluationResult` (confusion matrix, mIoU, per-class IoU, accuracies, Dice...).

    Raises:
        ValueError: malformed elements or arguments, or an empty dataset.
    """
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or int(num_classes) < 1:
        raise ValueError(f"Expected num_classes to be a positive integer. Received: num_classes={num_classes!r}")
    num_classes = int(num_classes)
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"Expected {num_classes} class names (num_classes). Received: {len(class_names)} names "
                         f"{list(class_names)}")
    check_max_images(max_images)
    if mode not in INFERENCE_MODES:
        raise ValueError(f"Expected mode to be one of {INFERENCE_MODES}. Received: mode={mode!r}")
    if refine is not None and not callable(refine):
        raise ValueError(f"Expected refine to be callable as refine(probabilities, image). Received: refine={refine!r}")
    input_size = tile_size(predict_fn, input_size)
    if stride is not None:
        stride = as_pair(stride, "stride")
    kwargs = dict(input_size=input_size, mode=mode, scales=scales, flip=flip, stride=stride,
                  num_classes=num_classes, output=output, batch_size=batch_size, probabilities=refine is not None)

    def predict(image, size):
        scores = predict_logits(predict_fn, image, **kwargs)
        return scores if refine is None else refine(scores, image)

    counted = score_pairs(data, {"model": predict}, num_classes=num_classes, ignore_label=ignore_label,
                          max_images=max_images, per_image=per_image, boundary_width=boundary_width,
                          progress=progress)
    settings = {"mode": mode, "flip": bool(mode == "multiscale" if flip is None else flip),
                "input_size": list(input_size)}
    if mode != "whole":
        settings["stride"] = list(stride or (math.ceil(input_size[0] * 2 / 3), math.ceil(input_size[1] * 2 / 3)))
    if mode == "multiscale":
        settings["scales"] = [float(s) for s in (scales if isinstance(scales, (list, tuple)) else [scales])]
    if refine is not None:
        settings["refine"] = refine.settings() if callable(getattr(refine, "settings", None)) else repr(refine)
    if boundary_width is not None:
        settings["boundary_width"] = int(boundary_width)
    boundary = counted.boundary_confusion
    return EvaluationResult(confusion=counted.confusion["model"].matrix.copy(),
                            class_names=list(class_names) if class_names else None, ignore_label=ignore_label,
                            num_images=counted.num_images, settings=settings, seconds=counted.seconds,
                            boundary_confusion=None if boundary is None else boundary["model"].matrix.copy(),
                            image_confusion=counted.image_confusion["model"] if per_image else None,
                            image_boundary_confusion=(counted.image_boundary_confusion or {}).get("model"))
