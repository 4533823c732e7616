"""Max-unpooling driven by pooling switches, built from TFLite builtin operators only.

SegNet's decoder places each value of its input at the position the encoder's max-pooling picked in the matching
window (the "switch") and zeros elsewhere. The usual implementation records the switches with
``tf.nn.max_pool_with_argmax`` and scatters, but that op only converts to TFLite through the Flex delegate. The
switches are recovered here instead from the two tensors the encoder already has, the map before pooling and the
pooled map: a position is the switch of its window when it equals the window's maximum, keeping only the first such
position in row-major order (the position ``argmax`` reports) so that ties still give exactly one switch per window.

Two formulations compute the same switches:

`switch_unpool` (the layer's float graph, exact)
    SPACE_TO_DEPTH, SPLIT, EQUAL, CAST (bool to float), MUL, SUB, CONCATENATION and DEPTH_TO_SPACE: each
    window's cells are compared with the pooled value, and the 0 / 1 result multiplies what is still to be placed.
    The TFLite GPU delegate takes it in float32 / float16 models. A full-integer conversion of it would not run
    there: the only CAST from bool the delegate takes is to float, and SELECT_V2 in its place it accepts with float
    operands only (``CheckSelectV2GpuDelegateCompatibility`` in
    ``tensorflow/lite/tools/versioning/gpu_compatibility.cc``). SELECT_V2 against a constant zero is also what
    LiteRT's GPU accelerator mis-compiled in float16 exports run at full precision (an invalid shader, all-zero
    output), hence the multiplier.
    At the GPU's default float16 precision it still places every value at the first maximum of the map it is given
    (EQUAL compares the pooled value with the cell it was taken from); SegNet's switches then differ from the CPU's
    where float16 computed the pre-pool map differently (``docs/edge_formulations.md``), which no formulation of
    the unpooling can undo.

`switch_unpool_integer` (what a full-integer TFLite export traces, see `integer_unpooling`)
    no comparison and no bool tensor: the switch mask comes from saturating arithmetic that int8 requantisation
    makes exact. ``g * pre_pool`` (gain ``g``) is max-pooled again, so the up-sampled window maximum and the map share
    one int8 scale, and their difference is 0 at a maximum and at least one quantisation step elsewhere; multiplied
    by a second gain and clipped to [0, 1] (MUL with a fused RELU_N1_TO_1) it is an exact 0 / 1 "miss" mask. The
    first maximum of each window is resolved with MINIMUM / SUB+RELU on those 0 / 1 masks, and the mask multiplies
    the nearest-neighbour up-sampled updates. Operators: MUL, MAX_POOL_2D, RESIZE_NEAREST_NEIGHBOR, SUB, RESHAPE,
    SPLIT, MINIMUM, CONCATENATION, every one in the GPU delegate's and Vela's sets and fully integer: windows are
    split into cells and interleaved back with RESHAPE / SPLIT / CONCATENATION (`kerasseg.layers.edge_ops`), since
    Vela places SPACE_TO_DEPTH and DEPTH_TO_SPACE on the CPU of every Ethos-U. The switches are exact when the
    product of the gains (`INTEGER_GAINS`) times the quantisation step of ``pre_pool`` is at least about 1 and the
    int8 multipliers do not overflow: activation ranges from about 0.01 to 10^4. In float (the calibration pass only)
    differences below ``1 / prod(INTEGER_GAINS)`` give fractional masks, which is why the float model keeps the
    exact formulation.
"""

from __future__ import annotations

import contextlib
import contextvars

import keras
import tensorflow as tf

from kerasseg.layers._twin import twin_class
from kerasseg.layers.edge_ops import interleave_cells, nearest_upsample, window_cells

__all__ = ["MaxUnpooling2D", "max_unpooling_class", "switch_unpool", "switch_unpool_integer", "integer_unpooling",
           "INTEGER_GAINS"]

# (gain applied to pre_pool before the difference, gain applied to the difference before the clip to [0, 1]).
# Their product sets the smallest pre_pool quantisation step told apart (1 / 32768, a range of about 0.008 in
# 256 steps); the first one, alone, that of a difference whose calibrated range the converter inflates.
INTEGER_GAINS = (64.0, 512.0)

_INTEGER = contextvars.ContextVar("kerasseg_integer_unpooling", default=False)


@contextlib.contextmanager
def integer_unpooling(enabled: bool = True):
    """While active, `MaxUnpooling2D` layers trace `switch_unpool_integer` instead of `switch_unpool`.

    `kerasseg.export.to_tflite` traces full-integer (``"int8"``) exports under it, so that their unpooling is
    GPU-delegate compatible; the Keras model itself, and float exports, keep the exact formulation.
    """
    token = _INTEGER.set(bool(enabled))
    try:
        yield
    finally:
        _INTEGER.reset(token)


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
    # The GPU delegate compiles it in seconds (the RESHAPE form of `window_cells` took minutes on lavapipe).
    windows = tf.split(tf.nn.space_to_depth(pre_pool, pool_size), cells, axis=-1)
    placed = []
    pending = updates  # what is still to be placed: zeroed in a window once its first maximum took the value
    for i, cell in enumerate(windows):
        # A 0 / 1 multiplier rather than SELECT_V2 against a constant zero: LiteRT's GPU accelerator generates an
        # invalid shader for SELECT_V2 whose constant operand a float16 export stores as float16, when it runs at
        # full precision (enforce_f32), and then outputs zeros. Exact for finite updates: x * 1 and x - x * 1.
        took = pending * tf.cast(tf.equal(cell, pooled), updates.dtype)
        placed.append(took)
        if i < cells - 1:
            pending = pending - took
    return tf.nn.depth_to_space(tf.concat(placed, axis=-1), pool_size)


def switch_unpool_integer(updates, pre_pool, pooled, pool_size: int = 2, gains=INTEGER_GAINS):
    """`switch_unpool` from arithmetic that full-integer TFLite models keep exact (see the module docstring).

    Same arguments and result as `switch_unpool` where the differences between ``pre_pool`` values that are not
    equal are at least ``1 / prod(gains)``; below that, a float run gives fractional masks. ``pooled`` is not read:
    the window maximum is recomputed from ``gains[0] * pre_pool`` so that it shares that tensor's int8 scale.
    """
    del pooled  # by contract the max-pooling of pre_pool, recomputed below on the scaled map
    cells = pool_size * pool_size
    scaled = pre_pool * gains[0]
    window_max = tf.nn.max_pool2d(scaled, pool_size, pool_size, "VALID")
    window_max = nearest_upsample(window_max, pool_size, pool_size)
    # 0 at a window's maximum, 1 elsewhere; min(max(x, -1), 1) becomes RELU_N1_TO_1 fused into the MUL, whose int8
    # output saturates (x >= 0 here, so this is a clip to [0, 1]).
    miss = tf.minimum(tf.maximum((window_max - scaled) * gains[1], -1.0), 1.0)
    misses = window_cells(miss, pool_size)
    keep = [1.0 - misses[0]]  # the first cell is the switch whenever it is a maximum
    free = misses[0]  # 1 while no earlier cell of the window was a maximum
    for i in range(1, cells):
        keep.append(tf.nn.relu(free - misses[i]))  # free and a maximum
        if i < cells - 1:
            free = tf.minimum(free, misses[i])
    # Masking after the interleave keeps the mask's own [0, 1] int8 scale (masking before it, the converter gave the
    # mask the scale of the masked values).
    mask = interleave_cells(keep, pool_size)
    return mask * nearest_upsample(updates, pool_size, pool_size)


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
        if _INTEGER.get():
            return switch_unpool_integer(updates, pre_pool, pooled, self.pool_size)
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

    See `switch_unpool` (and, for full-integer exports traced under `integer_unpooling`, `switch_unpool_integer`).
    ``pooled`` must be the ``pool_size`` × ``pool_size``, stride ``pool_size``, "valid" max-pooling of ``pre_pool``;
    the output has ``pre_pool``'s shape.

    Args:
        pool_size: side (and stride) of the pooling windows.
    """


def max_unpooling_class(keras_module=None) -> type:
    """`MaxUnpooling2D` for the given Keras module (``keras`` or ``tf_keras``)."""
    return twin_class(MaxUnpooling2D, keras_module, "layers.Layer")
