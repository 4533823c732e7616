"""Dense prediction on images of any size: whole-image, sliding-window and multi-scale + flip inference.

Everything here works through a *predict function*: any callable that maps a float32 batch ``(B, h, w, 3)`` of
normalised images at the model's static input size to scores ``(B, h, w, C)`` (logits or probabilities) or to
integer label maps ``(B, h, w)``. An optional ``input_shape`` attribute ``(h, w, channels)`` lets the functions
below find the input size themselves. `keras_predict_fn` adapts a Keras model; the TFLite and ONNX runners
(`kerasseg.runtimes.TFLiteModel`, `kerasseg.runtimes.ONNXModel`) already have this interface, and so can any other
runtime wrapper.
Because Keras, TFLite and ONNX models all go through the same code, their scores differ only by the models.

Modes:

- ``"whole"``: the image is resized (bilinearly) to the input size, predicted once, and the scores are resized back.
- ``"slide"``: overlapping tiles of the input size (stride 2/3 of the tile by default) cover the image, which is
  zero-padded at the bottom / right when smaller than a tile (zero is the dataset mean after normalisation); the
  scores of overlapping tiles are averaged (Zhao et al., PSPNet, CVPR 2017; the MMSegmentation "slide" mode).
- ``"multiscale"``: for each scale the image is resized, predicted with the sliding window (a single padded tile
  when it fits), optionally also mirrored, and the softmax probabilities, resized back to the original size, are
  averaged (Chen et al., DeepLab, TPAMI 2018; Zhao et al., PSPNet).

Scores returned are logits averaged over tiles for ``"whole"`` and ``"slide"`` with a logits model, and averaged
probabilities for ``"multiscale"``, for probability models, and for label models (whose one-hot maps are averaged,
i.e. a vote); their argmax is the prediction in every case.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from kerasseg.runtimes import OUTPUT_HEADS
from kerasseg.runtimes.keras import KerasPredictor, keras_predict_fn

__all__ = ["INFERENCE_MODES", "MODES", "OUTPUT_HEADS", "OUTPUTS", "DEFAULT_SCALES", "KerasPredictor",
           "keras_predict_fn", "predict_logits", "predict_labels", "window_starts", "resize", "softmax", "as_pair",
           "tile_size"]

# How an image of any size is predicted; not the TFLite export modes of `kerasseg.export`.
INFERENCE_MODES = ("whole", "slide", "multiscale")
MODES = INFERENCE_MODES  # the older name
OUTPUTS = OUTPUT_HEADS  # the older name
DEFAULT_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------

def resize(array: np.ndarray, size, method: str = "bilinear") -> np.ndarray:
    """Resizes ``(H, W, C)`` to ``size`` (TensorFlow's half-pixel bilinear, as in training and the model heads)."""
    if tuple(array.shape[:2]) == tuple(size):
        return array
    import tensorflow as tf

    return tf.image.resize(np.ascontiguousarray(array), size, method=method).numpy().astype(array.dtype, copy=False)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (numpy; the scores of one image never need a graph)."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def as_pair(value, arg: str) -> tuple[int, int]:
    """``(height, width)`` of an int or a pair; a ``ValueError`` naming ``arg`` otherwise."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    try:
        h, w = value
        if int(h) != h or int(w) != w:
            raise ValueError
        h, w = int(h), int(w)
    except (TypeError, ValueError):
        raise ValueError(f"Expected {arg} to be a positive integer or a (height, width) pair. "
                         f"Received: {arg}={value!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"Expected {arg} to be positive. Received: {arg}={value!r}")
    return h, w


def window_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of the windows of size ``tile`` covering ``length`` (``>= tile``) with step ``stride``.

    The last window is moved back to end exactly at ``length`` rather than running past it.
    """
    if length <= tile:
        return [0]
    count = math.ceil((length - tile) / stride) + 1
    return sorted({min(i * stride, length - tile) for i in range(count)})


class _Runner:
    """Calls the predict function on tiles and turns whatever it returns into float32 scores of the tile size."""

    def __init__(self, predict_fn: Callable, tile: tuple[int, int], num_classes: int | None, output: str,
                 batch_size: int):
        self.predict_fn = predict_fn
        self.tile = tile
        self.num_classes = num_classes
        self.output = output
        self.batch_size = batch_size

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        raw = self.predict_fn(np.ascontiguousarray(batch, np.float32))
        raw = raw.numpy() if hasattr(raw, "numpy") else np.asarray(raw)
        if np.issubdtype(raw.dtype, np.integer):
            # Label maps are averaged as one-hot votes, never passed through a softmax.
            self.output = "labels"
        if self.output == "labels":
            if raw.ndim == 4 and raw.shape[-1] == 1:
                raw = raw[..., 0]
            if raw.ndim != 3 or raw.shape[0] != len(batch):
                raise ValueError(f"Expected predict_fn to return label maps of shape ({len(batch)}, h, w). "
                                 f"Received: output of shape {raw.shape}")
            if self.num_classes is None:
                raise ValueError("Expected num_classes for a predict_fn that returns label maps. "
                                 "Received: num_classes=None")
            raw = raw.astype(np.int64)
            scores = (raw[..., None] == np.arange(self.num_classes)).astype(np.float32)
            if scores.shape[1:3] != self.tile:
                # Nearest neighbour keeps one-hot maps one-hot.
                scores = np.stack([resize(s, self.tile, "nearest") for s in scores])
            return scores
        if raw.ndim != 4 or raw.shape[0] != len(batch):
            raise ValueError(f"Expected predict_fn to return scores of shape ({len(batch)}, h, w, num_classes) or "
                             f"labels ({len(batch)}, h, w). Received: output of shape {raw.shape}")
        if self.num_classes is None:
            self.num_classes = int(raw.shape[-1])
        elif raw.shape[-1] != self.num_classes:
            raise ValueError(f"Expected predict_fn to return {self.num_classes} class scores (num_classes). "
                             f"Received: output of shape {raw.shape}")
        scores = raw.astype(np.float32, copy=False)
        if scores.shape[1:3] != self.tile:
            # A head that predicts at a lower resolution: bring it to the tile size like a model head would.
            scores = np.stack([resize(s, self.tile) for s in scores])
        return scores

    def as_probabilities(self, scores: np.ndarray) -> np.ndarray:
        return softmax(scores) if self.output == "logits" else scores

    # ---------------------------------------------------------------------------------------------- the modes

    def whole(self, image: np.ndarray) -> np.ndarray:
        size = image.shape[:2]
        return resize(self(resize(image, self.tile)[None])[0], size)

    def slide(self, image: np.ndarray, stride: tuple[int, int]) -> np.ndarray:
        height, width = image.shape[:2]
        th, tw = self.tile
        ph, pw = max(height, th), max(width, tw)
        if (ph, pw) != (height, width):
            image = np.pad(image, ((0, ph - height), (0, pw - width), (0, 0)))
        windows = [(y, x) for y in window_starts(ph, th, stride[0]) for x in window_starts(pw, tw, stride[1])]
        total = count = None
        for i in range(0, len(windows), self.batch_size):
            chunk = windows[i:i + self.batch_size]
            scores = self(np.stack([image[y:y + th, x:x + tw] for y, x in chunk]))
            if total is None:
                total = np.zeros((ph, pw, scores.shape[-1]), np.float32)
                count = np.zeros((ph, pw, 1), np.float32)
            for (y, x), s in zip(chunk, scores):
                total[y:y + th, x:x + tw] += s
                count[y:y + th, x:x + tw] += 1.0
        return (total / count)[:height, :width]


def _check_image(image, predict_fn) -> np.ndarray:
    array = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
    if array.ndim != 3 or min(array.shape) < 1:
        raise ValueError(f"Expected one normalised image of shape (H, W, channels). Received: image of shape "
                         f"{array.shape}")
    channels = (getattr(predict_fn, "input_shape", None) or (None,))[-1]
    if channels is not None and array.shape[-1] != channels:
        raise ValueError(f"Expected an image with {channels} channels (the model input). Received: image of shape "
                         f"{array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"Expected a normalised float image ((pixel - mean) / std). Received: image of dtype "
                         f"{array.dtype}")
    return array.astype(np.float32, copy=False)


def tile_size(predict_fn, input_size) -> tuple[int, int]:
    """``input_size`` as a pair, or the static ``predict_fn.input_shape[:2]`` when it is ``None``."""
    if input_size is None:
        shape = getattr(predict_fn, "input_shape", None)
        if shape is None or len(shape) != 3 or shape[0] is None or shape[1] is None:
            raise ValueError(f"Expected input_size (the model's static (height, width)): predict_fn has no static "
                             f"input_shape. Received: input_size=None, predict_fn.input_shape={shape}")
        input_size = shape[:2]
    return as_pair(input_size, "input_size")


def predict_logits(predict_fn: Callable, image, *, input_size=None, mode: str = "whole",
                   scales: Sequence[float] = DEFAULT_SCALES, flip: bool | None = None, stride=None,
                   num_classes: int | None = None, output: str = "logits", batch_size: int = 1,
                   probabilities: bool = False) -> np.ndarray:
    """Class scores of one image of any size, at that size.

    Args:
        predict_fn: ``(B, h, w, 3)`` float32 at the input size -> scores ``(B, h, w, C)`` or labels ``(B, h, w)``
            (see the module docstring); its ``input_shape`` attribute, if any, gives the default ``input_size``.
        image: one normalised float image ``(H, W, 3)`` (numpy or tensor), any ``H`` and ``W``.
        input_size: the model's static ``(height, width)``; also the tile size. Defaults to
            ``predict_fn.input_shape[:2]``.
        mode: ``"whole"``, ``"slide"`` or ``"multiscale"`` (see the module docstring).
        scales: image scales of the ``"multiscale"`` mode, relative to the image size.
        flip: also predict the horizontally mirrored image and average (after mirroring back). Defaults to
            ``True`` in ``"multiscale"`` mode and ``False`` otherwise.
        stride: sliding-window step, an int or ``(height, width)`` between 1 and the tile size; 2/3 of the tile
            (rounded up) by default.
        num_classes: number of classes; inferred from the scores when omitted, required for a label output.
        output: what ``predict_fn`` returns: ``"logits"``, ``"probabilities"`` or ``"labels"`` (integer outputs are
            always treated as labels).
        batch_size: number of tiles passed to ``predict_fn`` at once.
        probabilities: return probabilities in every case (a softmax of the averaged logits of a logits model),
            e.g. for a refinement such as `kerasseg.evaluation.DenseCRF`.

    Returns:
        Float32 ``(H, W, C)`` scores whose argmax over the last axis is the predicted label map.

    Raises:
        ValueError: an invalid argument, or a predict_fn output of the wrong shape.
    """
    if mode not in INFERENCE_MODES:
        raise ValueError(f"Expected mode to be one of {INFERENCE_MODES}. Received: mode={mode!r}")
    if output not in OUTPUT_HEADS:
        raise ValueError(f"Expected output to be one of {OUTPUT_HEADS}. Received: output={output!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"Expected batch_size to be a positive integer. Received: batch_size={batch_size!r}")
    if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) != num_classes
                                    or int(num_classes) < 1):
        raise ValueError(f"Expected num_classes to be a positive integer. Received: num_classes={num_classes!r}")
    image = _check_image(image, predict_fn)
    tile = tile_size(predict_fn, input_size)
    if stride is None:
        stride = (math.ceil(tile[0] * 2 / 3), math.ceil(tile[1] * 2 / 3))
    stride = as_pair(stride, "stride")
    if stride[0] > tile[0] or stride[1] > tile[1]:
        raise ValueError(f"Expected a stride no larger than the tile {tile}, so that the windows cover the image. "
                         f"Received: stride={stride}")
    if flip is None:
        flip = mode == "multiscale"
    runner = _Runner(predict_fn, tile, None if num_classes is None else int(num_classes), output, int(batch_size))

    def predict_one(x: np.ndarray) -> np.ndarray:
        return runner.whole(x) if mode == "whole" else runner.slide(x, stride)

    if mode != "multiscale":
        scores = predict_one(image)
        if flip:
            # Mirror, predict, mirror back: the average removes any left/right bias of the model.
            scores = 0.5 * (scores + predict_one(image[:, ::-1])[:, ::-1])
        if probabilities:
            scores = runner.as_probabilities(scores)
        return np.ascontiguousarray(scores, np.float32)

    scales = [float(s) for s in (scales if isinstance(scales, (list, tuple)) else [scales])]
    if not scales or any(not math.isfinite(s) or s <= 0 for s in scales):
        raise ValueError(f"Expected scales to be a non-empty list of positive numbers. Received: scales={scales}")
    height, width = image.shape[:2]
    total, n = None, 0
    for scale in scales:
        size = (max(1, int(round(height * scale))), max(1, int(round(width * scale))))
        scaled = resize(image, size)
        for mirrored in ((False, True) if flip else (False,)):
            x = scaled[:, ::-1] if mirrored else scaled
            scores = runner.slide(x, stride)
            if mirrored:
                scores = scores[:, ::-1]
            # Resize the scores, then take the softmax, at the original size (as MMSegmentation's aug_test does).
            probs = runner.as_probabilities(resize(np.ascontiguousarray(scores), (height, width)))
            total = probs if total is None else total + probs
            n += 1
    return np.ascontiguousarray(total / n, np.float32)


def predict_labels(predict_fn: Callable, image, **kwargs) -> np.ndarray:
    """Int32 ``(H, W)`` label map of one image: the argmax of `predict_logits` (same arguments)."""
    return np.argmax(predict_logits(predict_fn, image, **kwargs), axis=-1).astype(np.int32)
