"""LR-ASPP: the Lite Reduced Atrous Spatial Pyramid Pooling head of MobileNetV3, for edge segmentation.

Reference:
    A. Howard, M. Sandler, G. Chu, L.-C. Chen, B. Chen, M. Tan, W. Wang, Y. Zhu, R. Pang, V. Vasudevan, Q. V. Le,
    H. Adam. "Searching for MobileNetV3". ICCV 2019, section 6.1.2 and figure 10.

The deepest backbone feature (output stride 16) goes through a 1×1 convolution (128 channels, BN, ReLU) gated by a
squeeze-excitation-like branch: global average pooling, a 1×1 convolution and a sigmoid. The gated feature is
up-sampled to stride 8 and classified by a 1×1 convolution; the stride-8 backbone feature is classified by another
1×1 convolution; both logits are added and up-sampled bilinearly to the input. Almost all of the computation is the
backbone's: with EfficientNet-Lite0 the model counts 2.43 GMACs at 368×480 where DeepLab v3+, whose ASPP and
256-channel stride-4 decoder cost almost as much as the backbone, counts 4.54.

Edge export: the pooling is an ``AveragePooling2D`` over the static feature size and its 1×1 → H×W "resize" is a
broadcast, as in `kerasseg.models.deeplab.aspp`; the graph has CONV_2D, DEPTHWISE_CONV_2D, AVERAGE_POOL_2D,
LOGISTIC, MUL, ADD and RESIZE_BILINEAR only.
"""

from __future__ import annotations

from kerasseg.backbones import (IMAGENET_BACKBONES, build_backbone, check_backbone_weights, check_output_stride,
                                load_backbone_weights)
from kerasseg.layers.blocks import check_input_shape, check_positive_int, conv_bn_act, resolve_keras, upsample_bilinear
from kerasseg.registry import register_model

__all__ = ["lraspp", "lraspp_head", "HEAD_FILTERS"]

HEAD_FILTERS = 128
OUTPUT_STRIDES = (8, 16)
# Backbones with an ImageNet source whose stride-8 endpoint is narrow enough for a 1x1 classifier (ResNets' 512
# channels would make the "lite" head heavier than DeepLab's).
BACKBONES = tuple(b for b in IMAGENET_BACKBONES if not b.startswith("resnet"))


def lraspp_head(high, low, num_classes: int, *, filters: int = HEAD_FILTERS, name: str = "lraspp",
                keras_module=None):
    """The LR-ASPP head on ``high`` (deep feature) and ``low`` (stride-8 feature); returns logits at ``low``'s size.

    Layers: ``{name}_proj`` (conv + BN + ReLU), ``{name}_pool``, ``{name}_gate_conv`` (with bias),
    ``{name}_gate`` (sigmoid), ``{name}_gate_upsample``, ``{name}_mul``, ``{name}_upsample``,
    ``{name}_high_classifier``, ``{name}_low_classifier`` and ``{name}_add``.
    """
    keras = resolve_keras(keras_module)
    layers = keras.layers
    h, w = int(high.shape[1]), int(high.shape[2])
    x = conv_bn_act(high, filters, 1, name=f"{name}_proj", keras_module=keras)
    gate = layers.AveragePooling2D((h, w), strides=(h, w), name=f"{name}_pool")(high)
    gate = layers.Conv2D(filters, 1, use_bias=True, name=f"{name}_gate_conv")(gate)
    gate = layers.Activation("sigmoid", name=f"{name}_gate")(gate)
    gate = upsample_bilinear(gate, (h, w), name=f"{name}_gate_upsample", keras_module=keras)
    x = layers.Multiply(name=f"{name}_mul")([x, gate])
    x = upsample_bilinear(x, low.shape[1:3], name=f"{name}_upsample", keras_module=keras)
    x = layers.Conv2D(num_classes, 1, use_bias=True, name=f"{name}_high_classifier")(x)
    y = layers.Conv2D(num_classes, 1, use_bias=True, name=f"{name}_low_classifier")(low)
    return layers.Add(name=f"{name}_add")([x, y])


@register_model("lraspp", paper="Howard et al., ICCV 2019 (MobileNetV3 LR-ASPP)", normalization="symmetric")
def lraspp(num_classes: int, input_shape=(512, 1024, 3), *, backbone: str = "efficientnet_lite0",
           backbone_weights=None, output_stride: int = 16, head_filters: int = HEAD_FILTERS, name: str = "lraspp",
           keras_module=None):
    """Builds an LR-ASPP segmentation model.

    Args:
        num_classes: number of output classes.
        input_shape: ``(height, width, channels)``; height and width must be multiples of 16 (the stride-16 pooling
            window is static).
        backbone: ``"efficientnet_lite0"`` (default) or ``"mobilenetv2"``.
        backbone_weights: ``None``, ``"imagenet"`` or a weights file (see `kerasseg.backbones.load_backbone_weights`);
            the first convolution is converted to this model's ``"symmetric"`` normalisation ([-1, 1], RGB).
        output_stride: 16 (the paper's) or 8 (the deep stages dilated further).
        head_filters: channels of the gated 1×1 projection (128 in the paper).
        name: model name.
        keras_module: Keras module to build with (``keras``, or ``tf_keras`` for quantization-aware training).

    Returns:
        A functional model mapping normalised images to logits ``(B, H, W, num_classes)`` (layer ``logits``); the
        backbone's weight report is ``model.backbone_weights_report`` when weights were loaded.
    """
    check_positive_int(num_classes, "num_classes")
    if backbone not in BACKBONES:
        raise ValueError(f"Expected backbone to be one of {BACKBONES}. Received: backbone={backbone!r}")
    output_stride = check_output_stride(output_stride, allowed=OUTPUT_STRIDES)
    input_shape = check_input_shape(input_shape, multiple_of=16)
    check_positive_int(head_filters, "head_filters")
    backbone_weights = check_backbone_weights(backbone_weights)
    keras = resolve_keras(keras_module)

    inputs = keras.Input(shape=input_shape, name="image")
    features = build_backbone(backbone, inputs, output_stride=output_stride, keras_module=keras)
    x = lraspp_head(features["stride32"], features["stride8"], num_classes, filters=head_filters, keras_module=keras)
    outputs = upsample_bilinear(x, input_shape[:2], name="logits", keras_module=keras)
    model = keras.Model(inputs, outputs, name=name)
    if backbone_weights is not None:
        model.backbone_weights_report = load_backbone_weights(model, backbone, backbone_weights,
                                                              normalization="symmetric")
    return model
