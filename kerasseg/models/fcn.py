"""FCN-32s, FCN-16s and FCN-8s: fully convolutional networks on VGG16.

Reference:
    J. Long, E. Shelhamer, T. Darrell. "Fully Convolutional Networks for Semantic Segmentation". CVPR 2015.

VGG16's classifier becomes convolutional (``fc6``: 7×7 to 4096, ``fc7``: 1×1 to 4096, ReLU and dropout 0.5 each), a
1×1 ``score_fr`` predicts class scores at stride 32, and transposed convolutions initialised to bilinear
interpolation bring them back to the input size, fusing along the way the scores of ``pool4`` (FCN-16s) and of
``pool4`` and ``pool3`` (FCN-8s). Two choices differ from the authors' Caffe models, which pad the input by 100
pixels and crop with offsets: every layer here uses "same" padding, so any input whose sides are multiples of 32
aligns exactly with no crop; and all upsamplings are fixed bilinear interpolations by default (the paper learns
the 2× ones), which is what the reference counts assume. With 21 classes the models have 134,346,581 (32s),
134,357,354 (16s) and 134,362,751 (8s) trainable parameters.
"""

from __future__ import annotations

from kerasseg.backbones.vgg import check_vgg16_weights, load_vgg16_weights, vgg16_backbone
from kerasseg.layers.blocks import (check_input_shape, check_positive_int, check_rate, resolve_keras,
                                    upsample_transposed_bilinear)
from kerasseg.registry import register_model

__all__ = ["fcn32s", "fcn16s", "fcn8s", "FCN_SKIPS"]

# Backbone endpoints fused into the scores, coarse to fine, and the final upsampling factor.
FCN_SKIPS = {
    "fcn32s": ((), 32),
    "fcn16s": (("pool4",), 16),
    "fcn8s": (("pool4", "pool3"), 8),
}

_PAPER = "Long et al., CVPR 2015"


def _check_common(variant, num_classes, input_shape, backbone, backbone_weights, dropout, fc_filters):
    check_positive_int(num_classes, "num_classes")
    input_shape = check_input_shape(input_shape, multiple_of=32)
    if backbone != "vgg16":
        raise ValueError(f"Expected backbone='vgg16' ({variant} is defined on VGG16). Received: backbone={backbone!r}")
    check_vgg16_weights(backbone_weights, input_shape)
    check_rate(dropout, "dropout")
    check_positive_int(fc_filters, "fc_filters")
    return input_shape


def _fcn(variant, num_classes, input_shape, backbone, backbone_weights, dropout, fc_filters, trainable_upsampling,
         name, keras_module):
    input_shape = _check_common(variant, num_classes, input_shape, backbone, backbone_weights, dropout, fc_filters)
    keras = resolve_keras(keras_module)
    layers = keras.layers
    skips, final_factor = FCN_SKIPS[variant]

    inputs = keras.Input(shape=input_shape, name="image")
    endpoints = vgg16_backbone(inputs, keras_module=keras)
    x = endpoints["pool5"]
    # fc6 / fc7 are VGG16's fc1 / fc2 recast as convolutions (ReLU fused as in keras.applications' Dense layers).
    for layer_name, kernel_size in (("fc6", 7), ("fc7", 1)):
        x = layers.Conv2D(fc_filters, kernel_size, padding="same", activation="relu", kernel_initializer="he_normal",
                          name=layer_name)(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name=f"{layer_name}_dropout")(x)
    x = layers.Conv2D(num_classes, 1, name="score_fr")(x)
    for skip in skips:
        x = upsample_transposed_bilinear(x, 2, name=f"upscore_{skip}", trainable=trainable_upsampling,
                                         keras_module=keras)
        # Zero-initialised so that the finer net starts out computing exactly the coarser one, as in the paper's
        # staged training (FCN-32s → 16s → 8s).
        score = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name=f"score_{skip}")(endpoints[skip])
        x = layers.Add(name=f"fuse_{skip}")([x, score])
    x = upsample_transposed_bilinear(x, final_factor, name="logits", trainable=trainable_upsampling,
                                     keras_module=keras)
    model = keras.Model(inputs, x, name=name)
    if backbone_weights is not None:
        # fc1 / fc2 fit fc6 / fc7 only at VGG16's own width.
        model.backbone_weights_report = load_vgg16_weights(
            model, backbone_weights, fc_layers=("fc6", "fc7") if fc_filters == 4096 else None,
            normalization="imagenet")
    return model


def _register_fcn(variant: str, doc: str):
    """Registers the builder of one FCN variant; they differ only in the skips of `FCN_SKIPS`."""

    def builder(num_classes: int, input_shape=(512, 512, 3), *, backbone: str = "vgg16", backbone_weights=None,
                dropout: float = 0.5, fc_filters: int = 4096, trainable_upsampling: bool = False, name: str = variant,
                keras_module=None):
        return _fcn(variant, num_classes, input_shape, backbone, backbone_weights, dropout, fc_filters,
                    trainable_upsampling, name, keras_module)

    builder.__name__ = builder.__qualname__ = variant
    builder.__doc__ = doc
    return register_model(variant, paper=_PAPER, normalization="imagenet")(builder)


fcn32s = _register_fcn(
    "fcn32s",
    """Builds FCN-32s: stride-32 scores upsampled ×32 by one 64×64 transposed convolution.

    Args:
        num_classes: number of output classes (logits channels).
        input_shape: ``(height, width, channels)``; height and width must be multiples of 32.
        backbone: ``"vgg16"``, the only backbone the architecture is defined on.
        backbone_weights: ``None`` (random initialisation), ``"imagenet"`` (``keras.applications.VGG16`` ImageNet
            weights, classifier included: ``fc1`` / ``fc2`` initialise ``fc6`` / ``fc7``) or the path of a weights
            file saved from ``keras.applications.VGG16`` (with ``include_top=True`` it also initialises ``fc6`` /
            ``fc7``). The weights expect caffe-style inputs (BGR, mean-subtracted, unscaled); ``block1_conv1`` is
            converted so that the model takes the registry's "imagenet" normalisation (see
            `kerasseg.backbones.vgg.load_vgg16_weights`). What was loaded is in ``model.backbone_weights_report``.
        dropout: dropout rate after ``fc6`` and after ``fc7`` (0.5 in the paper).
        fc_filters: width of ``fc6`` and ``fc7`` (4096 in the paper; ImageNet classifier weights load only at 4096,
            narrower layers give a much smaller model with the same structure).
        trainable_upsampling: learn the transposed convolutions (initialised to bilinear) instead of keeping them
            fixed; fixed kernels are not trainable weights.
        name: model name.
        keras_module: Keras module to build with (``keras`` by default, ``tf_keras`` for quantization-aware
            training).

    Returns:
        A functional model mapping images ``(B, H, W, C)`` to logits ``(B, H, W, num_classes)``. The upsampling
        that produces them is the layer ``logits``; the others are ``upscore_pool4`` / ``upscore_pool3`` (×2 to the
        resolution of that skip), fused with ``score_pool4`` / ``score_pool3`` in ``fuse_pool4`` / ``fuse_pool3``.
    """)
fcn16s = _register_fcn(
    "fcn16s",
    """Builds FCN-16s: stride-32 scores upsampled ×2, summed with ``score_pool4``, then upsampled ×16.

    Arguments and returned model as in `fcn32s`.
    """)
fcn8s = _register_fcn(
    "fcn8s",
    """Builds FCN-8s: FCN-16s' stride-16 fusion upsampled ×2, summed with ``score_pool3``, then upsampled ×8.

    Arguments and returned model as in `fcn32s`.
    """)
