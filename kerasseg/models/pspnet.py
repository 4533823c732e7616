"""PSPNet: Pyramid Scene Parsing Network.

Reference:
    H. Zhao, J. Shi, X. Qi, X. Wang, J. Jia. "Pyramid Scene Parsing Network". CVPR 2017.

A dilated ResNet-50/101 with the deep stem (output stride 8: conv4 dilated 2, conv5 dilated 4) feeds the pyramid
pooling module: average pooling into 1×1, 2×2, 3×3 and 6×6 bins, each reduced by a 1×1 convolution to 512 channels
(batch norm, ReLU), up-sampled bilinearly and concatenated with the 2048 backbone channels (4096 in all). A 3×3
convolution (512, batch norm, ReLU), dropout 0.1 and a 1×1 classifier follow; the logits are up-sampled to the input.
An auxiliary head on conv4 (3×3 convolution 256, batch norm, ReLU, dropout 0.1, 1×1 classifier) supervises training
with loss weight 0.4 in the paper; it is built only with ``aux=True`` and should be dropped for inference and export.

With 19 classes PSPNet-50 has 46,715,347 trainable parameters (49,080,038 with the auxiliary head) and PSPNet-101
65,707,475 (68,072,166), the reference counts: convolutions followed by batch norm have no bias, the two
classifiers do.

Edge export: the bins are fixed ``AveragePooling2D`` layers whose pool size is computed from the static feature size,
never adaptive pooling (which TFLite lowers to GATHER ops), so height and width must be multiples of
``6 * output_stride`` (48 at output stride 8).
"""

from __future__ import annotations

import math

from kerasseg.backbones import build_backbone, check_backbone_weights, check_output_stride, load_backbone_weights
from kerasseg.backbones.resnet import STEMS
from kerasseg.layers.blocks import (check_input_shape, check_positive_int, check_rate, conv_bn_act, resolve_keras,
                                    upsample_bilinear)
from kerasseg.registry import register_model

__all__ = ["pspnet", "pyramid_pooling_module", "PSP_BINS"]

# Bin counts per side of the pyramid levels (Zhao et al., section 3.3).
PSP_BINS = (1, 2, 3, 6)
PSP_BACKBONES = ("resnet50", "resnet101")
NORMALIZATION = "imagenet"


def pyramid_pooling_module(x, bins=PSP_BINS, filters: int = 512, *, name: str, keras_module=None):
    """Pyramid pooling: for each bin count ``b``, ``b``×``b`` average pooling → 1×1 conv → BN → ReLU → bilinear
    up-sampling; the branches are concatenated after the input.

    Every level is an ``AveragePooling2D`` with pool size = stride = feature size / ``b``, so the feature height and
    width must be divisible by every bin count. Layers are named ``{name}_bin{b}_pool``, ``{name}_bin{b}_conv``,
    ``_bn``, ``_relu``, ``{name}_bin{b}_upsample`` and ``{name}_concat``.
    """
    keras = resolve_keras(keras_module)
    h, w = int(x.shape[1]), int(x.shape[2])
    if any(h % b or w % b for b in bins):
        raise ValueError(f"Expected a feature map whose height and width are divisible by every bin count {tuple(bins)}"
                         f" (fixed average pooling). Received: feature size {(h, w)}")
    branches = [x]
    for b in bins:
        y = keras.layers.AveragePooling2D((h // b, w // b), strides=(h // b, w // b), name=f"{name}_bin{b}_pool")(x)
        y = conv_bn_act(y, filters, 1, name=f"{name}_bin{b}", keras_module=keras)
        branches.append(upsample_bilinear(y, (h, w), name=f"{name}_bin{b}_upsample", keras_module=keras))
    return keras.layers.Concatenate(name=f"{name}_concat")(branches)


def _segmentation_head(x, filters: int, num_classes: int, dropout: float, size, *, name: str, keras_module):
    # 3×3 conv → BN → ReLU → dropout → 1×1 classifier (with bias: no BN follows) → bilinear up-sampling to `size`.
    keras = resolve_keras(keras_module)
    x = conv_bn_act(x, filters, 3, name=f"{name}head", keras_module=keras)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{name}head_dropout")(x)
    x = keras.layers.Conv2D(num_classes, 1, use_bias=True, name=f"{name}classifier")(x)
    return upsample_bilinear(x, size, name=f"{name}logits", keras_module=keras)


@register_model("pspnet", paper="Zhao et al., CVPR 2017", normalization=NORMALIZATION)
def pspnet(num_classes: int, input_shape=(480, 960, 3), *, backbone: str = "resnet50", backbone_weights=None,
           output_stride: int = 8, stem: str = "deep", aux: bool = False, dropout: float = 0.1,
           name: str = "pspnet", keras_module=None):
    """Builds PSPNet.

    Args:
        num_classes: number of output classes (logits channels).
        input_shape: ``(height, width, channels)``; height and width must be multiples of ``6 * output_stride``
            (48 at output stride 8) so that the feature map splits exactly into 1, 2, 3 and 6 bins.
        backbone: ``"resnet50"`` or ``"resnet101"``.
        backbone_weights: ``None``, ``"imagenet"`` (``keras.applications`` weights) or the path to a file saved
            from ``keras.applications.ResNet50/101(include_top=False)``. The ImageNet weights were trained with
            caffe-style preprocessing (BGR, mean subtracted, no scaling); when the 7×7 stem is loaded it is
            converted to this model's ``"imagenet"`` normalisation (RGB, ``(x - mean) / std``). With the deep stem
            the stem and the first convolution and shortcut of ``conv2_block1`` keep their initialisation (see
            `kerasseg.backbones.resnet`); the returned model's ``backbone_weights_report`` lists what was loaded.
        output_stride: 8 (the paper: conv4 dilated 2, conv5 dilated 4) or 16 (conv5 dilated 2).
        stem: ``"deep"`` (three 3×3 convolutions, the paper's) or ``"standard"`` (7×7, fully initialisable from
            ImageNet weights).
        aux: add the auxiliary conv4 head as a second output ``aux_logits`` (for training only; for inference use
            ``keras.Model(model.inputs, model.outputs[0])``, which drops the ``aux_`` layers, or rebuild with
            ``aux=False`` and copy the weights by layer name).
        dropout: dropout rate before both classifiers (0.1 in the paper).
        name: model name.
        keras_module: Keras module to build with (``keras`` by default, ``tf_keras`` for quantization-aware
            training).

    Returns:
        A functional model mapping normalised images ``(B, H, W, C)`` to logits ``(B, H, W, num_classes)`` (layer
        ``logits``), or to ``[logits, aux_logits]`` with ``aux=True``.
    """
    check_positive_int(num_classes, "num_classes")
    if backbone not in PSP_BACKBONES:
        raise ValueError(f"Expected backbone to be one of {PSP_BACKBONES}. Received: backbone={backbone!r}")
    output_stride = check_output_stride(output_stride, allowed=(8, 16))
    multiple = output_stride * math.lcm(*PSP_BINS)
    input_shape = check_input_shape(input_shape)
    if input_shape[0] % multiple or input_shape[1] % multiple:
        raise ValueError(
            f"Expected height and width in input_shape to be multiples of {multiple}: the stride-{output_stride} "
            f"feature map must split exactly into {PSP_BINS} bins for fixed average pooling (feature size a "
            f"multiple of {math.lcm(*PSP_BINS)}). Received: input_shape={input_shape!r}")
    if stem not in STEMS:
        raise ValueError(f"Expected stem to be one of {tuple(STEMS)}. Received: stem={stem!r}")
    if not isinstance(aux, bool):
        raise ValueError(f"Expected aux to be True or False. Received: aux={aux!r}")
    check_rate(dropout, "dropout")
    backbone_weights = check_backbone_weights(backbone_weights)
    keras = resolve_keras(keras_module)

    inputs = keras.Input(shape=input_shape, name="image")
    features = build_backbone(backbone, inputs, output_stride=output_stride, stem=stem, keras_module=keras)
    x = pyramid_pooling_module(features["stride32"], name="psp", keras_module=keras)
    outputs = _segmentation_head(x, 512, num_classes, float(dropout), input_shape[:2], name="", keras_module=keras)
    if aux:
        aux_out = _segmentation_head(features["stride16"], 256, num_classes, float(dropout), input_shape[:2],
                                     name="aux_", keras_module=keras)
        outputs = [outputs, aux_out]
    model = keras.Model(inputs, outputs, name=name)
    if backbone_weights is not None:
        model.backbone_weights_report = load_backbone_weights(model, backbone, backbone_weights,
                                                              normalization=NORMALIZATION)
    return model
