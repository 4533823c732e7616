"""EfficientNet-Lite: EfficientNet without squeeze-excitation, with ReLU6 and a fixed stem and head.

References:
    M. Tan, Q. V. Le. "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks". ICML 2019.
    R. Liu. "Higher accuracy on vision models with EfficientNet-Lite". TensorFlow blog, 2020, and
    ``tensorflow/tpu/models/official/efficientnet/lite/efficientnet_lite_builder.py`` (the block table, the scaling
    coefficients, and the choices that make Lite int8- and accelerator-friendly: no squeeze-excitation, ReLU6
    instead of swish, stem and head not scaled).

Layer names follow ``keras.applications.EfficientNetB0`` (``stem_conv``, ``stem_bn``, ``block2a_expand_conv``,
``block2a_dwconv``, ``block2a_bn``, ``block2a_project_conv``, ``block2a_project_bn``, ``block2b_add``...), so they
read like the other kerasseg backbones; `TORCH_NAMES` maps them to the ``_conv_stem`` / ``_blocks.N._bn1`` names of
the PyTorch port (``efficientnet_lite_pytorch``) whose ImageNet weights `load_backbone_weights` reads. Keras has no
EfficientNet-Lite in ``keras.applications``, hence this builder.

Every convolution uses ``padding="same"``, TensorFlow's asymmetric padding, which is also what the reference
implementation reproduces (``Conv2dStaticSamePadding``), so the weights compute the same function. Stochastic depth
("drop connect" of the reference training) is left out: it is the identity at inference, and would need a custom
layer. The network stops after the last block (320 channels): the 1×1 head to 1280 channels only feeds the
classifier, so its weights are reported as unused.
"""

from __future__ import annotations

import math

from kerasseg.backbones.common import check_output_stride, stride_schedule
from kerasseg.backbones.mobilenet_v2 import inverted_residual_block, stem

__all__ = ["efficientnet_lite", "mbconv_block", "EFFICIENTNET_LITE_STAGES", "EFFICIENTNET_LITE_SCALING",
           "torch_names"]

# efficientnet_lite_builder.py: (repeats, kernel, stride, expansion, input filters, output filters) per stage.
EFFICIENTNET_LITE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# Variant -> (width coefficient, depth coefficient), from the same builder.
EFFICIENTNET_LITE_SCALING = {
    "efficientnet_lite0": (1.0, 1.0),
    "efficientnet_lite1": (1.0, 1.1),
    "efficientnet_lite2": (1.1, 1.2),
    "efficientnet_lite3": (1.2, 1.4),
    "efficientnet_lite4": (1.4, 1.8),
}
STEM_FILTERS = 32
# MobileNetV2's batch-norm epsilon (1e-3) is also the reference's, so loaded weights reproduce its features.


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    # efficientnet_builder.round_filters: scale, round to a multiple of 8, never more than 10 % down.
    if width == 1.0:
        return filters
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)


def _stage_table(variant: str):
    # The stage table scaled for `variant`; the first and last stages keep their depth (Lite's fixed stem/head).
    width, depth = EFFICIENTNET_LITE_SCALING[variant]
    table = []
    for i, (repeats, kernel, stride, expansion, in_f, out_f) in enumerate(EFFICIENTNET_LITE_STAGES):
        if 0 < i < len(EFFICIENTNET_LITE_STAGES) - 1:
            repeats = int(math.ceil(depth * repeats))
        in_f = STEM_FILTERS if i == 0 else _round_filters(in_f, width)
        table.append((repeats, kernel, stride, expansion, in_f, _round_filters(out_f, width)))
    return table


# Layer-name suffixes of an MBConv block, keras.applications.EfficientNet style.
MBCONV_NAMES = {"expand": "expand_conv", "expand_bn": "expand_bn", "expand_act": "expand_activation",
                "depthwise": "dwconv", "depthwise_bn": "bn", "depthwise_act": "activation",
                "project": "project_conv", "project_bn": "project_bn", "add": "add"}


def mbconv_block(x, expansion: int, filters: int, kernel_size: int, *, name: str, strides: int = 1,
                 dilation_rate: int = 1, keras_module=None):
    """Mobile inverted bottleneck without squeeze-excitation: 1×1 expand → k×k depthwise → 1×1 project.

    MobileNetV2's inverted residual (`inverted_residual_block`) under EfficientNet's layer names:
    ``{name}_expand_conv`` / ``_expand_bn`` / ``_expand_activation`` (omitted when ``expansion == 1``),
    ``{name}_dwconv``, ``{name}_bn``, ``{name}_activation``, ``{name}_project_conv``, ``{name}_project_bn`` and
    ``{name}_add`` when the block keeps resolution and channels. Activations are ReLU6; the projection is linear.
    """
    return inverted_residual_block(x, expansion, filters, name=name, strides=strides, dilation_rate=dilation_rate,
                                   kernel_size=kernel_size, layer_names=MBCONV_NAMES, keras_module=keras_module)


def _block_names(variant: str):
    # keras.applications-style block names in network order: block1a, block2a, block2b, ...
    return [f"block{stage + 1}{chr(ord('a') + i)}"
            for stage, (repeats, *_) in enumerate(_stage_table(variant)) for i in range(repeats)]


def efficientnet_lite(inputs, variant: str = "efficientnet_lite0", *, output_stride: int = 32, keras_module=None):
    """EfficientNet-Lite feature extractor.

    Args:
        inputs: image tensor ``(B, H, W, 3)``; the ImageNet weights expect the normalisation of
            ``kerasseg.backbones.weights.WEIGHT_SOURCES[variant]`` (converted on loading).
        variant: ``"efficientnet_lite0"`` ... ``"efficientnet_lite4"``.
        output_stride: 32, 16 (the stride-32 stages dilated 2) or 8 (stride-16 stages dilated 2, later ones 4).
        keras_module: Keras module to build with (``keras`` by default, ``tf_keras`` for QAT).

    Returns:
        ``{"stride2", "stride4", "stride8", "stride16", "stride32"}`` endpoints, each the output of the last block at
        that nominal stride (Lite0: 16, 24, 40, 112 and 320 channels; ``block1a_project_bn``, ``block2b_add``,
        ``block3b_add``, ``block5c_add``, ``block7a_project_bn``).
    """
    if variant not in EFFICIENTNET_LITE_SCALING:
        raise ValueError(f"Expected variant to be one of {tuple(EFFICIENTNET_LITE_SCALING)}. "
                         f"Received: variant={variant!r}")
    output_stride = check_output_stride(output_stride)
    x = stem(inputs, ("stem_conv", "stem_bn", "stem_activation"), filters=STEM_FILTERS, keras_module=keras_module)

    table = _stage_table(variant)
    names = iter(_block_names(variant))
    endpoints, nominal = {}, 2
    schedule = stride_schedule([stage[2] for stage in table], output_stride, initial_stride=2)
    for (repeats, kernel, nominal_stride, expansion, _, filters), (stride, dilation) in zip(table, schedule):
        for i in range(repeats):
            x = mbconv_block(x, expansion, filters, kernel, strides=stride if i == 0 else 1,
                             dilation_rate=dilation, name=next(names), keras_module=keras_module)
        nominal *= nominal_stride
        endpoints[f"stride{nominal}"] = x
    return endpoints


def torch_names(variant: str = "efficientnet_lite0") -> dict:
    """Keras layer name -> module name in the PyTorch reference (``efficientnet_lite_pytorch``), for one variant.

    ``stem_conv`` -> ``_conv_stem``, ``stem_bn`` -> ``_bn0``, ``block2a_expand_conv`` -> ``_blocks.1._expand_conv``,
    ``block2a_expand_bn`` -> ``_blocks.1._bn0``, ``block2a_dwconv`` -> ``_blocks.1._depthwise_conv``,
    ``block2a_bn`` -> ``_blocks.1._bn1``, ``block2a_project_conv`` -> ``_blocks.1._project_conv``,
    ``block2a_project_bn`` -> ``_blocks.1._bn2``; the head (``_conv_head``, ``_bn1``, ``_fc``) has no counterpart.
    """
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0"}
    expansions = [stage[3] for stage in _stage_table(variant) for _ in range(stage[0])]
    for i, (block, expansion) in enumerate(zip(_block_names(variant), expansions)):
        pairs = (("dwconv", "_depthwise_conv"), ("bn", "_bn1"), ("project_conv", "_project_conv"),
                 ("project_bn", "_bn2"))
        if expansion != 1:  # a block without expansion has no expand convolution
            pairs = (("expand_conv", "_expand_conv"), ("expand_bn", "_bn0")) + pairs
        for keras_suffix, torch_suffix in pairs:
            names[f"{block}_{keras_suffix}"] = f"_blocks.{i}.{torch_suffix}"
    return names
