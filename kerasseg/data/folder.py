"""The plain folder layout and its tf.data loader.

Layout::

    root/classes.json               {"names": [...], "colors": [[r, g, b], ...], "ignore_label": 255}
    root/images/{split}/NAME.png    (or .jpg / .jpeg) RGB images
    root/masks/{split}/NAME.png     label masks, paired with the images by NAME

Masks are either single-channel PNGs holding class indices (greyscale, or palette PNGs, whose *indices* are the
labels whatever their palette colours) or RGB PNGs whose colours are mapped through ``colors`` (a colour that is not
listed becomes the ignore label). Which kind each mask is, is read from its PNG header when the files are listed;
the pixels themselves are decoded by TensorFlow inside the tf.data pipeline, in parallel.

``colors`` may be left out of ``classes.json`` when every mask holds indices; ``ignore_label`` defaults to 255.
Files in the split folders whose extension is not one of the above, and hidden files, are not part of the dataset.

The class list, listing and header reading shared with the other formats are in `kerasseg.data.files`.
"""

from __future__ import annotations

from kerasseg.data.files import (CLASSES_FILE, IMAGE_EXTENSIONS, ClassInfo, read_classes, scan_folder,
                                 write_classes)
from kerasseg.data.pipeline import identity_lookup, make_dataset

__all__ = ["ClassInfo", "read_classes", "write_classes", "list_pairs", "folder_dataset", "IMAGE_EXTENSIONS",
           "CLASSES_FILE"]


def list_pairs(root, split: str, *, check_sizes: bool = True) -> list[tuple[str, str]]:
    """The ``(image_path, mask_path)`` pairs of a split, sorted by name.

    Args:
        root: dataset folder.
        split: split folder name, e.g. ``"train"``.
        check_sizes: compare image and mask sizes from the file headers (cheap: the pixels are not decoded).

    Raises:
        FileNotFoundError: ``root/classes.json`` is missing (it tells how RGB masks map to classes).
        ValueError: a missing or empty split folder, an image without mask or a mask without image, a size
            mismatch, or an unreadable mask; the message names the file or folder.
    """
    return scan_folder(root, split, check_sizes=check_sizes)[0]


def folder_dataset(root, split: str, *, batch_size: int, crop_size=None, augment: bool = False, shuffle=None,
                   normalization="imagenet", seed: int | None = None, repeat: bool = False, drop_remainder=None,
                   cache=False, scale_range=None, check_sizes: bool = True, **kw):
    """A batched tf.data pipeline over a split of a folder dataset.

    The pipeline is the shared one of `kerasseg.data.pipeline.make_dataset`: file list → (shuffle files) →
    parallel decode → (cache decoded uint8) → augmentation → normalise → batch → prefetch. With ``cache``, the
    decoded examples are cached first and shuffled after the cache, so that every epoch still sees a new order.

    Args:
        root: dataset folder (see the module docstring for the layout).
        split: split folder name, e.g. ``"train"`` or ``"val"``.
        batch_size: examples per batch.
        crop_size: ``(height, width)`` (or one int) of the examples. With ``augment`` a random crop, without a
            centre crop; smaller images are padded (images with the normalisation mean, labels with the ignore
            label). ``None`` keeps the full images (then all images of the split must share one size when
            ``batch_size > 1``).
        augment: random horizontal flip, random crop (with ``crop_size``) and random scaling (with
            ``scale_range``), applied identically to image and label (see `kerasseg.data.augment`).
        shuffle: shuffle the examples each epoch; defaults to ``augment``.
        normalization: a name in `kerasseg.preprocessing.NORMALIZATIONS` or an explicit ``(mean, std)`` pair in
            pixel units.
        seed: makes shuffling and augmentation reproducible (the same sequence of batches for every run).
        repeat: repeat indefinitely (then pass ``steps_per_epoch`` to ``fit``).
        drop_remainder: drop the last incomplete batch; defaults to ``augment``.
        cache: ``True`` caches the decoded images in memory, a string caches them in that file.
        scale_range: ``(min, max)`` random scale factors, only with ``augment`` (e.g. ``(0.5, 2.0)``).
        check_sizes: compare image and mask sizes from their headers while listing (a mismatch is also caught
            when decoding, but later and with a less direct message).
        **kw: further `kerasseg.data.pipeline.make_dataset` arguments (``deterministic``, ``flip``,
            ``photometric``, ``blur``, ``label_check``).

    Returns:
        A ``tf.data.Dataset`` of ``(image float32 (B, H, W, 3), label int32 (B, H, W))``. The class names, colours
        and ignore label are in `read_classes` ``(root)``.

    Raises:
        ValueError: invalid arguments or dataset files (see `list_pairs` and `read_classes`).
    """
    classes = read_classes(root)
    pairs, formats = scan_folder(root, split, check_sizes=check_sizes, classes=classes)
    return make_dataset(pairs, classes, lookup=identity_lookup(classes), formats=formats, batch_size=batch_size,
                        crop_size=crop_size, augment=augment, shuffle=shuffle, normalization=normalization, seed=seed,
                        repeat=repeat, drop_remainder=drop_remainder, cache=cache, scale_range=scale_range, **kw)
