"""VGG16 backbone with ``keras.applications``-compatible layer names, and its ImageNet weight loading.

Reference:
    K. Simonyan, A. Zisserman. "Very Deep Convolutional Networks for Large-Scale Image Recognition". ICLR 2015.

The convolutions are named exactly as in ``keras.applications.VGG16`` (``block1_conv1`` ... ``block5_conv3``,
``block1_pool`` ... ``block5_pool``), so `load_vgg16_weights` copies its weights layer by layer. Those ImageNet
weights expect "caffe" inputs: BGR channel order with the ImageNet mean (103.939, 116.779, 123.68) subtracted and no
scaling (``keras.applications.vgg16.preprocess_input``). The model builders feed the registry's "imagenet"
normalisation (RGB, ``(pixel - mean) / std``) instead and have `load_vgg16_weights` rewrite the first convolution
for it, so the pretrained features are those of the original network.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from kerasseg.layers.blocks import resolve_keras

__all__ = ["VGG16_BLOCKS", "vgg16_backbone", "vgg_conv", "load_vgg16_weights", "check_vgg16_weights"]

# (filters, convolutions) of VGG16's five blocks; each block ends in a 2×2 max-pooling.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))

# keras.applications' VGG16 classifier: fc1 reads the 7×7×512 pool5 map of a 224×224 image.
_FC1_SHAPE = (7 * 7 * 512, 4096)

# The "caffe" preprocessing of the ImageNet weights: input channel k is RGB channel _CAFFE_ORDER[k] (BGR) minus
# _CAFFE_MEAN[k], in pixel units.
_CAFFE_ORDER = np.array([2, 1, 0])
_CAFFE_MEAN = np.array([103.939, 116.779, 123.68])

logger = logging.getLogger(__name__)


def vgg_conv(x, filters: int, *, name: str, batch_norm: bool = False, keras_module=None):
    """3×3 "same" convolution with bias → (BN) → ReLU, the convolution named exactly ``name``.

    Without batch norm the ReLU is fused into the convolution as in ``keras.applications.VGG16``, so every layer
    output matches the reference model's at the same name. With batch norm (SegNet) the layers are ``name``,
    ``{name}_bn`` and ``{name}_relu``; the convolution keeps its bias so that ImageNet weights load unchanged.
    """
    layers = resolve_keras(keras_module).layers
    x = layers.Conv2D(filters, 3, padding="same", use_bias=True, activation=None if batch_norm else "relu",
                      kernel_initializer="he_normal", name=name)(x)
    if batch_norm:
        x = layers.BatchNormalization(epsilon=1e-5, name=f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def vgg16_backbone(x, *, batch_norm: bool = False, keras_module=None) -> dict:
    """The 13 convolutions and 5 max-poolings of VGG16.

    Layer names are fixed to ``keras.applications``' (no prefix) so that its weights load by name; a model holds
    at most one VGG16 backbone.

    Args:
        x: input tensor ``(B, H, W, 3)``; H and W should be multiples of 32 so every pooling halves exactly.
        batch_norm: insert batch norm between each convolution and its ReLU (SegNet's encoder).
        keras_module: Keras module to build with (``keras`` by default, ``tf_keras`` for quantization-aware
            training).

    Returns:
        Endpoints by name:
            ``"block1"`` ... ``"block5"``: last convolution of each block, before its pooling (strides 1, 2, 4, 8,
            16); SegNet reads its pooling switches from these.
            ``"pool1"`` ... ``"pool5"``: each block after its 2×2 max-pooling (strides 2, 4, 8, 16, 32), the
            features FCN's skips use (``pool3``, ``pool4``, ``pool5``).
            ``"stride2"`` ... ``"stride32"``: the same tensors as ``pool1`` ... ``pool5``, named by output stride
            for heads that pick features by stride whatever the backbone.
    """
    layers = resolve_keras(keras_module).layers
    endpoints = {}
    for block, (filters, convs) in enumerate(VGG16_BLOCKS, start=1):
        for i in range(1, convs + 1):
            x = vgg_conv(x, filters, name=f"block{block}_conv{i}", batch_norm=batch_norm, keras_module=keras_module)
        endpoints[f"block{block}"] = x
        x = layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
        endpoints[f"pool{block}"] = x
        endpoints[f"stride{2 ** block}"] = x
    return endpoints


def check_vgg16_weights(weights, input_shape, arg: str = "backbone_weights"):
    """Validates a ``backbone_weights`` argument: ``None``, ``"imagenet"`` or an existing file, with 3 channels."""
    if weights is None:
        return
    if not (weights == "imagenet" or (isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights))):
        raise ValueError(f"Expected {arg} to be None, 'imagenet' or the path of an existing keras.applications VGG16 "
                         f"weights file. Received: {arg}={weights!r}")
    if input_shape[-1] != 3:
        raise ValueError(f"Expected 3 input channels to load VGG16 {arg}. "
                         f"Received: input_shape={tuple(input_shape)!r}, {arg}={weights!r}")


def _file_has_classifier(path) -> bool:
    # Keras 3 ".weights.h5" files name their entries by layer class and position ("dense_1"), not by layer name, and
    # older h5 files by layer name: the fc1 kernel's shape identifies an include_top=True file in either layout.
    import h5py

    def is_fc1_kernel(_, obj):
        # A non-None return value stops the visit.
        return True if isinstance(obj, h5py.Dataset) and tuple(obj.shape) == _FC1_SHAPE else None

    with h5py.File(os.fspath(path), "r") as f:
        return bool(f.visititems(is_fc1_kernel))


def _convert_input(kernel: np.ndarray, normalization: str):
    """Rewrites ``block1_conv1`` for inputs normalised with ``normalization`` instead of caffe-style.

    The source kernel sees ``s_k = pixel[order[k]] - caffe_mean_k`` (BGR, unscaled). The model is fed
    ``t_c = (pixel[c] - mean_c) / std_c``, so ``s_k = t_{order[k]} * std_{order[k]} + mean_{order[k]} - caffe_mean_k``:
    the kernel's input channels are permuted and scaled, and the constant part is added to the bias.
    """
    from kerasseg.preprocessing import normalization_constants

    mean, std = (a.astype(np.float64) for a in normalization_constants(normalization))
    k = kernel.astype(np.float64)
    new = np.empty_like(k)
    new[:, :, _CAFFE_ORDER, :] = k * std[_CAFFE_ORDER][None, None, :, None]
    offset = np.einsum("hwko,k->o", k, mean[_CAFFE_ORDER] - _CAFFE_MEAN)
    return new.astype(kernel.dtype), offset


def load_vgg16_weights(model, weights, *, fc_layers: tuple[str, str] | None = None,
                       normalization: str | None = None):
    """Copies ``keras.applications`` VGG16 weights into ``model``, layer by layer name.

    The weights are read with ``keras.applications.VGG16`` itself (``weights="imagenet"`` downloads them; a path is
    anything its ``load_weights`` reads, e.g. a ``.weights.h5`` file saved from that model) and copied into the
    layers of ``model`` that carry the same names, whichever Keras module ``model`` was built with.

    Args:
        model: a model containing a `vgg16_backbone`.
        weights: ``"imagenet"`` or the path of a VGG16 weights file (with or without its classifier).
        fc_layers: names of two convolutions of ``model`` that take VGG16's fully connected ``fc1`` and ``fc2``
            recast as convolutions (FCN's ``fc6``, 7×7×512→4096, and ``fc7``, 1×1×4096→4096). Only then are the
            classifier weights fetched; with a weights file that has none, these layers keep their initialisation
            (reported in ``skipped``, with a logged warning).
        normalization: name of the input normalisation the model is fed (see `kerasseg.preprocessing`);
            ``block1_conv1`` is converted to it from the caffe-style inputs the weights expect. Exact except where
            the 3×3 kernel overlaps the image border, whose zero padding stands for a pixel of the normalisation's
            mean instead of the caffe mean (under one grey level apart for ``"imagenet"``). ``None`` keeps caffe-style
            inputs.

    Returns:
        A `kerasseg.backbones.weights.WeightLoadReport`.
    """
    import keras  # the reader is always Keras 3's keras.applications, whatever ``model`` is built with

    from kerasseg.backbones.weights import WeightLoadReport

    source_name = weights if weights == "imagenet" else os.fspath(weights)
    report = WeightLoadReport(source=source_name)
    with_top = fc_layers is not None and (weights == "imagenet" or _file_has_classifier(weights))
    if fc_layers is not None and not with_top:
        for target in fc_layers:
            report.skipped[target] = "the weights file has no classifier (saved with include_top=False)"
    source = keras.applications.VGG16(weights=source_name, include_top=with_top)
    pairs = [(f"block{b}_conv{i}", f"block{b}_conv{i}")
             for b, (_, convs) in enumerate(VGG16_BLOCKS, start=1) for i in range(1, convs + 1)]
    if with_top:
        pairs += list(zip(("fc1", "fc2"), fc_layers))
    for src_name, target_name in pairs:
        kernel, bias = source.get_layer(src_name).get_weights()
        layer = model.get_layer(target_name)
        expected = tuple(layer.get_weights()[0].shape)
        if src_name == "block1_conv1" and normalization is not None:
            kernel, offset = _convert_input(kernel, normalization)
            bias = (bias.astype(np.float64) + offset).astype(bias.dtype)
            report.input_conversion = (f"block1_conv1 converted from caffe-style inputs (BGR, mean "
                                       f"{tuple(_CAFFE_MEAN.tolist())}, unscaled) to normalization={normalization!r}")
        if kernel.size != int(np.prod(expected)):
            raise ValueError(f"Expected layer {target_name!r} to have the shape of VGG16's {src_name!r} "
                             f"({kernel.shape}). Received: a layer with kernel shape {expected}")
        # fc1's rows are pool5 flattened in (row, column, channel) order, so they reshape directly into fc6's
        # 7×7×512 kernel; fc2 becomes fc7's 1×1 kernel; convolutions keep their shape.
        layer.set_weights([np.reshape(kernel, expected), bias])
        report.loaded.append(target_name)
    report.unused = [layer.name for layer in source.layers
                     if layer.weights and layer.name not in {src for src, _ in pairs}]
    del source
    if report.skipped:
        logger.warning(report.summary())
    else:
        logger.info(report.summary())
    return report
