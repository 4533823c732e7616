"""MobileNetV2 (width 1.0) with atrous convolution in its last stages.

Reference:
    M. Sandler, A. Howard, M. Zhu, A. Zhmoginov, L.-C. Chen. "MobileNetV2: Inverted Residuals and Linear
    Bottlenecks". CVPR 2018.

Layer names are those of ``keras.applications.MobileNetV2`` (``Conv1``, ``bn_Conv1``, ``expanded_conv_depthwise``,
``block_1_expand``, ..., ``block_16_project_BN``), so ImageNet weights load by name. The network stops after the
last inverted-residual block (320 channels): the final 1×1 convolution to 1280 channels (``Conv_1``) only feeds the
classifier, and DeepLab's MobileNetV2 drops it as well, so its ImageNet weights are reported as unused.

Strided depthwise convolutions use ``padding="same"``, which for a static input size pads exactly like the explicit
``ZeroPadding2D(correct_pad)`` + ``"valid"`` of ``keras.applications`` (bottom/right for even sizes, both sides for
odd ones) with one TFLite op instead of two. The ImageNet weights expect inputs scaled to [-1, 1]
(``"symmetric"`` normalisation, RGB).
"""

from __future__ import annotations

from kerasseg.backbones.common import check_output_stride, stride_schedule
from kerasseg.layers.blocks import resolve_keras

__all__ = ["mobilenet_v2", "inverted_residual_block", "MOBILENET_V2_STAGES", "MOBILENET_V2_BLOCK_NAMES", "stem"]

# Sandler et al., table 2, walked by `mobilenet_v2`: (expansion t, output channels c, repeats n, stride s).
MOBILENET_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

STEM_FILTERS = 32

# keras.applications' epsilon, kept so that loaded weights reproduce its features exactly.
BN_EPSILON = 1e-3
# Not keras.applications' 0.999, which suits fine-tuning from ImageNet statistics only: from scratch, the moving
# statistics after 1,000 steps would still be a third of their zero / one initial values, and the inference model
# predicts a single class (DeepLab v3+ on the synthetic streets: validation mIoU 0.035 for 25 epochs while the
# training mIoU reached 0.72). The momentum plays no part in loading weights.
BN_MOMENTUM = 0.99


# Suffix of each layer of an inverted residual block, keras.applications.MobileNetV2 style.
MOBILENET_V2_BLOCK_NAMES = {"expand": "expand", "expand_bn": "expand_BN", "expand_act": "expand_relu",
                            "depthwise": "depthwise", "depthwise_bn": "depthwise_BN",
                            "depthwise_act": "depthwise_relu", "project": "project", "project_bn": "project_BN",
                            "add": "add"}


def inverted_residual_block(x, expansion: int, filters: int, *, name: str, strides: int = 1, dilation_rate: int = 1,
                            kernel_size: int = 3, layer_names=None, keras_module=None):
    """Inverted residual with linear bottleneck: 1×1 expand → ReLU6 → k×k depthwise → ReLU6 → 1×1 project.

    Layers are named like keras' ``_inverted_res_block``: ``{name}_expand`` (omitted when ``expansion == 1``),
    ``{name}_expand_BN``, ``{name}_expand_relu``, ``{name}_depthwise``, ``{name}_depthwise_BN``,
    ``{name}_depthwise_relu``, ``{name}_project``, ``{name}_project_BN`` and ``{name}_add`` (identity shortcut when
    the block keeps both the resolution and the channel count). The projection has no activation: a ReLU on the
    narrow bottleneck would destroy information (Sandler et al., section 3.2). EfficientNet-Lite's MBConv block is
    the same block with 5×5 kernels in some stages and other names (``layer_names``).

    Args:
        x: input tensor ``(B, H, W, C)``.
        expansion: expansion factor ``t`` of the hidden layer.
        filters: output channels.
        name: layer name prefix, e.g. ``"block_3"`` (keras names the first block ``"expanded_conv"``).
        strides: stride of the depthwise convolution.
        dilation_rate: dilation of the depthwise convolution.
        kernel_size: size of the depthwise kernel.
        layer_names: role -> name suffix, the keys of `MOBILENET_V2_BLOCK_NAMES` (its values by default).
        keras_module: Keras module to build with.
    """
    layers = resolve_keras(keras_module).layers
    n = {role: f"{name}_{suffix}" for role, suffix in (layer_names or MOBILENET_V2_BLOCK_NAMES).items()}
    in_channels = int(x.shape[-1])
    y = x
    if expansion != 1:
        y = layers.Conv2D(expansion * in_channels, 1, use_bias=False, kernel_initializer="he_normal",
                          name=n["expand"])(y)
        y = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=n["expand_bn"])(y)
        y = layers.ReLU(6.0, name=n["expand_act"])(y)
    y = layers.DepthwiseConv2D(kernel_size, strides=strides, dilation_rate=dilation_rate, padding="same",
                               use_bias=False, depthwise_initializer="he_normal", name=n["depthwise"])(y)
    y = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=n["depthwise_bn"])(y)
    y = layers.ReLU(6.0, name=n["depthwise_act"])(y)
    y = layers.Conv2D(filters, 1, use_bias=False, kernel_initializer="he_normal", name=n["project"])(y)
    y = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=n["project_bn"])(y)
    if in_channels == filters and strides == 1:
        y = layers.Add(name=n["add"])([x, y])
    return y


def stem(inputs, names, *, filters: int = STEM_FILTERS, keras_module=None):
    """3×3 stride-2 convolution → BN → ReLU6, the stem of MobileNetV2 and EfficientNet-Lite.

    ``names`` are the (convolution, batch norm, activation) layer names.
    """
    layers = resolve_keras(keras_module).layers
    conv, bn, act = names
    x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name=conv)(inputs)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=bn)(x)
    return layers.ReLU(6.0, name=act)(x)


def mobilenet_v2(inputs, *, output_stride: int = 32, keras_module=None) -> dict:
    """MobileNetV2 feature extractor.

    Args:
        inputs: image tensor ``(B, H, W, C)``, normalised to [-1, 1] for the ImageNet weights.
        output_stride: 32 (the classification network), 16 (the 160- and 320-channel stages dilated 2) or 8 (the
            64- and 96-channel stages dilated 2, the last two dilated 4). A dilated stage loses its stride and all
            its blocks use the stage's dilation.
        keras_module: Keras module to build with (``keras`` by default, ``tf_keras`` for quantization-aware
            training).

    Returns:
        ``{"stride2": 16 ch, "stride4": 24 ch, "stride8": 32 ch, "stride16": 96 ch, "stride32": 320 ch}``, each the
        output of the last block at that nominal stride (``expanded_conv_project_BN``, ``block_2_add``,
        ``block_5_add``, ``block_12_add``, ``block_16_project_BN``). Names are nominal strides (see
        `kerasseg.backbones.common`).
    """
    output_stride = check_output_stride(output_stride)
    x = stem(inputs, ("Conv1", "bn_Conv1", "Conv1_relu"), keras_module=keras_module)

    endpoints = {}
    schedule = stride_schedule([s for *_, s in MOBILENET_V2_STAGES], output_stride, initial_stride=2)
    nominal, block_id = 2, 0
    for (expansion, filters, repeats, nominal_stride), (stride, dilation) in zip(MOBILENET_V2_STAGES, schedule):
        for i in range(repeats):
            x = inverted_residual_block(x, expansion, filters, strides=stride if i == 0 else 1,
                                        dilation_rate=dilation,
                                        name=f"block_{block_id}" if block_id else "expanded_conv",
                                        keras_module=keras_module)
            block_id += 1
        nominal *= nominal_stride
        # A later stage at the same nominal stride replaces the endpoint: heads want the deepest feature.
        endpoints[f"stride{nominal}"] = x
    return endpoints
