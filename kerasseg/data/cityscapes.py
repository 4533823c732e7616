"""Cityscapes (Cordts et al., CVPR 2016): fine annotations, 19 evaluation classes.

Layout::

    root/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    root/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png      (34 label ids)
    root/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelTrainIds.png (optional, 19 train ids + 255)

Label ids are mapped to train ids with the official table of ``cityscapesscripts/helpers/labels.py``; ids whose
train id is 255 (void, and the classes not evaluated: parking, rail track, guard rail, bridge, tunnel, pole group,
caravan, trailer) become the ignore label. `TRAIN_ID_TO_LABEL_ID` maps predictions back to label ids, the format
the benchmark server expects.
"""

from __future__ import annotations

import os

import numpy as np

from kerasseg.data.files import ClassInfo, check_split_folders, existing_pairs
from kerasseg.data.pipeline import label_lookup

__all__ = ["LABELS", "CLASS_NAMES", "PALETTE", "LABEL_ID_TO_TRAIN_ID", "TRAIN_ID_TO_LABEL_ID", "CLASSES",
           "list_pairs", "lookup", "to_label_ids"]

# (label id, name, train id, colour), as published in cityscapesscripts.
LABELS = (
    (0, "unlabeled", 255, (0, 0, 0)), (1, "ego vehicle", 255, (0, 0, 0)),
    (2, "rectification border", 255, (0, 0, 0)), (3, "out of roi", 255, (0, 0, 0)), (4, "static", 255, (0, 0, 0)),
    (5, "dynamic", 255, (111, 74, 0)), (6, "ground", 255, (81, 0, 81)), (7, "road", 0, (128, 64, 128)),
    (8, "sidewalk", 1, (244, 35, 232)), (9, "parking", 255, (250, 170, 160)), (10, "rail track", 255, (230, 150, 140)),
    (11, "building", 2, (70, 70, 70)), (12, "wall", 3, (102, 102, 156)), (13, "fence", 4, (190, 153, 153)),
    (14, "guard rail", 255, (180, 165, 180)), (15, "bridge", 255, (150, 100, 100)),
    (16, "tunnel", 255, (150, 120, 90)), (17, "pole", 5, (153, 153, 153)), (18, "polegroup", 255, (153, 153, 153)),
    (19, "traffic light", 6, (250, 170, 30)), (20, "traffic sign", 7, (220, 220, 0)),
    (21, "vegetation", 8, (107, 142, 35)), (22, "terrain", 9, (152, 251, 152)), (23, "sky", 10, (70, 130, 180)),
    (24, "person", 11, (220, 20, 60)), (25, "rider", 12, (255, 0, 0)), (26, "car", 13, (0, 0, 142)),
    (27, "truck", 14, (0, 0, 70)), (28, "bus", 15, (0, 60, 100)), (29, "caravan", 255, (0, 0, 90)),
    (30, "trailer", 255, (0, 0, 110)), (31, "train", 16, (0, 80, 100)), (32, "motorcycle", 17, (0, 0, 230)),
    (33, "bicycle", 18, (119, 11, 32)),
)
_TRAIN = sorted((t, i, n, c) for i, n, t, c in LABELS if t != 255)
CLASS_NAMES = tuple(n for _, _, n, _ in _TRAIN)
PALETTE = tuple(c for _, _, _, c in _TRAIN)
LABEL_ID_TO_TRAIN_ID = {i: t for i, _, t, _ in LABELS}
TRAIN_ID_TO_LABEL_ID = {t: i for t, i, _, _ in _TRAIN}
CLASSES = ClassInfo(CLASS_NAMES, PALETTE, 255)

_IMAGE_SUFFIX = "_leftImg8bit.png"


def lookup(train_ids: bool = False) -> np.ndarray:
    """The 256-entry table of stored values to train ids: for ``*_labelIds.png``, or ``*_labelTrainIds.png``."""
    if train_ids:
        return label_lookup({t: t for t in range(len(CLASS_NAMES))}, 255)
    return label_lookup({i: t for i, t in LABEL_ID_TO_TRAIN_ID.items() if t != 255}, 255,
                        ignore_values=[i for i, t in LABEL_ID_TO_TRAIN_ID.items() if t == 255])


def to_label_ids(train_ids) -> np.ndarray:
    """Maps a train-id map (e.g. a prediction) to label ids for a benchmark-server submission (uint8).

    Raises:
        ValueError: values that are not train ids ``0..18``.
    """
    train_ids = np.asarray(train_ids)
    bad = (train_ids < 0) | (train_ids >= len(CLASS_NAMES))
    if np.any(bad):
        raise ValueError(f"Expected train ids in 0..{len(CLASS_NAMES) - 1}. Received: values "
                         f"{sorted(set(np.unique(train_ids[bad]).tolist()))[:8]}")
    table = np.array([TRAIN_ID_TO_LABEL_ID[t] for t in range(len(CLASS_NAMES))], np.uint8)
    return table[train_ids]


def list_pairs(root, split: str, *, train_ids: bool | None = None):
    """``(image, label)`` pairs of a split, sorted, and whether the labels are train ids.

    Args:
        root: dataset folder holding ``leftImg8bit`` and ``gtFine``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        train_ids: read ``*_labelTrainIds.png`` (True) or ``*_labelIds.png`` (False); ``None`` uses train ids when
            every image has one.

    Returns:
        ``(pairs, uses_train_ids)``.

    Raises:
        ValueError: a missing split folder, an empty split, or an image without its label (named).
    """
    root = os.fspath(root)
    image_root = os.path.join(root, "leftImg8bit", split)
    label_root = os.path.join(root, "gtFine", split)
    check_split_folders(root, split, image_root, label_root)
    images = []
    for city in sorted(os.listdir(image_root)):
        city_dir = os.path.join(image_root, city)
        if os.path.isdir(city_dir):
            images += [(city, f) for f in sorted(os.listdir(city_dir)) if f.endswith(_IMAGE_SUFFIX)]
    if not images:
        raise ValueError(f"Expected *{_IMAGE_SUFFIX} images in {image_root}/CITY/. Received: an empty split {split!r}")

    def label_path(city, name, kind):
        return os.path.join(label_root, city, name[:-len(_IMAGE_SUFFIX)] + f"_gtFine_{kind}.png")

    if train_ids is None:
        train_ids = all(os.path.isfile(label_path(c, n, "labelTrainIds")) for c, n in images)
    kind = "labelTrainIds" if train_ids else "labelIds"
    pairs = existing_pairs([(os.path.join(image_root, c, n), label_path(c, n, kind)) for c, n in images])
    return pairs, bool(train_ids)
