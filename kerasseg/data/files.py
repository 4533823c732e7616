"""The data core every dataset format shares: class lists, file listing, file headers and mask decoding.

Class semantics live in `ClassInfo` (``classes.json`` of the folder layout, see `kerasseg.data.folder`). Listing reads
only file headers: image sizes (`image_size`) and how each mask's pixels become labels (`mask_format`); the pixels
are decoded later, inside the tf.data pipeline, by `mask_decoder`. `normalization_constants` and `size_pair`
check the pipeline arguments every format passes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import zlib
from typing import Sequence

import numpy as np

from kerasseg import preprocessing
from kerasseg.preprocessing import IGNORE_LABEL, NORMALIZATIONS
from kerasseg.saving import atomic_path

__all__ = ["ClassInfo", "read_classes", "write_classes", "CLASSES_FILE", "IMAGE_EXTENSIONS", "MASK_EXTENSION",
           "MaskFormat", "MASK_INDEX", "MASK_PALETTE", "MASK_RGB", "png_chunks", "mask_format", "image_size",
           "check_same_size", "check_split_name", "check_split_folders", "existing_pairs", "split_dirs",
           "visible_files", "scan_folder", "normalization_constants", "size_pair", "mask_decoder"]

CLASSES_FILE = "classes.json"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MASK_EXTENSION = ".png"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# How a mask's pixels become labels (see mask_decoder).
MASK_INDEX, MASK_PALETTE, MASK_RGB = 0, 1, 2


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
    if not isinstance(info, ClassInfo):
        raise ValueError(f"Expected a ClassInfo. Received: info={info!r}")
    path = os.path.join(os.fspath(root), CLASSES_FILE)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(info.to_dict(), f, indent=2)
            f.write("\n")
    return path


# --------------------------------------------------------------------------------------------------------------------
# Listing and file headers


@dataclasses.dataclass(frozen=True)
class MaskFormat:
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


def png_chunks(path: str, limit: bytes = b"IDAT"):
    """Yields ``(offset, type, data)`` of the chunks of a PNG file up to (including) the first ``limit`` chunk."""
    with open(path, "rb") as f:
        if f.read(8) != PNG_SIGNATURE:
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


def mask_format(path: str, classes: ClassInfo) -> MaskFormat:
    """How the pixels of the mask PNG at ``path`` become labels, from its header (RGB masks need ``classes.colors``)."""
    chunks = iter(png_chunks(path))
    _, ctype, ihdr = next(chunks)
    if ctype != b"IHDR" or len(ihdr) != 13:
        raise ValueError(f"Expected a PNG file starting with an IHDR chunk. Received: {path!r}")
    width, height, depth, color_type = struct.unpack(">IIBB", ihdr[:10])
    if depth == 16:
        raise ValueError(f"Expected an 8-bit (or 1/2/4-bit) mask PNG. Received: {path!r} with 16-bit samples")
    scale = 255 // (2 ** depth - 1) if depth < 8 else 1
    if color_type in (0, 4):  # greyscale (with alpha): the grey value is the label
        return MaskFormat(MASK_INDEX, width, height, scale=scale)
    if color_type == 3:
        data_offset = next(off for off, t, _ in chunks if t == b"IDAT")
        grey = ihdr[:9] + b"\x00" + ihdr[10:]
        header = struct.pack(">I", 13) + b"IHDR" + grey + struct.pack(">I", zlib.crc32(b"IHDR" + grey))
        return MaskFormat(MASK_PALETTE, width, height, PNG_SIGNATURE + header, data_offset, scale)
    if color_type in (2, 6):
        if classes.colors is None:
            raise ValueError(f"Expected single-channel index masks, since {CLASSES_FILE} lists no colors. "
                             f"Received: RGB mask {path!r}")
        return MaskFormat(MASK_RGB, width, height)
    raise ValueError(f"Expected a greyscale, palette or RGB mask PNG. Received: {path!r} with colour type "
                     f"{color_type}")


def image_size(path: str) -> tuple[int, int]:
    """``(width, height)`` from the file header, without decoding the pixels."""
    if path.lower().endswith(".png"):
        _, ctype, ihdr = next(iter(png_chunks(path)))
        if ctype != b"IHDR":
            raise ValueError(f"Expected a PNG file starting with an IHDR chunk. Received: {path!r}")
        return struct.unpack(">II", ihdr[:8])
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"Expected a readable JPEG image. Received: {path!r} ({e})") from None


def check_same_size(image_path: str, mask_path: str, fmt: MaskFormat, what: str = "mask") -> None:
    """Compares an image's size, read from its header, with that of its mask (``fmt``); ``what`` names the mask."""
    size = tuple(image_size(image_path))
    if size != (fmt.width, fmt.height):
        raise ValueError(f"Expected image and {what} of the same size. Received: {image_path!r} is "
                         f"{size[1]}x{size[0]}, {mask_path!r} is {fmt.height}x{fmt.width} (height x width)")


def check_split_name(split) -> str:
    """Returns ``split`` if it can name a folder inside the dataset root (no path separator, not ``.`` / ``..``)."""
    if not isinstance(split, str) or not split or os.sep in split or split in (".", ".."):
        raise ValueError(f"Expected split to be a folder name such as 'train' or 'val'. Received: split={split!r}")
    return split


def check_split_folders(root: str, split: str, *folders: str) -> None:
    """Raises ``ValueError`` naming the first of ``folders`` (the split's image and label folders) that is missing."""
    for folder in folders:
        if not os.path.isdir(folder):
            raise ValueError(f"Expected a folder {folder!r} for split {split!r}. Received: root={root!r} without it")


def existing_pairs(pairs, list_file: str | None = None) -> list[tuple[str, str]]:
    """``pairs`` as a list, after checking that every image and label exists; ``list_file`` is where they are listed.

    Raises:
        ValueError: a missing image or label (named).
    """
    listed = f" listed in {list_file!r}" if list_file else ""
    for image, label in pairs:
        if not os.path.isfile(image):
            raise ValueError(f"Expected an image {image!r}{listed}. Received: no such file")
        if not os.path.isfile(label):
            raise ValueError(f"Expected a label {label!r} for image {image!r}. Received: no such file")
    return list(pairs)


def split_dirs(root: str, split: str) -> tuple[str, str]:
    """``(root/images/split, root/masks/split)`` of the folder layout, after checking ``split`` is a folder name."""
    check_split_name(split)
    return os.path.join(root, "images", split), os.path.join(root, "masks", split)


def visible_files(folder: str) -> list[str]:
    """Sorted names of the regular, non-hidden files in ``folder``."""
    return sorted(f for f in os.listdir(folder) if not f.startswith(".") and os.path.isfile(os.path.join(folder, f)))


def scan_folder(root, split: str, *, check_sizes: bool = True, classes: ClassInfo | None = None):
    """Pairs images and masks of a split of the folder layout; returns ``(pairs, mask formats)``.

    ``classes`` defaults to ``read_classes(root)``; see `kerasseg.data.folder.list_pairs` for the errors.
    """
    root = os.fspath(root)
    image_dir, mask_dir = split_dirs(root, split)
    check_split_folders(root, split, image_dir, mask_dir)
    classes = classes if classes is not None else read_classes(root)

    images = {}
    for name in visible_files(image_dir):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_EXTENSIONS:
            continue
        if stem in images:
            raise ValueError(f"Expected one image per name. Received: {os.path.join(image_dir, images[stem])!r} and "
                             f"{os.path.join(image_dir, name)!r}")
        images[stem] = name
    masks = {os.path.splitext(n)[0]: n for n in visible_files(mask_dir) if n.lower().endswith(MASK_EXTENSION)}
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
        fmt = mask_format(mask_path, classes)
        if check_sizes:
            check_same_size(image_path, mask_path, fmt)
        pairs.append((image_path, mask_path))
        formats.append(fmt)
    return pairs, formats


# --------------------------------------------------------------------------------------------------------------------
# Pipeline constants


def normalization_constants(normalization):
    """``(mean, std)`` float32 arrays of a name in `NORMALIZATIONS` or of an explicit ``(mean, std)`` pair."""
    if isinstance(normalization, str):
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"Unknown normalization. Expected one of {sorted(NORMALIZATIONS)} or a (mean, std) pair. "
                             f"Received: normalization={normalization!r}")
        return preprocessing.normalization_constants(normalization)
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


def size_pair(value, name: str):
    """``(height, width)`` of a positive int or pair argument named ``name``; ``None`` stays ``None``."""
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


def mask_decoder(classes: ClassInfo, kinds: set):
    """Builds the in-graph mask decoder for the mask kinds present in the split."""
    import tensorflow as tf

    table = None
    if MASK_RGB in kinds:
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

        branches = {MASK_INDEX: index, MASK_PALETTE: palette, MASK_RGB: rgb}
        if len(kinds) == 1:
            label = branches[next(iter(kinds))]()
        else:
            label = tf.switch_case(kind, [branches.get(k, index) for k in range(3)])
        return label // tf.cast(scale, tf.uint8)

    return decode
