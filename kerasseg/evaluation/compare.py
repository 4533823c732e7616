"""Scoring a Keras model and its TFLite export on the same images with the same confusion matrix."""

from __future__ import annotations

import numpy as np

from kerasseg.evaluation.confusion import ConfusionMatrix, image_confusions

__all__ = ["compare_keras_tflite"]


def _as_batch(array, ndim: int, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == ndim - 1:
        array = array[None]
    if array.ndim != ndim:
        raise ValueError(f"Expected dataset {what} with {ndim - 1} or {ndim} dimensions. "
                         f"Received: {what} of shape {array.shape}")
    return array


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _resize_scores(scores: np.ndarray, size) -> np.ndarray:
    import tensorflow as tf

    if scores.shape[1:3] == tuple(size):
        return scores
    return tf.image.resize(scores, size, method="bilinear").numpy()


def _resize_labels(labels: np.ndarray, size) -> np.ndarray:
    import tensorflow as tf

    if labels.shape[1:3] == tuple(size):
        return labels
    return tf.image.resize(labels[..., None], size, method="nearest").numpy()[..., 0]


def compare_keras_tflite(model, tflite_path, dataset, num_classes: int, ignore_label: int | None = 255, *,
                         max_images: int | None = None, num_threads: int | None = None,
                         output: str | None = None, per_image: bool = False) -> dict:
    """Runs a Keras model and a TFLite model on the same validation images and scores both.

    Images whose size differs from the model input are resized bilinearly to it, and both models' predictions are
    resized back to the label size identically: scores bilinearly before the argmax, or, when the TFLite head
    outputs labels, both label maps with nearest neighbour. Scores of a model exported with ``host_upsample`` are
    first resized bilinearly to the Keras output size, as the Keras model's own last layer does.

    Args:
        model: the Keras model (logits output).
        tflite_path: the exported ``.tflite`` file (or its bytes), with any output head.
        dataset: iterable / ``tf.data.Dataset`` of ``(normalised float images, int labels)``, batched or not.
        num_classes: number of classes.
        ignore_label: label value not scored and not counted in the agreement.
        max_images: stop after this many images.
        num_threads: LiteRT interpreter threads.
        output: the TFLite model's head, ``"logits"``, ``"probabilities"`` or ``"labels"``; read from the sidecar
            (or, for an integer output, known to be labels) when omitted, ``"logits"`` otherwise.
        per_image: also return each image's confusion matrices (for `kerasseg.evaluation.paired_bootstrap`).

    Returns:
        dict with ``keras_miou`` and ``tflite_miou`` (0..1), ``miou_drop`` (Keras minus TFLite, in mIoU points),
        ``pixel_agreement`` (fraction of scored pixels where both argmaxes agree), ``max_abs_logit_error`` (over
        the model-resolution logits; ``None`` unless the TFLite head outputs logits), ``max_abs_probability_error``
        (``None`` unless it outputs probabilities), ``num_images``, ``output_head`` (the TFLite head),
        ``keras_iou`` and ``tflite_iou`` (per-class lists, NaN for classes absent from both); with ``per_image``,
        ``keras_confusions`` and ``tflite_confusions``, ``(num_images, C, C)`` arrays.

    Raises:
        ValueError: malformed dataset elements, or no scored pixel in the whole dataset.
    """
    import tensorflow as tf

    from kerasseg.export.tflite import TFLiteModel, read_sidecar

    if not isinstance(per_image, bool):
        raise ValueError(f"Expected per_image to be True or False. Received: per_image={per_image!r}")
    if max_images is not None and (not isinstance(max_images, (int, np.integer)) or max_images < 1):
        raise ValueError(f"Expected max_images to be a positive integer or None. Received: max_images={max_images!r}")
    lite = TFLiteModel(tflite_path, num_threads=num_threads)
    if output is not None:
        head = output
    elif lite.head == "labels":
        head = "labels"
    else:
        head = "logits"
        if not isinstance(tflite_path, (bytes, bytearray, memoryview)):
            try:
                head = read_sidecar(tflite_path).extra.get("export", {}).get("output", head)
            except FileNotFoundError:
                pass
    if head not in ("logits", "probabilities", "labels") or (head == "labels") != (lite.head == "labels"):
        raise ValueError(f"Expected output to be 'logits' or 'probabilities' for a float / quantised output, 'labels' "
                         f"for an integer label map. Received: output={head!r} for a model whose output is "
                         f"{lite.output_dtype}")
    height, width, _ = lite.input_shape
    infer = tf.function(lambda x: tf.cast(model(x, training=False), tf.float32), reduce_retracing=True)
    keras_cm = ConfusionMatrix(num_classes, ignore_label)
    lite_cm = ConfusionMatrix(num_classes, ignore_label)
    agree = scored = images_done = 0
    keras_images, lite_images = [], []
    max_err = 0.0
    for element in dataset:
        if not isinstance(element, (tuple, list)) or len(element) < 2:
            raise ValueError("Expected dataset elements (images, labels). Received: an element of type "
                             f"{type(element).__name__}")
        images = _as_batch(element[0], 4, "images").astype(np.float32, copy=False)
        labels = _as_batch(element[1], 3, "labels")
        if labels.shape[-1] == 1 and labels.ndim == 4:
            labels = labels[..., 0]
        if max_images is not None:
            images, labels = images[:max_images - images_done], labels[:max_images - images_done]
        label_hw = labels.shape[1:3]
        if images.shape[1:3] != (height, width):
            images = tf.image.resize(images, (height, width), method="bilinear").numpy()
        keras_logits = infer(tf.constant(images)).numpy()
        lite_out = lite(images)
        if head != "labels" and lite_out.shape[1:3] != keras_logits.shape[1:3]:
            # Exported with host_upsample: the host applies the resize the Keras graph ends with.
            lite_out = tf.image.resize(lite_out, keras_logits.shape[1:3], method="bilinear").numpy()
        if head == "logits":
            max_err = max(max_err, float(np.max(np.abs(keras_logits - lite_out))))
        elif head == "probabilities":
            max_err = max(max_err, float(np.max(np.abs(_softmax(keras_logits) - lite_out))))
        if head == "labels":
            # A label head can only be resized with nearest neighbour; Keras gets the same treatment.
            keras_pred = _resize_labels(np.argmax(keras_logits, axis=-1), label_hw)
            lite_pred = _resize_labels(lite_out, label_hw)
        else:
            keras_pred = np.argmax(_resize_scores(keras_logits, label_hw), axis=-1)
            lite_pred = np.argmax(_resize_scores(lite_out, label_hw), axis=-1)
        keras_cm.update(labels, keras_pred)
        lite_cm.update(labels, lite_pred)
        if per_image:
            keras_images.append(image_confusions(labels, keras_pred, num_classes, ignore_label))
            lite_images.append(image_confusions(labels, lite_pred, num_classes, ignore_label))
        valid = (labels >= 0) & (labels < num_classes)
        if ignore_label is not None:
            valid &= labels != ignore_label
        scored += int(valid.sum())
        agree += int((keras_pred[valid] == lite_pred[valid]).sum())
        images_done += len(images)
        if max_images is not None and images_done >= max_images:
            break
    if scored == 0:
        raise ValueError(f"Expected the dataset to contain scored pixels (labels in [0, {num_classes}) other than "
                         f"ignore_label={ignore_label}). Received: {images_done} images without any")
    keras_scores, lite_scores = keras_cm.scores(), lite_cm.scores()
    result = {
        "keras_miou": keras_scores["miou"],
        "tflite_miou": lite_scores["miou"],
        "miou_drop": 100.0 * (keras_scores["miou"] - lite_scores["miou"]),
        "pixel_agreement": agree / scored,
        "max_abs_logit_error": max_err if head == "logits" else None,
        "max_abs_probability_error": max_err if head == "probabilities" else None,
        "num_images": images_done,
        "output_head": head,
        "keras_iou": [float(v) for v in keras_scores["iou"]],
        "tflite_iou": [float(v) for v in lite_scores["iou"]],
    }
    if per_image:
        result["keras_confusions"] = np.concatenate(keras_images)
        result["tflite_confusions"] = np.concatenate(lite_images)
    return result
