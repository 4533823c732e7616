"""The one paired scoring loop: every runtime predicts the same images, and one confusion matrix per runtime counts.

`score_pairs` walks the ``(image, label)`` pairs of a dataset once, asks each of one or several *image predictors*
for its prediction at the label size, and accumulates per runtime a `ConfusionMatrix` (and, on request, per-image
matrices for `kerasseg.evaluation.paired_bootstrap`, and the matrices of the pixels near label edges), the argmax
agreement of every runtime with the first one, and the largest difference of their raw outputs. `evaluate`,
`compare_keras_tflite` and `kerasseg.export.parity` are built on it, so their scores differ only by the runtimes.

An image predictor is a callable ``(image (H, W, C) float32, size (h, w)) -> output``, where ``output`` is float
scores ``(h, w, K)`` (the argmax is taken) or an integer label map ``(h, w)``, or a `Prediction` that also carries the
raw model output. `WholeImage` makes one from a predict function (`kerasseg.runtimes`): the image resized to the
model input, one forward pass, the scores resized back; `kerasseg.evaluation.predict_logits` covers the
sliding-window and multi-scale modes.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterator, Mapping

import numpy as np

from kerasseg.evaluation.boundary import band_labels
from kerasseg.evaluation.confusion import ConfusionMatrix, image_confusions
from kerasseg.evaluation.inference import resize, softmax, tile_size

__all__ = ["Prediction", "PairedScores", "WholeImage", "iter_pairs", "score_pairs", "check_max_images"]


@dataclasses.dataclass
class Prediction:
    """What an image predictor returns when its raw output is compared too.

    Attributes:
        output: scores ``(h, w, K)`` or labels ``(h, w)`` at the label size.
        raw: the model's own scores (e.g. logits at the model resolution), compared with the first runtime's raw
            scores for `PairedScores.max_abs_error`; ``None`` leaves that runtime's error ``None``.
    """

    output: np.ndarray
    raw: np.ndarray | None = None


@dataclasses.dataclass
class PairedScores:
    """What `score_pairs` counted.

    Attributes:
        names: the runtimes, reference first.
        confusion: ``{name: ConfusionMatrix}``.
        image_confusion: ``{name: (num_images, C, C)}`` with ``per_image``, else ``None``.
        boundary_confusion: ``{name: ConfusionMatrix}`` of the label-edge band with ``boundary_width``, else ``None``.
        image_boundary_confusion: the per-image band matrices with both, else ``None``.
        agreement: ``{name: fraction of scored pixels whose prediction equals the reference's}`` (1.0 for it).
        max_abs_error: ``{name: largest |raw - reference raw|}`` (``None`` without raw outputs; 0.0 for the
            reference).
        num_images: images scored.
        num_scored: scored pixels per runtime (labels in range and not ignored).
        seconds: wall time.
    """

    names: list
    confusion: dict
    agreement: dict
    max_abs_error: dict
    num_images: int
    num_scored: int
    seconds: float = 0.0
    image_confusion: dict | None = None
    boundary_confusion: dict | None = None
    image_boundary_confusion: dict | None = None

    def scores(self, name: str) -> dict:
        """`kerasseg.evaluation.scores_from_confusion` of one runtime."""
        return self.confusion[name].scores()

    def to_dict(self) -> dict:
        """JSON-ready summary: per runtime the mIoU, agreement, error and confusion matrix."""
        def finite(v):
            return None if v is None or not np.isfinite(v) else float(v)

        return {"num_images": self.num_images, "num_scored": self.num_scored, "seconds": float(self.seconds),
                "runtimes": {n: {"miou": finite(self.confusion[n].miou), "agreement": finite(self.agreement[n]),
                                 "max_abs_error": finite(self.max_abs_error[n]),
                                 "confusion_matrix": self.confusion[n].matrix.tolist()} for n in self.names}}



def check_max_images(max_images) -> int | None:
    """``max_images`` as an int, or ``None``; a ``ValueError`` unless it is a positive integer or ``None``."""
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, (int, np.integer))
                                   or max_images < 1):
        raise ValueError(f"Expected max_images to be a positive integer or None. Received: max_images={max_images!r}")
    return None if max_images is None else int(max_images)


def _to_numpy(x) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def iter_pairs(data, *, same_size: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields unbatched ``(image (H, W, C), label (h, w))`` pairs from batched or unbatched elements.

    Args:
        data: iterable / ``tf.data.Dataset`` of ``(images, labels)``; labels ``(..., 1)`` are squeezed and float
            labels with integer values are accepted.
        same_size: require labels of the image size.

    Raises:
        ValueError: malformed elements.
    """
    for index, element in enumerate(data):
        if isinstance(element, dict) or not isinstance(element, (tuple, list)) or len(element) != 2:
            raise ValueError(f"Expected dataset elements to be (image, label) pairs. Received: element {index} of "
                             f"type {type(element).__name__}")
        image, label = _to_numpy(element[0]), _to_numpy(element[1])
        if image.ndim == 3:
            image, label = image[None], label[None]
        if label.ndim == 4 and label.shape[-1] == 1:
            label = label[..., 0]
        if (image.ndim != 4 or label.ndim != 3 or len(image) != len(label)
                or (same_size and image.shape[:3] != label.shape)):
            raise ValueError(f"Expected images (H, W, C) or (B, H, W, C) with labels (H, W) or (B, H, W)"
                             f"{' of the same size' if same_size else ''}. Received: image of shape {image.shape} "
                             f"and label of shape {label.shape} (element {index})")
        if not np.issubdtype(label.dtype, np.integer):
            if not np.all(label == np.round(label)):
                raise ValueError(f"Expected integer labels. Received: labels of dtype {label.dtype} with "
                                 f"fractional values (element {index})")
            label = label.astype(np.int64)
        yield from zip(image.astype(np.float32, copy=False), label)


class WholeImage:
    """Image predictor of a predict function at its input size: resize in, one forward pass, resize out.

    The image is resized bilinearly to the model input. Scores at another resolution than ``output_size`` (a model
    exported with ``host_upsample``) are first resized bilinearly to it, as the model's own last layer does; that is
    the raw output `score_pairs` compares. Then scores are resized bilinearly to the label size before the argmax,
    or, with ``labels=True``, the label map (the argmax of scores) is resized with nearest neighbour.

    Args:
        predict_fn: a predict function (see `kerasseg.runtimes`) with an ``input_shape``, or ``input_size``.
        input_size: the model's ``(height, width)``; ``predict_fn.input_shape[:2]`` by default.
        output_size: the ``(height, width)`` the raw scores are brought to; the input size by default.
        labels: predict label maps, resized with nearest neighbour (for a label head, or to treat a score model
            the same way as one).
        softmax_raw: compare the softmax of the raw logits (against a probabilities head).

    Attributes:
        first_input: the first model-input batch ``(1, h, w, C)`` it ran (e.g. for timing), ``None`` before.
    """

    def __init__(self, predict_fn: Callable, *, input_size=None, output_size=None, labels: bool = False,
                 softmax_raw: bool = False):
        self.predict_fn = predict_fn
        self.input_size = tile_size(predict_fn, input_size)
        self.output_size = self.input_size if output_size is None else tuple(int(d) for d in output_size)
        self.labels = labels
        self.softmax_raw = softmax_raw
        self.first_input = None

    def __call__(self, image: np.ndarray, size) -> Prediction:
        x = resize(image, self.input_size)[None]
        if self.first_input is None:
            self.first_input = x
        raw = _to_numpy(self.predict_fn(x))[0]
        scores = not np.issubdtype(raw.dtype, np.integer)
        if scores:
            raw = resize(raw.astype(np.float32, copy=False), self.output_size)
        if self.labels or not scores:
            # Label maps have no output error to compare.
            labels = np.argmax(raw, axis=-1) if scores else raw
            return Prediction(resize(labels[..., None], size, "nearest")[..., 0])
        return Prediction(resize(raw, size), softmax(raw) if self.softmax_raw else raw)


def score_pairs(data, predictors: Mapping[str, Callable], *, num_classes: int, ignore_label: int | None = 255,
                max_images: int | None = None, per_image: bool = False, boundary_width: int | None = None,
                same_size: bool = True, require_scored: bool = False, progress: bool = False) -> PairedScores:
    """Scores one or several image predictors on the same ``(image, label)`` pairs, walking the data once.

    Args:
        data: iterable / ``tf.data.Dataset`` of ``(normalised images, integer labels)``, batched or not.
        predictors: ``{name: image predictor}`` (see the module docstring); the first is the reference of the
            agreement and of the raw-output error.
        num_classes: number of classes.
        ignore_label: label value that is not scored (labels outside ``[0, num_classes)`` are skipped as well).
        max_images: stop after this many images.
        per_image: also keep each image's confusion matrices.
        boundary_width: also count the pixels within this many pixels of a label edge
            (`kerasseg.evaluation.boundary`).
        same_size: require labels of the image size.
        require_scored: raise unless some pixel is scored.
        progress: a `keras.utils.Progbar` of the images.

    Returns:
        A `PairedScores`.

    Raises:
        ValueError: malformed data or predictions, an empty dataset, or (``require_scored``) no scored pixel.
    """
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or int(num_classes) < 1:
        raise ValueError(f"Expected num_classes to be a positive integer. Received: num_classes={num_classes!r}")
    num_classes = int(num_classes)
    max_images = check_max_images(max_images)
    if not isinstance(per_image, bool):
        raise ValueError(f"Expected per_image to be True or False. Received: per_image={per_image!r}")
    if boundary_width is not None and (isinstance(boundary_width, bool) or int(boundary_width) != boundary_width
                                       or boundary_width < 0):
        raise ValueError(f"Expected boundary_width to be a non-negative integer or None. Received: "
                         f"boundary_width={boundary_width!r}")
    names = list(predictors)
    if not names:
        raise ValueError("Expected at least one predictor. Received: predictors={}")
    matrices = {n: ConfusionMatrix(num_classes, ignore_label) for n in names}
    band_matrices = {n: ConfusionMatrix(num_classes, ignore_label) for n in names} if boundary_width is not None \
        else None
    images = {n: [] for n in names}
    band_images = {n: [] for n in names}
    agree = dict.fromkeys(names, 0)
    max_err = {n: 0.0 for n in names}
    bar = None
    if progress:
        import keras

        total = None
        try:
            total = len(data)
        except TypeError:  # a generator, or a tf.data.Dataset of unknown cardinality
            pass
        if max_images is not None:
            total = max_images if total is None else min(total, max_images)
        bar = keras.utils.Progbar(total, unit_name="image")
    scored = count = 0
    start = time.perf_counter()
    for image, label in iter_pairs(data, same_size=same_size):
        size = label.shape
        valid = (label >= 0) & (label < num_classes)
        if ignore_label is not None:
            valid &= label != ignore_label
        band = None if band_matrices is None else band_labels(label, int(boundary_width), num_classes, ignore_label)
        reference = reference_raw = None
        for n in names:
            out = predictors[n](image, size)
            raw = None
            if isinstance(out, Prediction):
                out, raw = out.output, out.raw
            out = _to_numpy(out)
            prediction = out if np.issubdtype(out.dtype, np.integer) else np.argmax(out, axis=-1)
            if prediction.shape != size:
                raise ValueError(f"Expected {n} to predict scores (h, w, K) or labels (h, w) of the label size "
                                 f"{size}. Received: output of shape {out.shape}")
            matrices[n].update(label, prediction)
            if per_image:
                images[n].append(image_confusions(label[None], prediction[None], num_classes, ignore_label)[0])
            if band is not None:
                band_matrices[n].update(band, prediction)
                if per_image:
                    band_images[n].append(image_confusions(band[None], prediction[None], num_classes,
                                                           ignore_label)[0])
            if reference is None:
                reference, reference_raw = prediction, raw
                if raw is None:
                    max_err[n] = None
            else:
                agree[n] += int((prediction[valid] == reference[valid]).sum())
                if raw is None or reference_raw is None:
                    max_err[n] = None
                elif max_err[n] is not None:
                    max_err[n] = max(max_err[n], float(np.max(np.abs(raw - reference_raw))))
        scored += int(valid.sum())
        agree[names[0]] += int(valid.sum())
        count += 1
        if bar is not None:
            bar.update(count)
        if max_images is not None and count >= max_images:
            break
    if count == 0:
        raise ValueError("Expected at least one (image, label) pair. Received: an empty dataset")
    if require_scored and scored == 0:
        raise ValueError(f"Expected the dataset to contain scored pixels (labels in [0, {num_classes}) other than "
                         f"ignore_label={ignore_label}). Received: {count} images without any")
    return PairedScores(
        names=names, confusion=matrices, num_images=count, num_scored=scored,
        agreement={n: agree[n] / scored if scored else float("nan") for n in names},
        max_abs_error=max_err, seconds=time.perf_counter() - start,
        image_confusion={n: np.stack(v) for n, v in images.items()} if per_image else None,
        boundary_confusion=band_matrices,
        image_boundary_confusion={n: np.stack(v) for n, v in band_images.items()}
        if per_image and band_matrices is not None else None)
