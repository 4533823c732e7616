"""What every file runtime reads and checks the same way: the model file's bytes and the input batch."""

from __future__ import annotations

import os

import numpy as np

__all__ = ["file_bytes", "image_batch"]


def file_bytes(model, kind: str) -> tuple[bytes, str]:
    """``(bytes, source)`` of a model given as bytes or as a path; ``source`` names it in error messages.

    Raises:
        FileNotFoundError: a path that is not an existing file (``kind`` is the expected type, e.g. ``".onnx"``).
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), "the given bytes"
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected an existing {kind} file. Received: path={path!r}")
    with open(path, "rb") as f:
        return f.read(), repr(path)


def image_batch(images, input_shape: tuple) -> tuple[np.ndarray, bool]:
    """``(float32 batch (B, H, W, C), whether a single image was given)`` for a model input of ``input_shape``.

    Raises:
        ValueError: images of another shape.
    """
    batch = np.asarray(images, np.float32)
    single = batch.ndim == 3
    if single:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[1:] != tuple(input_shape):
        raise ValueError(f"Expected images of shape (B, {', '.join(map(str, input_shape))}) or "
                         f"{tuple(input_shape)}. Received: images of shape {np.shape(images)}")
    return batch, single
