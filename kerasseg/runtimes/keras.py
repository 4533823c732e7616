"""Running a Keras model as a predict function (see `kerasseg.runtimes`)."""

from __future__ import annotations

import numpy as np

__all__ = ["KerasPredictor", "keras_predict_fn"]


class KerasPredictor:
    """Predict function of a Keras model: numpy batch in, float32 scores (or integer labels) out.

    The forward pass runs in one ``tf.function`` whose input signature has a free batch axis, so tiles and images
    of the model's input size never cause retracing.

    Args:
        model: a Keras model with one image input; when it has several outputs (e.g. auxiliary heads) the first
            is used.

    Attributes:
        input_shape: ``(height, width, channels)`` of the model input (``None`` for a dynamic dimension).
    """

    def __init__(self, model):
        import tensorflow as tf

        if not getattr(model, "inputs", None) or len(model.inputs) != 1:
            raise ValueError(f"Expected a Keras model with one image input. Received: {type(model).__name__} with "
                             f"inputs {getattr(model, 'inputs', None)}")
        shape = tuple(model.inputs[0].shape)
        if len(shape) != 4:
            raise ValueError(f"Expected a model input of shape (batch, height, width, channels). Received: input "
                             f"shape {shape}")
        self.model = model
        self.input_shape = tuple(None if d is None else int(d) for d in shape[1:])

        @tf.function(input_signature=[tf.TensorSpec((None,) + self.input_shape, tf.float32)])
        def forward(images):
            out = model(images, training=False)
            if isinstance(out, dict):
                out = next(iter(out.values()))
            if isinstance(out, (list, tuple)):
                out = out[0]
            # Mixed-precision models output float16: average and resize in float32.
            return tf.cast(out, tf.float32) if out.dtype.is_floating else out

        self._forward = forward

    def __call__(self, images) -> np.ndarray:
        return self._forward(np.asarray(images, np.float32)).numpy()


def keras_predict_fn(model) -> KerasPredictor:
    """The predict function of a Keras model (see `KerasPredictor`)."""
    return KerasPredictor(model)


def keras_predict_fn(model) -> KerasPredictor:
    """The predict function of a Keras model (see `KerasPredictor`)."""
    return KerasPredictor(model)
