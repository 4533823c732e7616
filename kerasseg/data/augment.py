"""Joint geometric augmentation of an image and its label map.

Every transform receives the image (float32 ``(H, W, C)``, pixel units) and the label (integer ``(H, W)``) and moves
both identically; labels are only ever resized with nearest neighbour, so no label value is invented. Random
transforms are stateless: they take a ``seed`` tensor of shape ``(2,)``, so a seeded pipeline gives the same batches
on every run.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["random_flip", "random_scale", "pad_to_size", "random_crop", "center_crop", "augment_pair",
           "check_scale_range", "photometric_distort", "random_scale_crop"]


def check_scale_range(scale_range) -> tuple[float, float]:
    """Validates ``(min, max)`` scale factors with ``0 < min <= max``."""
    try:
        lo, hi = (float(v) for v in scale_range)
    except (TypeError, ValueError):
        lo = hi = None
    if lo is None or not 0 < lo <= hi:
        raise ValueError(f"Expected scale_range to be (min, max) with 0 < min <= max. "
                         f"Received: scale_range={scale_range!r}")
    return lo, hi


def random_flip(image, label, seed):
    """Mirrors image and label left-right with probability 1/2."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return (tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image),
            tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label))


def random_scale(image, label, seed, scale_range):
    """Resizes by one factor drawn uniformly from ``scale_range``: image bilinear, label nearest neighbour."""
    lo, hi = check_scale_range(scale_range)
    factor = tf.random.stateless_uniform([], seed, minval=lo, maxval=hi)
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    size = tf.maximum(tf.cast(tf.round(hw * factor), tf.int32), 1)
    image = tf.image.resize(image, size, method="bilinear")
    label = tf.image.resize(label[..., None], size, method="nearest")[..., 0]
    return image, label


def pad_to_size(image, label, size, *, image_value=0.0, ignore_label: int = 255):
    """Pads image and label at the bottom and right to at least ``size`` ``(height, width)``.

    The image is padded with ``image_value`` (a scalar or one value per channel, e.g. the normalisation mean, which
    normalises to zero) and the label with ``ignore_label``, so padded pixels are never scored.
    """
    shape = tf.shape(image)
    pad_h = tf.maximum(size[0] - shape[0], 0)
    pad_w = tf.maximum(size[1] - shape[1], 0)
    paddings = [[0, pad_h], [0, pad_w]]
    value = tf.cast(image_value, image.dtype)
    # tf.pad takes one scalar for all channels: pad with zeros, then add the per-channel value on the padded
    # pixels only (adding zero elsewhere leaves the original pixels bit-exact).
    outside = tf.pad(tf.zeros_like(image[..., :1]), paddings + [[0, 0]], constant_values=1)
    image = tf.pad(image, paddings + [[0, 0]]) + outside * value
    label = tf.pad(label, paddings, constant_values=tf.cast(ignore_label, label.dtype))
    return image, label


def _crop(image, label, top, left, size):
    image = image[top:top + size[0], left:left + size[1]]
    label = label[top:top + size[0], left:left + size[1]]
    image.set_shape((size[0], size[1], image.shape[-1]))
    label.set_shape((size[0], size[1]))
    return image, label


def random_crop(image, label, size, seed, *, image_value=0.0, ignore_label: int = 255):
    """Pads (see `pad_to_size`) then crops the same random ``size`` window from image and label."""
    image, label = pad_to_size(image, label, size, image_value=image_value, ignore_label=ignore_label)
    shape = tf.shape(image)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    top = tf.random.stateless_uniform([], seeds[0], maxval=shape[0] - size[0] + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], seeds[1], maxval=shape[1] - size[1] + 1, dtype=tf.int32)
    return _crop(image, label, top, left, size)


def center_crop(image, label, size, *, image_value=0.0, ignore_label: int = 255):
    """Pads (see `pad_to_size`) then crops the central ``size`` window: the deterministic evaluation crop."""
    image, label = pad_to_size(image, label, size, image_value=image_value, ignore_label=ignore_label)
    shape = tf.shape(image)
    return _crop(image, label, (shape[0] - size[0]) // 2, (shape[1] - size[1]) // 2, size)


def augment_pair(image, label, seed, *, crop_size=None, scale_range=None, flip: bool = True, image_value=0.0,
                 ignore_label: int = 255):
    """Random scale (optional), random crop (optional), random horizontal flip, in that order.

    Args:
        image: float ``(H, W, C)`` tensor in pixel units.
        label: integer ``(H, W)`` tensor.
        seed: ``(2,)`` integer tensor; the same seed gives the same transform.
        crop_size: ``(height, width)`` of the output, or ``None`` to keep the size.
        scale_range: ``(min, max)`` scale factors, or ``None`` for no scaling.
        flip: random horizontal flip.
        image_value: image padding value (per channel or scalar).
        ignore_label: label padding value.

    Returns:
        The transformed ``(image, label)``.
    """
    scale_seed, crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    if scale_range is not None and crop_size is not None:
        # The same transform as the two steps below, resizing only the pixels the crop keeps.
        image, label = random_scale_crop(image, label, scale_seed, crop_seed, scale_range, crop_size,
                                         image_value=image_value, ignore_label=ignore_label)
    else:
        if scale_range is not None:
            image, label = random_scale(image, label, scale_seed, scale_range)
        if crop_size is not None:
            image, label = random_crop(image, label, crop_size, crop_seed, image_value=image_value,
                                       ignore_label=ignore_label)
    if flip:
        image, label = random_flip(image, label, flip_seed)
    return image, label


def _gaussian_blur(image, sigma):
    """Blurs with a 5x5 Gaussian of standard deviation ``sigma``, reflecting at the borders (no dark frame)."""
    x = tf.range(-2.0, 3.0)
    kernel = tf.exp(-0.5 * tf.square(x / sigma))
    kernel = kernel / tf.reduce_sum(kernel)
    channels = tf.shape(image)[-1]
    # Separable: one horizontal and one vertical depthwise pass.
    horizontal = tf.tile(tf.reshape(kernel, [1, 5, 1, 1]), [1, 1, channels, 1])
    vertical = tf.tile(tf.reshape(kernel, [5, 1, 1, 1]), [1, 1, channels, 1])
    padded = tf.pad(image[None], [[0, 0], [2, 2], [2, 2], [0, 0]], mode="REFLECT")
    out = tf.nn.depthwise_conv2d(padded, horizontal, [1, 1, 1, 1], "VALID")
    out = tf.nn.depthwise_conv2d(out, vertical, [1, 1, 1, 1], "VALID")
    return out[0]


def photometric_distort(image, seed, *, brightness: float = 32.0, contrast=(0.5, 1.5), saturation=(0.5, 1.5),
                        hue: float = 18.0, blur: bool = False, blur_sigma=(0.1, 2.0)):
    """Random colour changes of an image (never of its label), each applied with probability 1/2.

    Args:
        image: float ``(H, W, 3)`` RGB tensor in pixel units (0..255).
        seed: ``(2,)`` integer tensor; the same seed gives the same distortion.
        brightness: largest added offset, in pixel units.
        contrast: ``(min, max)`` factor around the per-channel mean.
        saturation: ``(min, max)`` factor of the HSV saturation.
        hue: largest hue rotation, in degrees.
        blur: also a Gaussian blur with a standard deviation drawn from ``blur_sigma`` (pixels).
        blur_sigma: ``(min, max)`` blur standard deviation.

    Returns:
        The distorted image, clipped to 0..255.
    """
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 10))

    def coin(i):
        return tf.random.stateless_uniform([], seeds[i]) < 0.5

    def uniform(i, lo, hi):
        return tf.random.stateless_uniform([], seeds[i], minval=lo, maxval=hi)

    image = tf.where(coin(0), image + uniform(1, -brightness, brightness), image)
    image = tf.clip_by_value(image, 0.0, 255.0)
    image = tf.cond(coin(2), lambda: tf.image.adjust_contrast(image, uniform(3, *contrast)), lambda: image)
    image = tf.clip_by_value(image, 0.0, 255.0)
    sat_on, hue_on = coin(4), coin(6)
    sat_factor = tf.where(sat_on, uniform(5, *saturation), 1.0)
    hue_shift = tf.where(hue_on, uniform(7, -hue, hue) / 360.0, 0.0)

    def hsv_jitter():
        # One HSV round trip for both; rgb_to_hsv is defined on 0..1.
        h, s, v = tf.unstack(tf.image.rgb_to_hsv(image / 255.0), axis=-1)
        h = tf.math.floormod(h + hue_shift, 1.0)
        s = tf.clip_by_value(s * sat_factor, 0.0, 1.0)
        return tf.image.hsv_to_rgb(tf.stack([h, s, v], axis=-1)) * 255.0

    image = tf.cond(sat_on | hue_on, hsv_jitter, lambda: image)
    if blur:
        image = tf.cond(coin(8), lambda: _gaussian_blur(image, uniform(9, *blur_sigma)), lambda: image)
    return tf.clip_by_value(image, 0.0, 255.0)


def random_scale_crop(image, label, scale_seed, crop_seed, scale_range, size, *, image_value=0.0,
                      ignore_label: int = 255):
    """`random_scale` followed by `random_crop`, resizing only the source window that the crop needs.

    Scaling a 1024x2048 image by 2 and then keeping a 512x1024 crop resizes 16x more pixels than the crop holds;
    here the crop window is drawn in the scaled frame, the source rows and columns covering it are cut out first,
    and only those are resized (image bilinear, label nearest neighbour, both identically).

    Args:
        image: float ``(H, W, C)`` tensor.
        label: integer ``(H, W)`` tensor.
        scale_seed: ``(2,)`` integer tensor of the scale factor (as in `random_scale`).
        crop_seed: ``(2,)`` integer tensor of the crop position (as in `random_crop`): with the same seeds the
            factor and window are those of `random_scale` then `random_crop`.
        scale_range: ``(min, max)`` scale factors.
        size: ``(height, width)`` of the output.
        image_value: image padding value where the scaled image is smaller than ``size``.
        ignore_label: label padding value.

    Returns:
        ``(image, label)`` of shape ``size``.
    """
    lo, hi = check_scale_range(scale_range)
    factor = tf.random.stateless_uniform([], scale_seed, minval=lo, maxval=hi)
    top_seed, left_seed = tf.unstack(tf.random.experimental.stateless_split(crop_seed, 2))
    hw = tf.shape(image)[:2]
    scaled = tf.maximum(tf.cast(tf.round(tf.cast(hw, tf.float32) * factor), tf.int32), 1)
    window = tf.minimum(tf.constant(size, tf.int32), scaled)
    top = tf.random.stateless_uniform([], top_seed, maxval=scaled[0] - window[0] + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], left_seed, maxval=scaled[1] - window[1] + 1, dtype=tf.int32)
    start = tf.stack([top, left])
    ratio = tf.cast(hw, tf.float32) / tf.cast(scaled, tf.float32)  # source pixels per scaled pixel
    # Source rows / columns covering the window, one pixel of margin for the bilinear neighbours.
    src0 = tf.maximum(tf.cast(tf.floor(tf.cast(start, tf.float32) * ratio), tf.int32) - 1, 0)
    src1 = tf.minimum(tf.cast(tf.math.ceil(tf.cast(start + window, tf.float32) * ratio), tf.int32) + 1, hw)
    # The window's size in the scaled frame, and where the window starts in it.
    resized = tf.maximum(tf.cast(tf.round(tf.cast(src1 - src0, tf.float32) / ratio), tf.int32), window)
    offset = tf.cast(tf.round(tf.cast(src0, tf.float32) / ratio), tf.int32)
    offset = tf.clip_by_value(start - offset, 0, resized - window)
    image = tf.image.resize(image[src0[0]:src1[0], src0[1]:src1[1]], resized, method="bilinear")
    label = tf.image.resize(label[src0[0]:src1[0], src0[1]:src1[1]][..., None], resized, method="nearest")[..., 0]
    image = image[offset[0]:offset[0] + window[0], offset[1]:offset[1] + window[1]]
    label = label[offset[0]:offset[0] + window[0], offset[1]:offset[1] + window[1]]
    image, label = pad_to_size(image, label, size, image_value=image_value, ignore_label=ignore_label)
    return _crop(image, label, 0, 0, size)
