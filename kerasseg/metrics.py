"""Streaming segmentation metrics built on a confusion matrix (ignore label aware)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kerasseg.evaluation.confusion import scores_from_confusion

__all__ = ["MeanIoU"]


@keras.saving.register_keras_serializable(package="kerasseg")
class MeanIoU(keras.metrics.Metric):
    """Mean intersection-over-union accumulated over a whole dataset.

    Accepts logits / probabilities ``(B, H, W, C)`` (argmax taken) or label maps ``(B, H, W)`` as predictions.
    Classes whose union is empty (absent from labels and predictions) are left out of the mean, as in the Cityscapes
    and PASCAL VOC evaluation code.

    Args:
        num_classes: number of classes.
        ignore_label: label value that is not scored (labels outside ``[0, num_classes)`` are skipped as well).
        name: metric name (``"miou"``, so Keras logs ``val_miou``).
    """

    def __init__(self, num_classes: int, ignore_label: int = 255, name: str = "miou", dtype=None):
        super().__init__(name=name, dtype=dtype)
        if int(num_classes) < 1:
            raise ValueError(f"Expected num_classes >= 1. Received: num_classes={num_classes!r}")
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        # float64 counts stay exact far beyond the pixel counts of any dataset (2**53) and aggregate under
        # tf.distribute like any float variable.
        self.confusion = self.add_variable(shape=(self.num_classes, self.num_classes), initializer="zeros",
                                           dtype="float64", name="confusion", aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = tf.convert_to_tensor(y_pred)
        y_true = tf.convert_to_tensor(y_true)
        if y_pred.shape.rank is not None and y_true.shape.rank is not None and y_pred.shape.rank > y_true.shape.rank:
            y_pred = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
        elif y_true.shape.rank == 4 and y_true.shape[-1] == 1:
            y_true = tf.squeeze(y_true, -1)
        labels = tf.reshape(tf.cast(y_true, tf.int32), [-1])
        preds = tf.reshape(tf.cast(y_pred, tf.int32), [-1])
        valid = (labels >= 0) & (labels < self.num_classes) & (labels != self.ignore_label)
        labels = tf.boolean_mask(labels, valid)
        preds = tf.clip_by_value(tf.boolean_mask(preds, valid), 0, self.num_classes - 1)
        counts = tf.math.bincount(labels * self.num_classes + preds, minlength=self.num_classes ** 2,
                                  maxlength=self.num_classes ** 2, dtype=tf.float64)
        self.confusion.assign_add(tf.reshape(counts, (self.num_classes, self.num_classes)))

    def _iou(self):
        cm = tf.convert_to_tensor(self.confusion)
        tp = tf.linalg.diag_part(cm)
        union = tf.reduce_sum(cm, 0) + tf.reduce_sum(cm, 1) - tp
        present = union > 0
        iou = tf.where(present, tp / tf.where(present, union, tf.ones_like(union)), tf.zeros_like(union))
        return iou, present

    def result(self):
        iou, present = self._iou()
        n = tf.reduce_sum(tf.cast(present, tf.float64))
        return tf.cast(tf.math.divide_no_nan(tf.reduce_sum(iou), n), tf.float32)

    def per_class_iou(self) -> np.ndarray:
        """Per-class IoU as numpy (NaN where a class never appears)."""
        return scores_from_confusion(np.asarray(self.confusion.numpy()))["iou"]

    def confusion_matrix(self) -> np.ndarray:
        return np.asarray(self.confusion.numpy()).astype(np.int64)

    def reset_state(self):
        self.confusion.assign(tf.zeros_like(self.confusion))

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, ignore_label=self.ignore_label)
        return config
