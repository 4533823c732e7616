"""Datasets as tf.data pipelines of ``(image, label)`` batches.

Formats (one module each, all feeding the one pipeline of `kerasseg.data.pipeline`):
    ``"cityscapes"``: `kerasseg.data.cityscapes` (34 label ids → 19 train ids).
    ``"voc"``: `kerasseg.data.voc` (PASCAL VOC 2012, 21 classes, optional augmented set).
    ``"ade20k"``: `kerasseg.data.ade20k` (SceneParsing, 150 classes, 0 ignored).
    ``"camvid"``: `kerasseg.data.camvid` (SegNet's 11 classes, void ignored).
    ``"folder"``: the plain folder layout of `kerasseg.data.folder` (``classes.json``, ``images/{split}``,
    ``masks/{split}``), the format of users' own data.
    ``"synthetic"``: procedurally generated street scenes (`kerasseg.data.synthetic`) written in the folder layout
    at ``root`` on first use and read back through the folder loader; no download needed.
"""

from __future__ import annotations

import os

from kerasseg.data import synthetic
from kerasseg.data.files import ClassInfo, read_classes, write_classes
from kerasseg.data.folder import folder_dataset, list_pairs
from kerasseg.data.formats import FORMAT_NAMES, FORMAT_OPTIONS, DatasetSpec, resolve
from kerasseg.data.pipeline import make_dataset

__all__ = ["load_dataset", "dataset_classes", "DATASET_FORMATS", "ClassInfo", "DatasetSpec", "folder_dataset",
           "list_pairs", "read_classes", "write_classes", "make_dataset", "resolve", "synthetic"]

DATASET_FORMATS = FORMAT_NAMES


def dataset_classes(format: str, root, split: str = "train", **options) -> ClassInfo:
    """The class names, colours and ignore label of a dataset (see `load_dataset` for the arguments)."""
    return resolve(format, root, split, **options).classes


def load_dataset(format: str, root, split: str, *, batch_size: int, crop_size=None, augment: bool = False, **kw):
    """A batched ``(image, label)`` pipeline of a dataset split.

    Args:
        format: one of `DATASET_FORMATS`: ``"cityscapes"``, ``"voc"``, ``"ade20k"``, ``"camvid"``, ``"folder"``,
            ``"synthetic"``.
        root: dataset folder. For ``"synthetic"`` it is generated there first unless it already holds a complete
            synthetic dataset.
        split: split name, e.g. ``"train"`` or ``"val"``.
        batch_size: examples per batch.
        crop_size: ``(height, width)`` crop (random with ``augment``, centre otherwise), or ``None`` for full-size
            images and labels.
        augment: joint random scale (``scale_range``) / crop / flip, and photometric distortion with
            ``photometric=True``.
        **kw: the format's options (Cityscapes ``train_ids``; VOC ``augmented``, ``list_file``; synthetic
            ``num_train``, ``num_val``, ``height``, ``width``, ``overwrite``, ``dataset_seed``) and the pipeline
            arguments of `kerasseg.data.pipeline.make_dataset` (``shuffle``, ``normalization``, ``seed``,
            ``deterministic``, ``repeat``, ``drop_remainder``, ``cache``, ``scale_range``, ``flip``,
            ``photometric``, ``blur``, ``label_check``, ``check_sizes``).

    Returns:
        A ``tf.data.Dataset`` of ``(image float32 (B, H, W, 3), label int32 (B, H, W))`` with 255 = ignore; the
        class names and colours are in `dataset_classes`.

    Raises:
        ValueError: an unknown format, or invalid arguments or files.
    """
    if format not in FORMAT_OPTIONS:
        raise ValueError(f"Unknown dataset format. Expected one of {list(FORMAT_NAMES)}. Received: format={format!r}")
    options = {k: kw.pop(k) for k in FORMAT_OPTIONS[format] if k in kw}
    spec = resolve(format, os.fspath(root), split, check_sizes=kw.get("check_sizes", True), **options)
    return make_dataset(spec.pairs, spec.classes, lookup=spec.lookup, formats=spec.formats, batch_size=batch_size,
                        crop_size=crop_size, augment=augment, **kw)
