"""One confusion-matrix implementation that scores Keras, TFLite and ONNX predictions alike.

Definitions (Everingham et al., PASCAL VOC; Cordts et al., Cityscapes): for class ``c`` with true positives TP,
false positives FP and false negatives FN accumulated over the whole dataset, IoU = TP / (TP + FP + FN). mIoU is the
mean over classes that appear in the ground truth or the predictions (classes with an empty union are left out).
Pixels whose label is the ignore label, or outside ``[0, num_classes)``, are not counted.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ConfusionMatrix", "image_confusions", "scores_from_confusion"]


def scores_from_confusion(cm: np.ndarray) -> dict:
    """Scores from a ``(C, C)`` confusion matrix whose rows are ground truth and columns predictions.

    Returns:
        dict with ``miou``, ``iou`` (per class, NaN where the union is empty), ``pixel_accuracy``,
        ``mean_accuracy``, ``accuracy`` (per class recall, NaN for classes without ground truth), ``dice`` (per
        class F1), ``mean_dice`` and ``frequency_weighted_iou`` (IoU weighted by ground-truth frequency; Long et
        al., "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    gt = cm.sum(axis=1)
    pred = cm.sum(axis=0)
    union = gt + pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
        dice = np.where(gt + pred > 0, 2 * tp / (gt + pred), np.nan)
    total = cm.sum()
    nanmean = lambda a: float(np.nanmean(a)) if np.any(~np.isnan(a)) else float("nan")  # noqa: E731
    return {
        "miou": nanmean(iou),
        "iou": iou,
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "mean_accuracy": nanmean(acc),
        "dice": dice,
        "mean_dice": nanmean(dice),
        "accuracy": acc,
        "frequency_weighted_iou": float(np.nansum(gt * iou) / total) if total else float("nan"),
    }


def image_confusions(labels, predictions, num_classes: int, ignore_label: int | None = 255) -> np.ndarray:
    """Per-image confusion matrices of a batch; `ConfusionMatrix` counts with it too.

    Args:
        labels: ``(B, H, W)`` integer label maps.
        predictions: ``(B, H, W)`` integer predictions.
        num_classes: number of classes.
        ignore_label: label value that is not scored.

    Returns:
        ``(B, num_classes, num_classes)`` int64 array, rows ground truth and columns predictions.
    """
    labels = np.asarray(labels).astype(np.int64, copy=False)
    predictions = np.asarray(predictions).astype(np.int64, copy=False)
    if labels.shape != predictions.shape or labels.ndim < 1:
        raise ValueError(f"Expected labels and predictions of the same (batch, ...) shape. Received: labels "
                         f"{labels.shape} and predictions {predictions.shape}")
    batch, c = labels.shape[0], int(num_classes)
    labels, predictions = labels.reshape(batch, -1), predictions.reshape(batch, -1)
    valid = (labels >= 0) & (labels < c)
    if ignore_label is not None:
        valid &= labels != ignore_label
    # Predictions outside the class range cannot come from an argmax; clip defensively.
    image = np.broadcast_to(np.arange(batch)[:, None], labels.shape)
    idx = (image * c + labels) * c + np.clip(predictions, 0, c - 1)
    return np.bincount(idx[valid], minlength=batch * c * c).reshape(batch, c, c)


class ConfusionMatrix:
    """Streaming confusion matrix over label maps.

    Args:
        num_classes: number of classes.
        ignore_label: label value that is not scored.
    """

    def __init__(self, num_classes: int, ignore_label: int | None = 255):
        if int(num_classes) < 1:
            raise ValueError(f"Expected num_classes >= 1. Received: num_classes={num_classes!r}")
        self.num_classes = int(num_classes)
        self.ignore_label = ignore_label
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, labels, predictions) -> "ConfusionMatrix":
        """Adds a batch. ``labels`` and ``predictions`` are integer maps of the same shape."""
        labels = np.asarray(labels).astype(np.int64, copy=False).ravel()
        predictions = np.asarray(predictions).astype(np.int64, copy=False).ravel()
        if labels.shape != predictions.shape:
            raise ValueError(f"Expected labels and predictions of the same size. Received: {labels.size} labels "
                             f"and {predictions.size} predictions")
        self.matrix += image_confusions(labels[None], predictions[None], self.num_classes, self.ignore_label)[0]
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        self.matrix += other.matrix
        return self

    def reset(self) -> None:
        self.matrix[:] = 0

    def scores(self) -> dict:
        return scores_from_confusion(self.matrix)

    @property
    def miou(self) -> float:
        return self.scores()["miou"]

    def to_dict(self) -> dict:
        """JSON-ready: the class count, the ignore label, the counts and the mIoU (``None`` when undefined)."""
        miou = float(self.miou)
        return {"num_classes": self.num_classes, "ignore_label": self.ignore_label, "matrix": self.matrix.tolist(),
                "miou": miou if np.isfinite(miou) else None}
