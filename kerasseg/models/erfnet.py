"""ERFNet: Efficient Residual Factorized ConvNet for real-time semantic segmentation.

Reference:
    E. Romera, J. M. Alvarez, L. M. Bergasa, R. Arroyo. "ERFNet: Efficient Residual Factorized ConvNet for Real-time
    Semantic Segmentation". IEEE Transactions on Intelligent Transportation Systems, 2017 (and IV 2017).

The layer table (23 layers at 1024×512) is reproduced in `ERFNET_LAYERS`. With 19 classes the model has exactly
2,064,191 trainable parameters, the count of the authors' implementation without its unused encoder-only classifier.
"""

from __future__ import annotations

from kerasseg.layers.blocks import check_input_shape, check_positive_int, resolve_keras
from kerasseg.registry import register_model

__all__ = ["erfnet", "downsampler_block", "non_bottleneck_1d", "upsampler_block", "ERFNET_LAYERS"]

# The paper's table, walked in a loop by the builder: (kind, filters, dilation, dropout group).
# Dropout groups: "early" = the 64-channel encoder stage (0.03 in the authors' code), "deep" = the dilated
# 128-channel stage (0.3), None = decoder (no dropout).
ERFNET_LAYERS = (
    ("down", 16, None, None),                           # 1
    ("down", 64, None, None),                           # 2
    *(("nb", 64, 1, "early"),) * 5,                     # 3-7
    ("down", 128, None, None),                          # 8
    *(("nb", 128, d, "deep") for d in (2, 4, 8, 16)),   # 9-12
    *(("nb", 128, d, "deep") for d in (2, 4, 8, 16)),   # 13-16
    ("up", 64, None, None),                             # 17
    *(("nb", 64, 1, None),) * 2,                        # 18-19
    ("up", 16, None, None),                             # 20
    *(("nb", 16, 1, None),) * 2,                        # 21-22
    ("output", None, None, None),                       # 23
)

# The authors use BatchNorm2d(eps=1e-3).
_BN_EPS = 1e-3


def downsampler_block(x, filters: int, *, name: str, torch_padding: bool = False, keras_module=None):
    """Downsampler: concat(3×3 stride-2 conv with (filters - in) maps, 2×2 max-pool) → BN → ReLU.

    With ``torch_padding`` the convolution pads one pixel on every side (``{name}_pad``, then "valid"), as the
    authors' ``padding=1`` does, instead of TensorFlow's "same", which pads after only.
    """
    layers = resolve_keras(keras_module).layers
    in_ch = int(x.shape[-1])
    if filters <= in_ch:
        raise ValueError(f"Expected downsampler filters > input channels ({in_ch}). Received: filters={filters}")
    if torch_padding:
        padded = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
        conv = layers.Conv2D(filters - in_ch, 3, strides=2, padding="valid", use_bias=True,
                             name=f"{name}_conv")(padded)
    else:
        conv = layers.Conv2D(filters - in_ch, 3, strides=2, padding="same", use_bias=True, name=f"{name}_conv")(x)
    pool = layers.MaxPooling2D(2, strides=2, name=f"{name}_pool")(x)
    x = layers.Concatenate(name=f"{name}_concat")([conv, pool])
    x = layers.BatchNormalization(epsilon=_BN_EPS, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_out")(x)


def non_bottleneck_1d(x, dilation: int, dropout: float, *, name: str, keras_module=None):
    """Non-bottleneck-1D residual block with factorised (3×1, 1×3) convolutions, the second pair dilated.

    3×1 → ReLU → 1×3 → BN → ReLU → 3×1 (dilation d,1) → ReLU → 1×3 (dilation 1,d) → BN → spatial dropout
    → add input → ReLU. All convolutions carry a bias, as in the paper.
    """
    layers = resolve_keras(keras_module).layers
    ch = int(x.shape[-1])
    y = layers.Conv2D(ch, (3, 1), padding="same", use_bias=True, name=f"{name}_conv3x1_1")(x)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(ch, (1, 3), padding="same", use_bias=True, name=f"{name}_conv1x3_1")(y)
    y = layers.BatchNormalization(epsilon=_BN_EPS, name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu2")(y)
    y = layers.Conv2D(ch, (3, 1), padding="same", dilation_rate=(dilation, 1), use_bias=True,
                      name=f"{name}_conv3x1_2")(y)
    y = layers.ReLU(name=f"{name}_relu3")(y)
    y = layers.Conv2D(ch, (1, 3), padding="same", dilation_rate=(1, dilation), use_bias=True,
                      name=f"{name}_conv1x3_2")(y)
    y = layers.BatchNormalization(epsilon=_BN_EPS, name=f"{name}_bn2")(y)
    if dropout > 0:
        y = layers.SpatialDropout2D(dropout, name=f"{name}_dropout")(y)
    y = layers.Add(name=f"{name}_add")([y, x])
    return layers.ReLU(name=f"{name}_out")(y)


def upsampler_block(x, filters: int, *, name: str, torch_padding: bool = False, keras_module=None):
    """3×3 transposed convolution with stride 2 → BN → ReLU.

    The full transposed convolution of an ``n``-pixel input has ``2n + 1`` pixels; "same" keeps the first ``2n``,
    the authors' ``padding=1, output_padding=1`` the last ``2n``. With ``torch_padding`` the layer keeps those
    (``"valid"``, then ``{name}_crop`` drops the first row and column).
    """
    layers = resolve_keras(keras_module).layers
    if torch_padding:
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="valid", use_bias=True, name=f"{name}_deconv")(x)
        x = layers.Cropping2D(((1, 0), (1, 0)), name=f"{name}_crop")(x)
    else:
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", use_bias=True, name=f"{name}_deconv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPS, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_out")(x)


@register_model("erfnet", paper="Romera et al., T-ITS 2017", normalization="imagenet")
def erfnet(num_classes: int, input_shape=(512, 1024, 3), *, dropout: float = 0.3, early_dropout: float = 0.03,
           torch_padding: bool = False, name: str = "erfnet", keras_module=None):
    """Builds ERFNet.

    Args:
        num_classes: number of output classes (logits channels).
        input_shape: ``(height, width, channels)``; height and width must be multiples of 8 (three stride-2
            downsamplers followed by three ×2 upsamplers).
        dropout: spatial dropout of the dilated 128-channel encoder blocks (0.3 in the paper's code).
        early_dropout: spatial dropout of the 64-channel encoder blocks (0.03).
        torch_padding: pad the strided and transposed convolutions as the authors' PyTorch code does (one pixel
            before and after) instead of TensorFlow's "same" (after only), so that their checkpoints compute the
            same function (`kerasseg.load_pytorch_weights`); weights trained with one padding are off by a pixel
            with the other.
        name: model name.
        keras_module: Keras module to build with (``keras`` by default, ``tf_keras`` for quantization-aware
            training).

    Returns:
        A functional model mapping normalised images ``(B, H, W, C)`` to logits ``(B, H, W, num_classes)``. Each
        table row ``i`` ends in a layer named ``layer{i:02d}_out`` (row 23 is ``logits``).
    """
    check_positive_int(num_classes, "num_classes")
    input_shape = check_input_shape(input_shape, multiple_of=8)
    if not isinstance(torch_padding, bool):
        raise ValueError(f"Expected torch_padding to be True or False. Received: torch_padding={torch_padding!r}")
    for arg, value in (("dropout", dropout), ("early_dropout", early_dropout)):
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"Expected {arg} in [0, 1). Received: {arg}={value!r}")
    keras = resolve_keras(keras_module)
    rates = {"early": float(early_dropout), "deep": float(dropout), None: 0.0}

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for i, (kind, filters, dilation, drop) in enumerate(ERFNET_LAYERS, start=1):
        prefix = f"layer{i:02d}"
        if kind == "down":
            x = downsampler_block(x, filters, name=prefix, torch_padding=torch_padding, keras_module=keras)
        elif kind == "nb":
            x = non_bottleneck_1d(x, dilation, rates[drop], name=prefix, keras_module=keras)
        elif kind == "up":
            x = upsampler_block(x, filters, name=prefix, torch_padding=torch_padding, keras_module=keras)
        else:
            x = keras.layers.Conv2DTranspose(num_classes, 2, strides=2, padding="valid", use_bias=True,
                                             name="logits")(x)
    return keras.Model(inputs, x, name=name)
