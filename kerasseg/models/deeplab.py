"""DeepLab v3 and DeepLab v3+: atrous backbones with Atrous Spatial Pyramid Pooling (ASPP).

References:
    L.-C. Chen, G. Papandreou, F. Schroff, H. Adam. "Rethinking Atrous Convolution for Semantic Image
    Segmentation". arXiv:1706.05587, 2017 (DeepLab v3).
    L.-C. Chen, Y. Zhu, G. Papandreou, F. Schroff, H. Adam. "Encoder-Decoder with Atrous Separable Convolution for
    Semantic Image Segmentation". ECCV 2018 (DeepLab v3+).
    M. Sandler, A. Howard, M. Zhu, A. Zhmoginov, L.-C. Chen. "MobileNetV2: Inverted Residuals and Linear
    Bottlenecks". CVPR 2018 (the mobile DeepLab v3+).

Both models share `aspp`: a 1×1 convolution, three 3×3 atrous convolutions (rates 6, 12, 18 at output stride 16,
doubled at 8) and image pooling (global average → 1×1 convolution → BN → ReLU → up-sampling), each with 256 channels,
batch norm and ReLU; the 1280 concatenated channels are projected by a 1×1 convolution to 256 (BN, ReLU) and dropout
0.1 (the authors' implementation). DeepLab v3 then applies a 1×1 classifier and up-samples bilinearly to the input.
DeepLab v3+ adds a decoder: the ASPP output is up-sampled to stride 4, concatenated with the stride-4 backbone
feature reduced to 48 channels (1×1 convolution, BN, ReLU), refined by two 3×3 convolutions (256, BN, ReLU) and
classified, and the logits are up-sampled ×4.

Paper-style DeepLab v3 with 21 classes has 39,048,533 (ResNet-50) / 58,040,661 (ResNet-101) trainable parameters at
either output stride. No convolution followed by batch norm has a bias; only the classifiers do.

Edge export: image pooling is an ``AveragePooling2D`` over the static feature size and every resize has a static
size, so the TFLite graph has builtin ops only (AVERAGE_POOL_2D, RESIZE_BILINEAR, dilated CONV_2D /
DEPTHWISE_CONV_2D, no SPACE_TO_BATCH_ND, SHAPE or GATHER).
"""

from __future__ import annotations

from typing import Sequence

from kerasseg.backbones import (IMAGENET_BACKBONES, build_backbone, check_backbone_weights, check_output_stride,
                                load_backbone_weights)
from kerasseg.layers.blocks import (check_input_shape, check_positive_int, conv_bn_act, resolve_keras,
                                    separable_conv_bn_act, upsample_bilinear)
from kerasseg.registry import register_model

__all__ = ["deeplabv3", "deeplabv3plus", "aspp", "ASPP_RATES"]

# Atrous rates of the three 3×3 ASPP branches at output stride 16; they scale with 16 / output_stride so that each
# branch keeps its field of view in pixels.
ASPP_RATES = (6, 12, 18)
ASPP_FILTERS = 256
# DeepLab v3's best ResNet setting: unit rates of the three conv5 blocks, multiplied by conv5's dilation.
MULTI_GRID = (1, 2, 4)
DECODER_LOW_LEVEL_FILTERS = 48
DECODER_FILTERS = 256
OUTPUT_STRIDES = (8, 16)


def _conv(x, filters, kernel_size, *, separable, dilation_rate=1, name, keras_module):
    # 1×1 convolutions stay plain: a depthwise 1×1 would only add a per-channel scale.
    if separable and kernel_size > 1:
        return separable_conv_bn_act(x, filters, kernel_size, dilation_rate=dilation_rate, name=name,
                                     keras_module=keras_module)
    return conv_bn_act(x, filters, kernel_size, dilation_rate=dilation_rate, name=name, keras_module=keras_module)


def aspp(x, rates: Sequence[int] = ASPP_RATES, filters: int = ASPP_FILTERS, *, name: str, separable: bool = False,
         dropout: float = 0.1, keras_module=None):
    """Atrous Spatial Pyramid Pooling with image-level features (DeepLab v3, section 3.3).

    Branches ``{name}_conv1x1``, ``{name}_atrous{i}`` (one per rate; depthwise-separable when ``separable``) and
    ``{name}_pool`` (an ``AveragePooling2D`` over the whole static feature map, then ``{name}_pool_proj`` 1×1
    conv + BN + ReLU and ``{name}_pool_upsample``), concatenated (``{name}_concat``) and projected
    (``{name}_projection``, 1×1 conv + BN + ReLU), then ``{name}_dropout``.
    """
    keras = resolve_keras(keras_module)
    h, w = int(x.shape[1]), int(x.shape[2])
    branches = [conv_bn_act(x, filters, 1, name=f"{name}_conv1x1", keras_module=keras)]
    for i, rate in enumerate(rates, start=1):
        branches.append(_conv(x, filters, 3, separable=separable, dilation_rate=rate, name=f"{name}_atrous{i}",
                              keras_module=keras))
    # A fixed pooling window instead of a global reduce keeps the pooled map 4-D, which TFLite runs as one
    # AVERAGE_POOL_2D; the 1×1 → H×W bilinear resize is a broadcast.
    pool = keras.layers.AveragePooling2D((h, w), strides=(h, w), name=f"{name}_pool")(x)
    pool = conv_bn_act(pool, filters, 1, name=f"{name}_pool_proj", keras_module=keras)
    branches.append(upsample_bilinear(pool, (h, w), name=f"{name}_pool_upsample", keras_module=keras))
    x = keras.layers.Concatenate(name=f"{name}_concat")(branches)
    x = conv_bn_act(x, filters, 1, name=f"{name}_projection", keras_module=keras)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def _validate(num_classes, input_shape, backbone, output_stride, separable, multi_grid, backbone_weights,
              backbones):
    # Shared argument checks of both builders; returns the normalised values.
    check_positive_int(num_classes, "num_classes")
    if backbone not in backbones:
        raise ValueError(f"Expected backbone to be one of {backbones}. Received: backbone={backbone!r}")
    output_stride = check_output_stride(output_stride, allowed=OUTPUT_STRIDES)
    input_shape = check_input_shape(input_shape)
    if input_shape[0] % output_stride or input_shape[1] % output_stride:
        raise ValueError(f"Expected height and width in input_shape to be multiples of the output stride "
                         f"{output_stride} (static ASPP pooling and exact up-sampling). "
                         f"Received: input_shape={input_shape!r}")
    if not isinstance(separable, bool):
        raise ValueError(f"Expected separable to be True or False. Received: separable={separable!r}")
    if not backbone.startswith("resnet"):
        if multi_grid is not None:
            raise ValueError(f"Expected multi_grid=None with backbone {backbone!r} (multi-grid applies to ResNet's "
                             f"conv5). Received: multi_grid={multi_grid!r}")
    else:
        multi_grid = MULTI_GRID if multi_grid is None else multi_grid
        if (not isinstance(multi_grid, (tuple, list)) or len(multi_grid) != 3
                or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in multi_grid)):
            raise ValueError(f"Expected multi_grid to be 3 positive integers (one per conv5 block). "
                             f"Received: multi_grid={multi_grid!r}")
        multi_grid = tuple(multi_grid)
    return input_shape, output_stride, multi_grid, check_backbone_weights(backbone_weights)


def _encoder(inputs, backbone, output_stride, multi_grid, separable, filters, keras):
    # Backbone + ASPP with rates scaled to the output stride; returns (backbone endpoints, ASPP output).
    features = build_backbone(backbone, inputs, output_stride=output_stride, multi_grid=multi_grid,
                              keras_module=keras)
    rates = tuple(r * 16 // output_stride for r in ASPP_RATES)
    return features, aspp(features["stride32"], rates, filters, name="aspp", separable=separable,
                          keras_module=keras)


def _classify(x, num_classes, size, keras):
    # 1×1 classifier with bias (no BN follows), bilinear up-sampling to the input size as layer "logits".
    x = keras.layers.Conv2D(num_classes, 1, use_bias=True, name="classifier")(x)
    return upsample_bilinear(x, size, name="logits", keras_module=keras)


def _deeplab(num_classes, input_shape, backbone, backbone_weights, output_stride, separable, multi_grid, name,
             keras_module, *, decoder: bool, normalization: str, aspp_filters: int = ASPP_FILTERS,
             decoder_filters: int = DECODER_FILTERS):
    # Both builders: encoder with ASPP, the v3+ decoder when asked for, classifier, backbone weights.
    input_shape, output_stride, multi_grid, backbone_weights = _validate(
        num_classes, input_shape, backbone, output_stride, separable, multi_grid, backbone_weights,
        IMAGENET_BACKBONES)
    check_positive_int(aspp_filters, "aspp_filters")
    check_positive_int(decoder_filters, "decoder_filters")
    keras = resolve_keras(keras_module)

    inputs = keras.Input(shape=input_shape, name="image")
    features, x = _encoder(inputs, backbone, output_stride, multi_grid, separable, aspp_filters, keras)
    if decoder:
        low = conv_bn_act(features["stride4"], DECODER_LOW_LEVEL_FILTERS, 1, name="decoder_low_level",
                          keras_module=keras)
        x = upsample_bilinear(x, low.shape[1:3], name="decoder_upsample", keras_module=keras)
        x = keras.layers.Concatenate(name="decoder_concat")([x, low])
        for i in (1, 2):
            x = _conv(x, decoder_filters, 3, separable=separable, name=f"decoder_conv{i}", keras_module=keras)
    model = keras.Model(inputs, _classify(x, num_classes, input_shape[:2], keras), name=name)
    if backbone_weights is not None:
        model.backbone_weights_report = load_backbone_weights(model, backbone, backbone_weights,
                                                              normalization=normalization)
    return model


@register_model("deeplabv3", paper="Chen et al., arXiv 2017 (DeepLab v3)", normalization="imagenet")
def deeplabv3(num_classes: int, input_shape=(512, 1024, 3), *, backbone: str = "resnet50", backbone_weights=None,
              output_stride: int = 16, separable: bool = False, multi_grid=None, name: str = "deeplabv3",
              keras_module=None):
    """Builds DeepLab v3.

    Args:
        num_classes: number of output classes (logits channels).
        input_shape: ``(height, width, channels)``; height and width must be multiples of ``output_stride``.
        backbone: ``"resnet50"``, ``"resnet101"`` (the paper's) or ``"mobilenetv2"``.
        backbone_weights: ``None``, ``"imagenet"`` (``keras.applications`` weights) or the path to a file saved from
            the matching ``keras.applications`` model with ``include_top=False``. ResNet ImageNet weights expect
            caffe-style inputs (BGR, mean subtracted, no scaling) and MobileNetV2 weights [-1, 1]; the first
            convolution is converted on loading to this model's ``"imagenet"`` normalisation (RGB,
            ``(x - mean) / std``). The model's ``backbone_weights_report`` lists what was loaded.
        output_stride: 16 (conv5 dilated 2) or 8 (conv4 dilated 2, conv5 dilated 4); ASPP rates are 6, 12, 18 at
            16 and doubled at 8.
        separable: depthwise-separable 3×3 ASPP convolutions (DeepLab v3+ style) instead of full ones.
        multi_grid: unit rates of the three ResNet conv5 blocks; ``None`` means ``(1, 2, 4)`` (the paper's best),
            giving rates 2, 4, 8 at output stride 16 and 4, 8, 16 at 8. Must be ``None`` for MobileNetV2.
        name: model name.
        keras_module: Keras module to build with (``keras`` by default, ``tf_keras`` for quantization-aware
            training).

    Returns:
        A functional model mapping normalised images ``(B, H, W, C)`` to logits ``(B, H, W, num_classes)`` (layer
        ``logits``).
    """
    return _deeplab(num_classes, input_shape, backbone, backbone_weights, output_stride, separable, multi_grid, name,
                    keras_module, decoder=False, normalization="imagenet")


@register_model("deeplabv3plus", paper="Chen et al., ECCV 2018 (DeepLab v3+)", normalization="symmetric")
def deeplabv3plus(num_classes: int, input_shape=(512, 1024, 3), *, backbone: str = "mobilenetv2",
                  backbone_weights=None, output_stride: int = 16, separable: bool = True, multi_grid=None,
                  aspp_filters: int = ASPP_FILTERS, decoder_filters: int = DECODER_FILTERS,
                  name: str = "deeplabv3plus", keras_module=None):
    """Builds DeepLab v3+ (encoder-decoder), by default the mobile variant on MobileNetV2.

    The model is registered with the ``"symmetric"`` normalisation (RGB scaled to [-1, 1]), the preprocessing of
    the MobileNetV2 ImageNet weights; it applies to every backbone of this registry name. ResNet ImageNet weights
    (trained caffe-style) are converted to it on loading.

    Args:
        num_classes: number of output classes (logits channels).
        input_shape: ``(height, width, channels)``; height and width must be multiples of ``output_stride``.
        backbone: ``"mobilenetv2"`` (Sandler et al.'s mobile DeepLab v3+), ``"resnet50"``, ``"resnet101"`` or
            ``"efficientnet_lite0"`` (ImageNet weights read offline from the ``kerasseg[imagenet]`` extra).
        backbone_weights: ``None``, ``"imagenet"`` (``keras.applications`` weights) or the path to a file saved from
            the matching ``keras.applications`` model with ``include_top=False``; the first convolution is
            converted to the ``"symmetric"`` normalisation when needed. The model's ``backbone_weights_report``
            lists what was loaded.
        output_stride: 16 or 8 (ASPP rates 6, 12, 18 at 16, doubled at 8).
        separable: depthwise-separable 3×3 convolutions in ASPP and decoder (the paper's "atrous separable
            convolution"; default) or full ones.
        multi_grid: ResNet conv5 unit rates (``None`` means ``(1, 2, 4)``); must be ``None`` for MobileNetV2.
        aspp_filters: channels of each ASPP branch and of its projection (256 in the paper).
        decoder_filters: channels of the decoder's two 3×3 convolutions (256 in the paper). On a mobile backbone
            the paper's widths weigh: 0.91 M of EfficientNet-Lite0 DeepLab v3+'s 3.91 M parameters (11 classes) are
            ASPP and decoder; at 128 and 128 they are 0.35 M.
        name: model name.
        keras_module: Keras module to build with (``keras`` by default, ``tf_keras`` for quantization-aware
            training).

    Returns:
        A functional model mapping normalised images ``(B, H, W, C)`` to logits ``(B, H, W, num_classes)`` (layer
        ``logits``). The decoder's skip is the backbone's ``"stride4"`` endpoint (``block_2_add``, 24 channels, for
        MobileNetV2; ``conv2_block3_out``, 256 channels, for ResNet).
    """
    return _deeplab(num_classes, input_shape, backbone, backbone_weights, output_stride, separable, multi_grid, name,
                    keras_module, decoder=True, normalization="symmetric", aspp_filters=aspp_filters,
                    decoder_filters=decoder_filters)
