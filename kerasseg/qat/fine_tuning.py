"""Fine-tuning of a quantization-aware ``tf_keras`` model with ``fit``, keeping its best validation state.

Example::

    history = fine_tune(qat_model, train_data, epochs=2, learning_rate=1e-4,
                        score=int8_scorer(val_data, num_classes=12))
"""

from __future__ import annotations

from kerasseg.evaluation.deprecation import renamed_arguments
from kerasseg.qat.convert import qat_to_tflite_bytes
from kerasseg.qat.twin import import_tf_keras

__all__ = ["masked_sparse_crossentropy", "int8_scorer", "fine_tune"]


def masked_sparse_crossentropy(ignore_label: int | None = 255, class_weights=None):
    """Pixel-wise cross-entropy on logits for ``tf_keras`` training, ignoring ``ignore_label`` pixels.

    The float training's own loss, `kerasseg.losses.SparseCategoricalCrossentropyIgnore`: a Keras 3 ``Loss`` is
    called by ``tf_keras``' ``compile`` like a plain loss function, so a model trained with class weights is
    fine-tuned on the same objective. ``ignore_label=None`` ignores nothing (labels outside ``[0, num_classes)`` are
    never scored).

    Raises:
        ValueError: negative ``class_weights``.
    """
    from kerasseg.losses import SparseCategoricalCrossentropyIgnore

    # -1 is never a class: the loss already skips labels outside [0, num_classes).
    return SparseCategoricalCrossentropyIgnore(-1 if ignore_label is None else int(ignore_label), class_weights)


def _best_epoch_callback(qat_model, score, verbose):
    """A tf_keras callback that scores the model (``score(qat_model) -> mIoU``) before training and after every
    epoch, and restores the best state's weights (quantiser ranges included) when training ends.

    ``tf_keras.callbacks.EarlyStopping(restore_best_weights=True)`` does not do this: it never considers the state
    before the first epoch (the PTQ-like baseline QAT must beat), and it restores only when it stops early.
    """
    tf_keras = import_tf_keras()

    class KeepBestEpoch(tf_keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.scores, self.best, self.best_epoch, self.best_weights = [], -1.0, 0, None

        def _score(self, epoch):
            miou = float(score(qat_model))
            self.scores.append(miou)
            if miou > self.best:
                self.best, self.best_epoch, self.best_weights = miou, epoch, qat_model.get_weights()
            if verbose:
                print(f"QAT epoch {epoch}: validation mIoU {100 * miou:.2f}")
            return miou

        def on_train_begin(self, logs=None):
            self._score(0)

        def on_epoch_end(self, epoch, logs=None):
            miou = self._score(epoch + 1)
            if logs is not None:
                logs["val_miou"] = miou

        def on_train_end(self, logs=None):
            qat_model.set_weights(self.best_weights)

    return KeepBestEpoch()


def int8_scorer(validation_data, num_classes: int, ignore_label: int | None = 255, *, representative_data=None,
                num_calibration_samples: int = 20, max_images: int | None = None):
    """A ``score(qat_model) -> mIoU`` for `fine_tune` that converts the model to its int8 TFLite file (in memory)
    and scores that file, i.e. what will be shipped, rather than the fake-quantised graph."""
    from kerasseg.evaluation import evaluate
    from kerasseg.export.tflite import TFLiteModel

    def score(qat_model):
        data = qat_to_tflite_bytes(qat_model, representative_data=representative_data,
                                   num_calibration_samples=num_calibration_samples)
        return evaluate(TFLiteModel(data), validation_data, num_classes=num_classes, ignore_label=ignore_label,
                        max_images=max_images).miou

    return score


@renamed_arguments(max_validation_images="max_images")
def fine_tune(qat_model, train_data, *, epochs: int = 2, learning_rate: float = 1e-4, steps_per_epoch=None,
              ignore_label: int | None = 255, class_weights=None, verbose: int = 2, validation_data=None,
              num_classes: int | None = None, max_images: int | None = None, score=None):
    """Compiles ``qat_model`` (Adam, ignore-aware cross-entropy) and fine-tunes it with ``tf_keras``' ``fit``.

    With ``validation_data`` (or a ``score`` function) the model is scored before the first step and after every
    epoch, and the best of those states is kept, as ``tools/train.py`` keeps ``best.keras``: when the float model
    has converged, post-training quantisation is already close to lossless and a few epochs on the training split
    can move the validation score either way by a few tenths of a point.

    Args:
        qat_model: the model returned by `quantize_aware`.
        train_data: ``tf.data.Dataset`` of batched ``(normalised images, labels)``, or an ``(images, labels)``
            tuple of arrays.
        epochs: fine-tuning epochs; QAT starts from trained weights, so a few suffice.
        learning_rate: Adam learning rate, typically 10-100 times below the float training's.
        steps_per_epoch: batches per epoch (the whole dataset when ``None``).
        ignore_label: label excluded from the loss.
        class_weights: per-class loss weights (those of the float training, e.g. ``"median"`` weights resolved
            with `kerasseg.data.class_weights.resolve_class_weights`), or ``None``.
        verbose: ``fit`` verbosity.
        validation_data: ``(normalised image, labels)`` pairs on which the fake-quantised model is scored to select
            the state, or ``None``.
        num_classes: number of classes (required with ``validation_data``).
        max_images: score at most this many validation images (older name ``max_validation_images``).
        score: instead of ``validation_data``, a function ``score(qat_model) -> mIoU``, e.g. `int8_scorer`, which
            scores the converted int8 file.

    Returns:
        The ``fit`` history dict; when selecting, also ``val_miou_per_epoch`` (epoch 0 = before training) and
        ``best_epoch``.
    """
    tf_keras = import_tf_keras()
    for arg, value in (("epochs", epochs),):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"Expected {arg} to be a positive integer. Received: {arg}={value!r}")
    if not float(learning_rate) > 0:
        raise ValueError(f"Expected a positive learning_rate. Received: learning_rate={learning_rate!r}")
    if score is None and validation_data is not None:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"Expected num_classes to be a positive integer with validation_data. "
                             f"Received: num_classes={num_classes!r}")
        from kerasseg.evaluation import evaluate, keras_predict_fn

        predict = keras_predict_fn(qat_model)

        def score(model):
            return evaluate(predict, validation_data, num_classes=num_classes, ignore_label=ignore_label,
                            max_images=max_images).miou

    callbacks = [] if score is None else [_best_epoch_callback(qat_model, score, verbose)]
    qat_model.compile(optimizer=tf_keras.optimizers.Adam(float(learning_rate)),
                      loss=masked_sparse_crossentropy(ignore_label, class_weights))
    if isinstance(train_data, tuple) and len(train_data) == 2:
        # In-memory (images, labels) arrays; a tuple passed as x would be read as a two-input batch.
        history = qat_model.fit(*train_data, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=verbose,
                                callbacks=callbacks)
    else:
        history = qat_model.fit(train_data, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=verbose,
                                callbacks=callbacks)
    result = dict(history.history)
    if callbacks:
        result["val_miou_per_epoch"] = list(callbacks[0].scores)
        result["best_epoch"] = callbacks[0].best_epoch
    return result
