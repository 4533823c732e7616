"""Scoring a Keras model and its TFLite export on the same images, through the one paired scoring loop
(`kerasseg.evaluation.paired`)."""

from __future__ import annotations

from kerasseg.evaluation.deprecation import renamed_arguments
from kerasseg.evaluation.paired import WholeImage, check_max_images, score_pairs
from kerasseg.runtimes.keras import KerasPredictor
from kerasseg.runtimes.tflite import TFLiteModel, read_sidecar

__all__ = ["compare_keras_tflite"]


@renamed_arguments(dataset="data")
def compare_keras_tflite(model, tflite_path, data, num_classes: int, ignore_label: int | None = 255, *,
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
        data: iterable / ``tf.data.Dataset`` of ``(normalised float images, int labels)``, batched or not
            (``dataset``, the older name, is accepted with a ``DeprecationWarning``).
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
    if not isinstance(per_image, bool):
        raise ValueError(f"Expected per_image to be True or False. Received: per_image={per_image!r}")
    check_max_images(max_images)
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
    keras_fn = KerasPredictor(model)
    input_size = lite.input_shape[:2]
    # The Keras output size: a TFLite model exported with host_upsample is resized to it, as the Keras graph does.
    output_size = tuple(int(d) for d in model.outputs[0].shape[1:3])
    # A label head can only be resized with nearest neighbour; Keras gets the same treatment.
    labels = head == "labels"
    counted = score_pairs(
        data, {"keras": WholeImage(keras_fn, input_size=input_size, output_size=output_size, labels=labels,
                                   softmax_raw=head == "probabilities"),
               "tflite": WholeImage(lite, input_size=input_size, output_size=output_size, labels=labels)},
        num_classes=num_classes, ignore_label=ignore_label, max_images=max_images, per_image=per_image,
        same_size=False, require_scored=True)
    keras_scores, lite_scores = counted.scores("keras"), counted.scores("tflite")
    max_err = counted.max_abs_error["tflite"]
    result = {
        "keras_miou": keras_scores["miou"],
        "tflite_miou": lite_scores["miou"],
        "miou_drop": 100.0 * (keras_scores["miou"] - lite_scores["miou"]),
        "pixel_agreement": counted.agreement["tflite"],
        "max_abs_logit_error": max_err if head == "logits" else None,
        "max_abs_probability_error": max_err if head == "probabilities" else None,
        "num_images": counted.num_images,
        "output_head": head,
        "keras_iou": [float(v) for v in keras_scores["iou"]],
        "tflite_iou": [float(v) for v in lite_scores["iou"]],
    }
    if per_image:
        result["keras_confusions"] = counted.image_confusion["keras"]
        result["tflite_confusions"] = counted.image_confusion["tflite"]
    return result
