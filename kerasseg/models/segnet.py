"""SegNet: an encoder-decoder whose decoder upsamples with the encoder's max-pooling switches.

Reference:
    V. Badrinarayanan, A. Kendall, R. Cipolla. "SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image
    Segmentation". IEEE Transactions on Pattern Analysis and Machine Intelligence, 2017.

The encoder is VGG16's 13 convolutions, each followed by batch norm and ReLU, with 2×2 max-poolings. Each decoder
stage unpools with the switches of the matching encoder pooling (`kerasseg.layers.MaxUnpooling2D`, builtin TFLite ops
only) and mirrors the encoder's convolutions; the decoder's 13th convolution is the 3×3 classifier, without batch
norm. As in the authors' Caffe model, every convolution keeps its bias, batch norm or not. With 11 classes the model
has 29,449,355 trainable parameters (29,455,125 with 21).
"""

from __future__ import annotations

from kerasseg.backbones.vgg import check_vgg16_weights, load_vgg16_weights, vgg16_backbone
from kerasseg.layers.blocks import check_input_shape, check_positive_int, conv_bn_act, resolve_keras
from kerasseg.layers.unpooling import max_unpooling_class
from kerasseg.registry import register_model

__all__ = ["segnet", "SEGNET_DECODER"]

# Decoder stages, deepest first: (encoder block whose pooling switches drive the unpooling, output channels of the
# stage's 3×3 conv + BN + ReLU layers). The last stage's single convolution is followed by the classifier, which
# completes the mirror of block1's two convolutions.
SEGNET_DECODER = (
    (5, (512, 512, 512)),
    (4, (512, 512, 256)),
    (3, (256, 256, 128)),
    (2, (128, 64)),
    (1, (64,)),
)


@register_model("segnet", paper="Badrinarayanan et al., TPAMI 2017", normalization="imagenet")
def segnet(num_classes: int, input_shape=(352, 480, 3), *, backbone: str = "vgg16", backbone_weights=None,
           name: str = "segnet", keras_module=None):
    """Builds SegNet.

    Args:
        num_classes: number of output classes (logits channels).
        input_shape: ``(height, width, channels)``; height and width must be multiples of 32 (five 2×2 poolings
            whose switches must cover the map exactly). The default is a 352×480 crop of CamVid's 360×480 frames.
        backbone: ``"vgg16"``, the encoder the architecture is defined on.
        backbone_weights: ``None``, ``"imagenet"`` or the path of a weights file saved from
            ``keras.applications.VGG16``; initialises the encoder's convolutions (the paper starts from VGG16
            ImageNet weights), its batch norms start as identities. The weights expect caffe-style inputs (BGR,
            mean-subtracted, unscaled); ``block1_conv1`` is converted so that the model takes the registry's
            "imagenet" normalisation (see `kerasseg.backbones.vgg.load_vgg16_weights`). What was loaded is in
            ``model.backbone_weights_report``.
        name: model name.
        keras_module: Keras module to build with (``keras`` by default, ``tf_keras`` for quantization-aware
            training).

    Returns:
        A functional model mapping images ``(B, H, W, C)`` to logits ``(B, H, W, num_classes)``. Encoder layers
        carry ``keras.applications`` names (``block1_conv1``, ``block1_conv1_bn``, ...); decoder stage ``s`` has
        ``decoder{s}_unpool`` and ``decoder{s}_{i}_conv`` / ``_bn`` / ``_relu``; the classifier is ``logits``.
    """
    check_positive_int(num_classes, "num_classes")
    input_shape = check_input_shape(input_shape, multiple_of=32)
    if backbone != "vgg16":
        raise ValueError(f"Expected backbone='vgg16' (SegNet's encoder is VGG16). Received: backbone={backbone!r}")
    check_vgg16_weights(backbone_weights, input_shape)
    keras = resolve_keras(keras_module)
    unpooling = max_unpooling_class(keras)

    inputs = keras.Input(shape=input_shape, name="image")
    endpoints = vgg16_backbone(inputs, batch_norm=True, keras_module=keras)
    x = endpoints["pool5"]
    for block, filters in SEGNET_DECODER:
        x = unpooling(pool_size=2, name=f"decoder{block}_unpool")(
            [x, endpoints[f"block{block}"], endpoints[f"pool{block}"]])
        for i, f in enumerate(filters, start=1):
            x = conv_bn_act(x, f, 3, name=f"decoder{block}_{i}", use_bias=True, keras_module=keras)
    x = keras.layers.Conv2D(num_classes, 3, padding="same", kernel_initializer="he_normal", name="logits")(x)
    model = keras.Model(inputs, x, name=name)
    if backbone_weights is not None:
        model.backbone_weights_report = load_vgg16_weights(model, backbone_weights, normalization="imagenet")
    return model
