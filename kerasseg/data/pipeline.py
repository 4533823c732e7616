"""The one tf.data pipeline that every dataset format feeds.

A format module lists ``(image_path, label_path)`` pairs, says what the classes are (`ClassInfo`) and how stored
label values become class indices (a 256-entry lookup table, see `label_lookup`); `make_dataset` does the rest:

    file list → (shuffle) → parallel decode + label lookup + checks → (cache) → joint geometric augmentation →
    photometric distortion → normalise → batch → prefetch

The lookup table is applied in the graph with ``tf.gather``, so mapping Cityscapes label ids to train ids, ADE20K's
1..150 to 0..149 or CamVid's void to the ignore label costs one gather per pixel. Table entries of ``-1`` mark stored
values that no class or ignore value may have: ``label_check`` decides whether they stop the pipeline (naming the
file), are counted in a printed warning and ignored, or are silently ignored.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import numpy as np

from kerasseg.data.files import (ClassInfo, check_same_size, mask_decoder, mask_format, normalization_constants,
                                 size_pair)
from kerasseg.preprocessing import ModelMetadata

__all__ = ["make_dataset", "label_lookup", "identity_lookup", "check_pairs", "LABEL_CHECKS", "INVALID"]

LABEL_CHECKS = ("error", "warn", "off")
# Lookup-table value of a stored label value that is neither a class nor the ignore label.
INVALID = -1


def label_lookup(mapping: dict, ignore_label: int = 255, *, ignore_values: Sequence[int] = ()) -> np.ndarray:
    """A 256-entry int32 lookup table from stored label values to class indices.

    Args:
        mapping: ``{stored value: class index}``.
        ignore_label: the class index written for ``ignore_values`` (and for the ignore label itself, which always
            maps to itself unless ``mapping`` says otherwise).
        ignore_values: stored values that mean "not labelled".

    Returns:
        ``(256,)`` int32 array; values that are neither in ``mapping`` nor ignored are `INVALID`.
    """
    table = np.full(256, INVALID, np.int32)
    table[int(ignore_label)] = int(ignore_label)
    for value in ignore_values:
        table[int(value)] = int(ignore_label)
    for value, index in mapping.items():
        table[int(value)] = int(index)
    return table


def identity_lookup(classes: ClassInfo) -> np.ndarray:
    """The lookup table of labels stored as class indices: ``0..C-1`` and the ignore label map to themselves."""
    return label_lookup({i: i for i in range(classes.num_classes)}, classes.ignore_label)


def _check_complete(path: str) -> None:
    """Catches truncated PNG / JPEG files at listing time from their last bytes, naming the file."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(size - 64, 0))
            tail = f.read()
    except OSError as e:
        raise ValueError(f"Expected a readable file. Received: {path!r} ({e.strerror})") from None
    if head.startswith(b"\x89PNG"):
        ok = tail.endswith(b"IEND\xaeB`\x82")
    elif head.startswith(b"\xff\xd8"):
        # Some writers append padding or metadata after the end-of-image marker: look for it near the end.
        ok = b"\xff\xd9" in tail
    else:
        raise ValueError(f"Expected a PNG or JPEG file. Received: {path!r}, which is neither (size {size} bytes)")
    if not ok:
        raise ValueError(f"Expected a complete image file. Received: {path!r}, which is truncated (no end marker)")


def check_pairs(pairs, classes: ClassInfo, *, check_sizes: bool = True, check_files: bool = True):
    """Validates the files of ``pairs`` from their headers and returns their mask formats.

    Raises:
        ValueError: an empty list, a missing, unreadable or truncated file, or an image and label of different
            sizes; the message names the file.
    """
    if not pairs:
        raise ValueError("Expected at least one (image, label) pair. Received: an empty split")
    formats = []
    for image_path, label_path in pairs:
        for path in (image_path, label_path):
            if not os.path.isfile(path):
                raise ValueError(f"Expected the file {path!r} (partner of "
                                 f"{label_path if path == image_path else image_path!r}). Received: no such file")
            if check_files:
                _check_complete(path)
        fmt = mask_format(label_path, classes)
        if check_sizes:
            check_same_size(image_path, label_path, fmt, "label")
        formats.append(fmt)
    return formats


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Expected {name} to be a positive integer. Received: {name}={value!r}")
    return int(value)


def make_dataset(pairs, classes: ClassInfo, *, batch_size: int, lookup=None, crop_size=None, augment: bool = False,
                 shuffle=None, normalization="imagenet", seed: int | None = None, deterministic: bool = False,
                 repeat: bool = False, drop_remainder=None, cache=False, scale_range=None, flip: bool = True,
                 photometric: bool = False, blur: bool = False, label_check: str = "error",
                 check_sizes: bool = True, formats=None):
    """A batched ``(image, label)`` tf.data pipeline over a list of file pairs.

    Args:
        pairs: ``(image_path, label_path)`` pairs; images PNG/JPEG, labels single-channel or palette PNGs (palette
            PNGs are read as their indices) or RGB PNGs mapped through ``classes.colors``.
        classes: the label semantics.
        batch_size: examples per batch.
        lookup: 256-entry table from stored label values to class indices (`label_lookup`); the identity
            (`identity_lookup`) when ``None``.
        crop_size: ``(height, width)`` (or one int). With ``augment`` a random crop, otherwise a centre crop;
            smaller images are padded (images with the normalisation mean, labels with the ignore label). ``None``
            keeps full-size images and labels (the validation setting; then a split with several sizes needs
            ``batch_size=1``).
        augment: random scale (``scale_range``), random crop (``crop_size``) and horizontal flip (``flip``),
            applied identically to image and label; labels are resized with nearest neighbour only.
        shuffle: shuffle each epoch; defaults to ``augment``.
        normalization: a name in `kerasseg.preprocessing.NORMALIZATIONS` (``"imagenet"`` mean/std,
            ``"symmetric"`` for [-1, 1]), an explicit ``(mean, std)`` pair in pixel units, or a kerasseg model (or
            its `kerasseg.preprocessing.ModelMetadata`), whose recorded mean / std are used.
        seed: seeds shuffling and augmentation (stateless ops), so a run gives the same batches every time.
        deterministic: reproducible runs: keeps the element order of parallel maps fixed and uses ``seed`` (0 when
            ``None``). Without it, a shuffled pipeline without ``seed`` lets parallel maps reorder elements for
            throughput; unshuffled pipelines always keep the file order.
        repeat: repeat indefinitely.
        drop_remainder: drop the last incomplete batch; defaults to ``augment``.
        cache: ``True`` caches decoded images in memory, a string caches them in that file.
        scale_range: ``(min, max)`` random scale factors with ``augment``, e.g. ``(0.5, 2.0)``.
        flip: random horizontal flip with ``augment``.
        photometric: random brightness, contrast, saturation and hue on the image only (with ``augment``).
        blur: also a random Gaussian blur (with ``photometric``).
        label_check: stored label values that are neither a class nor ignored: ``"error"`` fails naming the file,
            ``"warn"`` prints the file and the pixel count and ignores them, ``"off"`` ignores them silently.
        check_sizes: compare image and label sizes from the file headers while listing.
        formats: mask formats of ``pairs`` from `check_pairs`, when the caller has already checked them.

    Returns:
        ``tf.data.Dataset`` of ``(image float32 (B, H, W, 3), label int32 (B, H, W))``.

    Raises:
        ValueError: invalid arguments or files (the message names the argument or file).
    """
    import tensorflow as tf

    from kerasseg.data import augment as aug

    batch_size = _positive_int("batch_size", batch_size)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ValueError(f"Expected seed to be an integer or None. Received: seed={seed!r}")
    if label_check not in LABEL_CHECKS:
        raise ValueError(f"Expected label_check to be one of {list(LABEL_CHECKS)}. "
                         f"Received: label_check={label_check!r}")
    if not isinstance(classes, ClassInfo):
        raise ValueError(f"Expected classes to be a ClassInfo. Received: classes={classes!r}")
    crop = size_pair(crop_size, "crop_size")
    # A model (or its metadata) brings the mean / std it was built with, so training matches export and device.
    metadata = getattr(normalization, "kerasseg_metadata", normalization)
    if isinstance(metadata, ModelMetadata):
        normalization = (metadata.mean, metadata.std)
    mean, std = normalization_constants(normalization)
    if scale_range is not None:
        scale_range = aug.check_scale_range(scale_range)
        if not augment:
            raise ValueError(f"Expected scale_range only together with augment=True. Received: "
                             f"scale_range={scale_range!r}, augment={augment!r}")
        if crop is None and batch_size > 1:
            raise ValueError(f"Expected crop_size with scale_range when batch_size > 1 (scaled images differ in "
                             f"size). Received: crop_size=None, scale_range={scale_range!r}, batch_size={batch_size}")
    if blur and not photometric:
        raise ValueError(f"Expected blur only together with photometric=True. Received: blur={blur!r}, "
                         f"photometric={photometric!r}")
    if lookup is None:
        lookup = identity_lookup(classes)
    lookup = np.asarray(lookup)
    if lookup.shape != (256,) or not np.issubdtype(lookup.dtype, np.integer):
        raise ValueError(f"Expected lookup to be a 256-entry integer table. Received: lookup of shape "
                         f"{lookup.shape} and dtype {lookup.dtype}")
    targets = set(np.unique(lookup).tolist()) - set(range(classes.num_classes)) - {INVALID, classes.ignore_label}
    if targets:
        raise ValueError(f"Expected lookup values to be classes 0..{classes.num_classes - 1}, the ignore label "
                         f"{classes.ignore_label} or {INVALID}. Received: lookup values {sorted(targets)[:8]}")
    if deterministic and seed is None:
        seed = 0
    shuffle = bool(augment) if shuffle is None else bool(shuffle)
    drop_remainder = bool(augment) if drop_remainder is None else bool(drop_remainder)

    pairs = [(os.fspath(a), os.fspath(b)) for a, b in pairs]
    if formats is None:
        formats = check_pairs(pairs, classes, check_sizes=check_sizes)
    else:
        for image_path, label_path in pairs:
            _check_complete(image_path)
            _check_complete(label_path)
    sizes = {(f.height, f.width) for f in formats}
    if crop is None and batch_size > 1 and len(sizes) > 1:
        raise ValueError(f"Expected all images to share one size to batch them without crop_size. Received: sizes "
                         f"{sorted(sizes)[:4]}{'...' if len(sizes) > 4 else ''} (height, width) with "
                         f"batch_size={batch_size}")
    shape = next(iter(sizes)) if len(sizes) == 1 else None

    records = {
        "image": [p[0] for p in pairs],
        "mask": [p[1] for p in pairs],
        "kind": np.array([f.kind for f in formats], np.int32),
        "prefix": [f.prefix for f in formats],
        "offset": np.array([f.data_offset for f in formats], np.int32),
        "scale": np.array([f.scale for f in formats], np.int32),
    }
    decode_mask = mask_decoder(classes, {f.kind for f in formats})
    table = tf.constant(lookup.astype(np.int32))
    ignore = classes.ignore_label
    num_classes = classes.num_classes

    @tf.autograph.experimental.do_not_convert
    def decode(r):
        image = tf.io.decode_image(tf.io.read_file(r["image"]), channels=3, dtype=tf.uint8, expand_animations=False)
        stored = decode_mask(tf.io.read_file(r["mask"]), r["kind"], r["prefix"], r["offset"], r["scale"])
        label = tf.gather(table, tf.cast(stored, tf.int32))
        same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(label)[:2]))
        checks = [tf.debugging.Assert(same_size, ["Expected image and label of the same size. Received:", r["image"],
                                                  tf.shape(image)[:2], r["mask"], tf.shape(label)[:2]])]
        invalid = tf.equal(label, INVALID)
        if label_check == "error":
            checks.append(tf.debugging.Assert(
                tf.logical_not(tf.reduce_any(invalid)),
                ["Expected label values that are classes 0..", num_classes - 1, "or the ignore label", ignore,
                 "after mapping. Received other values in", r["mask"], ":", tf.boolean_mask(stored, invalid)[:8]],
                summarize=8))
        elif label_check == "warn":
            count = tf.reduce_sum(tf.cast(invalid, tf.int32))

            def warn():
                with tf.control_dependencies([tf.print("Warning: ignoring", count, "pixels with label values "
                                                       "outside the classes in", r["mask"], output_stream=sys.stderr)]):
                    return tf.constant(True)

            checks.append(tf.cond(count > 0, warn, lambda: tf.constant(False)))
        with tf.control_dependencies(checks):
            image = tf.identity(image)
            label = tf.where(invalid, ignore, label)
        if shape is not None:
            image.set_shape((*shape, 3))
            label.set_shape(shape)
        return image, label

    # The mapped functions use explicit tf.cond and Python-level options only, hence do_not_convert: AutoGraph
    # would have nothing to rewrite.
    autotune = tf.data.AUTOTUNE
    files = tf.data.Dataset.from_tensor_slices(records)
    n = len(pairs)
    if cache is not False and cache is not None:
        # Cache the decoded uint8 examples, then shuffle after the cache so each epoch sees a new order.
        ds = files.map(decode, num_parallel_calls=autotune).cache(cache if isinstance(cache, str) else "")
        if shuffle:
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
    else:
        # Shuffling file names before decoding is cheap and keeps no images in a buffer.
        if shuffle:
            files = files.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            files = files.repeat()
        ds = files.map(decode, num_parallel_calls=autotune)

    pad_value = tf.constant(mean)
    if augment:
        # One stateless seed pair per example, from a seeded stream that changes every epoch.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        @tf.autograph.experimental.do_not_convert
        def transform(example, pair_seed):
            image, label = example
            geometric_seed, photometric_seed = tf.unstack(tf.random.experimental.stateless_split(pair_seed, 2))
            image, label = aug.augment_pair(tf.cast(image, tf.float32), label, geometric_seed, crop_size=crop,
                                            scale_range=scale_range, flip=flip, image_value=pad_value,
                                            ignore_label=ignore)
            if photometric:
                image = aug.photometric_distort(image, photometric_seed, blur=blur)
            return image, label

        ds = tf.data.Dataset.zip((ds, seeds)).map(transform, num_parallel_calls=autotune)
    elif crop is not None:
        ds = ds.map(lambda image, label: aug.center_crop(tf.cast(image, tf.float32), label, crop,
                                                         image_value=pad_value, ignore_label=ignore),
                    num_parallel_calls=autotune)

    @tf.autograph.experimental.do_not_convert
    def finish(image, label):
        return (tf.cast(image, tf.float32) - mean) / std, tf.cast(label, tf.int32)

    ds = ds.map(finish, num_parallel_calls=autotune)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(autotune)
    options = tf.data.Options()
    # Out-of-order parallel maps are faster, but only harmless when the order is random anyway.
    options.deterministic = bool(deterministic or seed is not None or not shuffle)
    return ds.with_options(options)
