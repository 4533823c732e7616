"""Boundary quality: scores restricted to a narrow band (trimap) around the label edges.

Kohli, Ladický and Torr, "Robust Higher Order Potentials for Enforcing Label Consistency", IJCV 2009, score
segmentations only within a band of a few pixels around object boundaries; Chen et al. (DeepLab, ICLR 2015 and
TPAMI 2018, "trimap" figures) use it to show what the fully connected CRF gains at edges, which whole-image mIoU
dilutes. The band's pixels are scored by the same `ConfusionMatrix` as everything else: labels outside the band are
set to the ignore value.
"""

from __future__ import annotations

import numpy as np

__all__ = ["boundary_band", "band_labels"]


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation with a ``(2r+1)²`` square, as two separable running maxima."""
    if radius == 0:
        return mask
    out = mask
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in range(2)])
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=axis)
        out = windows.any(axis=-1)
    return out


def boundary_band(labels, width: int, num_classes: int, ignore_label: int | None = 255) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the pixels within ``width`` pixels (chessboard distance) of a label edge.

    An edge lies between two 4-neighbours with different scored labels (in ``[0, num_classes)``, not
    ``ignore_label``); borders with unlabelled pixels are not edges, since no prediction can be right there.

    Args:
        labels: ``(H, W)`` integer label map.
        width: band half-width in pixels, ``>= 0`` (0: the pixels on either side of an edge).
        num_classes: number of classes.
        ignore_label: label value that is not scored.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"Expected an integer (H, W) label map. Received: labels of shape {labels.shape} and dtype "
                         f"{labels.dtype}")
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 0:
        raise ValueError(f"Expected width to be a non-negative integer. Received: width={width!r}")
    valid = (labels >= 0) & (labels < num_classes)
    if ignore_label is not None:
        valid &= labels != ignore_label
    edge = np.zeros(labels.shape, bool)
    for axis in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        differs = (labels[a] != labels[b]) & valid[a] & valid[b]
        edge[a] |= differs
        edge[b] |= differs
    return _dilate(edge, int(width))


def band_labels(labels, width: int, num_classes: int, ignore_label: int | None = 255) -> np.ndarray:
    """Int64 ``labels`` with every pixel outside the `boundary_band` set to ``ignore_label`` (-1 when ``None``),
    ready for a `ConfusionMatrix`."""
    labels = np.asarray(labels)
    band = boundary_band(labels, width, num_classes, ignore_label)
    return np.where(band, labels.astype(np.int64), -1 if ignore_label is None else ignore_label)
