"""Transfer learning: copy weights between kerasseg models by layer name, freeze / unfreeze the encoder."""

from __future__ import annotations

import re

__all__ = ["ENCODER_PATTERNS", "encoder_layers", "copy_weights", "set_encoder_trainable"]

# Layer names of the encoder part of each architecture, as written by the model and backbone builders:
# ERFNet's encoder is the paper's layers 1-16; the backbone models use keras.applications layer names.
ENCODER_PATTERNS = {
    "erfnet": r"^layer(0[1-9]|1[0-6])_",
    "vgg": r"^block[1-5]_",
    "resnet": r"^(conv1_|pool1_|conv[2-5]_block\d+_)",
    "mobilenetv2": r"^(Conv1|bn_Conv1|Conv1_relu|expanded_conv_|block_\d+_)",
}


def encoder_layers(model) -> list:
    """The encoder (backbone) layers of a kerasseg model, identified by their names.

    ERFNet: ``layer01_*`` … ``layer16_*``; FCN / SegNet / U-Net / PSPNet / DeepLab: the backbone's
    keras.applications-style names (``block1_conv1`` … for VGG, ``conv1_*`` / ``convN_blockM_*`` for ResNet,
    ``Conv1`` / ``expanded_conv_*`` / ``block_N_*`` for MobileNetV2).

    Raises:
        ValueError: no layer matches any known encoder pattern (the model has no recognised encoder).
    """
    found = []
    for layer in model.layers:
        if any(re.match(p, layer.name) for p in ENCODER_PATTERNS.values()):
            found.append(layer)
    if not found:
        raise ValueError(f"Expected a model with a recognised encoder (layer names matching "
                         f"{sorted(ENCODER_PATTERNS)} patterns). Received: model {model.name!r} without such layers")
    return found


def set_encoder_trainable(model, trainable: bool) -> int:
    """Sets ``trainable`` on the encoder layers; returns how many layers changed."""
    layers = encoder_layers(model)
    for layer in layers:
        layer.trainable = trainable
    return len(layers)


def copy_weights(source, target) -> dict:
    """Copies weights from ``source`` into ``target`` layer by layer, where names and all weight shapes match.

    Args:
        source: a Keras model or a path to a ``.keras`` file (e.g. a model trained on another dataset).
        target: the model to initialise.

    Returns:
        dict with ``copied`` (layer names), ``shape_mismatch`` (same name, different shapes: e.g. a classifier with
        another number of classes) and ``missing`` (target layers with weights absent from the source).
    """
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        from kerasseg.saving import load_model

        source = load_model(source)
    by_name = {layer.name: layer for layer in source.layers}
    report = {"copied": [], "shape_mismatch": [], "missing": []}
    for layer in target.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        other = by_name.get(layer.name)
        if other is None:
            report["missing"].append(layer.name)
            continue
        src = other.get_weights()
        if len(src) != len(weights) or any(a.shape != b.shape for a, b in zip(src, weights)):
            report["shape_mismatch"].append(layer.name)
            continue
        layer.set_weights(src)
        report["copied"].append(layer.name)
    return report
