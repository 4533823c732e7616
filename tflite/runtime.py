#!/usr/bin/env python
"""Device-side runtime for kerasseg ``.tflite`` models: numpy, Pillow and LiteRT (``ai_edge_litert``) only.

Copy this file and ``metadata.py`` to the device together with ``model.tflite``; nothing else from kerasseg (and no
TensorFlow) is needed. The model file describes itself with standard TFLite metadata (`metadata.read_record`): the
preprocessing the model was trained with (input size, mean and std, input contract), the label semantics (class
names, palette, ignore label) and the export record (output head and quantisation), so the runtime never guesses.
Files exported before the metadata existed are described by their JSON sidecar ``model.json``; when a file has both,
they must agree.

Frames in, labels out: a frame (uint8 RGB, any size) is resized to the model input exactly as training and
evaluation resize images (``tf.image.resize`` bilinear: half-pixel centres, no antialiasing; `resize_bilinear`),
either stretched to the input size (``aspect="stretch"``, what training does) or scaled to fit and padded with the
mean colour (``aspect="letterbox"``, which keeps the proportions; the padding is cropped from the output). Models
exported with pixel input (the default) take the resized pixels as they are: uint8 for int8 models, so a frame
already at the model's size goes in without any float work; older normalised-input files get the normalisation
(and quantisation) applied here. Models exported with ``host_upsample`` output logits at the model's
reduced resolution; the sidecar records the bilinear resize the runtime then applies on the host before the argmax.

Library use::

    seg = Segmenter("erfnet_int8.tflite", num_threads=2)
    labels = seg.predict(image)                  # uint8 label map at the image's size
    blended = overlay(image, labels, seg.palette)

Command line::

    python runtime.py MODEL.tflite IMAGE.png --overlay out.png [--labels out_labels.png] [--threads N]
        [--host-threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

try:
    from .metadata import read_labels, read_record
except ImportError:  # run as a script: metadata.py sits beside this file (also on the device)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from metadata import read_labels, read_record

__all__ = ["Segmenter", "check_metadata", "overlay", "colorize", "default_palette", "load_image", "resize_bilinear",
           "letterbox_box", "default_host_threads", "external_delegate", "parse_delegate_options", "litert_options",
           "HARDWARE", "ASPECTS", "main"]

_HEADS = ("logits", "probabilities", "labels")
ASPECTS = ("stretch", "letterbox")
# LiteRT hardware accelerators for `CompiledModel`; the GPU ones always keep the CPU as fallback, since LiteRT
# refuses a GPU-only compilation of a graph with operators the GPU cannot run. "gpu" computes at the accelerator's
# default precision (float16 allowed), "gpu-fp32" at full float precision (``GpuOptions(enforce_f32=True)``), which a
# model whose labels hinge on near-ties needs, such as SegNet's max-unpooling switches.
HARDWARE = ("cpu", "gpu", "gpu-fp32")
# The fields of the embedded record and of the sidecar that must agree when a model has both.
_AGREEING_FIELDS = ("num_classes", "input_shape", "mean", "std", "class_names", "ignore_label")
_AGREEING_EXPORT_FIELDS = ("output", "input_format", "input_dtype", "output_dtype", "input_quantization",
                           "output_quantization", "host_upsample")


def default_palette(num_classes: int) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved class index), ``(num_classes, 3)`` uint8."""
    palette = np.zeros((max(int(num_classes), 0), 3), np.uint8)
    for c in range(len(palette)):
        r = g = b = 0
        v = c
        for shift in range(7, -1, -1):
            r |= (v & 1) << shift
            g |= ((v >> 1) & 1) << shift
            b |= ((v >> 2) & 1) << shift
            v >>= 3
        palette[c] = (r, g, b)
    return palette


def _palette_array(palette) -> np.ndarray:
    array = np.asarray(palette)
    if array.ndim != 2 or array.shape[1] != 3 or len(array) == 0:
        raise ValueError(f"Expected palette to be a list of [r, g, b] colours. Received: palette of shape "
                         f"{array.shape}")
    if np.any(array < 0) or np.any(array > 255):
        raise ValueError("Expected palette colours in 0..255. Received: values outside that range")
    return array.astype(np.uint8)


def _label_array(labels, arg: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"Expected {arg} to be an integer (H, W) label map. Received: {arg} of shape "
                         f"{labels.shape} and dtype {labels.dtype}")
    return labels


def colorize(labels, palette) -> np.ndarray:
    """Colours an integer ``(H, W)`` label map with ``palette``; labels outside the palette become black.

    Returns:
        ``(H, W, 3)`` uint8 RGB image.
    """
    labels = _label_array(labels)
    palette = _palette_array(palette)
    out = np.zeros(labels.shape + (3,), np.uint8)
    valid = (labels >= 0) & (labels < len(palette))
    out[valid] = palette[labels[valid]]
    return out


def _rgb_array(image, arg: str = "image") -> np.ndarray:
    """``image`` (PIL image or uint8 array, grey / RGB / RGBA) as a uint8 ``(H, W, 3)`` array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"Expected {arg} to be a PIL image or a uint8 array in pixel units. Received: dtype "
                         f"{array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    elif array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if array.ndim != 3 or array.shape[-1] != 3 or min(array.shape[:2]) < 1:
        raise ValueError(f"Expected {arg} of shape (H, W, 3) (or (H, W), (H, W, 4)). Received: {arg} of shape "
                         f"{np.shape(image)}")
    return array


def overlay(image, labels, palette, alpha: float = 0.5, ignore_label: int | None = 255) -> np.ndarray:
    """Blends the colours of ``labels`` onto ``image``.

    Args:
        image: uint8 ``(H, W, 3)`` array or PIL image.
        labels: integer ``(H, W)`` label map of the same size.
        palette: one ``[r, g, b]`` per class.
        alpha: weight of the label colour, in [0, 1].
        ignore_label: label left unblended (as are labels outside the palette).

    Returns:
        ``(H, W, 3)`` uint8 RGB image.
    """
    image = _rgb_array(image)
    labels = _label_array(labels)
    palette = _palette_array(palette)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"Expected labels of the image's size {image.shape[:2]}. Received: labels of shape "
                         f"{labels.shape}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"Expected alpha in [0, 1]. Received: alpha={alpha!r}")
    valid = (labels >= 0) & (labels < len(palette))
    if ignore_label is not None:
        valid &= labels != ignore_label
    out = image.copy()
    blended = (1.0 - alpha) * image[valid].astype(np.float32) + alpha * palette[labels[valid]].astype(np.float32)
    out[valid] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def default_host_threads() -> int:
    """Threads for the host work around the model: the cores this process may use, at most 4 (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


class _Bands:
    """Runs row-band work on a small persistent thread pool; the calling thread takes the last band itself.

    The resize and the label work around the model are numpy takes and ufuncs over long rows, which release the
    GIL, so bands of rows run in parallel on the cores the model's own threads leave idle between invokes. Every band
    does the same per-element arithmetic as the whole, so the results are bit-identical to one thread's.
    """

    def __init__(self, threads: int):
        self.threads = int(threads)
        self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="host") if self.threads > 1 else None

    def split(self, n: int, minimum: int = 16):
        """``[(start, stop), ...]``: ``range(n)`` in at most ``threads`` near-equal bands of ``minimum`` or more."""
        count = max(1, min(self.threads, n // max(1, minimum)))
        edges = [n * i // count for i in range(count + 1)]
        return list(zip(edges[:-1], edges[1:]))

    def run(self, work, n: int, minimum: int = 16) -> list:
        """``[work(start, stop) for each band of range(n)]``, the bands in parallel."""
        bands = self.split(n, minimum)
        if self._pool is None or len(bands) == 1:
            return [work(a, b) for a, b in bands]
        futures = [self._pool.submit(work, a, b) for a, b in bands[:-1]]
        last = work(*bands[-1])
        return [f.result() for f in futures] + [last]


_SERIAL = _Bands(1)


def _first_argmax(scores: np.ndarray, out: np.ndarray, axis0: bool = False) -> np.ndarray:
    """``np.argmax`` over the channels of ``scores`` (first maximum on ties), written into the integer ``out``.

    ``np.argmax`` over a short last axis (a model's K interleaved classes) works pixel by pixel; here the channels
    are made contiguous planes (one transposed copy) and a running maximum is kept with vectorised whole-plane
    operations: class ``c`` takes the pixels where it is strictly greater (so the first maximal class keeps them),
    written as ``max(label, c * better)``, which equals the select since every earlier label is below ``c`` (a
    masked copy is several times slower than these). NaN scores are not ordered (``np.argmax`` returns the first
    NaN); model scores are finite.

    Args:
        scores: ``(..., K)`` (or ``(K, ...)`` with ``axis0=True``, already channels first).
        out: the labels, of the shape of ``scores`` without its channel axis, of an integer dtype holding ``K - 1``.
    """
    planes = scores if axis0 else np.moveaxis(scores, -1, 0)
    if not axis0 and scores.shape[-1] > 1:
        planes = np.ascontiguousarray(planes)
    return _running_argmax(planes, out)


def _running_argmax(planes, out: np.ndarray) -> np.ndarray:
    """The first-maximum argmax of `_first_argmax` over class planes given one at a time, in class order (an array
    of planes, or any iterable: the planes need not all be in memory at once), written into ``out``."""
    out[...] = 0
    best = better = chosen = None
    for c, plane in enumerate(planes):
        if best is None:
            best = np.array(plane, copy=True)
            better, chosen = np.empty(best.shape, bool), np.empty(best.shape, out.dtype)
            continue
        np.greater(plane, best, out=better)
        np.maximum(best, plane, out=best)
        np.multiply(better, out.dtype.type(c), out=chosen)
        np.maximum(out, chosen, out=out)
    return out


def _taps(out_size: int, in_size: int):
    """Source rows / columns and weights of half-pixel-centred linear interpolation, edges clamped.

    The arithmetic of TensorFlow's ``ResizeBilinear`` kernel (``half_pixel_centers=True``), in float32 as there.
    """
    scale = np.float32(in_size / out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    low = np.floor(src)
    frac = (src - low).astype(np.float32)
    low = low.astype(np.int64)
    return np.clip(low, 0, in_size - 1), np.clip(low + 1, 0, in_size - 1), frac


class _Resizer:
    """`resize_bilinear` from one ``(h, w, C)`` shape to one size, with its taps, indices and buffers made once.

    A camera sends frames of one size, so the segmenter keeps one of these: the per-frame work is then two gathers
    (the needed rows, then the left and right taps of all of them at once), one conversion to float32 and the two
    interpolations in place, in exactly TensorFlow's operation order (horizontal first, ``lo + (hi - lo) * frac``).
    """

    def __init__(self, shape, size):
        (h, w, channels), (height, width) = shape, size
        top, bottom, y_frac = _taps(height, h)
        left, right, x_frac = _taps(width, w)
        self.shape, self.size = tuple(shape), (height, width)
        self.rows = np.concatenate([top, bottom])
        # Column indices into a row flattened to (w * C,): every channel of the left taps, then of the right ones.
        self.cols = (np.concatenate([left, right])[:, None] * channels + np.arange(channels)).ravel()
        self.x_frac = np.repeat(x_frac, channels)[None]
        self.y_frac = y_frac[:, None]
        self._gathered = np.empty((2 * height, w * channels), np.uint8)
        self._taps = np.empty((2 * height, 2 * width * channels), np.uint8)
        self._float = np.empty((2 * height, 2 * width * channels), np.float32)

    def __call__(self, array: np.ndarray, bands: _Bands = _SERIAL) -> np.ndarray:
        """float32 ``(height, width, C)``, a view of this resizer's buffer (valid until its next call).

        ``bands`` computes bands of output rows in parallel; each row's arithmetic is the same.
        """
        (height, width), channels = self.size, self.shape[2]
        flat = np.ascontiguousarray(array).reshape(self.shape[0], -1)
        if flat.dtype != np.uint8:
            np.copyto(self._float, np.take(np.take(flat, self.rows, axis=0), self.cols, axis=1), casting="unsafe")
        half = width * channels

        def band(a, b):
            for rows in (slice(a, b), slice(height + a, height + b)):  # upper taps, lower taps
                if flat.dtype == np.uint8:
                    # The indices are in range by construction; mode="clip" spares numpy's bounds check and the
                    # temporary copy it makes of ``out`` in the default mode (about half the time of the gathers).
                    np.take(flat, self.rows[rows], axis=0, out=self._gathered[rows], mode="clip")
                    np.take(self._gathered[rows], self.cols, axis=1, out=self._taps[rows], mode="clip")
                    np.copyto(self._float[rows], self._taps[rows])
                lo, hi = self._float[rows, :half], self._float[rows, half:]
                np.subtract(hi, lo, out=hi)
                np.multiply(hi, self.x_frac, out=hi)
                np.add(lo, hi, out=lo)
            upper, lower = self._float[a:b, :half], self._float[height + a:height + b, :half]
            np.subtract(lower, upper, out=lower)
            np.multiply(lower, self.y_frac[a:b], out=lower)
            np.add(upper, lower, out=upper)

        bands.run(band, height)
        return self._float[:height, :half].reshape(height, width, channels)


def resize_bilinear(array, size) -> np.ndarray:
    """Bilinear resize of an ``(h, w, C)`` array (uint8 pixels or float scores) to ``size = (height, width)``.

    What ``tf.image.resize(array, size, "bilinear")`` computes (half-pixel centres, clamped edges, no antialiasing
    when shrinking), which is how training and evaluation resize images and how Keras' bilinear ``UpSampling2D`` /
    ``Resizing`` resize logits; Pillow's BILINEAR instead averages over the whole footprint when it shrinks. NumPy
    has no image resize, so it is written here: two gathers and two linear interpolations per axis, horizontal
    first as in TensorFlow's kernel, on the rows that are needed only.

    Returns:
        float32 ``(height, width, C)``.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"Expected an array of shape (h, w, C). Received: an array of shape {array.shape}")
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ValueError(f"Expected a positive (height, width). Received: size={size!r}")
    if array.shape[:2] == (height, width):
        return array.astype(np.float32, copy=False)
    return _Resizer(array.shape, (height, width))(array).copy()


def _pillow_taps(out_size: int, in_size: int):
    """Pillow's BILINEAR taps along one axis when enlarging (or keeping) it: at most two source pixels.

    The arithmetic of Pillow's ``precompute_coeffs`` (``Resample.c``) in float64, as there: support 1, half-pixel
    centres, the weights normalised by their sum (which clamps the edges).

    Returns:
        ``(low, high, w_low, w_high)``: source indices (``high == low`` where one tap) and float64 weights
        (``w_high == 0`` there).
    """
    scale = in_size / out_size
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    low = np.maximum(((center - 1.0) + 0.5).astype(np.int64), 0)  # C's (int) truncates, like astype
    count = np.minimum(((center + 1.0) + 0.5).astype(np.int64), in_size) - low

    def triangle(x):
        x = np.abs(x)
        return np.where(x < 1.0, 1.0 - x, 0.0)

    w_low = triangle((low - center) + 0.5)
    w_high = np.where(count > 1, triangle(((low + 1) - center) + 0.5), 0.0)
    total = w_low + w_high
    return low, np.where(count > 1, low + 1, low), w_low / total, w_high / total


def _lerp_pillow(a, b, w_low, w_high):
    """One pass of Pillow's float ("F") resize: float64 sum of the weighted taps, stored as float32."""
    # float32 taps widen exactly inside the float64 products, without float64 copies of them.
    total = np.multiply(a, w_low, dtype=np.float64)
    total += np.multiply(b, w_high, dtype=np.float64)
    return total.astype(np.float32)


def _lerp_tensorflow(a, b, frac, _unused=None):
    """One pass of TensorFlow's bilinear resize (and `resize_bilinear`): ``a + (b - a) * frac`` in float32."""
    return a + (b - a) * frac


class _UpsampledArgmax:
    """Argmax of bilinearly enlarged scores, exact, with the interpolation evaluated at class boundaries only.

    The bilinear scores of an output pixel are a convex combination of the score vectors of its (up to) 2 x 2 source
    pixels. Where those all have the same argmax ``c``, so has the combination: ``c`` is at least as large as every
    class in each of them, and strictly larger than the classes before it (ties go to the first index, as
    ``np.argmax``). So the labels are the source argmax upsampled, and the scores are interpolated (with the same
    arithmetic as the full resize) only where the neighbours disagree. Rounding cannot reverse that order when the
    gaps are whole quantisation steps (integer outputs, compared on their raw integers: the scale is positive); for
    float outputs, source pixels whose two best classes are within 1e-4 of the map's largest magnitude are treated
    as boundaries too.

    Args:
        in_shape, size: the ``(h, w)`` of the scores and the ``(height, width)`` of the labels; enlarging (or keeping)
            each axis.
        rule: ``"pillow"`` (``Image.resize(BILINEAR)`` on float channels) or ``"tensorflow"`` (`resize_bilinear`).
        num_classes, quantization: the scores' channels and ``(scale, zero_point)`` (``None`` for float scores).
        label_dtype: the labels' dtype.
        raw_dtype: the dtype of the raw scores (an 8- or 16-bit integer when quantised).
    """

    # Above this share of boundary pixels the full resize (in C, one channel at a time) is cheaper.
    DENSE_SHARE = 0.3
    # Boundary pixels interpolated at a time: bounded memory, and temporaries small enough (K scores of float64
    # each) that the allocator reuses them rather than mapping fresh pages from the system for every piece.
    CHUNK = 1 << 13

    def __init__(self, in_shape, size, rule, num_classes, quantization, label_dtype, raw_dtype):
        (h, w), (height, width) = in_shape, size
        taps = _pillow_taps if rule == "pillow" else (lambda o, i: _taps(o, i) + (None,))
        self.rows, self.cols = taps(height, h), taps(width, w)
        self.lerp = _lerp_pillow if rule == "pillow" else _lerp_tensorflow
        self.rule, self.size, self.quantization = rule, (height, width), quantization
        self.label_dtype = np.dtype(label_dtype)
        # A code outside the labels marks a boundary block; int16 when 255 is a label.
        self.code_dtype, self.boundary = (np.uint8, 255) if num_classes < 255 else (np.int16, -1)
        # run()'s dequantisation, float32; Pillow's arithmetic widens it exactly to float64 in its lerp.
        self._dequantize = None if quantization is None else (np.float32(quantization[0]),
                                                              np.float32(quantization[1]))

    @staticmethod
    def enlarges(in_shape, size) -> bool:
        return in_shape[0] <= size[0] and in_shape[1] <= size[1]

    def __call__(self, raw: np.ndarray, dense, bands: _Bands = _SERIAL) -> np.ndarray:
        """Labels ``size`` of raw scores ``(h, w, K)`` (integers when quantised); ``dense(raw)`` is the full path.

        ``bands`` runs the argmax, the label gathers and the boundary interpolation in parallel pieces.
        """
        low_labels = np.empty(raw.shape[:2], self.code_dtype)
        bands.run(lambda a, b: _first_argmax(raw[a:b], low_labels[a:b]), len(raw))
        # Block (r, c) covers source pixels {r, r+1} x {c, c+1}, which contain every tap of an output pixel whose
        # low taps are (r, c); the edge is replicated so the last row and column have blocks too.
        padded = np.pad(low_labels, ((0, 1), (0, 1)), mode="edge")
        corner = padded[:-1, :-1]
        uniform = (corner == padded[:-1, 1:]) & (corner == padded[1:, :-1]) & (corner == padded[1:, 1:])
        if self.quantization is None and np.issubdtype(raw.dtype, np.floating):
            tolerance = np.float32(1e-4) * np.max(np.abs(raw))
            top = np.max(raw, axis=-1, keepdims=True)
            near = np.pad(np.count_nonzero(raw >= top - tolerance, axis=-1) > 1, ((0, 1), (0, 1)), mode="edge")
            uniform &= ~(near[:-1, :-1] | near[:-1, 1:] | near[1:, :-1] | near[1:, 1:])
        # Output pixels spread evenly over the blocks, so the share of mixed blocks is the share of boundary pixels.
        if np.count_nonzero(~uniform) > self.DENSE_SHARE * uniform.size:
            return dense(raw)
        code = np.where(uniform, corner, np.asarray(self.boundary, self.code_dtype))
        (height, width), (rows, cols) = self.size, (self.rows[0], self.cols[0])
        labels = np.empty((height, width), self.code_dtype)

        def gather(a, b):
            np.take(np.take(code, rows[a:b], axis=0, mode="clip"), cols, axis=1, out=labels[a:b], mode="clip")
            return np.flatnonzero(labels[a:b] == self.boundary) + a * width

        border = np.concatenate(bands.run(gather, height))
        labels = labels.astype(self.label_dtype, copy=False)
        flat, scores = labels.reshape(-1), np.ascontiguousarray(raw).reshape(-1, raw.shape[-1])

        def interpolate(a, b):
            for start in range(a, b, self.CHUNK):
                index = border[start:min(b, start + self.CHUNK)]
                flat[index] = self._interpolated_argmax(scores, raw.shape[1], index // width, index % width)

        bands.run(interpolate, len(border), minimum=1024)
        return labels

    def _interpolated_argmax(self, scores, w, ys, xs):
        """Argmax of the interpolated scores of output pixels ``(ys, xs)``; ``scores`` is the ``(h * w, K)`` map.

        Both passes are the full resize's: the horizontal one gives each (source row, output column) its scores,
        the vertical one mixes two of those per output pixel. Neighbouring output rows share source rows, so the
        horizontal pass runs once per distinct (source row, output column) of the pixels (about a third of the
        two per pixel at a camera frame's boundaries); the values are the same, computed once.
        """
        r0, r1, wy0, wy1 = (t[ys] if t is not None else None for t in self.rows)
        n, width = len(ys), self.size[1]
        base = int(r0.min())
        keys = np.concatenate([r0 - base, r1 - base]) * width + np.concatenate([xs, xs])
        # One slot per (row, column) of this piece's few rows: whichever position is written last owns the key.
        slot = np.empty((int(r1.max()) - base + 1) * width, np.intp)
        order = np.arange(2 * n)
        slot[keys] = order
        first = slot[keys]
        owners = np.flatnonzero(first == order)
        compact = np.empty(2 * n, np.intp)
        compact[owners] = np.arange(len(owners))
        pair = compact[first]
        rows, cols = np.divmod(keys[owners], width)
        rows += base
        c0, c1, wx0, wx1 = (t[cols] if t is not None else None for t in self.cols)

        def tap(r, c):
            # Channels first, so that the per-pixel weights broadcast along the long contiguous axis.
            s = np.ascontiguousarray(np.take(scores, r * w + c, axis=0, mode="clip").T)
            if self._dequantize is None:
                return s
            # The same float32 operations as run() (integers convert to float32 exactly); several times faster
            # than a table lookup per score.
            scale, zero_point = self._dequantize
            values = np.subtract(s, zero_point, dtype=np.float32)
            return np.multiply(values, scale, out=values)

        horizontal = self.lerp(tap(rows, c0), tap(rows, c1), wx0, wx1)
        upper = np.take(horizontal, pair[:n], axis=1, mode="clip")
        lower = np.take(horizontal, pair[n:], axis=1, mode="clip")
        scores = self.lerp(upper, lower, wy0, wy1)
        return _first_argmax(scores, np.empty(scores.shape[1:], self.label_dtype), axis0=True)


def _pillow_nearest_index(out_size: int, in_size: int) -> np.ndarray:
    """The source index of each output index of Pillow's NEAREST resize along one axis, from Pillow itself.

    Pillow scales with nearest neighbour one axis at a time (its source coordinates accumulate in float64 step by
    step, not ``floor((i + 0.5) * scale)``), so resizing a one-pixel-wide ramp of indices gives the exact map; the
    label map is then two gathers, which split into bands of rows.
    """
    ramp = np.arange(in_size, dtype=np.int32)[None]
    return np.asarray(Image.fromarray(ramp).resize((out_size, 1), Image.NEAREST))[0].astype(np.intp)


def litert_options(hardware: str):
    """LiteRT ``Options`` of a `HARDWARE` name (``kerasseg.runtimes.tflite`` has the same function: keep them in
    step)."""
    from ai_edge_litert.gpu_options import GpuOptions
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import Options

    if hardware == "cpu":
        return Options(hardware_accelerators=HardwareAccelerator.CPU)
    return Options(hardware_accelerators=HardwareAccelerator.GPU | HardwareAccelerator.CPU,
                   gpu_options=GpuOptions(enforce_f32=hardware == "gpu-fp32"))


def letterbox_box(image_size, input_size) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of an image of ``image_size`` scaled to fit ``input_size``, centred."""
    (h, w), (height, width) = image_size, input_size
    scale = min(height / h, width / w)
    inner_h, inner_w = max(1, min(height, round(h * scale))), max(1, min(width, round(w * scale)))
    return (height - inner_h) // 2, (width - inner_w) // 2, inner_h, inner_w


def external_delegate(library, options: dict | None = None):
    """Loads a LiteRT external delegate (e.g. a vendor NPU or GPU delegate library) with its options.

    Operators the delegate does not take stay on the CPU (LiteRT partitions the graph), so a model always runs.

    Args:
        library: path of the delegate's shared library (``.so``).
        options: the delegate's string options, e.g. ``{"backend_type": "htp"}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the library does not load as a LiteRT delegate (LiteRT's own reason is included).
    """
    from ai_edge_litert.interpreter import load_delegate

    library = os.fspath(library)
    if not os.path.isfile(library):
        raise FileNotFoundError(f"Expected an existing delegate library file. Received: delegate={library!r}")
    options = {str(k): str(v) for k, v in (options or {}).items()}
    try:
        return load_delegate(library, options)
    except (OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"Expected a LiteRT external delegate library that loads with options {options}. Received: "
                         f"delegate={library!r}, which fails: {e}") from None


def parse_delegate_options(items) -> dict:
    """``["key=value", ...]`` (command-line ``--delegate-option``) as a dict."""
    options = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise ValueError(f"Expected delegate options as KEY=VALUE. Received: {item!r}")
        options[key] = value
    return options


def load_image(path) -> np.ndarray:
    """Reads an image file as a uint8 RGB ``(H, W, 3)`` array."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected an existing image file. Received: path={path!r}")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))



def _detail_quantization(detail):
    scale, zero_point = detail["quantization"]
    return (float(scale), int(zero_point)) if scale else None


def check_metadata(meta, input_details, output_details, source: str = "the metadata") -> dict:
    """Checks every value of a kerasseg metadata dict against the model it describes; refuses a contradiction.

    The sidecar JSON and any metadata block embedded in the model file go through this one check, so a description
    that lies about its model (another class count, input size or dtype, quantisation, output head) stops the
    runtime at load time rather than giving wrong labels later.

    Args:
        meta: the parsed metadata (``num_classes``, ``mean``, ``std``, optional ``input_shape``, ``class_names``,
            ``palette``, ``ignore_label`` and the exporter's record ``extra.export``).
        input_details, output_details: one entry of LiteRT's ``Interpreter.get_input_details()`` /
            ``get_output_details()`` (``shape``, ``dtype``, ``quantization``).
        source: names the metadata in the messages (a file path).

    Returns:
        dict with ``num_classes``, ``output`` (the head) and ``host_upsample`` (``(height, width)`` or ``None``).

    Raises:
        ValueError: a missing or malformed value, or one that contradicts the model (named, with both values).
    """
    def fail(expected, received):
        raise ValueError(f"Expected {expected} in {source}. Received: {received}")

    if not isinstance(meta, dict):
        fail("a JSON object", f"{type(meta).__name__}")
    num_classes = meta.get("num_classes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        fail("num_classes to be a positive integer", f"num_classes={num_classes!r}")
    for key in ("mean", "std"):
        try:
            values = np.asarray(meta.get(key), np.float64)
        except (TypeError, ValueError):
            values = np.asarray([np.nan])
        if values.shape not in ((1,), (3,)) or not np.all(np.isfinite(values)) or (key == "std" and np.any(
                values <= 0)):
            fail(f"{key} to be 1 or 3 finite numbers{' > 0' if key == 'std' else ''}", f"{key}={meta.get(key)!r}")
    in_shape = [int(d) for d in input_details["shape"]]
    out_shape = [int(d) for d in output_details["shape"]]
    if len(in_shape) != 4 or in_shape[0] != 1 or in_shape[3] != 3:
        fail("a model input of shape (1, H, W, 3)", f"a model input of shape {tuple(in_shape)}")
    recorded_shape = meta.get("input_shape")
    if recorded_shape is not None:
        if not isinstance(recorded_shape, list) or len(recorded_shape) != 3 or any(
                d is not None and d != m for d, m in zip(recorded_shape, in_shape[1:])):
            fail(f"input_shape {in_shape[1:]} (the model's input)", f"input_shape={recorded_shape!r}")
    extra = meta.get("extra", {})
    export = extra.get("export", {}) if isinstance(extra, dict) else None
    if not isinstance(export, dict):
        fail("extra.export to be a JSON object", f"{export!r}")
    in_dtype, out_dtype = np.dtype(input_details["dtype"]), np.dtype(output_details["dtype"])
    in_q, out_q = _detail_quantization(input_details), _detail_quantization(output_details)
    for key, actual in (("input_dtype", in_dtype.name), ("output_dtype", out_dtype.name),
                        ("input_shape", in_shape), ("output_shape", out_shape)):
        if key in export and export[key] != actual:
            fail(f"extra.export.{key}={actual!r} (the model's)", f"{key}={export[key]!r}")
    for key, actual in (("input_quantization", in_q), ("output_quantization", out_q)):
        if key not in export:
            continue
        recorded = export[key]
        same = (recorded is None and actual is None) or (
            isinstance(recorded, list) and len(recorded) == 2 and actual is not None
            and np.isclose(float(recorded[0]), actual[0], rtol=1e-6, atol=0) and int(recorded[1]) == actual[1])
        if not same:
            fail(f"extra.export.{key}={list(actual) if actual else None} (the model's [scale, zero_point])",
                 f"{key}={recorded!r}")
    mode = export.get("mode")
    # int8 files with layers kept in float (``fully_integer: false``) take float input like the float modes.
    integer_io = mode in ("int8", "int16x8") and export.get("fully_integer", True) is not False
    if mode is not None and integer_io != (in_q is not None):
        fail(f"mode {'int8 or int16x8' if in_q else 'a float mode (or int8 with float layers)'} for a model whose "
             f"input is {in_dtype.name}{' quantised' if in_q else ''}", f"mode={mode!r}")

    label_head = np.issubdtype(out_dtype, np.integer) and out_q is None
    output = export.get("output") or ("labels" if label_head else "logits")
    if output not in _HEADS or (output == "labels") != label_head:
        expected = "'labels'" if label_head else "'logits' or 'probabilities'"
        fail(f"the export output to be {expected} for an output tensor of dtype {out_dtype}", f"output={output!r}")
    if output != "labels" and out_shape[-1] != num_classes:
        fail(f"num_classes={out_shape[-1]} (the model's output channels)", f"num_classes={num_classes}")
    upsample = export.get("host_upsample")
    host_upsample = None
    if upsample:
        size = upsample.get("size") if isinstance(upsample, dict) else None
        if (not isinstance(upsample, dict) or upsample.get("method") != "bilinear" or not isinstance(size, list)
                or len(size) != 2 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in size)
                or output == "labels"):
            fail("host_upsample to be a bilinear resize of a logits head to [height, width]",
                 f"host_upsample={upsample!r} for output {output!r}")
        host_upsample = (int(size[0]), int(size[1]))
    for key in ("class_names", "palette"):
        value = meta.get(key)
        # Palettes may be longer than the class list (a dataset's full colour map); names may not.
        if value is not None and (not isinstance(value, list) or (
                len(value) != num_classes if key == "class_names" else len(value) < num_classes)):
            fail(f"{key} to list the {num_classes} classes", f"{key} of length "
                 f"{len(value) if isinstance(value, list) else type(value).__name__}")
    if meta.get("class_names") is not None and not all(isinstance(n, str) for n in meta["class_names"]):
        fail("class_names to be strings", f"class_names={meta['class_names']!r}")
    if meta.get("palette") is not None:
        try:
            _palette_array(meta["palette"])
        except (ValueError, TypeError) as e:
            fail("a palette of [r, g, b] colours in 0..255", f"palette ({e})")
    ignore = meta.get("ignore_label", 255)
    if ignore is not None and (isinstance(ignore, bool) or not isinstance(ignore, int)):
        fail("ignore_label to be an integer or null", f"ignore_label={ignore!r}")

    return {"num_classes": num_classes, "output": output, "host_upsample": host_upsample}


class Segmenter:
    """Runs an exported kerasseg segmentation model on RGB images.

    Args:
        model_path: the ``.tflite`` file.
        num_threads: LiteRT CPU threads.
        metadata_path: the sidecar JSON; ``model_path`` with a ``.json`` extension by default. Optional for files
            with embedded metadata (then checked against it), required for older files.
        aspect: ``"stretch"`` (default; what training and evaluation do) or ``"letterbox"`` (keep the frame's
            proportions, pad with the mean colour, crop the padding from the output).
        delegate: path of a LiteRT external delegate library (`external_delegate`); ``None`` runs on the CPU
            (XNNPACK).
        delegate_options: the delegate's options.
        hardware: ``None`` (default: the interpreter with XNNPACK), or ``"cpu"`` / ``"gpu"`` / ``"gpu-fp32"`` to run
            through LiteRT's ``CompiledModel`` with that hardware accelerator (the GPU ones with the CPU as fallback
            for the operators the GPU does not take; ``"gpu-fp32"`` at full float precision). Not combined with
            ``delegate``.
        host_threads: threads for the work around the model (the frame resize, the argmax and the up-sampling of
            the labels), split into bands of rows; ``None`` (default) takes the cores this process may use, at most
            4 (`default_host_threads`). The model's own threads are idle meanwhile, so the same cores serve both.
            Results do not depend on it.

    Attributes:
        input_size: ``(height, width)`` of the model input.
        num_classes, class_names, palette (``(K, 3)`` uint8), ignore_label, mean, std: from the metadata.
        input_format: ``"pixels"`` (the model normalises in its graph) or ``"normalized"`` (older files).
        accelerator: where the model runs, in words (the delegate, with the CPU as fallback, or the CPU).
        metadata_source: ``"embedded"`` or the sidecar's path.
        output: the model head, ``"logits"``, ``"probabilities"`` or ``"labels"``.
        host_upsample: ``(height, width)`` the logits are up-sampled to on the host (models exported with
            ``host_upsample``), or ``None``.
        host_threads: the threads of the host work.
        timings: milliseconds spent in ``preprocess`` (the resize), ``inference`` (the model; its raw output) and
            ``postprocess`` (argmax and up-sampling) by the last `predict`.
    """

    def __init__(self, model_path, *, num_threads: int = 2, metadata_path=None, aspect: str = "stretch",
                 delegate=None, delegate_options: dict | None = None, hardware: str | None = None,
                 host_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        model_path = os.fspath(model_path)
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"Expected an existing .tflite model file. Received: model_path={model_path!r}")
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"Expected num_threads to be a positive integer. Received: num_threads={num_threads!r}")
        if aspect not in ASPECTS:
            raise ValueError(f"Expected aspect to be one of {list(ASPECTS)}. Received: aspect={aspect!r}")
        if hardware is not None and hardware not in HARDWARE:
            raise ValueError(f"Expected hardware to be one of {list(HARDWARE)} or None. Received: "
                             f"hardware={hardware!r}")
        if hardware is not None and delegate is not None:
            raise ValueError(f"Expected either a delegate or a hardware accelerator. Received: delegate={delegate!r} "
                             f"and hardware={hardware!r}")
        self.aspect = aspect
        with open(model_path, "rb") as f:
            model_bytes = f.read()
        self._box = None
        self._resizer = None  # _Resizer of the last frame shape
        self._upsampler = None  # (key, _UpsampledArgmax) of the last output and frame sizes
        self._nearest = None  # (key, row indices, column indices) of the last nearest-neighbour label resize
        if host_threads is None:
            host_threads = default_host_threads()
        if isinstance(host_threads, bool) or not isinstance(host_threads, int) or host_threads < 1:
            raise ValueError(f"Expected host_threads to be a positive integer or None. Received: "
                             f"host_threads={host_threads!r}")
        self.host_threads = host_threads
        self._bands = _Bands(host_threads)
        delegates = [external_delegate(delegate, delegate_options)] if delegate is not None else None
        self.accelerator = (f"delegate {os.path.basename(os.fspath(delegate))} (operators it does not take run on the "
                            f"CPU)" if delegate is not None else f"CPU (XNNPACK, {num_threads} threads)")
        try:
            self.interpreter = Interpreter(model_content=model_bytes, num_threads=num_threads,
                                           experimental_delegates=delegates)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:  # LiteRT's words for a truncated or foreign file
            raise ValueError(f"Expected a TFLite model file. Received: model_path={model_path!r}, which LiteRT "
                             f"cannot load ({str(e).strip()[:200]})") from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"Expected a model with one input and one output. Received: {model_path!r} with "
                             f"{len(inputs)} inputs and {len(outputs)} outputs")
        self._input, self._output = inputs[0], outputs[0]
        # The file is a model LiteRT runs; its descriptions are now checked against it.
        meta, metadata_path, checked = self._read_metadata(model_bytes, model_path, metadata_path, self._input,
                                                           self._output)
        self.metadata_source = metadata_path
        self.metadata = meta
        self.num_classes, self.output, self.host_upsample = (checked["num_classes"], checked["output"],
                                                             checked["host_upsample"])
        self.mean = np.asarray(meta["mean"], np.float32)
        self.std = np.asarray(meta["std"], np.float32)
        self.class_names = meta.get("class_names")
        self.ignore_label = meta.get("ignore_label", 255)
        palette = meta.get("palette")
        self.palette = _palette_array(palette) if palette else default_palette(self.num_classes)
        self.input_size = tuple(int(d) for d in self._input["shape"][1:3])
        self.input_dtype = np.dtype(self._input["dtype"])
        self.output_dtype = np.dtype(self._output["dtype"])
        self._in_q = self._quantization(self._input)
        self._out_q = self._quantization(self._output)
        self._label_dtype = np.uint8 if self.num_classes <= 256 else np.int32
        self.input_format = meta.get("extra", {}).get("export", {}).get("input_format", "normalized")
        if self.input_format not in ("pixels", "normalized"):
            raise ValueError(f"Expected the metadata's input_format to be 'pixels' or 'normalized'. Received: "
                             f"input_format={self.input_format!r} ({metadata_path!r})")
        self._compiled = self._compile(model_bytes, hardware) if hardware is not None else None
        self.timings: dict[str, float] = {}

    @staticmethod
    def _read_metadata(model_bytes: bytes, model_path: str, metadata_path, input_details, output_details):
        """The model's description: its embedded record, checked against the sidecar when there is one.

        Each description is first checked against the model on its own (`check_metadata`), so a lying sidecar is
        named with the value it gets wrong; then the two must agree.

        Returns:
            ``(metadata dict, "embedded" or the sidecar's path, check_metadata's result)``.
        """
        embedded = read_record(model_bytes, repr(model_path))
        explicit = metadata_path is not None
        metadata_path = os.fspath(metadata_path) if explicit else os.path.splitext(model_path)[0] + ".json"
        sidecar = None
        if os.path.isfile(metadata_path):
            try:
                with open(metadata_path, encoding="utf-8") as f:
                    sidecar = json.load(f)
            except ValueError as e:
                raise ValueError(f"Expected a kerasseg metadata JSON. Received: metadata_path={metadata_path!r} "
                                 f"({type(e).__name__}: {e})") from None
            if not isinstance(sidecar, dict):
                raise ValueError(f"Expected a kerasseg metadata JSON object. Received: metadata_path="
                                 f"{metadata_path!r} holding a {type(sidecar).__name__}")
        elif explicit or embedded is None:
            raise FileNotFoundError(f"Expected embedded TFLite metadata in the model or its metadata sidecar "
                                    f"(written by the exporter next to the model). Received: {model_path!r} without "
                                    f"metadata and no file metadata_path={metadata_path!r}")
        checked = None
        if sidecar is not None:
            checked = check_metadata(sidecar, input_details, output_details,
                                     source=f"{metadata_path!r} (for {model_path!r})")
        if embedded is not None:
            checked = check_metadata(embedded, input_details, output_details,
                                     source=f"the metadata embedded in {model_path!r}")
        if embedded is not None and sidecar is not None:
            export_e, export_s = embedded.get("extra", {}).get("export", {}), sidecar.get("extra", {}).get("export", {})
            for name, a, b in ([(k, embedded.get(k), sidecar.get(k)) for k in _AGREEING_FIELDS]
                               + [(k, export_e.get(k), export_s.get(k)) for k in _AGREEING_EXPORT_FIELDS]):
                if a != b:
                    raise ValueError(f"Expected the sidecar {metadata_path!r} to agree with the metadata embedded in "
                                     f"{model_path!r}. Received: {name}={b!r} in the sidecar, {a!r} embedded")
        meta = embedded if embedded is not None else sidecar
        labels = read_labels(model_bytes)
        if labels is not None and meta.get("class_names") is not None and labels != list(meta["class_names"]):
            raise ValueError(f"Expected the label file embedded in {model_path!r} to list the metadata's class "
                             f"names {meta['class_names']}. Received: {labels}")
        return meta, ("embedded" if embedded is not None else metadata_path), checked

    def _compile(self, model_bytes: bytes, hardware: str):
        """A LiteRT ``CompiledModel`` of the file on ``hardware``, with its input and output buffers."""
        from ai_edge_litert.compiled_model import CompiledModel

        try:
            compiled = CompiledModel.from_buffer(model_bytes, options=litert_options(hardware))
            buffers = compiled.create_input_buffers(0), compiled.create_output_buffers(0)
        except RuntimeError as e:
            raise ValueError(f"Expected LiteRT to compile the model for hardware={hardware!r}. Received: {e}") from None
        fallback = "" if compiled.is_fully_accelerated() else ", operators it does not take on the CPU"
        self.accelerator = f"LiteRT CompiledModel on {hardware.upper()}{fallback if hardware != 'cpu' else ''}"
        return compiled, buffers

    def invoke(self, model_input: np.ndarray) -> np.ndarray:
        """The raw output tensor (without its batch axis) of one inference on a preprocessed input."""
        if self._compiled is None:
            self.interpreter.set_tensor(self._input["index"], model_input)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self._output["index"])[0]
        compiled, (inputs, outputs) = self._compiled
        inputs[0].write(np.ascontiguousarray(model_input))
        compiled.run_by_index(0, inputs, outputs)
        shape = tuple(int(d) for d in self._output["shape"])
        return np.asarray(outputs[0].read(int(np.prod(shape)), self.output_dtype)).reshape(shape)[0]

    @staticmethod
    def _quantization(detail):
        scale, zero_point = detail["quantization"]
        return (np.float32(scale), int(zero_point)) if scale else None

    def preprocess(self, image) -> np.ndarray:
        """The model input of an RGB frame: resized as in training (`resize_bilinear`), in the model's contract.

        Pixel-input models get the resized pixels (rounded to uint8 for int8 models; a frame at the model's size is
        passed as it is); normalised-input models get them normalised and, for integer models, quantised.

        Args:
            image: uint8 ``(H, W, 3)`` array or PIL image; greyscale ``(H, W)`` is repeated to RGB, RGBA drops its
                alpha.

        Returns:
            The model input, ``(1, height, width, 3)`` in the model's input dtype.
        """
        pixels = _rgb_array(image)
        height, width = self.input_size
        self._box = None
        if self.aspect == "letterbox" and pixels.shape[:2] != (height, width):
            top, left, inner_h, inner_w = self._box = letterbox_box(pixels.shape[:2], (height, width))
            # The mean colour normalises to zero, the value the network's own zero padding has.
            x = np.empty((height, width, 3), np.float32)
            x[...] = self.mean
            x[top:top + inner_h, left:left + inner_w] = self._resize(pixels, (inner_h, inner_w))
        elif pixels.shape[:2] != (height, width):
            x = self._resize(pixels, (height, width))  # the resizer's buffer: rounded in place below
        else:
            x = pixels
        if self.input_format == "pixels":
            if np.issubdtype(self.input_dtype, np.integer) and x.dtype == np.float32:
                info = np.iinfo(self.input_dtype)
                # Interpolated uint8 pixels stay within [0, 255] (convex weights, monotone float rounding), so
                # the clip only matters for the letterbox's mean colour or a narrower input type.
                clip = self._box is not None or info.min > 0 or info.max < 255
                out = np.empty(x.shape, self.input_dtype)

                def round_band(a, b):
                    band = np.rint(x[a:b], out=x[a:b])
                    if clip:
                        np.clip(band, info.min, info.max, out=band)
                    np.copyto(out[a:b], band, casting="unsafe")

                self._bands.run(round_band, len(x))
                return out[None]
            if np.issubdtype(self.input_dtype, np.integer) and x.dtype != self.input_dtype:
                info = np.iinfo(self.input_dtype)
                x = np.clip(np.rint(x), info.min, info.max)
            # A frame at the model's size goes in as it is; the resizer's buffer is reused, so never returned.
            return x.astype(self.input_dtype, copy=x is not pixels)[None]
        x = (x.astype(np.float32) - self.mean) / self.std
        if self._in_q is not None:
            scale, zero_point = self._in_q
            info = np.iinfo(self.input_dtype)
            x = np.clip(np.rint(x / scale) + zero_point, info.min, info.max)
        return x.astype(self.input_dtype)[None]

    def _resize(self, pixels: np.ndarray, size) -> np.ndarray:
        """`resize_bilinear` of a frame through a resizer kept for the last frame shape (a camera's is fixed)."""
        if self._resizer is None or (self._resizer.shape, self._resizer.size) != (pixels.shape, tuple(size)):
            self._resizer = _Resizer(pixels.shape, size)
        return self._resizer(pixels, self._bands)

    def run(self, model_input: np.ndarray) -> np.ndarray:
        """Invokes the model on a preprocessed input; float32 scores ``(h, w, K)`` or labels ``(h, w)``."""
        return self._dequantize(self.invoke(model_input))

    def _dequantize(self, raw: np.ndarray) -> np.ndarray:
        if self._out_q is not None:
            scale, zero_point = self._out_q
            return (raw.astype(np.float32) - np.float32(zero_point)) * scale
        return raw if self.output == "labels" else raw.astype(np.float32, copy=False)

    def logits(self, image, *, full_resolution: bool = False) -> np.ndarray:
        """Float32 scores ``(h, w, K)`` of the model output: logits, or probabilities for that head.

        Args:
            image: uint8 ``(H, W, 3)`` array or PIL image.
            full_resolution: for a model exported with ``host_upsample``, apply the recorded bilinear resize
                (`resize_bilinear`), giving the logits the Keras model computes; otherwise the model's own output.

        Raises:
            ValueError: the model's head outputs labels, not scores.
        """
        if self.output == "labels":
            raise ValueError("Expected a model exported with output='logits' or 'probabilities'. Received: a model "
                             "whose output is a label map; use predict()")
        scores = self.run(self.preprocess(image))
        if full_resolution and self.host_upsample is not None:
            scores = resize_bilinear(scores, self.host_upsample)
        return scores

    def predict(self, image, *, upsample: str = "bilinear") -> np.ndarray:
        """Label map of ``image`` at its own size.

        Args:
            image: uint8 ``(H, W, 3)`` array or PIL image.
            upsample: ``"bilinear"`` gives the labels of the scores resized to the image size (smooth borders;
                the scores are interpolated only at class boundaries, see `_UpsampledArgmax`, so the cost grows
                with the share of boundary pixels); ``"nearest"`` takes the argmax at the model resolution and
                resizes the labels (faster). A label head is always resized with nearest neighbour.

        Returns:
            ``(H, W)`` label map, uint8 (int32 beyond 256 classes).
        """
        if upsample not in ("bilinear", "nearest"):
            raise ValueError(f"Expected upsample to be 'bilinear' or 'nearest'. Received: upsample={upsample!r}")
        pixels = _rgb_array(image)
        t0 = time.perf_counter()
        model_input = self.preprocess(pixels)
        t1 = time.perf_counter()
        raw = self.invoke(model_input)
        if self._box is not None:
            raw = self._crop_padding(raw)
        t2 = time.perf_counter()
        labels = self._labels(raw, pixels.shape[:2], upsample)
        t3 = time.perf_counter()
        self.timings = {"preprocess": 1e3 * (t1 - t0), "inference": 1e3 * (t2 - t1), "postprocess": 1e3 * (t3 - t2)}
        return labels

    def _labels(self, raw: np.ndarray, size, upsample: str) -> np.ndarray:
        """The label map of size ``(height, width)`` of a raw model output (quantised scores stay integers).

        The argmax is taken on the raw integers: dequantising multiplies by a positive scale, which keeps the order
        and the ties. Bilinear up-sampling of scores goes through `_UpsampledArgmax` (the interpolation at class
        boundaries only), with Pillow's arithmetic, or TensorFlow's for a ``host_upsample`` model (whose Keras
        model resizes its logits that way); both give the labels of the full resize followed by the argmax.
        """
        height, width = size
        if self.output != "labels" and upsample == "bilinear" and raw.shape[:2] != (height, width):
            rule = "tensorflow" if self.host_upsample is not None else "pillow"
            dense = self._dense_tensorflow if rule == "tensorflow" else self._dense_pillow
            if not _UpsampledArgmax.enlarges(raw.shape[:2], size):
                return dense(raw, size)
            key = (raw.shape[:2], (height, width), rule)
            if self._upsampler is None or self._upsampler[0] != key:
                self._upsampler = key, _UpsampledArgmax(raw.shape[:2], size, rule, self.num_classes, self._out_q,
                                                        self._label_dtype, raw.dtype)
            return self._upsampler[1](raw, lambda scores: dense(scores, size), self._bands)
        if self.output == "labels":
            labels = raw.astype(self._label_dtype, copy=False)
        else:
            labels = np.empty(raw.shape[:2], self._label_dtype)
            self._bands.run(lambda a, b: _first_argmax(raw[a:b], labels[a:b]), len(raw))
        if labels.shape != (height, width):
            key = (labels.shape, (height, width))
            if self._nearest is None or self._nearest[0] != key:
                self._nearest = key, _pillow_nearest_index(height, len(labels)), _pillow_nearest_index(
                    width, labels.shape[1])
            _, rows, cols = self._nearest
            small, labels = labels, np.empty((height, width), self._label_dtype)

            def band(a, b):
                # In-range indices: mode="clip" skips the bounds check and the buffered copy of ``out``.
                np.take(np.take(small, rows[a:b], axis=0, mode="clip"), cols, axis=1, out=labels[a:b], mode="clip")

            self._bands.run(band, height)
        return labels

    def _dense_tensorflow(self, raw: np.ndarray, size) -> np.ndarray:
        """Labels of the whole score map resized with `resize_bilinear` (reduced-resolution logits)."""
        scores = self._dequantize(raw)
        scores = _Resizer(scores.shape, size)(scores, self._bands)
        labels = np.empty(scores.shape[:2], self._label_dtype)
        self._bands.run(lambda a, b: _first_argmax(scores[a:b], labels[a:b]), len(labels))
        return labels

    def _dense_pillow(self, raw: np.ndarray, size) -> np.ndarray:
        """Labels of the whole score map resized by Pillow's BILINEAR, one float channel at a time ("F" mode).

        Pillow resizes ``host_threads`` channels at once (it releases the GIL); `_running_argmax` merges them in
        class order (ties keep the first class).
        """
        height, width = size

        def resized(c):
            channel = np.ascontiguousarray(self._dequantize(raw[..., c]))
            return np.asarray(Image.fromarray(channel).resize((width, height), Image.BILINEAR))

        def channels():
            classes = raw.shape[-1]
            for start in range(0, classes, self.host_threads):  # at most host_threads full-size channels in memory
                group = self._bands.run(lambda a, b: [resized(start + i) for i in range(a, b)],
                                        min(self.host_threads, classes - start), minimum=1)
                yield from (channel for band in group for channel in band)

        return _running_argmax(channels(), np.empty((height, width), self._label_dtype))

    def _crop_padding(self, out: np.ndarray) -> np.ndarray:
        """The part of a letterboxed output that covers the frame (at the output's own resolution)."""
        top, left, inner_h, inner_w = self._box
        sy, sx = out.shape[0] / self.input_size[0], out.shape[1] / self.input_size[1]
        y0, x0 = int(round(top * sy)), int(round(left * sx))
        return out[y0:max(y0 + 1, int(round((top + inner_h) * sy))), x0:max(x0 + 1, int(round((left + inner_w) * sx)))]

    def overlay(self, image, labels=None, alpha: float = 0.5) -> np.ndarray:
        """``image`` blended with its predicted labels (or the given ones) in the model's palette."""
        pixels = _rgb_array(image)
        labels = self.predict(pixels) if labels is None else labels
        return overlay(pixels, labels, self.palette, alpha, self.ignore_label)


def _save_labels(labels: np.ndarray, path: str) -> None:
    # 8-bit PNG where the classes fit, otherwise 16-bit grey.
    image = Image.fromarray(labels.astype(np.uint8)) if labels.max(initial=0) < 256 else Image.fromarray(
        labels.astype(np.uint16))
    image.save(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Segment an image with a kerasseg .tflite model (its embedded metadata, or the sidecar .json "
                    "next to it for older files, describes it).")
    parser.add_argument("model", help="the .tflite model")
    parser.add_argument("image", help="an RGB image file")
    parser.add_argument("--overlay", help="write the image blended with the predicted labels here")
    parser.add_argument("--labels", help="write the label map here (8-bit PNG of class indices)")
    parser.add_argument("--metadata", help="the sidecar JSON (default: next to the model; optional for models with "
                                           "embedded metadata)")
    parser.add_argument("--aspect", choices=ASPECTS, default="stretch",
                        help="stretch the frame to the model input (default, as in training) or letterbox it")
    parser.add_argument("--threads", type=int, default=2, help="LiteRT CPU threads (default 2)")
    parser.add_argument("--host-threads", type=int, default=None,
                        help="threads for the resize and the label work around the model (default: the cores this "
                             "process may use, at most 4)")
    parser.add_argument("--delegate", help="a LiteRT external delegate library (.so) to run the model on; operators "
                                           "it does not take run on the CPU")
    parser.add_argument("--delegate-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of --delegate (repeatable)")
    parser.add_argument("--hardware", choices=HARDWARE, default=None,
                        help="run through LiteRT's CompiledModel on this accelerator (gpu keeps the CPU as fallback) "
                             "instead of the interpreter")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    parser.add_argument("--runs", type=int, default=1, help="time this many predictions (after one warm-up)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"Expected --runs >= 1. Received: --runs={args.runs}")
    try:
        segmenter = Segmenter(args.model, num_threads=args.threads, metadata_path=args.metadata, aspect=args.aspect,
                              delegate=args.delegate, delegate_options=parse_delegate_options(args.delegate_option),
                              hardware=args.hardware, host_threads=args.host_threads)
        image = load_image(args.image)
        labels = segmenter.predict(image)  # warm-up: the first invoke also plans memory
        totals = []
        for _ in range(args.runs):
            t = time.perf_counter()
            labels = segmenter.predict(image)
            totals.append(1e3 * (time.perf_counter() - t))
        if args.overlay:
            Image.fromarray(segmenter.overlay(image, labels, args.alpha)).save(args.overlay)
        if args.labels:
            _save_labels(labels, args.labels)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    timing = segmenter.timings
    h, w = image.shape[:2]
    mh, mw = segmenter.input_size
    print(f"{args.image}: {w}x{h} via {mw}x{mh} {segmenter.input_dtype.name} model ({segmenter.output} head), "
          f"latency {float(np.median(totals)):.1f} ms (median of {args.runs}; preprocess "
          f"{timing['preprocess']:.1f}, inference {timing['inference']:.1f}, postprocess "
          f"{timing['postprocess']:.1f}; host work on {segmenter.host_threads} threads) on {segmenter.accelerator}")
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=segmenter.num_classes)
    names = segmenter.class_names or [str(c) for c in range(segmenter.num_classes)]
    present = [f"{names[c]} {100.0 * counts[c] / labels.size:.1f}%" for c in np.argsort(-counts) if counts[c]]
    print("classes: " + ", ".join(present))
    for what, path in (("overlay", args.overlay), ("labels", args.labels)):
        if path:
            print(f"wrote {what} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
