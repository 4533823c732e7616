"""PASCAL VOC 2012 segmentation (Everingham et al.), 21 classes with background.

Layout::

    root/JPEGImages/NAME.jpg
    root/SegmentationClass/NAME.png               palette PNGs: the palette *indices* are the labels
    root/ImageSets/Segmentation/{train,val,trainval}.txt
    root/SegmentationClassAug/NAME.png            optional augmented labels (Hariharan et al.), index PNGs
    root/ImageSets/SegmentationAug/{split}.txt    optional list files for the augmented set

Object borders are labelled 255 in the published masks and are ignored.
"""

from __future__ import annotations

import os

from kerasseg.data.files import ClassInfo, existing_pairs
from kerasseg.data.pipeline import label_lookup
from kerasseg.visualize import default_palette

__all__ = ["CLASS_NAMES", "PALETTE", "CLASSES", "list_pairs", "lookup", "read_list"]

CLASS_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
# The VOC colour map is the bit-interleaved index palette of the published PNGs.
PALETTE = tuple(tuple(int(v) for v in c) for c in default_palette(len(CLASS_NAMES)))
CLASSES = ClassInfo(CLASS_NAMES, PALETTE, 255)


def lookup():
    """Stored values are class indices 0..20 and 255 (border)."""
    return label_lookup({i: i for i in range(len(CLASS_NAMES))}, 255)


def read_list(path: str) -> list[str]:
    """Names of a split list file: one per line (the first field; blank lines skipped).

    Raises:
        ValueError: a missing or empty list file (named).
    """
    if not os.path.isfile(path):
        raise ValueError(f"Expected a split list file {path!r}. Received: no such file")
    with open(path, encoding="utf-8") as f:
        names = [line.split()[0] for line in f if line.strip()]
    if not names:
        raise ValueError(f"Expected image names in {path!r}. Received: an empty split list")
    # Augmented-set lists may hold "/JPEGImages/NAME.jpg /SegmentationClassAug/NAME.png" pairs.
    return [os.path.splitext(os.path.basename(n))[0] for n in names]


def list_pairs(root, split: str, *, augmented: bool = False, list_file: str | None = None):
    """``(image, label)`` pairs of a split in list-file order.

    Args:
        root: the ``VOC2012`` folder.
        split: ``"train"``, ``"val"`` or ``"trainval"`` (any list file name without ``.txt``).
        augmented: labels from ``SegmentationClassAug`` with the list ``ImageSets/SegmentationAug/{split}.txt``.
        list_file: an explicit split list (overrides the default list path).

    Raises:
        ValueError: a missing list file or folder, or a listed image or label that does not exist (named).
    """
    root = os.fspath(root)
    label_dir = os.path.join(root, "SegmentationClassAug" if augmented else "SegmentationClass")
    if list_file is None:
        list_file = os.path.join(root, "ImageSets", "SegmentationAug" if augmented else "Segmentation", f"{split}.txt")
    names = read_list(list_file)
    return existing_pairs([(os.path.join(root, "JPEGImages", n + ".jpg"), os.path.join(label_dir, n + ".png"))
                           for n in names], list_file)
