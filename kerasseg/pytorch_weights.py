"""Copying PyTorch checkpoints of the reference implementations into kerasseg models.

Two layouts are understood:

* **ERFNet**, the authors' ``Net`` (E. Romera, ``github.com/Eromera/erfnet_pytorch``, ``train/erfnet.py``):
  ``encoder.initial_block``, ``encoder.layers.0`` ... ``encoder.layers.14``, ``decoder.layers.0`` ...
  ``decoder.layers.5``, ``decoder.output_conv``; the encoder-only classifier ``encoder.output_conv`` has no
  counterpart in the full network and is reported as unexpected. Checkpoints saved from ``nn.DataParallel`` prefix
  every key with ``module.``, which is removed. The model must be built with ``torch_padding=True``.
* **EfficientNet-Lite**, ``efficientnet_lite_pytorch`` (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_bn0``...),
  into a bare backbone or any model with an ``efficientnet_lite*`` backbone; its classifier head is unexpected.

Kernels change layout (see `kerasseg.backbones.torch_layout`), batch-norm statistics are copied, and the model's
batch-norm epsilon must be the reference's (1e-3 in both). Arrays are copied as they are: the model must be fed the
preprocessing the checkpoint was trained with (`load_backbone_weights` converts the first convolution of ImageNet
weights to another normalisation). Nothing is set unless every shape matches.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from kerasseg.backbones.efficientnet_lite import EFFICIENTNET_LITE_SCALING, torch_names
from kerasseg.backbones.torch_layout import keras_arrays_from_torch, layer_kind
from kerasseg.models.erfnet import ERFNET_LAYERS
from kerasseg.torch_checkpoint import CheckpointFormatError, read_torch_checkpoint, state_dict_of

__all__ = ["load_pytorch_weights", "PytorchLoadReport", "erfnet_torch_names", "REFERENCE_BN_EPSILON"]

# Batch-norm epsilon of each reference implementation (ERFNet: BatchNorm2d(eps=1e-3); EfficientNet-Lite:
# batch_norm_epsilon=1e-3). It is not in the state dict, so the model must agree with it.
REFERENCE_BN_EPSILON = {"erfnet": 1e-3, "efficientnet_lite": 1e-3}
_ERFNET_BLOCK_LAYERS = {"down": ("conv", "bn"), "up": ("deconv", "bn"),
                        "nb": ("conv3x1_1", "conv1x3_1", "bn1", "conv3x1_2", "conv1x3_2", "bn2")}


@dataclasses.dataclass
class PytorchLoadReport:
    """What `load_pytorch_weights` did.

    Attributes:
        source: the checkpoint path (or ``"<state dict>"``).
        architecture: ``"erfnet"`` or ``"efficientnet_lite0"``...
        copied: model layers that received weights.
        missing: model layers of the layout that the checkpoint lacks (they keep their weights).
        unexpected: checkpoint keys no model layer took.
        skipped: model layers left as they were on request (``skip_classifier``), with the reason.
    """

    source: str
    architecture: str
    copied: list = dataclasses.field(default_factory=list)
    missing: list = dataclasses.field(default_factory=list)
    unexpected: list = dataclasses.field(default_factory=list)
    skipped: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready copy of the fields."""
        return dataclasses.asdict(self)

    def summary(self) -> str:
        lines = [f"PyTorch weights from {self.source} ({self.architecture} layout): {len(self.copied)} layers "
                 f"copied, {len(self.missing)} missing, {len(self.unexpected)} unexpected keys, "
                 f"{len(self.skipped)} skipped."]
        lines += [f"  missing: {', '.join(self.missing)}"] if self.missing else []
        lines += [f"  unexpected: {', '.join(self.unexpected)}"] if self.unexpected else []
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def erfnet_torch_names() -> dict:
    """Keras layer name of `kerasseg.models.erfnet` -> module name in the authors' ``Net``.

    Table row 1 is ``encoder.initial_block``, rows 2-16 ``encoder.layers.0-14``, rows 17-22 ``decoder.layers.0-5``
    and row 23 (``logits``) ``decoder.output_conv``; inside a block the names are the authors' (``conv``, ``bn``,
    ``conv3x1_1``...; kerasseg's ``deconv`` is their upsampler's ``conv``).
    """
    # Rows before the first upsampler are the encoder's.
    names, encoder_rows = {}, next(i for i, (kind, *_) in enumerate(ERFNET_LAYERS) if kind == "up")
    for row, (kind, *_rest) in enumerate(ERFNET_LAYERS, start=1):
        if kind == "output":
            names["logits"] = "decoder.output_conv"
            continue
        module = ("encoder.initial_block" if row == 1 else f"encoder.layers.{row - 2}" if row <= encoder_rows
                  else f"decoder.layers.{row - encoder_rows - 1}")
        for part in _ERFNET_BLOCK_LAYERS[kind]:
            names[f"layer{row:02d}_{part}"] = f"{module}.{'conv' if part == 'deconv' else part}"
    return names


def _strip_data_parallel(state: dict) -> dict:
    # nn.DataParallel saves "module.<name>" for every key.
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def _checkpoint_layout(state: dict, source: str) -> str:
    if any(k.startswith("encoder.initial_block.") for k in state):
        return "erfnet"
    if "_conv_stem.weight" in state:
        return "efficientnet_lite"
    raise CheckpointFormatError(
        f"Expected a checkpoint of the ERFNet authors' Net (encoder.initial_block..., decoder.output_conv) or of "
        f"efficientnet_lite_pytorch (_conv_stem, _blocks.N...). Received: {source} with keys "
        f"{sorted(state)[:6]}{'...' if len(state) > 6 else ''}")


def _model_names(model, layout: str, source: str):
    # The layer-name map of the layout, checked against the model; returns (architecture, names).
    layer_names = {layer.name for layer in model.layers}
    if layout == "erfnet":
        names = erfnet_torch_names()
        if not set(names) <= layer_names:
            raise ValueError(f"Expected a kerasseg ERFNet model (kerasseg.build_model('erfnet', ..., "
                             f"torch_padding=True)) for the ERFNet checkpoint {source}. Received: model "
                             f"{model.name!r} without its layers (e.g. {sorted(set(names) - layer_names)[:3]})")
        if "layer01_pad" not in layer_names:
            raise ValueError(f"Expected an ERFNet built with torch_padding=True for the checkpoint {source} (the "
                             f"authors pad strided convolutions on both sides; with TensorFlow's 'same' padding "
                             f"the imported network would be off by one pixel). Received: model {model.name!r} "
                             f"built with torch_padding=False")
        return "erfnet", names
    for variant in EFFICIENTNET_LITE_SCALING:
        names = torch_names(variant)
        # A variant matches when it has every block of the model and the model every layer of the variant.
        blocks = {n for n in layer_names if re.fullmatch(r"block\d+[a-z]_dwconv", n)}
        if set(names) <= layer_names and blocks <= set(names):
            return variant, names
    raise ValueError(f"Expected a model with an EfficientNet-Lite backbone (layers stem_conv, block1a_dwconv...) "
                     f"for the efficientnet_lite_pytorch checkpoint {source}. Received: model {model.name!r}")


def _check_epsilon(layer, layout: str):
    expected = REFERENCE_BN_EPSILON[layout]
    if not np.isclose(layer.epsilon, expected, rtol=1e-6, atol=0):
        raise ValueError(f"Expected batch norm {layer.name!r} with the reference's epsilon {expected} (it is not "
                         f"stored in the checkpoint). Received: epsilon={layer.epsilon}")


def load_pytorch_weights(model, checkpoint, *, skip_classifier: bool = False) -> PytorchLoadReport:
    """Copies a PyTorch checkpoint of a reference implementation into a kerasseg model.

    Args:
        model: a Keras model: ERFNet built with ``torch_padding=True``, or a model with an EfficientNet-Lite
            backbone (its layers at the top level).
        checkpoint: path to a ``.pth`` file (read by `kerasseg.torch_checkpoint.read_torch_checkpoint`, which
            executes nothing), or a ``{name: numpy array}`` state dict.
        skip_classifier: keep the model's classifier (``logits``) when the checkpoint's has another shape, e.g. a
            checkpoint of another class count used as initialisation.

    Returns:
        A `PytorchLoadReport` (copied, missing, unexpected, skipped).

    Raises:
        CheckpointFormatError: the file is not a checkpoint of a known layout (or is damaged / unsafe).
        ValueError: the model does not match the layout, a shape differs, or a batch-norm epsilon differs.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        source = os.fspath(checkpoint)
        state = state_dict_of(read_torch_checkpoint(source), source)
    elif isinstance(checkpoint, dict):
        source, state = "<state dict>", state_dict_of(checkpoint)
    else:
        raise TypeError(f"Expected checkpoint to be a .pth path or a state dict of numpy arrays. "
                        f"Received: checkpoint of type {type(checkpoint).__name__}")
    state = _strip_data_parallel(state)
    layout = _checkpoint_layout(state, source)
    architecture, names = _model_names(model, layout, source)
    report = PytorchLoadReport(source=source, architecture=architecture)

    values, used, mismatches = {}, set(), []
    for layer in model.layers:
        if layer.name not in names:
            continue
        kind = layer_kind(layer)
        arrays, keys = keras_arrays_from_torch(kind, state, names[layer.name])
        if not arrays:
            report.missing.append(layer.name)
            continue
        used.update(keys)
        expected = [tuple(w.shape) for w in layer.weights]
        received = [tuple(a.shape) for a in arrays]
        if received != expected:
            if layer.name == "logits" and skip_classifier:
                report.skipped[layer.name] = f"classifier shapes differ: model {expected}, checkpoint {received}"
                continue
            mismatches.append((layer.name, names[layer.name], expected, received))
            continue
        if kind == "batchnorm":
            _check_epsilon(layer, layout)
        values[layer.name] = arrays
    if mismatches:
        lines = "; ".join(f"{name} (checkpoint {prefix}): model {e}, checkpoint {r}"
                          for name, prefix, e, r in mismatches)
        hint = ""
        if any(name == "logits" for name, *_ in mismatches):
            n_model = int(model.get_layer("logits").weights[0].shape[-2])
            n_ckpt = int(np.asarray(state[names["logits"] + ".weight"]).shape[1])
            hint = (f" The checkpoint's classifier has {n_ckpt} classes and the model's {n_model}: build the model "
                    f"with num_classes={n_ckpt}, or pass skip_classifier=True (--skip-classifier) to copy everything "
                    f"else and keep the model's classifier.")
        raise ValueError(f"Expected checkpoint shapes equal to the model's. Received: {lines}.{hint}")
    for layer in model.layers:
        if layer.name in values:
            layer.set_weights(values[layer.name])
            report.copied.append(layer.name)
    report.unexpected = sorted(k for k in state if k not in used)
    return report
