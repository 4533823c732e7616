"""CamVid (Brostow et al., 2008) in the 11-class split of SegNet (Badrinarayanan et al.).

Layout (the SegNet tutorial's ``CamVid/`` folder)::

    root/{train,val,test}/NAME.png          RGB frames
    root/{train,val,test}annot/NAME.png     single-channel labels 0..11
    root/{train,val,test}.txt               optional: "/any/prefix/train/NAME.png /any/prefix/trainannot/NAME.png"

Label 11 (void / unlabelled) is the ignore label. With a list file the pairs follow it (only the file names of its
paths are used, since published lists carry absolute paths of their author's machine); without one the split
folders are paired by name.
"""

from __future__ import annotations

import os

from kerasseg.data.files import ClassInfo, check_split_folders, check_split_name, existing_pairs
from kerasseg.data.pipeline import label_lookup

__all__ = ["CLASS_NAMES", "PALETTE", "CLASSES", "VOID", "list_pairs", "lookup"]

CLASS_NAMES = ("sky", "building", "pole", "road", "sidewalk", "tree", "sign", "fence", "car", "pedestrian",
               "bicyclist")
# The CamVid colours of these classes (Sky, Building, Pole, Road, Pavement, Tree, SignSymbol, Fence, Car,
# Pedestrian, Bicyclist).
PALETTE = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
           (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192))
VOID = 11
CLASSES = ClassInfo(CLASS_NAMES, PALETTE, 255)


def lookup():
    """0..10 are classes, 11 (void) and 255 are ignored."""
    return label_lookup({i: i for i in range(len(CLASS_NAMES))}, 255, ignore_values=[VOID])


def list_pairs(root, split: str):
    """``(image, label)`` pairs of a split: from ``{split}.txt`` when present, else by name.

    Raises:
        ValueError: a missing folder, an empty split, or an image without label or label without image (named).
    """
    root = os.fspath(root)
    check_split_name(split)
    image_dir, label_dir = os.path.join(root, split), os.path.join(root, split + "annot")
    check_split_folders(root, split, image_dir, label_dir)
    list_file = os.path.join(root, split + ".txt")
    if os.path.isfile(list_file):
        with open(list_file, encoding="utf-8") as f:
            rows = [line.split() for line in f if line.strip()]
        names = []
        for row in rows:
            if len(row) != 2:
                raise ValueError(f"Expected 'IMAGE LABEL' on every line of {list_file!r}. Received: {' '.join(row)!r}")
            names.append((os.path.basename(row[0]), os.path.basename(row[1])))
    else:
        names = [(f, f) for f in sorted(os.listdir(image_dir)) if f.lower().endswith(".png") and not f.startswith(".")]
        images = {n for n, _ in names}
        for f in sorted(os.listdir(label_dir)):
            if f.lower().endswith(".png") and not f.startswith(".") and f not in images:
                raise ValueError(f"Expected an image {os.path.join(image_dir, f)!r} for label "
                                 f"{os.path.join(label_dir, f)!r}. Received: no such file")
    if not names:
        raise ValueError(f"Expected .png images in {image_dir!r}. Received: an empty split {split!r}")
    return existing_pairs([(os.path.join(image_dir, i), os.path.join(label_dir, t)) for i, t in names])
