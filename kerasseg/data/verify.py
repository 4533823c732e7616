"""Full-decode checks of a dataset split: what `tools/verify_dataset.py` reports.

Unlike the pipeline, which reads headers while listing and fails on the first bad example, `verify_dataset` decodes
every image and label, keeps going, and collects every problem with the file it concerns, plus counts and the class
histogram, so a whole dataset can be checked once before training.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os

import numpy as np

__all__ = ["DatasetReport", "verify_dataset", "read_label"]


@dataclasses.dataclass
class DatasetReport:
    """The outcome of `verify_dataset`.

    Attributes:
        format: dataset format.
        root: dataset folder.
        split: split name.
        class_names: names of the classes.
        num_pairs: number of (image, label) pairs listed.
        errors: ``(path, message)`` of every problem (listing, unreadable or truncated files, size mismatches,
            unexpected label values).
        histogram: pixel count per class after label mapping.
        ignored_pixels: pixels mapped to the ignore label.
        unexpected_values: ``{stored value: pixel count}`` of values that are neither a class nor ignored.
        sizes: ``{(height, width): number of images}``.
    """

    format: str
    root: str
    split: str
    class_names: tuple = ()
    num_pairs: int = 0
    errors: list = dataclasses.field(default_factory=list)
    histogram: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    ignored_pixels: int = 0
    unexpected_values: dict = dataclasses.field(default_factory=dict)
    sizes: dict = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def frequencies(self) -> np.ndarray:
        """Fraction of labelled-or-ignored pixels per class (the ignore label counts in the denominator)."""
        total = int(self.histogram.sum()) + self.ignored_pixels
        return self.histogram / total if total else np.zeros(len(self.histogram))

    def to_dict(self) -> dict:
        """JSON-ready: counts, errors, the histogram by class name and the sizes as ``"HxW"``."""
        return {"split": self.split, "pairs": self.num_pairs, "errors": [list(e) for e in self.errors],
                "histogram": dict(zip(self.class_names, self.histogram.tolist())),
                "ignored_pixels": int(self.ignored_pixels),
                "unexpected_values": {str(k): int(v) for k, v in self.unexpected_values.items()},
                "sizes": {f"{h}x{w}": int(n) for (h, w), n in self.sizes.items()}}

    def format_text(self) -> str:
        lines = [f"{self.format} dataset {self.root!r}, split {self.split!r}: {self.num_pairs} pairs"]
        if self.sizes:
            sizes = ", ".join(f"{h}x{w}: {n}" for (h, w), n in sorted(self.sizes.items(), key=lambda kv: -kv[1])[:5])
            lines.append(f"image sizes (HxW): {sizes}{' ...' if len(self.sizes) > 5 else ''}")
        total = int(self.histogram.sum()) + self.ignored_pixels
        if total:
            lines.append("class histogram (pixels, % of all):")
            width = max(len(n) for n in self.class_names)
            for i, name in enumerate(self.class_names):
                lines.append(f"  {i:3d} {name:<{width}} {int(self.histogram[i]):>14,d} "
                             f"{100.0 * self.histogram[i] / total:6.2f} %")
            lines.append(f"  ign {'(ignore)':<{width}} {self.ignored_pixels:>14,d} "
                         f"{100.0 * self.ignored_pixels / total:6.2f} %")
        if self.unexpected_values:
            lines.append(f"unexpected label values (value: pixels): {dict(sorted(self.unexpected_values.items()))}")
        if self.errors:
            lines.append(f"{len(self.errors)} error(s):")
            lines += [f"  {path}: {message}" for path, message in self.errors[:50]]
            if len(self.errors) > 50:
                lines.append(f"  ... and {len(self.errors) - 50} more")
        else:
            lines.append("no errors")
        return "\n".join(lines)


def read_label(path: str, colors=None) -> np.ndarray:
    """Decodes a label PNG to stored values: palette PNGs as indices, RGB PNGs through ``colors`` (else 255).

    Raises:
        ValueError: an unreadable or truncated file, or an RGB label without ``colors``; the message names the file.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            array = np.asarray(im)
    except (OSError, SyntaxError) as e:
        raise ValueError(f"Expected a readable label PNG. Received: {path!r} ({e})") from None
    if mode in ("RGB", "RGBA"):
        if colors is None:
            raise ValueError(f"Expected a single-channel label. Received: RGB label {path!r} without class colours")
        codes = array[..., 0].astype(np.int64) * 65536 + array[..., 1].astype(np.int64) * 256 + array[..., 2]
        out = np.full(codes.shape, 255, np.uint8)
        for i, (r, g, b) in enumerate(colors):
            out[codes == r * 65536 + g * 256 + b] = i
        return out
    if mode == "LA":
        array = array[..., 0]
    if mode.startswith("I") and array.size and array.max() > 255:
        raise ValueError(f"Expected 8-bit label values. Received: {path!r} with values up to {array.max()}")
    return array.astype(np.uint8)


def _check_pair(image_path: str, label_path: str, colors, lookup: np.ndarray, num_classes: int):
    from PIL import Image

    errors = []
    size = None
    try:
        with Image.open(image_path) as im:
            im.load()
            size = (im.height, im.width)
    except (OSError, SyntaxError) as e:
        errors.append((image_path, f"unreadable or truncated image ({e})"))
    try:
        stored = read_label(label_path, colors)
    except ValueError as e:
        errors.append((label_path, str(e)))
        return errors, size, None, None
    if size is not None and stored.shape != size:
        errors.append((label_path, f"size mismatch: label is {stored.shape[0]}x{stored.shape[1]}, image "
                                   f"{image_path!r} is {size[0]}x{size[1]} (height x width)"))
    counts = np.bincount(stored.ravel(), minlength=256)
    mapped = lookup.astype(np.int64)
    class_counts = np.zeros(num_classes + 1, np.int64)  # the last slot gathers the ignored pixels
    unexpected = {}
    for value in np.nonzero(counts)[0]:
        target = mapped[value]
        if target < 0:
            unexpected[int(value)] = int(counts[value])
        elif target < num_classes:
            class_counts[target] += counts[value]
        else:
            class_counts[num_classes] += counts[value]
    if unexpected:
        errors.append((label_path, f"label values outside the classes that are not ignored: "
                                   f"{sorted(unexpected)}"))
    return errors, size, class_counts, unexpected


def verify_dataset(format: str, root, split: str, *, workers: int = 4, **options) -> DatasetReport:
    """Decodes every image and label of a split and reports counts, problems and the class histogram.

    Args:
        format: a dataset format (`kerasseg.data.formats.FORMAT_NAMES`).
        root: dataset folder.
        split: split name.
        workers: decoding threads.
        **options: the format's listing options (see `kerasseg.data.formats.resolve`).

    Returns:
        A `DatasetReport`; ``report.ok`` is False when anything is wrong. Listing problems (a missing partner file,
        an empty split, a missing folder) are reported as one error, since the split cannot be listed further.
    """
    from kerasseg.data.formats import resolve

    report = DatasetReport(format, os.fspath(root), split)
    try:
        spec = resolve(format, root, split, check_sizes=False, **options)
    except (ValueError, FileNotFoundError) as e:
        report.errors.append((os.fspath(root), str(e)))
        return report
    classes = spec.classes
    report.class_names = classes.names
    report.num_pairs = len(spec.pairs)
    report.histogram = np.zeros(classes.num_classes, np.int64)
    sizes = collections.Counter()
    unexpected = collections.Counter()
    with concurrent.futures.ThreadPoolExecutor(max(1, int(workers))) as pool:
        results = pool.map(lambda p: _check_pair(p[0], p[1], classes.colors, spec.lookup, classes.num_classes),
                           spec.pairs)
        for errors, size, class_counts, values in results:
            report.errors += errors
            if size is not None:
                sizes[size] += 1
            if class_counts is not None:
                report.histogram += class_counts[:-1]
                report.ignored_pixels += int(class_counts[-1])
                unexpected.update(values)
    report.sizes = dict(sizes)
    report.unexpected_values = dict(unexpected)
    return report
