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
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import zlib
from typing import Sequence

import numpy as np

from kerasseg.preprocessing import IGNORE_LABEL, NORMALIZATIONS

__all__ = ["ClassInfo", "read_classes", "write_classes", "list_pairs", "folder_dataset", "IMAGE_EXTENSIONS",
           "CLASSES_FILE"]

CLASSES_FILE = "classes.json"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MASK_EXTENSION = ".png"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# How a mask's pixels become labels (see _decode_mask).
_MASK_INDEX, _MASK_PALETTE, _MASK_RGB = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class ClassInfo:
    """The label semantics of a dataset.

    Attributes:
        names: one name per class; label ``i`` is ``names[i]``.
        colors: one ``(r, g, b)`` per class (for RGB masks and visualisation), or ``None``.
        ignore_label: label value excluded from losses and metrics; outside ``0..num_classes - 1``.
    """

    names: tuple
    colors: tuple | None = None
    ignore_label: int = IGNORE_LABEL

    def __post_init__(self):
        if isinstance(self.names, str) or not isinstance(self.names, Sequence) or not self.names:
            raise ValueError(f"Expected names to be a non-empty list of class names. Received: names={self.names!r}")
        names = tuple(self.names)
        if not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"Expected every class name to be a non-empty string. Received: names={list(names)!r}")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"Expected distinct class names. Received: names={list(names)!r} (repeated: {dup})")
        if len(names) > 255:
            raise ValueError(f"Expected at most 255 classes (masks are 8-bit). Received: {len(names)} names")
        object.__setattr__(self, "names", names)

        if self.colors is not None:
            colors = self.colors
            if isinstance(colors, str) or not isinstance(colors, Sequence) or len(colors) != len(names):
                raise ValueError(f"Expected colors to hold one [r, g, b] per class name ({len(names)}). "
                                 f"Received: colors={colors!r}")
            checked = []
            for c in colors:
                if (isinstance(c, str) or not isinstance(c, Sequence) or len(c) != 3
                        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in c)
                        or not all(0 <= v <= 255 for v in c)):
                    raise ValueError(f"Expected every colour to be [r, g, b] with integers in 0..255. "
                                     f"Received: colors=...{list(c) if isinstance(c, Sequence) else c!r}...")
                checked.append(tuple(int(v) for v in c))
            if len(set(checked)) != len(checked):
                dup = sorted({c for c in checked if checked.count(c) > 1})
                raise ValueError(f"Expected distinct class colours (an RGB mask must map to one class). "
                                 f"Received: colours {dup} used by several classes")
            object.__setattr__(self, "colors", tuple(checked))

        ignore = self.ignore_label
        if isinstance(ignore, bool) or not isinstance(ignore, (int, np.integer)) or not 0 <= ignore <= 255:
            raise ValueError(f"Expected ignore_label to be an integer in 0..255. Received: ignore_label={ignore!r}")
        if ignore < len(names):
            raise ValueError(f"Expected ignore_label outside the class range 0..{len(names) - 1}. "
                             f"Received: ignore_label={ignore!r}")
        object.__setattr__(self, "ignore_label", int(ignore))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        out = {"names": list(self.names)}
        if self.colors is not None:
            out["colors"] = [list(c) for c in self.colors]
        out["ignore_label"] = self.ignore_label
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "ClassInfo":
        if not isinstance(d, dict):
            raise ValueError(f"Expected a JSON object with 'names' (and optional 'colors', 'ignore_label'). "
                             f"Received: {type(d).__name__}")
        unknown = sorted(set(d) - {"names", "colors", "ignore_label"})
        if unknown:
            raise ValueError(f"Expected keys 'names', 'colors', 'ignore_label'. Received unknown keys: {unknown}")
        if "names" not in d:
            raise ValueError(f"Expected a 'names' entry. Received keys: {sorted(d)}")
        return cls(names=d["names"], colors=d.get("colors"), ignore_label=d.get("ignore_label", IGNORE_LABEL))


def read_classes(root) -> ClassInfo:
    """Reads ``root/classes.json``.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the file is not valid JSON or its content is invalid; the message names the file.
    """
    path = os.path.join(os.fspath(root), CLASSES_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected a class list at {path!r}. Received: root={os.fspath(root)!r} without "
                                f"{CLASSES_FILE}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as e:
        raise ValueError(f"Expected valid JSON in {path!r}. Received: {e}") from None
    try:
        return ClassInfo.from_dict(data)
    except ValueError as e:
        raise ValueError(f"Invalid class list {path!r}: {e}") from None


def write_classes(root, info: ClassInfo) -> str:
    """Writes ``info`` to ``root/classes.json`` atomically and returns the path."""
    from kerasseg.saving import atomic_path

    if not isinstance(info, ClassInfo):
        raise ValueError(f"Expected a ClassInfo. Received: info={info!r}")
    path = os.path.join(os.fspath(root), CLASSES_FILE)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(info.to_dict(), f, indent=2)
            f.write("\n")
    return path


# --------------------------------------------------------------------------------------------------------------------
# Listing


@dataclasses.dataclass(frozen=True)
class _MaskFormat:
    """What the tf.data decoder needs to know about one mask, read from its PNG header."""

    kind: int
    width: int
    height: int
    # Palette masks only: a PNG prefix (signature + IHDR as greyscale) to splice before the image data, and the
    # offset of the first IDAT chunk, so that TensorFlow's decoder returns the indices instead of palette colours.
    prefix: bytes = b""
    data_offset: int = 0
    # libpng expands 1/2/4-bit greyscale to 0..255; dividing by this restores the stored values.
    scale: int = 1


def _png_chunks(path: str, limit: bytes = b"IDAT"):
    """Yields ``(offset, type, data)`` of the chunks of a PNG file up to (including) the first ``limit`` chunk."""
    with open(path, "rb") as f:
        if f.read(8) != _PNG_SIGNATURE:
            raise ValueError(f"Expected a PNG file. Received: {path!r}, which has no PNG signature")
        offset = 8
        while True:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"Expected a complete PNG file. Received: {path!r}, which ends before its image data")
            length, ctype = struct.unpack(">I4s", head)
            if ctype == limit:
                yield offset, ctype, b""
                return
            data = f.read(length)
            f.seek(4, os.SEEK_CUR)
            yield offset, ctype, data
            offset += 12 + length


def _mask_format(path: str, classes: ClassInfo) -> _MaskFormat:
    chunks = iter(_png_chunks(path))
    _, ctype, ihdr = next(chunks)
    if ctype != b"IHDR" or len(ihdr) != 13:
        raise ValueError(f"Expected a PNG file starting with an IHDR chunk. Received: {path!r}")
    width, height, depth, color_type = struct.unpack(">IIBB", ihdr[:10])
    if depth == 16:
        raise ValueError(f"Expected an 8-bit (or 1/2/4-bit) mask PNG. Received: {path!r} with 16-bit samples")
    scale = 255 // (2 ** depth - 1) if depth < 8 else 1
    if color_type in (0, 4):  # greyscale (with alpha): the grey value is the label
        return _MaskFormat(_MASK_INDEX, width, height, scale=scale)
    if color_type == 3:
        data_offset = next(off for off, t, _ in chunks if t == b"IDAT")
        grey = ihdr[:9] + b"\x00" + ihdr[10:]
        header = struct.pack(">I", 13) + b"IHDR" + grey + struct.pack(">I", zlib.crc32(b"IHDR" + grey))
        return _MaskFormat(_MASK_PALETTE, width, height, _PNG_SIGNATURE + header, data_offset, scale)
    if color_type in (2, 6):
        if classes.colors is None:
            raise ValueError(f"Expected single-channel index masks, since {CLASSES_FILE} lists no colors. "
                             f"Received: RGB mask {path!r}")
        return _MaskFormat(_MASK_RGB, width, height)
    raise ValueError(f"Expected a greyscale, palette or RGB mask PNG. Received: {path!r} with colour type "
                     f"{color_type}")


def _image_size(path: str) -> tuple[int, int]:
    """``(width, height)`` from the file header, without decoding the pixels."""
    if path.lower().endswith(".png"):
        _, ctype, ihdr = next(iter(_png_chunks(path)))
        if ctype != b"IHDR":
            raise ValueError(f"Expected a PNG file starting with an IHDR chunk. Received: {path!r}")
        return struct.unpack(">II", ihdr[:8])
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"Expected a readable JPEG image. Received: {path!r} ({e})") from None


def _split_dirs(root: str, split: str) -> tuple[str, str]:
    if not isinstance(split, str) or not split or os.sep in split or split in (".", ".."):
        raise ValueError(f"Expected split to be a folder name such as 'train' or 'val'. Received: split={split!r}")
    return os.path.join(root, "images", split), os.path.join(root, "masks", split)


def _visible_files(folder: str) -> list[str]:
    return sorted(f for f in os.listdir(folder) if not f.startswith(".") and os.path.isfile(os.path.join(folder, f)))


def _scan(root, split: str, *, check_sizes: bool = True, classes: ClassInfo | None = None):
    """Pairs images and masks of a split; returns ``(pairs, mask formats)``."""
    root = os.fspath(root)
    image_dir, mask_dir = _split_dirs(root, split)
    for folder in (image_dir, mask_dir):
        if not os.path.isdir(folder):
            raise ValueError(f"Expected a folder {folder!r} for split {split!r}. Received: root={root!r} without it")
    classes = classes if classes is not None else read_classes(root)

    images = {}
    for name in _visible_files(image_dir):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_EXTENSIONS:
            continue
        if stem in images:
            raise ValueError(f"Expected one image per name. Received: {os.path.join(image_dir, images[stem])!r} and "
                             f"{os.path.join(image_dir, name)!r}")
        images[stem] = name
    masks = {os.path.splitext(n)[0]: n for n in _visible_files(mask_dir) if n.lower().endswith(MASK_EXTENSION)}
    if not images:
        raise ValueError(f"Expected {'/'.join(IMAGE_EXTENSIONS)} images in {image_dir!r}. Received: an empty split "
                         f"{split!r}")
    for stem in sorted(images):
        if stem not in masks:
            raise ValueError(f"Expected a mask {os.path.join(mask_dir, stem + MASK_EXTENSION)!r} for image "
                             f"{os.path.join(image_dir, images[stem])!r}. Received: no such file")
    for stem in sorted(masks):
        if stem not in images:
            raise ValueError(f"Expected an image {os.path.join(image_dir, stem + '.png')!r} (or .jpg, .jpeg) for "
                             f"mask {os.path.join(mask_dir, masks[stem])!r}. Received: no such file")

    pairs, formats = [], []
    for stem in sorted(images):
        image_path, mask_path = os.path.join(image_dir, images[stem]), os.path.join(mask_dir, masks[stem])
        fmt = _mask_format(mask_path, classes)
        if check_sizes:
            size = tuple(_image_size(image_path))
            if size != (fmt.width, fmt.height):
                raise ValueError(f"Expected image and mask of the same size. Received: {image_path!r} is "
                                 f"{size[1]}x{size[0]}, {mask_path!r} is {fmt.height}x{fmt.width} (height x width)")
        pairs.append((image_path, mask_path))
        formats.append(fmt)
    return pairs, formats


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
    return _scan(root, split, check_sizes=check_sizes)[0]


# --------------------------------------------------------------------------------------------------------------------
# tf.data pipeline


def _normalization_constants(normalization):
    if isinstance(normalization, str):
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"Unknown normalization. Expected one of {sorted(NORMALIZATIONS)} or a (mean, std) pair. "
                             f"Received: normalization={normalization!r}")
        mean, std = NORMALIZATIONS[normalization]
    else:
        try:
            mean, std = normalization
            mean = np.asarray(mean, np.float32).reshape(-1)
            std = np.asarray(std, np.float32).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"Expected normalization to be a name or a (mean, std) pair of 3 values each. "
                             f"Received: normalization={normalization!r}") from None
        if mean.shape != (3,) or std.shape != (3,) or not np.all(std > 0):
            raise ValueError(f"Expected normalization (mean, std) with 3 values each and std > 0. "
                             f"Received: normalization={normalization!r}")
    return np.asarray(mean, np.float32), np.asarray(std, np.float32)


def _size_pair(value, name: str):
    if value is None:
        return None
    pair = (value, value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    try:
        h, w = pair
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in (h, w))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"Expected {name} to be a positive integer or a (height, width) pair. "
                         f"Received: {name}={value!r}")
    return int(h), int(w)


def _mask_decoder(classes: ClassInfo, kinds: set):
    """Builds the in-graph mask decoder for the mask kinds present in the split."""
    import tensorflow as tf

    table = None
    if _MASK_RGB in kinds:
        codes = [r * 65536 + g * 256 + b for r, g, b in classes.colors]
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(codes, tf.int64),
                                                tf.range(classes.num_classes, dtype=tf.int64)),
            default_value=classes.ignore_label)

    def decode(raw, kind, prefix, offset, scale):
        def index():
            return tf.io.decode_png(raw, channels=1)[..., 0]

        def palette():
            # The same image data behind a greyscale header: libpng then returns the palette indices.
            return tf.io.decode_png(prefix + tf.strings.substr(raw, offset, -1), channels=1)[..., 0]

        def rgb():
            pixels = tf.cast(tf.io.decode_png(raw, channels=3), tf.int64)
            codes = pixels[..., 0] * 65536 + pixels[..., 1] * 256 + pixels[..., 2]
            return tf.cast(table.lookup(codes), tf.uint8)

        branches = {_MASK_INDEX: index, _MASK_PALETTE: palette, _MASK_RGB: rgb}
        if len(kinds) == 1:
            label = branches[next(iter(kinds))]()
        else:
            label = tf.switch_case(kind, [branches.get(k, index) for k in range(3)])
        return label // tf.cast(scale, tf.uint8)

    return decode


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
    from kerasseg.data.pipeline import identity_lookup, make_dataset

    classes = read_classes(root)
    pairs, formats = _scan(root, split, check_sizes=check_sizes, classes=classes)
    return make_dataset(pairs, classes, lookup=identity_lookup(classes), formats=formats, batch_size=batch_size,
                        crop_size=crop_size, augment=augment, shuffle=shuffle, normalization=normalization, seed=seed,
                        repeat=repeat, drop_remainder=drop_remainder, cache=cache, scale_range=scale_range, **kw)
