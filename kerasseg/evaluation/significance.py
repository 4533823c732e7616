"""Is one model's mIoU really higher than another's on the same images? A paired bootstrap over images.

mIoU is not a mean over images, so its sampling error has no closed form; the standard answer (Efron & Tibshirani,
"An Introduction to the Bootstrap", 1993; Koehn, "Statistical Significance Tests for Machine Translation
Evaluation", EMNLP 2004, for the paired form) resamples the evaluation images with replacement, recomputes both
models' dataset-level mIoU on each resample from the summed per-image confusion matrices, and reads the interval of
the difference off the resampled differences. Both models see the same resampled images, which removes the
variation that comes from which scenes happen to be in the validation set.

Differences between an int8 file and its float model, or between two int8 files, are often a few tenths of a point
on a validation set of a few dozen images: the interval says whether such a figure is a trend or noise.
"""

from __future__ import annotations

import numbers

import numpy as np

from kerasseg.evaluation.confusion import image_confusions

__all__ = ["paired_bootstrap"]


def _miou(cms: np.ndarray) -> np.ndarray:
    # cms: (..., C, C); the mIoU of each matrix with `scores_from_confusion`'s rule (empty unions left out).
    tp = np.diagonal(cms, axis1=-2, axis2=-1).astype(np.float64)
    union = cms.sum(axis=-1) + cms.sum(axis=-2) - tp
    present = union > 0
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=present)
    return iou.sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)


def paired_bootstrap(confusions_a, confusions_b, *, num_samples: int = 2000, confidence: float = 0.95,
                     seed: int = 0) -> dict:
    """Paired bootstrap of the mIoU difference between two predictions of the same images.

    Args:
        confusions_a: ``(N, C, C)`` per-image confusion matrices of model A (see
            `kerasseg.evaluation.confusion.image_confusions`).
        confusions_b: the same images' matrices for model B.
        num_samples: bootstrap resamples.
        confidence: coverage of the percentile interval, in (0, 1).
        seed: resampling seed (the result is reproducible).

    Returns:
        dict with ``difference`` (mIoU of A minus mIoU of B on all images, in points), ``low`` and ``high`` (the
        percentile interval of the difference, in points), ``prob_a_better`` (fraction of resamples where A's mIoU
        is higher), ``confidence``, ``num_images`` and ``num_samples``.

    Raises:
        ValueError: matrices of different or wrong shapes, fewer than two images, or bad ``num_samples`` /
            ``confidence``.
    """
    a = np.asarray(confusions_a)
    b = np.asarray(confusions_b)
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape != b.shape:
        raise ValueError(f"Expected two (N, C, C) arrays of per-image confusion matrices of the same shape. "
                         f"Received: confusions_a {a.shape} and confusions_b {b.shape}")
    if a.shape[0] < 2:
        raise ValueError(f"Expected at least 2 images to resample. Received: {a.shape[0]}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < 1:
        raise ValueError(f"Expected num_samples to be a positive integer. Received: num_samples={num_samples!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0 < confidence < 1:
        raise ValueError(f"Expected confidence in (0, 1). Received: confidence={confidence!r}")
    n = a.shape[0]
    rng = np.random.default_rng(seed)
    flat_a = a.reshape(n, -1).astype(np.float64)
    flat_b = b.reshape(n, -1).astype(np.float64)
    diffs = np.empty(int(num_samples))
    # Resampling as per-image counts keeps memory at (chunk, N) whatever the image size.
    for start in range(0, int(num_samples), 256):
        stop = min(start + 256, int(num_samples))
        counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(stop - start)])
        shape = (stop - start,) + a.shape[1:]
        diffs[start:stop] = _miou((counts @ flat_a).reshape(shape)) - _miou((counts @ flat_b).reshape(shape))
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(diffs, [tail, 100.0 - tail])
    full = _miou(a.sum(axis=0)) - _miou(b.sum(axis=0))
    return {"difference": 100.0 * float(full), "low": 100.0 * float(low), "high": 100.0 * float(high),
            "prob_a_better": float(np.mean(diffs > 0)), "confidence": float(confidence), "num_images": int(n),
            "num_samples": int(num_samples)}
