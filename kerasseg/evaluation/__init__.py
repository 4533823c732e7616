"""Evaluation: one confusion matrix for every runtime, whole / sliding-window / multi-scale inference, scores and
reports.

Typical use with a Keras model::

    from kerasseg.evaluation import evaluate, format_table, keras_predict_fn, write_report

    result = evaluate(keras_predict_fn(model), dataset, num_classes=19, ignore_label=255, mode="slide")
    print(format_table(result))
    write_report(result, "runs/eval")  # metrics.json and confusion.png

Any runtime plugs in through a predict function (see `kerasseg.runtimes`); `score_pairs`, the one paired scoring
loop, scores several of them on the same images (`evaluate`, `compare_keras_tflite` and `kerasseg.export.parity`
are built on it).
"""

from kerasseg.evaluation.confusion import ConfusionMatrix, scores_from_confusion
from kerasseg.evaluation.evaluator import EvaluationResult, evaluate
from kerasseg.evaluation.inference import (DEFAULT_SCALES, INFERENCE_MODES, MODES, OUTPUT_HEADS, predict_labels,
                                           predict_logits, window_starts)
from kerasseg.evaluation.paired import PairedScores, Prediction, WholeImage, score_pairs
from kerasseg.evaluation.compare import compare_keras_tflite
from kerasseg.evaluation.report import format_table, save_confusion_png, write_report
from kerasseg.evaluation.confusion import image_confusions
from kerasseg.evaluation.significance import paired_bootstrap
# The CRF's own package (pydensecrf2, the `crf` extra) is imported only when a CRF runs.
from kerasseg.evaluation.boundary import band_labels, boundary_band
from kerasseg.evaluation.crf import (DenseCRF, DenseCRFMissingError, NormalizedImageCRF, add_crf_arguments,
                                     crf_from_arguments)
from kerasseg.runtimes import KerasPredictor, keras_predict_fn

__all__ = ["ConfusionMatrix", "scores_from_confusion", "EvaluationResult", "evaluate", "DEFAULT_SCALES", "MODES",
           "INFERENCE_MODES", "OUTPUT_HEADS", "KerasPredictor", "keras_predict_fn", "predict_labels",
           "predict_logits", "window_starts", "score_pairs", "PairedScores", "Prediction", "WholeImage",
           "compare_keras_tflite", "format_table", "save_confusion_png", "write_report", "image_confusions",
           "paired_bootstrap", "band_labels", "boundary_band", "DenseCRF", "DenseCRFMissingError",
           "NormalizedImageCRF", "add_crf_arguments", "crf_from_arguments"]
