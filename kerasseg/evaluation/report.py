"""Human- and machine-readable reports of an `EvaluationResult`: a terminal table, JSON and a heat-map PNG."""

from __future__ import annotations

import math
import os

from kerasseg.evaluation.evaluator import EvaluationResult
from kerasseg.visualize import save_confusion_png

__all__ = ["format_table", "save_confusion_png", "write_report"]


def _pct(value, digits: int) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}"


def format_table(result: EvaluationResult, *, digits: int = 2) -> str:
    """A plain-text table of per-class IoU, accuracy and Dice (percent) with the dataset-level scores.

    Classes absent from both labels and predictions show ``-`` and are left out of the means.
    """
    rows = result.per_class()
    name_w = max([len("class"), len("mean")] + [len(r["name"]) for r in rows])
    num_w = max(6, digits + 5)
    header = f"{'class':<{name_w}}  {'IoU':>{num_w}}  {'Acc':>{num_w}}  {'Dice':>{num_w}}  {'pixels':>12}"
    rule = "-" * len(header)
    lines = [header, rule]
    for r in rows:
        scores = "  ".join(f"{_pct(r[key], digits):>{num_w}}" for key in ("iou", "accuracy", "dice"))
        lines.append(f"{r['name']:<{name_w}}  {scores}  {r['gt_pixels']:>12,}")
    lines.append(rule)
    lines.append(f"{'mean':<{name_w}}  {_pct(result.miou, digits):>{num_w}}  "
                 f"{_pct(result.mean_accuracy, digits):>{num_w}}  {_pct(result.mean_dice, digits):>{num_w}}  "
                 f"{result.num_pixels:>12,}")
    settings = result.settings or {}
    how = settings.get("mode", "?")
    if settings.get("flip"):
        how += " + flip"
    if settings.get("scales"):
        how += f", scales {', '.join(f'{s:g}' for s in settings['scales'])}"
    lines.append("")
    lines.append(f"mIoU {_pct(result.miou, digits)} | pixel accuracy {_pct(result.pixel_accuracy, digits)} | "
                 f"mean accuracy {_pct(result.mean_accuracy, digits)} | mean Dice {_pct(result.mean_dice, digits)} | "
                 f"FWIoU {_pct(result.frequency_weighted_iou, digits)}")
    if result.boundary_scores is not None:
        band = result.settings.get("boundary_width", "?")
        lines.append(f"boundary (within {band} px of label edges): mIoU {_pct(result.boundary_miou, digits)} | "
                     f"pixel accuracy {_pct(result.boundary_scores['pixel_accuracy'], digits)} | "
                     f"{int(result.boundary_confusion.sum()):,} pixels")
    if settings.get("refine"):
        how += ", dense CRF"
    lines.append(f"{result.num_images} images, {result.num_pixels:,} scored pixels, inference {how}, "
                 f"{result.seconds:.1f} s")
    return "\n".join(lines)


def write_report(result: EvaluationResult, output_dir) -> dict:
    """Writes ``metrics.json`` and ``confusion.png`` (row-normalised heat map) to ``output_dir``.

    Returns:
        dict with the paths written, under ``"metrics"`` and ``"confusion"``.
    """
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    metrics = result.to_json(os.path.join(output_dir, "metrics.json"))
    confusion = save_confusion_png(result.confusion, result.class_names, os.path.join(output_dir, "confusion.png"))
    return {"metrics": metrics, "confusion": confusion}
