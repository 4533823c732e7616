"""Losses for dense labels, all honouring the ignore label.

Keras' ``class_weight`` argument does not support dense (per-pixel) targets, so class weights are applied per pixel
inside the loss.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["SparseCategoricalCrossentropyIgnore"]


def _flatten_labels(y_true, y_pred):
    """Labels as int32 with the spatial shape of the logits (drops a trailing channel of size 1)."""
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == y_pred.shape.rank:
        y_true = tf.squeeze(y_true, axis=-1)
    return tf.cast(y_true, tf.int32)


@keras.saving.register_keras_serializable(package="kerasseg")
class SparseCategoricalCrossentropyIgnore(keras.losses.Loss):
    """Softmax cross-entropy over logits that skips ignored pixels, averaged over the valid pixels of the batch.

    With ``class_weights`` the pixel losses are weighted by the weight of their true class and normalised by the sum
    of weights of the valid pixels (the weighted mean, as in PyTorch's ``CrossEntropyLoss(weight=...)``).

    Args:
        ignore_label: label value excluded from the loss (also any label outside ``[0, num_classes)``).
        class_weights: optional per-class weights (length ``num_classes``).
        from_logits: must be ``True`` (kerasseg models output logits); kept for API familiarity.
        name: loss name.
        reduction: Keras reduction; the default averages over the batch, which together with the internal
            normalisation gives the mean over all valid pixels of the batch.
    """

    def __init__(self, ignore_label: int = 255, class_weights=None, from_logits: bool = True,
                 name: str = "sparse_categorical_crossentropy_ignore", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not from_logits:
            raise ValueError("Expected from_logits=True: kerasseg models output logits. Received: from_logits=False")
        self.ignore_label = int(ignore_label)
        self.from_logits = True
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        if self.class_weights is not None and any(w < 0 for w in self.class_weights):
            raise ValueError(f"Expected non-negative class_weights. Received: class_weights={self.class_weights}")

    def call(self, y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        num_classes = y_pred.shape[-1]
        labels = _flatten_labels(y_true, y_pred)
        valid = tf.logical_and(tf.logical_and(labels >= 0, labels < num_classes),
                               tf.not_equal(labels, self.ignore_label))
        safe = tf.where(valid, labels, tf.zeros_like(labels))
        # Cross-entropy in float32 even under mixed precision: float16 logits overflow in the softmax.
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=tf.cast(y_pred, tf.float32))
        weights = tf.cast(valid, tf.float32)
        if self.class_weights is not None:
            if len(self.class_weights) != num_classes:
                raise ValueError(f"Expected {num_classes} class_weights (one per class of the logits). "
                                 f"Received: {len(self.class_weights)}")
            weights *= tf.gather(tf.constant(self.class_weights, tf.float32), safe)
        # The Keras reduction divides by the number of elements; rescale so the result is the (weighted) mean over
        # valid pixels of the whole batch rather than a mean of per-image means.
        total = tf.cast(tf.size(weights), tf.float32)
        norm = total / tf.maximum(tf.reduce_sum(weights), 1e-6)
        return ce * weights * norm

    def get_config(self):
        config = super().get_config()
        config.update(ignore_label=self.ignore_label, class_weights=self.class_weights, from_logits=self.from_logits)
        return config
