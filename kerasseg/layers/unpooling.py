"""Max-unpooling driven by pooling switches, built from TFLite builtin operators only.

SegNet's decoder places each value of its input at the position the encoder's max-pooling picked in the matching
window (the "switch") and zeros elsewhere. The usual implementation records the switches with
``tf.nn.max_pool_with_argmax`` and scatters, but that op only converts to TFLite through the Flex delegate. The
switches are recovered here instead from the two tensors the encoder already has, the map before pooling and the
pooled map: a position is the switch of its window when it equals the window's maximum, keeping only the first such
position in row-major order (the position ``argmax`` reports) so that ties still give exactly one switch per window.
The graph uses SPACE_TO_DEPTH, SPLIT, EQUAL, SELECT_V2, CONCATENATION and DEPTH_TO_SPACE only. All of them quantise,
so a full-integer model stays integer throughout: max-pooling returns one of its quantised inputs with the same scale,
so EQUAL compares int8 codes exactly, and SELECT_V2 only moves int8 values or the exactly representable zero. (Turning
the comparison into a 0/1 multiplier instead needs a CAST from bool, whose float output the int8 converter leaves as
float tensors with a QUANTIZE.) The float model also passes the TFLite GPU delegate's rules; the int8 one does not,
because the delegate accepts SELECT_V2 with float operands only.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasseg.layers._twin import twin_class

__all__ = ["MaxUnpooling2D", "max_unpooling_class", "switch_unpool"]


def switch_unpool(updates, pre_pool, pooled, pool_size: int = 2):
    """Places ``updates`` at the max-pooling switches of ``pre_pool``; zeros elsewhere.

    Args:
        updates: ``(B, H, W, C)`` values to place, at the pooled resolution.
        pre_pool: ``(B, H * pool_size, W * pool_size, C)`` map that was max-pooled.
        pooled: ``(B, H, W, C)`` result of non-overlapping ``pool_size`` × ``pool_size`` max-pooling of ``pre_pool``.
        pool_size: side of the pooling windows (their stride too).

    Returns:
        ``(B, H * pool_size, W * pool_size, C)`` with exactly one non-zero candidate per window.
    """
    cells = pool_size * pool_size
    # SPACE_TO_DEPTH lays each window's cells side by side along channels, in row-major order within the window.
    windows = tf.split(tf.nn.space_to_depth(pre_pool, pool_size), cells, axis=-1)
    zero = tf.constant(0, updates.dtype)  # a scalar: SELECT_V2 broadcasts it, no full-size zero tensor is stored
    placed = []
    pending = updates  # what is still to be placed: zeroed in a window once its first maximum took the value
    for i, cell in enumerate(windows):
        hit = tf.equal(cell, pooled)
        placed.append(tf.where(hit, pending, zero))
        if i < cells - 1:
            pending = tf.where(hit, zero, pending)
    return tf.nn.depth_to_space(tf.concat(placed, axis=-1), pool_size)


class _MaxUnpoolingMixin:
    def __init__(self, pool_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 2:
            raise ValueError(f"Expected pool_size to be an integer >= 2. Received: pool_size={pool_size!r}")
        self.pool_size = pool_size

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 3:
            raise ValueError("Expected inputs [updates, pre_pool, pooled]. "
                             f"Received: input_shape={input_shape!r}")
        updates, pre_pool, pooled = (tuple(s) for s in input_shape)
        if updates[1:] != pooled[1:]:
            raise ValueError("Expected updates and pooled to have the same shape. "
                             f"Received: updates={updates}, pooled={pooled}")
        expected = tuple(None if d is None else d * self.pool_size for d in pooled[1:3]) + pooled[3:]
        if any(a is not None and b is not None and a != b for a, b in zip(pre_pool[1:], expected)):
            raise ValueError(f"Expected pre_pool to be pooled's size times pool_size={self.pool_size} with the same "
                             f"channels. Received: pre_pool={pre_pool}, pooled={pooled}")
        super().build(input_shape)

    def call(self, inputs):
        updates, pre_pool, pooled = inputs
        return switch_unpool(updates, pre_pool, pooled, self.pool_size)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update({"pool_size": self.pool_size})
        return config


@keras.saving.register_keras_serializable(package="kerasseg")
class MaxUnpooling2D(_MaxUnpoolingMixin, keras.layers.Layer):
    """Max-unpooling layer: ``[updates, pre_pool, pooled]`` → ``updates`` placed at the pooling switches.

    See `switch_unpool`. ``pooled`` must be the ``pool_size`` × ``pool_size``, stride ``pool_size``, "valid"
    max-pooling of ``pre_pool``; the output has ``pre_pool``'s shape.

    Args:
        pool_size: side (and stride) of the pooling windows.
    """


def max_unpooling_class(keras_module=None) -> type:
    """`MaxUnpooling2D` for the given Keras module (``keras`` or ``tf_keras``)."""
    return twin_class(MaxUnpooling2D, keras_module, "layers.Layer")
