"""Fully connected CRF refinement of softmax scores, as DeepLab v1/v2 apply it after the network.

Krähenbühl and Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge Potentials", NeurIPS 2011:
every pair of pixels ``i, j`` is connected by a Potts pairwise term weighted by two Gaussian kernels,

    k(i, j) = w1 exp(-|p_i - p_j|² / 2θα² - |I_i - I_j|² / 2θβ²)    (appearance: near and similar colour)
            + w2 exp(-|p_i - p_j|² / 2θγ²)                           (smoothness: near)

with positions ``p`` in pixels and colours ``I`` in 0..255 RGB units; the unary term is the negative log of the
network's probabilities. Mean-field inference runs a fixed number of iterations, each a permutohedral-lattice
filtering pass, so a frame costs O(pixels × classes) per iteration.

Chen et al. (DeepLab v1, ICLR 2015; v2, TPAMI 2018) fix the smoothness kernel at w2 = 3, θγ = 3 and search the
appearance kernel on held-out images; the defaults here are the setting released with DeepLab-CRF-LargeFOV for
PASCAL VOC (w1 = 4, θα = 121, θβ = 5, w2 = 3, θγ = 3, 10 iterations).
docs/crf.md measures them and a grid around them on CamVid.

The inference is the authors' C++ code through ``pydensecrf2`` (a maintained build of Beyer's ``pydensecrf``
binding), an optional extra: ``pip install 'kerasseg[crf]'``. Neither Keras, TensorFlow nor LiteRT ships a dense
CRF: TensorFlow Addons' ``crf`` layers are linear-chain CRFs for sequences, not fully connected image CRFs.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["DenseCRF", "DenseCRFMissingError", "NormalizedImageCRF", "add_crf_arguments", "crf_from_arguments"]

EXTRA_HINT = "pip install 'kerasseg[crf]' (or pip install pydensecrf2==1.1)"
# Probabilities from a float32 softmax, or averaged over scales, sum to 1 within rounding.
SUM_TOLERANCE = 1e-3


class DenseCRFMissingError(ImportError):
    """Raised when the dense CRF is used without its optional ``pydensecrf2`` package."""


def _densecrf_module():
    try:
        import pydensecrf.densecrf as densecrf
        import pydensecrf.utils as utils
    except ImportError as e:
        raise DenseCRFMissingError(f"Expected the optional package 'pydensecrf2' for the dense CRF: {EXTRA_HINT}. "
                                   f"Received: ImportError: {e}") from None
    return densecrf, utils


def _positive(value, arg: str, *, integer: bool = False, allow_zero: bool = False):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if ok and integer:
        ok = int(value) == value
    if not ok:
        kind = "integer" if integer else "number"
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"Expected {arg} to be a {bound} {kind}. Received: {arg}={value!r}")
    return int(value) if integer else float(value)


def _check_probabilities(probabilities) -> np.ndarray:
    array = probabilities.numpy() if hasattr(probabilities, "numpy") else np.asarray(probabilities)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"Expected probabilities as a float array (softmax scores). Received: probabilities of dtype "
                        f"{array.dtype}")
    if array.ndim != 3 or min(array.shape) < 1:
        raise ValueError(f"Expected probabilities of shape (H, W, num_classes). Received: probabilities of shape "
                         f"{array.shape}")
    array = array.astype(np.float32, copy=False)
    low, high = float(array.min()), float(array.max())
    sums = array.sum(axis=-1, dtype=np.float64)
    worst = float(np.max(np.abs(sums - 1.0)))
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0.0 or high > 1.0 + SUM_TOLERANCE \
            or worst > SUM_TOLERANCE:
        raise ValueError(f"Expected probabilities in [0, 1] that sum to 1 over the last axis (softmax scores, not "
                         f"logits). Received: values in [{low:.4g}, {high:.4g}] with sums off by up to {worst:.4g}")
    return array


def _check_frame(frame, size) -> np.ndarray:
    array = frame.numpy() if hasattr(frame, "numpy") else np.asarray(frame)
    if array.dtype != np.uint8:
        raise TypeError(f"Expected the RGB frame as uint8 pixels (0..255). Received: frame of dtype {array.dtype}")
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"Expected an RGB frame of shape (H, W, 3). Received: frame of shape {array.shape}")
    if tuple(array.shape[:2]) != tuple(size):
        raise ValueError(f"Expected a frame of the same height and width as the probabilities {tuple(size)}. "
                         f"Received: frame of shape {array.shape}")
    # The binding's typed memoryviews refuse read-only buffers (e.g. np.asarray of a PIL image).
    return np.require(array, requirements=["C", "W"])


@dataclasses.dataclass(frozen=True)
class DenseCRF:
    """Mean-field inference in a fully connected CRF over a frame's pixels (Krähenbühl & Koltun 2011).

    Args:
        appearance_weight: w1, weight of the appearance (bilateral) kernel.
        appearance_xy_std: θα, its spatial standard deviation in pixels.
        appearance_rgb_std: θβ, its colour standard deviation in 0..255 RGB units.
        smoothness_weight: w2, weight of the smoothness (Gaussian) kernel; 0 leaves it out.
        smoothness_xy_std: θγ, its spatial standard deviation in pixels.
        iterations: mean-field iterations.

    Calling it with ``(probabilities (H, W, C), frame (H, W, 3) uint8 RGB)`` returns refined float32
    probabilities ``(H, W, C)``; their argmax is the refined label map.
    """

    appearance_weight: float = 4.0
    appearance_xy_std: float = 121.0
    appearance_rgb_std: float = 5.0
    smoothness_weight: float = 3.0
    smoothness_xy_std: float = 3.0
    iterations: int = 10

    def __post_init__(self):
        for field, allow_zero in (("appearance_weight", True), ("appearance_xy_std", False),
                                  ("appearance_rgb_std", False), ("smoothness_weight", True),
                                  ("smoothness_xy_std", False)):
            object.__setattr__(self, field, _positive(getattr(self, field), field, allow_zero=allow_zero))
        object.__setattr__(self, "iterations", _positive(self.iterations, "iterations", integer=True))

    def settings(self) -> dict:
        """The parameters as a JSON-ready dict (recorded with evaluation results)."""
        return dataclasses.asdict(self)

    def __call__(self, probabilities, frame) -> np.ndarray:
        """Refined probabilities of one frame.

        Args:
            probabilities: float ``(H, W, C)`` softmax scores (each pixel's scores in [0, 1], summing to 1).
            frame: the ``(H, W, 3)`` uint8 RGB frame the scores belong to.

        Returns:
            Float32 ``(H, W, C)`` probabilities after `iterations` mean-field steps.

        Raises:
            TypeError: probabilities that are not floats, or a frame that is not uint8.
            ValueError: wrong shapes, a frame of another size, or scores that are not probabilities.
            DenseCRFMissingError: ``pydensecrf2`` is not installed.
        """
        probabilities = _check_probabilities(probabilities)
        height, width, classes = probabilities.shape
        frame = _check_frame(frame, (height, width))
        densecrf, utils = _densecrf_module()
        crf = densecrf.DenseCRF2D(width, height, classes)
        # The library wants class-major (C, H*W) unaries; clipping keeps -log finite for one-hot votes.
        unary = utils.unary_from_softmax(np.ascontiguousarray(probabilities.transpose(2, 0, 1)), clip=1e-5)
        crf.setUnaryEnergy(np.ascontiguousarray(unary, np.float32))
        if self.smoothness_weight > 0:
            crf.addPairwiseGaussian(sxy=self.smoothness_xy_std, compat=self.smoothness_weight)
        if self.appearance_weight > 0:
            crf.addPairwiseBilateral(sxy=self.appearance_xy_std, srgb=self.appearance_rgb_std, rgbim=frame,
                                     compat=self.appearance_weight)
        refined = np.asarray(crf.inference(self.iterations), np.float32)
        return np.ascontiguousarray(refined.reshape(classes, height, width).transpose(1, 2, 0))

    def for_normalized_images(self, mean, std) -> "NormalizedImageCRF":
        """This CRF for images normalised as ``(pixel - mean) / std`` (what `kerasseg.evaluation.evaluate` sees)."""
        return NormalizedImageCRF(self, mean, std)


class NormalizedImageCRF:
    """A `DenseCRF` applied to normalised model inputs: the frame is recovered as ``image * std + mean``.

    It is the ``refine`` callable of `kerasseg.evaluation.evaluate`: ``(probabilities, normalised image) ->
    probabilities``.

    Args:
        crf: the `DenseCRF`.
        mean, std: the per-channel normalisation in pixel units (``ModelMetadata.mean`` / ``.std``).
    """

    def __init__(self, crf: DenseCRF, mean, std):
        if not isinstance(crf, DenseCRF):
            raise TypeError(f"Expected a DenseCRF. Received: crf of type {type(crf).__name__}")
        self.crf = crf
        self.mean = self._channels(mean, "mean")
        self.std = self._channels(std, "std")
        if np.any(self.std <= 0):
            raise ValueError(f"Expected a positive std. Received: std={self.std.tolist()}")

    @staticmethod
    def _channels(value, arg: str) -> np.ndarray:
        array = np.asarray(value, np.float32).reshape(-1)
        if array.size not in (1, 3) or not np.all(np.isfinite(array)):
            raise ValueError(f"Expected {arg} as one or three finite numbers (RGB, pixel units). Received: "
                             f"{arg}={value!r}")
        return array

    def settings(self) -> dict:
        return self.crf.settings()

    def __call__(self, probabilities, image) -> np.ndarray:
        image = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
        if not np.issubdtype(image.dtype, np.floating):
            raise TypeError(f"Expected a normalised float image ((pixel - mean) / std). Received: image of dtype "
                            f"{image.dtype}")
        frame = np.clip(np.rint(image * self.std + self.mean), 0, 255).astype(np.uint8)
        return self.crf(probabilities, frame)


# ------------------------------------------------------------------------------------------ command-line flags

_FLAGS = (  # (flag, field, help)
    ("--crf-w1", "appearance_weight", "appearance kernel weight w1"),
    ("--crf-theta-alpha", "appearance_xy_std", "appearance kernel spatial std θα, pixels"),
    ("--crf-theta-beta", "appearance_rgb_std", "appearance kernel colour std θβ, 0..255 RGB units"),
    ("--crf-w2", "smoothness_weight", "smoothness kernel weight w2"),
    ("--crf-theta-gamma", "smoothness_xy_std", "smoothness kernel spatial std θγ, pixels"),
    ("--crf-iterations", "iterations", "mean-field iterations"),
)


def add_crf_arguments(parser) -> None:
    """Adds ``--crf`` and its parameters (defaults: `DenseCRF`'s) to an ``argparse`` parser."""
    defaults = DenseCRF()
    group = parser.add_argument_group("dense CRF refinement (Krähenbühl & Koltun 2011; needs kerasseg[crf])")
    group.add_argument("--crf", action="store_true",
                       help="refine the softmax scores with a fully connected CRF over the RGB frame")
    for flag, field, text in _FLAGS:
        kind = int if field == "iterations" else float
        group.add_argument(flag, type=kind, default=getattr(defaults, field), dest=f"crf_{field}",
                           metavar=flag[len("--crf-"):].replace("-", "_").upper(),
                           help=f"{text} (default {getattr(defaults, field):g})")


def crf_from_arguments(args) -> DenseCRF | None:
    """The `DenseCRF` the parsed flags describe, or ``None`` without ``--crf``.

    Raises:
        ValueError: an invalid parameter, named by its flag.
        DenseCRFMissingError: ``--crf`` without the ``pydensecrf2`` package (checked before any work is done).
    """
    if not getattr(args, "crf", False):
        return None
    values = {field: getattr(args, f"crf_{field}") for _, field, _ in _FLAGS}
    try:
        crf = DenseCRF(**values)
    except ValueError as e:
        flag = next(f for f, field, _ in _FLAGS if field in str(e).split(".")[0])
        raise ValueError(f"{flag}: {e}") from None
    _densecrf_module()
    return crf
