"""Accelerator-friendly TensorFlow formulations of three tensor operations segmentation models use.

Edge compilers accept far fewer operators, and far fewer operator parameters, than the TFLite CPU kernels
(see Vela's ``SUPPORTED_OPS.md``, ``vela --supported-ops-report``, and LiteRT's GPU delegate compatibility rules in
``tensorflow/lite/tools/versioning/gpu_compatibility.cc``). Each function here computes exactly what a standard TF
operation computes, from operators every target in kerasseg's scope runs:

`window_cells` / `interleave_cells`
    ``tf.nn.space_to_depth`` / ``tf.nn.depth_to_space`` split into, or rebuilt from, the cells of the windows. TFLite's
    SPACE_TO_DEPTH and DEPTH_TO_SPACE are missing from Vela's Ethos-U55, U65 and U85 operator lists; RESHAPE, SPLIT
    and CONCATENATION are on all of them and on the GPU delegate's.
`nearest_upsample`
    nearest-neighbour up-sampling by integer factors as RESIZE_NEAREST_NEIGHBOR, split into ×8 / ×4 / ×2 steps for
    powers of two (the only factors Vela accepts on Ethos-U55 / U65; nearest steps compose exactly).
`bilinear_upsample`
    ``tf.image.resize(..., "bilinear")`` (half-pixel centres) by integer factors. Vela runs RESIZE_BILINEAR only ×2
    on Ethos-U55 / U65 and only by powers of two on Ethos-U85. Half-pixel bilinear up-sampling by ``f`` is
    zero-insertion followed by a tent filter of ``2f`` taps ``(2k + 1) / 2f``; that tent factors into a box of ``f``
    taps (the zero-insertion plus box is nearest-neighbour up-sampling) and, for even ``f``, a second box of 2 taps
    (for odd ``f`` the tent is a box of ``f`` convolved with itself). So the resize is: replicate the border pixel
    (the clamping of the resize), nearest-neighbour ×``f``, separable AVERAGE_POOL_2D boxes (``f`` × 1, 1 × ``f``,
    then 2 × 2 for even ``f``), and a crop. It is exact in float; an int8 model rounds after each pooling (half a
    quantisation step each) instead of once.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasseg.layers._twin import twin_class

__all__ = ["window_cells", "interleave_cells", "nearest_upsample", "bilinear_upsample", "nearest_steps",
           "PooledBilinearUpsampling2D", "pooled_bilinear_class"]


def _static_shape(x, arg: str) -> tuple[int, int, int]:
    shape = tuple(x.shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(f"Expected {arg} of static shape (B, H, W, C). Received: {arg} of shape {tuple(x.shape)}")
    return tuple(int(d) for d in shape)


def _check_factor(arg: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"Expected {arg} to be a positive integer. Received: {arg}={value!r}")
    return value


def window_cells(x, block: int) -> list:
    """The cells of ``x``'s non-overlapping ``block`` × ``block`` windows, row-major within the window.

    Cell ``k`` is ``tf.split(tf.nn.space_to_depth(x, block), block * block, axis=-1)[k]``: the value at row
    ``k // block``, column ``k % block`` of every window, shape ``(B, H / block, W / block, C)``. Built from
    RESHAPE and SPLIT along the channel axis only.
    """
    h, w, c = _static_shape(x, "x")
    block = _check_factor("block", block)
    if h % block or w % block:
        raise ValueError(f"Expected x's height and width to be multiples of block={block}. Received: x of shape "
                         f"{tuple(x.shape)}")
    hb, wb = h // block, w // block
    # Each row of windows, laid out flat: the `block` image rows of that window row follow one another.
    rows = tf.split(tf.reshape(x, (-1, hb, 1, block * w * c)), block, axis=-1)
    cells = []
    for row in rows:
        # One image row of every window: its `block` columns are adjacent groups of c channels.
        cells.extend(tf.reshape(part, (-1, hb, wb, c))
                     for part in tf.split(tf.reshape(row, (-1, hb, wb, block * c)), block, axis=-1))
    return cells


def interleave_cells(cells, block: int):
    """Inverse of `window_cells`: ``tf.nn.depth_to_space(tf.concat(cells, -1), block)`` from CONCATENATION and
    RESHAPE."""
    block = _check_factor("block", block)
    cells = list(cells)
    if len(cells) != block * block:
        raise ValueError(f"Expected block * block = {block * block} cells. Received: {len(cells)} cells")
    hb, wb, c = _static_shape(cells[0], "cells[0]")
    rows = []
    for r in range(block):
        # Channel-adjacent cells of one window row become horizontally adjacent pixels.
        row = tf.reshape(tf.concat(cells[r * block:(r + 1) * block], axis=-1), (-1, hb, 1, block * wb * c))
        rows.append(row)
    return tf.reshape(tf.concat(rows, axis=-1), (-1, hb * block, wb * block, c))


def nearest_steps(factor: int) -> list[int]:
    """Factors of the RESIZE_NEAREST_NEIGHBOR steps for ``factor``: ×8 / ×4 / ×2 steps for a power of two, else
    ``[factor]`` (one step, which Ethos-U85 and the GPU accept)."""
    factor = _check_factor("factor", factor)
    if factor & (factor - 1):
        return [factor]
    steps = []
    while factor > 1:
        step = min(factor, 8)
        steps.append(step)
        factor //= step
    return steps


def nearest_upsample(x, factor_h: int, factor_w: int):
    """Nearest-neighbour up-sampling by integer factors (``out[i] = x[i // factor]``) as RESIZE_NEAREST_NEIGHBOR."""
    h, w, _ = _static_shape(x, "x")
    steps_h = nearest_steps(factor_h)
    steps_w = nearest_steps(factor_w)
    # Equal factors go in shared steps: Ethos-U55 / U65 resize both axes by the same factor only.
    if steps_h != steps_w:
        steps_h, steps_w = [factor_h], [factor_w]
    for sh, sw in zip(steps_h, steps_w):
        h, w = h * sh, w * sw
        # Without half-pixel centres, the nearest-neighbour convention Vela documents for every Ethos-U.
        x = tf.raw_ops.ResizeNearestNeighbor(images=x, size=(h, w), align_corners=False, half_pixel_centers=False)
    return x


def _slice(x, axis: int, start: int, length: int):
    # tf.slice converts to SLICE; Python slicing would give STRIDED_SLICE, which more edge rules restrict.
    begin, size = [0, 0, 0, 0], [-1, -1, -1, -1]
    begin[axis], size[axis] = start, length
    return tf.slice(x, begin, size)


def _replicate_border(x, axis: int):
    # One pixel of clamping on each side: SLICE of one row / column and a CONCATENATION.
    n = int(x.shape[axis])
    return tf.concat([_slice(x, axis, 0, 1), x, _slice(x, axis, n - 1, 1)], axis=axis)


def bilinear_upsample(x, factor_h: int, factor_w: int):
    """``tf.image.resize(x, (H * factor_h, W * factor_w), "bilinear")`` (half-pixel centres) from
    RESIZE_NEAREST_NEIGHBOR, AVERAGE_POOL_2D, SLICE and CONCATENATION (see the module docstring).

    An axis of size 1 is a broadcast (nearest-neighbour up-sampling is then exact), as is a factor of 1.
    """
    h, w, _ = _static_shape(x, "x")
    factors = (_check_factor("factor_h", factor_h), _check_factor("factor_w", factor_w))
    # Per axis: whether the tent filter is needed (an axis of size 1 or a factor of 1 copies values).
    filtered = [n > 1 and f > 1 for n, f in zip((h, w), factors)]
    for axis, needed in zip((1, 2), filtered):
        if needed:
            x = _replicate_border(x, axis)
    x = nearest_upsample(x, *factors)
    crops = []
    for axis, (needed, f) in enumerate(zip(filtered, factors), start=1):
        if not needed:
            crops.append((0, x.shape[axis]))
            continue
        window = (f, 1) if axis == 1 else (1, f)
        x = tf.nn.avg_pool2d(x, window, 1, "VALID")
        # Where the centre of the f + 1 (even f) or 2f - 1 (odd f) taps of output pixel 0 lies after the VALID
        # pooling, given the f replicated pixels in front.
        crops.append((f // 2 if f % 2 == 0 else (f + 1) // 2, (h, w)[axis - 1] * f))
    even = [needed and f % 2 == 0 for needed, f in zip(filtered, factors)]
    if any(even):
        x = tf.nn.avg_pool2d(x, (2 if even[0] else 1, 2 if even[1] else 1), 1, "VALID")
    for axis, (start, length) in enumerate(crops, start=1):
        if start or length != x.shape[axis]:
            x = _slice(x, axis, start, length)
    return x


class _PooledBilinearMixin:
    # The behaviour of PooledBilinearUpsampling2D, shared with its tf_keras twin (quantization-aware exports).

    def __init__(self, size=(2, 2), **kwargs):
        super().__init__(**kwargs)
        try:
            size = tuple(size)
        except TypeError:
            size = (size,)
        if len(size) != 2:
            raise ValueError(f"Expected size to be (factor_h, factor_w). Received: size={size!r}")
        self.size = (_check_factor("size[0]", size[0]), _check_factor("size[1]", size[1]))

    def call(self, inputs):
        return bilinear_upsample(inputs, *self.size)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else h * self.size[0], None if w is None else w * self.size[1], c)

    def get_config(self):
        config = super().get_config()
        config.update({"size": list(self.size)})
        return config


@keras.saving.register_keras_serializable(package="kerasseg")
class PooledBilinearUpsampling2D(_PooledBilinearMixin, keras.layers.Layer):
    """Bilinear up-sampling by integer factors, computed as `bilinear_upsample` (nearest-neighbour + box filters).

    Equals ``keras.layers.UpSampling2D(size, interpolation="bilinear")`` (half-pixel centres) to float rounding;
    `kerasseg.export.edge_formulation` swaps it in for export only, since Keras' layer converts to a RESIZE_BILINEAR
    that Vela runs on Ethos-U55 / U65 only for ×2 and on Ethos-U85 only for powers of two. It has no weights.

    Args:
        size: ``(factor_h, factor_w)``, positive integers.
    """


def pooled_bilinear_class(keras_module=None) -> type:
    """`PooledBilinearUpsampling2D` for the given Keras module (``keras`` or ``tf_keras``)."""
    return twin_class(PooledBilinearUpsampling2D, keras_module, "layers.Layer")
