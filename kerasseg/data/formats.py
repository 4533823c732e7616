"""Dataset formats: each turns ``(root, split)`` into file pairs, class semantics and a label lookup table.

`resolve` is what `kerasseg.data.load_dataset` and the dataset tools share, so the pipeline and the checks always
see the same files and the same label mapping.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from kerasseg.data import ade20k, camvid, cityscapes, synthetic, voc
from kerasseg.data.files import ClassInfo, read_classes, scan_folder
from kerasseg.data.pipeline import identity_lookup

__all__ = ["DatasetSpec", "resolve", "FORMAT_NAMES", "FORMAT_OPTIONS"]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One split of a dataset, ready for `kerasseg.data.pipeline.make_dataset`.

    Attributes:
        format: the format name.
        split: the split name.
        pairs: ``(image_path, label_path)`` pairs.
        classes: names, colours and ignore label.
        lookup: 256-entry table from stored label values to class indices (``-1``: not allowed).
        formats: mask formats already read while listing (folder layouts), or ``None``.
    """

    format: str
    split: str
    pairs: list
    classes: ClassInfo
    lookup: np.ndarray
    formats: list | None = None


# Keyword arguments each format accepts besides root and split (the rest go to the pipeline).
FORMAT_OPTIONS = {
    "cityscapes": ("train_ids",),
    "voc": ("augmented", "list_file"),
    "ade20k": (),
    "camvid": (),
    "folder": (),
    "synthetic": ("num_train", "num_val", "height", "width", "dataset_seed", "overwrite"),
}
FORMAT_NAMES = tuple(FORMAT_OPTIONS)


def _folder(root, split, check_sizes=True):
    classes = read_classes(root)
    pairs, formats = scan_folder(root, split, check_sizes=check_sizes, classes=classes)
    return DatasetSpec("folder", split, pairs, classes, identity_lookup(classes), formats)


def resolve(format: str, root, split: str, *, check_sizes: bool = True, **options) -> DatasetSpec:
    """Lists a split of a dataset.

    Args:
        format: one of `FORMAT_NAMES`.
        root: dataset folder.
        split: split name (see each format module).
        check_sizes: (folder formats) compare image and mask sizes while listing.
        **options: the format's options (`FORMAT_OPTIONS`): Cityscapes ``train_ids``; VOC ``augmented``,
            ``list_file``; synthetic ``num_train``, ``num_val``, ``height``, ``width``, ``dataset_seed`` (its
            generation seed), ``overwrite``.

    Raises:
        ValueError: an unknown format or option, or invalid dataset files (named).
    """
    if format not in FORMAT_OPTIONS:
        raise ValueError(f"Unknown dataset format. Expected one of {list(FORMAT_NAMES)}. Received: format={format!r}")
    unknown = sorted(set(options) - set(FORMAT_OPTIONS[format]))
    if unknown:
        raise ValueError(f"Unknown option for format {format!r}. Expected a subset of "
                         f"{list(FORMAT_OPTIONS[format])}. Received: {unknown}")
    root = os.fspath(root)
    if not os.path.isdir(root) and format != "synthetic":
        raise ValueError(f"Expected root to be a dataset folder. Received: root={root!r}, which is not a folder")
    if format == "cityscapes":
        pairs, train_ids = cityscapes.list_pairs(root, split, train_ids=options.get("train_ids"))
        return DatasetSpec(format, split, pairs, cityscapes.CLASSES, cityscapes.lookup(train_ids))
    if format == "voc":
        pairs = voc.list_pairs(root, split, augmented=options.get("augmented", False),
                               list_file=options.get("list_file"))
        return DatasetSpec(format, split, pairs, voc.CLASSES, voc.lookup())
    if format == "ade20k":
        return DatasetSpec(format, split, ade20k.list_pairs(root, split), ade20k.CLASSES, ade20k.lookup())
    if format == "camvid":
        return DatasetSpec(format, split, camvid.list_pairs(root, split), camvid.CLASSES, camvid.lookup())
    if format == "synthetic":
        generation = dict(options)
        if "dataset_seed" in generation:
            generation["seed"] = generation.pop("dataset_seed")
        # Without generation arguments an existing synthetic dataset is used as it is, whatever it was written with.
        if generation or synthetic.read_params(root) is None:
            synthetic.write_dataset(root, **generation)
        return dataclasses.replace(_folder(root, split, check_sizes), format="synthetic")
    return _folder(root, split, check_sizes)
