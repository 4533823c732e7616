"""Model analysis: trainable parameters and multiply-accumulate counts.

MACs are counted the conventional way (as in the papers' and most libraries' tables): convolutions, transposed
convolutions and dense layers only; batch norm, activations, pooling, resizing and element-wise ops are left out.
FLOPs are ``2 × MACs``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["count_params", "count_macs", "model_summary_row"]


def count_params(model, trainable: bool = True) -> int:
    """Number of (trainable) parameters, counted as Keras weights."""
    weights = model.trainable_weights if trainable else model.weights
    return int(sum(int(np.prod(w.shape)) for w in weights))


def _shape(t):
    return tuple(int(d) for d in t.shape[1:])


def _layer_macs(layer) -> int:
    name = type(layer).__name__
    if name in ("Conv2D", "DepthwiseConv2D", "Conv2DTranspose", "SeparableConv2D", "Dense"):
        # Functional layers may be called several times (shared weights); count each call.
        total = 0
        for node in getattr(layer, "_inbound_nodes", []):
            outs = node.output_tensors if hasattr(node, "output_tensors") else node.outputs
            ins = node.input_tensors if hasattr(node, "input_tensors") else node.arguments.keras_tensors
            out, inp = _shape(outs[0]), _shape(ins[0])
            if name == "Dense":
                total += int(np.prod(out[:-1])) * inp[-1] * out[-1]
                continue
            kh, kw = layer.kernel_size
            hw_out = out[0] * out[1]
            if name == "Conv2D":
                total += hw_out * kh * kw * (inp[-1] // layer.groups) * out[-1]
            elif name == "DepthwiseConv2D":
                total += hw_out * kh * kw * out[-1]
            elif name == "SeparableConv2D":
                mid = inp[-1] * layer.depth_multiplier
                total += hw_out * (kh * kw * mid + mid * out[-1])
            else:  # Conv2DTranspose: every input pixel scatters a kh×kw×cout patch.
                total += inp[0] * inp[1] * kh * kw * inp[-1] * out[-1]
        return total
    if hasattr(layer, "layers"):  # nested model
        return sum(_layer_macs(sub) for sub in layer.layers)
    return 0


def count_macs(model) -> int:
    """Multiply-accumulates of one forward pass of a batch-1 input of the model's static shape."""
    return int(sum(_layer_macs(layer) for layer in model.layers))


def model_summary_row(name: str, num_classes: int, input_shape, **kwargs) -> dict:
    """Builds a registered model and returns ``{name, params, gmacs, input_shape}`` for tables."""
    from kerasseg.models.factory import build_model

    model = build_model(name, num_classes=num_classes, input_shape=input_shape, **kwargs)
    return {"name": name, "params": count_params(model), "gmacs": count_macs(model) / 1e9,
            "input_shape": tuple(input_shape)}
