"""PyTorch -> Keras weight layouts, for copying a state dict into Keras layers.

PyTorch stores convolution kernels as ``(out, in / groups, kh, kw)`` (OIHW), Keras as ``(kh, kw, in, out)`` (HWIO);
a depthwise kernel is ``(channels, 1, kh, kw)`` in PyTorch and ``(kh, kw, channels, 1)`` in Keras; a transposed
convolution's kernel is ``(in, out, kh, kw)`` in PyTorch and ``(kh, kw, out, in)`` in Keras (both frameworks compute
the adjoint of a cross-correlation, so no spatial flip is needed). Batch norm keeps its four vectors; PyTorch's
``num_batches_tracked`` has no Keras counterpart and is dropped. Keras does not read state dicts, hence these few
transposes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["layer_kind", "keras_arrays_from_torch", "TORCH_SUFFIXES"]

# Keras layer class name -> kind understood by `keras_arrays_from_torch`.
_KINDS = {"Conv2D": "conv", "DepthwiseConv2D": "depthwise", "Conv2DTranspose": "conv_transpose",
          "BatchNormalization": "batchnorm"}

# Kind -> the state-dict suffixes it reads, in Keras weight order (optional ones may be absent).
TORCH_SUFFIXES = {"conv": ("weight", "bias"), "depthwise": ("weight", "bias"), "conv_transpose": ("weight", "bias"),
                  "batchnorm": ("weight", "bias", "running_mean", "running_var")}
_IGNORED_SUFFIXES = ("num_batches_tracked",)


def layer_kind(layer) -> str | None:
    """``"conv"``, ``"depthwise"``, ``"conv_transpose"``, ``"batchnorm"`` or ``None`` for a Keras layer."""
    for cls in type(layer).__mro__:
        if cls.__name__ in _KINDS:
            return _KINDS[cls.__name__]
    return None


def _kernel(kind: str, weight: np.ndarray) -> np.ndarray:
    if weight.ndim != 4:
        raise ValueError(f"Expected a 4-D convolution weight. Received: shape {weight.shape}")
    if kind == "depthwise":
        return weight.transpose(2, 3, 0, 1)   # (C, 1, kh, kw) -> (kh, kw, C, 1)
    return weight.transpose(2, 3, 1, 0)       # conv: OIHW -> HWIO; transpose: (in, out, kh, kw) -> (kh, kw, out, in)


def keras_arrays_from_torch(kind: str, state: dict, prefix: str) -> tuple[list, list]:
    """The Keras weights of one layer from the state-dict entries ``{prefix}.weight`` etc.

    Args:
        kind: see `layer_kind`.
        state: ``{name: numpy array}`` state dict.
        prefix: the PyTorch module name, e.g. ``"_blocks.3._depthwise_conv"``.

    Returns:
        ``(arrays in Keras weight order, state-dict keys used)``; a missing ``weight`` gives ``([], [])``.
    """
    keys = [f"{prefix}.{s}" for s in TORCH_SUFFIXES[kind]]
    if keys[0] not in state:
        return [], []
    used = [k for k in keys if k in state] + [f"{prefix}.{s}" for s in _IGNORED_SUFFIXES
                                               if f"{prefix}.{s}" in state]
    if kind == "batchnorm":
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"Expected the batch-norm entries {missing} next to {keys[0]}. Received: a state dict "
                             f"without them")
        return [np.asarray(state[k], np.float32) for k in keys], used
    arrays = [_kernel(kind, np.asarray(state[keys[0]], np.float32))]
    if keys[1] in state:
        arrays.append(np.asarray(state[keys[1]], np.float32))
    return arrays, used
