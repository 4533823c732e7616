"""Tiny datasets in the real on-disk layouts, written by the tests themselves (a few pixels per file)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

H, W = 8, 12


def image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save_rgb(path, array, fmt="PNG"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, "RGB").save(path, format=fmt, quality=95)


def save_index(path, labels, palette=None):
    """Saves a label map as a greyscale PNG, or as a palette PNG when ``palette`` is given."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    labels = np.asarray(labels, np.uint8)
    if palette is None:
        Image.fromarray(labels, "L").save(path)
        return
    im = Image.fromarray(labels, "P")
    im.putpalette(list(np.asarray(palette, np.uint8).ravel()) + [0] * (768 - 3 * len(palette)))
    im.save(path)


def ramp(values, h: int = H, w: int = W) -> np.ndarray:
    """A label map holding ``values`` cyclically, row-major: every value appears with a known pixel count."""
    values = np.asarray(values)
    return values[np.arange(h * w) % len(values)].reshape(h, w).astype(np.uint8)


def cityscapes(root, train_ids: bool = False):
    """train: 2 cities (3 frames), val: 1 frame. Label ids of the frames: all 34 ids, cyclically."""
    frames = {"train": [("aachen", 0), ("aachen", 1), ("bochum", 0)], "val": [("frankfurt", 0)]}
    for split, items in frames.items():
        for k, (city, frame) in enumerate(items):
            stem = f"{city}_000000_{frame:06d}"
            save_rgb(os.path.join(root, "leftImg8bit", split, city, f"{stem}_leftImg8bit.png"), image(k))
            ids = ramp(np.arange(34))
            save_index(os.path.join(root, "gtFine", split, city, f"{stem}_gtFine_labelIds.png"), ids)
            if train_ids:
                from kerasseg.data import cityscapes as cs

                save_index(os.path.join(root, "gtFine", split, city, f"{stem}_gtFine_labelTrainIds.png"),
                           cs.lookup()[ids].astype(np.uint8))
    return root


def voc(root, augmented: bool = False):
    """5 JPEG images; palette masks with values 0..20 and a 255 border; train = 3 names, val = 2."""
    from kerasseg.visualize import default_palette

    names = [f"2007_00{i:04d}" for i in range(5)]
    for k, name in enumerate(names):
        save_rgb(os.path.join(root, "JPEGImages", name + ".jpg"), image(k), fmt="JPEG")
        labels = ramp(np.arange(21))
        labels[0, :] = 255
        save_index(os.path.join(root, "SegmentationClass", name + ".png"), labels, default_palette(256))
        if augmented:
            save_index(os.path.join(root, "SegmentationClassAug", name + ".png"), ramp([k]))
    lists = os.path.join(root, "ImageSets", "Segmentation")
    os.makedirs(lists, exist_ok=True)
    for split, chosen in (("train", names[:3]), ("val", names[3:]), ("trainval", names)):
        with open(os.path.join(lists, split + ".txt"), "w") as f:
            f.write("\n".join(chosen) + "\n")
    if augmented:
        aug = os.path.join(root, "ImageSets", "SegmentationAug")
        os.makedirs(aug, exist_ok=True)
        with open(os.path.join(aug, "train.txt"), "w") as f:
            f.write("".join(f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n" for n in names[1:]))
    return root


def ade20k(root):
    """ADEChallengeData2016 with 2 training and 1 validation image; labels hold 0..150 cyclically."""
    base = os.path.join(root, "ADEChallengeData2016")
    for split, n in (("training", 2), ("validation", 1)):
        for k in range(n):
            name = f"ADE_{split[:5]}_{k:08d}"
            save_rgb(os.path.join(base, "images", split, name + ".jpg"), image(k, 13, 12), fmt="JPEG")
            save_index(os.path.join(base, "annotations", split, name + ".png"), ramp(np.arange(151), 13, 12))
    return root


def camvid(root, with_lists: bool = True):
    """SegNet CamVid layout: train 3, val 2 frames; labels 0..11 cyclically; list files with foreign paths."""
    for split, n in (("train", 3), ("val", 2)):
        rows = []
        for k in range(n):
            name = f"0001TP_{split}{k:03d}.png"
            save_rgb(os.path.join(root, split, name), image(k))
            save_index(os.path.join(root, split + "annot", name), ramp(np.arange(12)))
            rows.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        if with_lists:
            with open(os.path.join(root, split + ".txt"), "w") as f:
                # Listed in reverse name order: the list, not the folder, decides the order.
                f.write("\n".join(reversed(rows)) + "\n")
    return root


def folder(root, n: int = 3, rgb_masks: bool = False):
    """Plain folder layout with 3 classes; masks hold 0, 1, 2, 255 cyclically (as colours with rgb_masks)."""
    from kerasseg.data import ClassInfo, write_classes

    colours = ((10, 20, 30), (200, 0, 0), (0, 200, 0))
    write_classes(root, ClassInfo(("a", "b", "c"), colours, 255))
    for split in ("train", "val"):
        for k in range(n):
            save_rgb(os.path.join(root, "images", split, f"img{k}.png"), image(k))
            labels = ramp([0, 1, 2, 255])
            path = os.path.join(root, "masks", split, f"img{k}.png")
            if rgb_masks:
                table = np.array(list(colours) + [(1, 2, 3)] * 253, np.uint8)
                save_rgb(path, table[np.minimum(labels, 3)])
            else:
                save_index(path, labels)
    return root


def label_every_pixel(root):
    """Replaces the ignore label by class 0 in every mask of a folder dataset's train and val splits.

    The losses average over the valid pixels of each replica's (or worker's) share of the batch; with ignored pixels
    the shares hold different numbers of valid pixels and the mean of the replica means is not the mean over the
    global batch. With every pixel labelled both are the same, and a comparison measures the distribution alone.
    """
    for split in ("train", "val"):
        folder = os.path.join(root, "masks", split)
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            mask = Image.open(path)
            labels = np.asarray(mask).copy()
            labels[labels == 255] = 0
            fixed = Image.fromarray(labels, mode="P")
            fixed.putpalette(mask.getpalette())
            fixed.save(path)
