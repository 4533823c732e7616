"""Evaluation: one confusion matrix for every runtime, scores and reports."""

from kerasseg.evaluation.confusion import ConfusionMatrix, scores_from_confusion

__all__ = ["ConfusionMatrix", "scores_from_confusion"]
