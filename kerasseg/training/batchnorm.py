"""Re-estimating batch-norm statistics after training ("precise BN").

Batch norm keeps exponential moving averages of the batch statistics (momentum 0.99 here, so the last ~100 steps
dominate). After a short schedule, a high learning rate, or a change of weights the averages have not followed
(copying weights, a fine-tune with frozen statistics), those averages lag behind the weights: the network is right in
training mode and wrong in inference mode. Re-estimating them from a few hundred training images with the weights
fixed closes the gap (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021, section 3). Quantization-aware training
freezes the statistics (`kerasseg.export.quantize_aware`), so the float model should carry good ones before it.

The statistics are measured with dropout off, i.e. on the activations the network sees at inference (Li et al.,
"Understanding the Disharmony between Dropout and Batch Normalization by Variance Shift", CVPR 2019).
"""

from __future__ import annotations

import numpy as np


def _dropout_like(layer) -> bool:
    import keras

    return isinstance(layer, (keras.layers.Dropout, keras.layers.GaussianDropout, keras.layers.AlphaDropout))


def _flat_layers(model):
    # Nested models (backbones built as sub-models) contribute their own layers.
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _flat_layers(layer)
        yield layer


def recalibrate_batch_norm(model, data, *, steps: int | None = None) -> dict:
    """Replaces the moving statistics of a Keras model's trainable batch norms by their average over ``data``.

    Every batch is run through the model in training mode with the batch norms' momentum at 0 and the dropout rates at
    0 (restored afterwards, also on error); weights do not change. A batch norm's moving mean becomes the mean of its
    batch means and its moving variance the variance over all the images (the mean batch variance plus the variance of
    the batch means; batches are weighted by their size). Batch norms that are not trainable kept their statistics
    during training (frozen layers run in inference mode) and are left alone.

    Args:
        model: a Keras 3 model.
        data: an iterable of image batches or of ``(images, labels[, sample_weights])`` tuples, e.g. the training
            `tf.data.Dataset` (augmented as in training).
        steps: number of batches to use; ``None`` uses all of ``data`` (which must then be finite).

    Returns:
        A report: ``{"layers": number of batch norms recalibrated, "batches": ..., "images": ...,
        "max_mean_shift": largest |new - old| moving mean over all channels, relative to sqrt(new variance)}``.

    Raises:
        ValueError: ``steps`` is not a positive integer or ``data`` yields no batch.
    """
    import keras

    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"Expected steps to be a positive integer or None. Received: steps={steps!r}")
    norms = [layer for layer in _flat_layers(model)
             if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable and layer.built]
    dropouts = [layer for layer in _flat_layers(model) if _dropout_like(layer)]
    report = {"layers": len(norms), "batches": 0, "images": 0, "max_mean_shift": 0.0}
    if not norms:
        return report
    saved_momentum = [layer.momentum for layer in norms]
    saved_rates = [layer.rate for layer in dropouts]
    old_means = [np.asarray(layer.moving_mean) for layer in norms]
    old_variances = [np.asarray(layer.moving_variance) for layer in norms]
    sums = [[0.0, 0.0, 0.0] for _ in norms]  # Σ n·mean, Σ n·mean², Σ n·variance per layer
    try:
        for layer in norms:
            layer.momentum = 0.0  # the moving statistics become the batch's own
        for layer in dropouts:
            layer.rate = 0.0
        for batch in data:
            if steps is not None and report["batches"] >= steps:
                break
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            n = int(images.shape[0])
            model(images, training=True)
            for acc, layer in zip(sums, norms):
                mean = np.asarray(layer.moving_mean, dtype=np.float64)
                acc[0] = acc[0] + n * mean
                acc[1] = acc[1] + n * mean ** 2
                acc[2] = acc[2] + n * np.asarray(layer.moving_variance, dtype=np.float64)
            report["batches"] += 1
            report["images"] += n
        if report["batches"] == 0:
            raise ValueError("Expected data to yield at least one batch. Received: an empty dataset")
    except BaseException:
        for layer, mean, variance in zip(norms, old_means, old_variances):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        raise
    finally:
        for layer, momentum in zip(norms, saved_momentum):
            layer.momentum = momentum
        for layer, rate in zip(dropouts, saved_rates):
            layer.rate = rate
    total = float(report["images"])
    for acc, layer, old in zip(sums, norms, old_means):
        mean = acc[0] / total
        variance = acc[2] / total + np.maximum(acc[1] / total - mean ** 2, 0.0)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))
        shift = np.abs(mean - old) / np.sqrt(variance + layer.epsilon)
        report["max_mean_shift"] = max(report["max_mean_shift"], float(shift.max()))
    return report
