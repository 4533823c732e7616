"""Input preprocessing and the metadata that travels with every model.

A model is only usable on the car if the device applies exactly the normalisation it was trained with. kerasseg
therefore records the preprocessing (mean, std, input size) and the label semantics (class names, palette, ignore
label) once, stores them inside the ``.keras`` file and in a JSON sidecar next to every exported file, and the data
pipeline, the exporters and the device runtime all read them from there.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Sequence

import numpy as np

__all__ = ["NORMALIZATIONS", "ModelMetadata", "normalization_constants", "normalize_np"]

# Per-channel mean and std in pixel units (0..255), RGB order.
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    # torchvision / keras.applications ResNet-style ImageNet statistics.
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    # MobileNet-style scaling to [-1, 1].
    "symmetric": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    # Plain [0, 1] scaling.
    "unit": ((0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),
}

IGNORE_LABEL = 255


def normalization_constants(name: str):
    """``(mean, std)`` arrays (float32, pixel units) of a named normalisation."""
    if name not in NORMALIZATIONS:
        raise ValueError(
            f"Unknown normalization. Expected one of {sorted(NORMALIZATIONS)}. Received: normalization={name!r}")
    mean, std = NORMALIZATIONS[name]
    return np.asarray(mean, np.float32), np.asarray(std, np.float32)


def normalize_np(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalises a uint8 / float RGB image (..., 3) in pixel units to float32."""
    return (np.asarray(image, np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_metadata_values(d: dict) -> None:
    """Types and ranges of the metadata values that preprocessing and label handling rely on."""
    def fail(key, expected):
        raise ValueError(f"Expected metadata {key} to be {expected}. Received: {key}={d.get(key)!r}")

    if not isinstance(d["model_name"], str):
        fail("model_name", "a string")
    num_classes = d["num_classes"]
    if not _is_int(num_classes) or num_classes < 1:
        fail("num_classes", "a positive integer")
    shape = d["input_shape"]
    if not isinstance(shape, list) or len(shape) != 3 or not all(v is None or (_is_int(v) and v > 0) for v in shape):
        fail("input_shape", "[height, width, channels] of positive integers (or null)")
    if not isinstance(d.get("normalization", ""), str):
        fail("normalization", "a string")
    for key in ("mean", "std"):
        if key not in d:
            continue
        values = d[key]
        if (not isinstance(values, list) or len(values) not in (1, 3)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                           for v in values) or (key == "std" and any(v <= 0 for v in values))):
            fail(key, f"1 or 3 finite numbers{' > 0' if key == 'std' else ''}")
    names = d.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != num_classes
                              or not all(isinstance(n, str) for n in names)):
        fail("class_names", f"{num_classes} strings (num_classes) or null")
    palette = d.get("palette")
    if palette is not None and (not isinstance(palette, list) or len(palette) < num_classes or not all(
            isinstance(c, list) and len(c) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in c) for c in palette)):
        fail("palette", f"at least {num_classes} [r, g, b] colours in 0..255, or null")
    ignore = d.get("ignore_label", IGNORE_LABEL)
    if ignore is not None and not _is_int(ignore):
        fail("ignore_label", "an integer or null")
    if not isinstance(d.get("extra", {}), dict):
        fail("extra", "a JSON object")


@dataclasses.dataclass
class ModelMetadata:
    """What a deployed model needs besides its weights.

    Attributes:
        model_name: registry name of the architecture.
        num_classes: number of output classes.
        input_shape: ``[height, width, channels]`` the model was built for.
        normalization: name of the normalisation (informative; ``mean``/``std`` are authoritative).
        mean: per-channel mean in pixel units, RGB.
        std: per-channel std in pixel units, RGB.
        class_names: one name per class, or ``None``.
        palette: one ``[r, g, b]`` per class, or ``None``.
        ignore_label: label value excluded from losses and metrics.
        extra: free-form information (training run, export mode, quantisation parameters...).
    """

    model_name: str
    num_classes: int
    input_shape: list
    normalization: str = "imagenet"
    mean: list = dataclasses.field(default_factory=lambda: list(NORMALIZATIONS["imagenet"][0]))
    std: list = dataclasses.field(default_factory=lambda: list(NORMALIZATIONS["imagenet"][1]))
    class_names: list | None = None
    palette: list | None = None
    ignore_label: int = IGNORE_LABEL
    extra: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def for_model(cls, model, model_name: str, normalization: str = "imagenet") -> "ModelMetadata":
        normalization_constants(normalization)  # validates the name
        mean, std = NORMALIZATIONS[normalization]
        shape = [int(d) if d is not None else None for d in model.inputs[0].shape[1:]]
        num_classes = int(model.outputs[0].shape[-1])
        return cls(model_name=model_name, num_classes=num_classes, input_shape=shape, normalization=normalization,
                   mean=list(mean), std=list(std))

    def with_dataset(self, class_names=None, palette=None, ignore_label=None) -> "ModelMetadata":
        """A copy carrying the label semantics of a dataset."""
        out = dataclasses.replace(self, extra=dict(self.extra))
        if class_names is not None:
            if len(class_names) != self.num_classes:
                raise ValueError(
                    f"Expected {self.num_classes} class names (the model's num_classes). "
                    f"Received: {len(class_names)} names {list(class_names)}")
            out.class_names = [str(n) for n in class_names]
        if palette is not None:
            out.palette = [[int(c) for c in rgb] for rgb in palette]
        if ignore_label is not None:
            out.ignore_label = int(ignore_label)
        return out

    def with_input_shape(self, input_shape) -> "ModelMetadata":
        """A copy for the same network built at another input size."""
        return dataclasses.replace(self, input_shape=[int(d) for d in input_shape], extra=dict(self.extra))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelMetadata":
        """Metadata read from a file: every value is checked, since the file may come from anywhere.

        Raises:
            ValueError: not a mapping, an unknown or missing key, or a value of the wrong type or range (named).
        """
        if not isinstance(d, dict):
            raise ValueError(f"Expected the metadata to be a JSON object. Received: {type(d).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"Unknown metadata keys. Expected a subset of {sorted(fields)}. Received: {unknown}")
        missing = sorted({"model_name", "num_classes", "input_shape"} - set(d))
        if missing:
            raise ValueError(f"Expected the metadata keys model_name, num_classes and input_shape. Received: "
                             f"metadata without {missing}")
        _check_metadata_values(d)
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelMetadata":
        try:
            d = json.loads(text)
        except (ValueError, TypeError) as e:
            raise ValueError(f"Expected metadata as JSON text. Received: text that does not parse ({e})") from None
        return cls.from_dict(d)
