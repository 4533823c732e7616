"""The output head an export converts: logits, their softmax, or an in-graph argmax, optionally without the final
bilinear resize (host-side up-sampling)."""

from __future__ import annotations

from kerasseg.export.options import LABEL_DTYPES, OUTPUT_HEADS, check_choice

__all__ = ["output_layer", "output_upsampling", "with_head"]


def output_layer(model):
    """The layer that produces ``model``'s (single) output."""
    # Keras 3 records the producing operation of every symbolic tensor in its history.
    return model.outputs[0]._keras_history.operation


def output_upsampling(model):
    """The bilinear resize that ends ``model``, if any: ``(layer, (height, width))`` of its output, else ``None``.

    Only a parameter-free ``UpSampling2D(interpolation="bilinear")`` or ``Resizing(interpolation="bilinear")``
    without cropping or padding qualifies: the host can then reproduce it exactly (half-pixel centres).
    """
    import keras

    if len(model.outputs) != 1:
        return None
    layer = output_layer(model)
    bilinear = (isinstance(layer, keras.layers.UpSampling2D) and layer.interpolation == "bilinear") or (
        isinstance(layer, keras.layers.Resizing) and layer.interpolation == "bilinear"
        and not getattr(layer, "crop_to_aspect_ratio", False) and not getattr(layer, "pad_to_aspect_ratio", False))
    if not bilinear or len(layer._inbound_nodes) != 1:
        return None
    shape = model.outputs[0].shape
    return layer, (int(shape[1]), int(shape[2]))


def with_head(model, output: str = "logits", *, label_dtype: str = "int32", host_upsample: bool = False):
    """The Keras model that an export with this head converts.

    Args:
        model: a Keras model with one logits output ``(B, H, W, K)``.
        output: ``"logits"``, ``"probabilities"`` (a float32 ``Softmax``) or ``"labels"`` (an `ArgMax` layer; the
            resulting model saves to ``.keras`` and loads with ``safe_mode=True``).
        label_dtype: ``"int32"`` or ``"uint8"`` label map (``"labels"`` only).
        host_upsample: drop the final bilinear resize (see `output_upsampling`); the logits stay at the model's
            reduced resolution and the host up-samples them. Logits head only.

    Returns:
        ``model`` itself for plain logits, otherwise a new functional model sharing its layers (and its
        ``kerasseg_metadata``).

    Raises:
        ValueError: an unknown output / label dtype, a label dtype too narrow for the classes, or ``host_upsample``
            with another head or with a model that does not end in a bilinear resize.
    """
    import keras

    from kerasseg.layers.argmax import ArgMax

    output = check_choice("output", output, OUTPUT_HEADS)
    label_dtype = check_choice("label_dtype", label_dtype, LABEL_DTYPES)
    if not isinstance(host_upsample, bool):
        raise ValueError(f"Expected host_upsample to be True or False. Received: host_upsample={host_upsample!r}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"Expected a model with one input and one output. Received: model {model.name!r} with "
                         f"{len(model.inputs)} inputs and {len(model.outputs)} outputs")
    last = output_layer(model)
    if isinstance(last, ArgMax):
        # A model saved with its label head (e.g. a .keras file loaded back) is exported as it is.
        if output == "labels" and last.output_dtype == label_dtype and not host_upsample:
            return model
        raise ValueError(f"Expected a logits model, or output='labels' with label_dtype={last.output_dtype!r} for a "
                         f"model that already ends in an ArgMax label head. Received: output={output!r}, "
                         f"label_dtype={label_dtype!r}, host_upsample={host_upsample} for model {model.name!r}")
    num_classes = int(model.outputs[0].shape[-1])
    if output == "labels" and label_dtype == "uint8" and num_classes > 256:
        raise ValueError(f"Expected at most 256 classes for label_dtype='uint8'. Received: {num_classes} classes")
    logits = model.outputs[0]
    if host_upsample:
        if output != "logits":
            raise ValueError(f"Expected output='logits' with host_upsample=True: the host up-samples logits before "
                             f"its argmax. Received: output={output!r}")
        found = output_upsampling(model)
        if found is None:
            raise ValueError(f"Expected a model whose output layer is a bilinear UpSampling2D / Resizing for "
                             f"host_upsample=True. Received: model {model.name!r} whose output layer {last.name!r} "
                             f"is a {type(last).__name__}")
        logits = found[0].input
    elif output == "logits":
        return model
    if output == "probabilities":
        out = keras.layers.Softmax(axis=-1, dtype="float32", name="probabilities")(logits)
    elif output == "labels":
        out = ArgMax(axis=-1, output_dtype=label_dtype, name="labels")(logits)
    else:
        out = logits
    # The single input tensor, not a one-element list: calling the model on a plain tensor then matches its structure.
    head = keras.Model(model.inputs[0], out, name=model.name)
    if getattr(model, "kerasseg_metadata", None) is not None:
        head.kerasseg_metadata = model.kerasseg_metadata
    return head
