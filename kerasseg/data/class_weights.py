"""Class weights from label frequencies, for losses that weight pixels by their true class.

Two schemes from the segmentation literature:

``"median"``: median frequency balancing (Eigen & Fergus, used by SegNet): ``w_c = median(f) / f_c`` where ``f_c`` is
the number of pixels of class ``c`` divided by the number of pixels of the images in which ``c`` appears.

``"enet"``: ENet's weighting (Paszke et al.): ``w_c = 1 / ln(1.02 + p_c)`` where ``p_c`` is the share of class ``c``
among all labelled pixels, which bounds the weights (at most ``1 / ln(1.02)`` ≈ 50.5).

Classes that never occur get weight 0 (they contribute no pixels to the loss anyway).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

__all__ = ["CLASS_WEIGHT_METHODS", "class_frequencies", "compute_class_weights", "resolve_class_weights"]

CLASS_WEIGHT_METHODS = ("median", "enet")


def class_frequencies(root, split: str = "train", format: str = "folder") -> tuple[np.ndarray, np.ndarray]:
    """Per-class pixel counts of a dataset split.

    Masks are read through the dataset pipeline, so every mask format it accepts (index PNGs, palette PNGs, RGB
    colour masks mapped through ``classes.json``, each format's label mapping) is counted alike; ignored pixels are
    not counted.

    Args:
        root: dataset folder.
        split: split name.
        format: dataset format (`kerasseg.data.DATASET_FORMATS`); ``"folder"`` also reads synthetic datasets.

    Returns:
        ``(pixels, image_pixels)``: int64 arrays of length ``num_classes``; ``pixels[c]`` counts the pixels of class
        ``c``, ``image_pixels[c]`` the labelled pixels of the images in which ``c`` occurs.
    """
    from kerasseg.data import load_dataset
    from kerasseg.data.formats import resolve

    spec = resolve(format, os.fspath(root), split)  # fails early, naming the folder or file, on a broken split
    n = spec.classes.num_classes
    ds = load_dataset(format, root, split, batch_size=1, crop_size=None, augment=False, shuffle=False)
    pixels = np.zeros(n, np.int64)
    image_pixels = np.zeros(n, np.int64)
    for _, label in ds:
        label = label.numpy().ravel()
        label = label[(label >= 0) & (label < n)]
        counts = np.bincount(label, minlength=n)[:n].astype(np.int64)
        pixels += counts
        image_pixels[counts > 0] += int(counts.sum())
    return pixels, image_pixels


def compute_class_weights(root, method: str, split: str = "train", format: str = "folder") -> list[float]:
    """Class weights of a dataset split by ``method`` (``"median"`` or ``"enet"``; see the module docstring).

    Raises:
        ValueError: an unknown method, or a split without any labelled pixel.
    """
    if method not in CLASS_WEIGHT_METHODS:
        raise ValueError(f"Expected method to be one of {CLASS_WEIGHT_METHODS}. Received: method={method!r}")
    pixels, image_pixels = class_frequencies(root, split, format)
    if pixels.sum() == 0:
        raise ValueError(f"Expected labelled pixels to compute class weights. Received: split {split!r} of "
                         f"{os.fspath(root)!r} has only ignored pixels")
    present = pixels > 0
    if method == "median":
        freq = np.where(present, pixels / np.maximum(image_pixels, 1), 0.0)
        median = float(np.median(freq[present]))
        weights = np.where(present, median / np.where(present, freq, 1.0), 0.0)
    else:
        share = pixels / pixels.sum()
        weights = np.where(present, 1.0 / np.log(1.02 + share), 0.0)
    return [float(w) for w in weights]


def resolve_class_weights(spec, root, num_classes: int, format: str = "folder",
                          split: str = "train") -> list[float] | None:
    """Class weights from a training option.

    Args:
        spec: ``None`` / ``"none"``, ``"median"``, ``"enet"``, a path to a JSON file holding a list of numbers (or a
            ``{"class_weights": [...]}`` object), or a list of numbers.
        root: dataset folder (for the computed schemes).
        num_classes: expected number of weights.
        format: dataset format of ``root``.
        split: split the computed schemes count.

    Returns:
        A list of ``num_classes`` floats, or ``None`` for unweighted training.
    """
    if spec is None or (isinstance(spec, str) and spec.lower() == "none"):
        return None
    if isinstance(spec, str) and spec.lower() in CLASS_WEIGHT_METHODS:
        weights = compute_class_weights(root, spec.lower(), split, format)
    elif isinstance(spec, str):
        if not os.path.isfile(spec):
            raise ValueError(f"Expected class_weights to be 'none', 'median', 'enet' or a JSON file. "
                             f"Received: class_weights={spec!r} (no such file)")
        try:
            with open(spec) as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"Expected a JSON list of class weights in {spec!r}. Received: invalid JSON ({e})") \
                from None
        weights = data.get("class_weights") if isinstance(data, dict) else data
    else:
        weights = spec
    if not isinstance(weights, (list, tuple)) or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
            for w in weights):
        raise ValueError(f"Expected class weights as a list of finite non-negative numbers. "
                         f"Received: class_weights={spec!r}")
    if len(weights) != num_classes:
        raise ValueError(f"Expected {num_classes} class weights (one per class). Received: {len(weights)} from "
                         f"class_weights={spec!r}")
    return [float(w) for w in weights]
