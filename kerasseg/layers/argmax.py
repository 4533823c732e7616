"""In-graph argmax over the class axis: the optional ``labels`` head of an exported model.

The layer calls ``tf.argmax`` directly. It converts to the TFLite builtin ARG_MAX (plus a CAST for a uint8 label
map), whereas ``keras.ops.argmax`` adds the TensorFlow backend's handling of negative zeros, which only converts
through Flex (TensorFlow) operators. Being a registered class rather than a ``Lambda``, a model ending in it saves to
``.keras`` and loads back with ``safe_mode=True``.

LiteRT's GPU accelerator runs ARG_MAX and the CAST to uint8 (compiled GPU-only by its 2.3 release), but clients such
as MediaPipe's ImageSegmenter expect scores and take the argmax themselves: export the logits for them and take the
argmax on the host (``tflite/runtime.py`` does).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasseg.layers._twin import twin_class

__all__ = ["ArgMax", "argmax_class", "LABEL_DTYPES"]

LABEL_DTYPES = ("int32", "uint8")


class _ArgMaxMixin:
    def __init__(self, axis: int = -1, output_dtype: str = "int32", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise ValueError(f"Expected axis to be an integer. Received: axis={axis!r}")
        if output_dtype not in LABEL_DTYPES:
            raise ValueError(f"Expected output_dtype to be one of {list(LABEL_DTYPES)}. "
                             f"Received: output_dtype={output_dtype!r}")
        self.axis = axis
        self.output_dtype = output_dtype

    def call(self, inputs):
        labels = tf.argmax(inputs, axis=self.axis, output_type=tf.int32)
        if self.output_dtype == "uint8":
            # ARG_MAX itself outputs int32 or int64 only; a uint8 map needs a CAST (4× smaller output tensor).
            labels = tf.cast(labels, tf.uint8)
        return labels

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        del shape[self.axis]
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update({"axis": self.axis, "output_dtype": self.output_dtype})
        return config


@keras.saving.register_keras_serializable(package="kerasseg")
class ArgMax(_ArgMaxMixin, keras.layers.Layer):
    """Label map of class scores: the index of the largest score along ``axis``.

    Args:
        axis: the class axis (the last one for NHWC logits).
        output_dtype: ``"int32"`` or ``"uint8"`` (for at most 256 classes).

    Input: scores ``(B, H, W, K)``. Output: labels ``(B, H, W)`` of ``output_dtype``. Ties go to the lowest index.
    """

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype=self.output_dtype)


def argmax_class(keras_module=None) -> type:
    """`ArgMax` for the given Keras module (``keras`` or ``tf_keras``)."""
    return twin_class(ArgMax, keras_module, "layers.Layer")
