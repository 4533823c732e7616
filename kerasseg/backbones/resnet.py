"""ResNet-50 / ResNet-101 (v1, bottleneck) with dilation, multi-grid and a choice of stem.

Reference:
    K. He, X. Zhang, S. Ren, J. Sun. "Deep Residual Learning for Image Recognition". CVPR 2016.

Layer names are those of ``keras.applications.ResNet50`` / ``ResNet101`` (``conv1_conv``, ``conv2_block1_1_conv``,
..., ``conv5_block3_out``), so ImageNet weights load by name (`kerasseg.backbones.load_backbone_weights`). As in
``keras.applications`` the stride of a stage sits on the first 1×1 convolution of its first block (He et al.'s
original layout; counts are the same as for the "v1.5" layout with the stride on the 3×3). Unlike
``keras.applications`` the convolutions carry no bias: each one is followed by batch normalisation, whose offset
makes a bias redundant (He et al.); the biases of ``keras.applications`` weights are folded into the moving means
when loading, which is exact.

Two stems:

* ``"standard"``: 7×7 stride-2 convolution (64) + 3×3 stride-2 max-pool, fully initialisable from
  ``keras.applications``.
* ``"deep"``: three 3×3 convolutions (64, 64, 128; the first with stride 2) + max-pool, the stem of PSPNet (Zhao et
  al.). ``keras.applications`` has no weights for it: the three stem convolutions stay randomly initialised, and so
  do the first 1×1 convolution and the projection shortcut of ``conv2_block1`` (with their batch norms), whose input
  has 128 channels instead of 64. Everything else loads.
"""

from __future__ import annotations

from typing import Sequence

from kerasseg.backbones.common import check_output_stride, stride_schedule
from kerasseg.layers.blocks import conv_bn_act, resolve_keras

__all__ = ["resnet", "bottleneck_block", "resnet_stem", "RESNET_STAGES", "RESNET_DEPTHS", "STEMS"]

# Stages walked by `resnet`: (keras.applications stage name, bottleneck width, nominal stride). A block outputs
# 4 × width channels.
RESNET_STAGES = (
    ("conv2", 64, 1),
    ("conv3", 128, 2),
    ("conv4", 256, 2),
    ("conv5", 512, 2),
)

# Number of bottleneck blocks per stage (He et al., table 1).
RESNET_DEPTHS = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
}

# Stem convolutions: (layer name prefix, filters, kernel size, stride). Both stems end with a 3×3 stride-2 max-pool.
STEMS = {
    "standard": (("conv1", 64, 7, 2),),
    "deep": (("conv1_1", 64, 3, 2), ("conv1_2", 64, 3, 1), ("conv1_3", 128, 3, 1)),
}

# keras.applications' value; kept so that loaded weights reproduce its features exactly.
BN_EPSILON = 1.001e-5


def resnet_stem(x, stem: str = "standard", *, keras_module=None):
    """The stem of `STEMS` up to (excluding) the max-pool; returns the stride-2 feature map.

    Strided convolutions are zero-padded explicitly and symmetrically (``k // 2`` on each side) and then applied
    without padding, exactly as ``keras.applications`` does: ``padding="same"`` would pad only the bottom/right of an
    even-sized input and shift every feature by one pixel relative to the ImageNet-trained filters.
    """
    keras = resolve_keras(keras_module)
    for prefix, filters, kernel, stride in STEMS[stem]:
        if stride > 1:
            x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{prefix}_pad")(x)
        x = conv_bn_act(x, filters, kernel, strides=stride, padding="valid" if stride > 1 else "same",
                        bn_epsilon=BN_EPSILON, name=prefix, keras_module=keras)
    return x


def bottleneck_block(x, filters: int, *, name: str, strides: int = 1, dilation_rate: int = 1,
                     conv_shortcut: bool = False, keras_module=None):
    """ResNet v1 bottleneck: 1×1 (stride) → 3×3 (dilation) → 1×1 (4 × filters), added to the shortcut, ReLU.

    Layers follow keras' ``residual_block_v1`` names: ``{name}_0_conv`` / ``_0_bn`` (projection shortcut, when
    ``conv_shortcut``), ``{name}_1_conv``, ``_1_bn``, ``_1_relu``, ``{name}_2_...``, ``{name}_3_conv``, ``_3_bn``,
    ``{name}_add`` and ``{name}_out``.

    Args:
        x: input tensor ``(B, H, W, C)``.
        filters: bottleneck width; the block outputs ``4 * filters`` channels.
        name: layer name prefix, e.g. ``"conv3_block1"``.
        strides: stride of the first 1×1 convolution and of the projection shortcut.
        dilation_rate: dilation of the 3×3 convolution.
        conv_shortcut: use a 1×1 projection shortcut (first block of a stage) instead of the identity.
        keras_module: Keras module to build with.
    """
    keras = resolve_keras(keras_module)
    common = dict(bn_epsilon=BN_EPSILON, keras_module=keras)
    if conv_shortcut:
        shortcut = conv_bn_act(x, 4 * filters, 1, strides=strides, activation=None, name=f"{name}_0", **common)
    else:
        shortcut = x
    y = conv_bn_act(x, filters, 1, strides=strides, name=f"{name}_1", **common)
    y = conv_bn_act(y, filters, 3, dilation_rate=dilation_rate, name=f"{name}_2", **common)
    y = conv_bn_act(y, 4 * filters, 1, activation=None, name=f"{name}_3", **common)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.Activation("relu", name=f"{name}_out")(y)


def resnet(inputs, depth: int = 50, *, output_stride: int = 32, multi_grid: Sequence[int] | None = None,
           stem: str = "standard", keras_module=None) -> dict:
    """ResNet-50/101 feature extractor with atrous convolution in its last stages.

    Args:
        inputs: image tensor ``(B, H, W, C)``.
        depth: 50 or 101.
        output_stride: 32 (the classification network), 16 (conv5 dilated 2) or 8 (conv4 dilated 2, conv5
            dilated 4). The stride of a dilated stage is removed and all its blocks use the stage's dilation.
        multi_grid: unit rates of the conv5 blocks, multiplied by conv5's dilation (DeepLab v3's "Multi-Grid";
            ``(1, 2, 4)`` at output stride 16 gives rates 2, 4, 8). ``None`` means rate 1 for every block.
        stem: ``"standard"`` (7×7 convolution) or ``"deep"`` (three 3×3 convolutions); see the module docstring.
        keras_module: Keras module to build with (``keras`` by default, ``tf_keras`` for quantization-aware
            training).

    Returns:
        ``{"stride2": stem output, "stride4": conv2, "stride8": conv3, "stride16": conv4, "stride32": conv5}``.
        Names are nominal strides (see `kerasseg.backbones.common`): at output stride 8, ``"stride32"`` is 8 times
        smaller than the input.
    """
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"Expected depth to be one of {tuple(RESNET_DEPTHS)}. Received: depth={depth!r}")
    if stem not in STEMS:
        raise ValueError(f"Expected stem to be one of {tuple(STEMS)}. Received: stem={stem!r}")
    output_stride = check_output_stride(output_stride)
    last_blocks = RESNET_DEPTHS[depth][-1]
    if multi_grid is None:
        multi_grid = (1,) * last_blocks
    if (not isinstance(multi_grid, (tuple, list)) or len(multi_grid) != last_blocks
            or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in multi_grid)):
        raise ValueError(f"Expected multi_grid to be {last_blocks} positive integers (one per conv5 block). "
                         f"Received: multi_grid={multi_grid!r}")
    keras = resolve_keras(keras_module)

    x = resnet_stem(inputs, stem, keras_module=keras)
    endpoints = {"stride2": x}
    # Zero padding is harmless here: the input is post-ReLU (non-negative), so a zero never wins the max.
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)

    schedule = stride_schedule([s for _, _, s in RESNET_STAGES], output_stride, initial_stride=4)
    nominal = 4
    for (stage, filters, nominal_stride), blocks, (stride, dilation) in zip(RESNET_STAGES, RESNET_DEPTHS[depth],
                                                                            schedule):
        unit_rates = multi_grid if stage == RESNET_STAGES[-1][0] else (1,) * blocks
        for i in range(blocks):
            x = bottleneck_block(x, filters, strides=stride if i == 0 else 1, dilation_rate=dilation * unit_rates[i],
                                 conv_shortcut=i == 0, name=f"{stage}_block{i + 1}", keras_module=keras)
        nominal *= nominal_stride
        endpoints[f"stride{nominal}"] = x
    return endpoints
