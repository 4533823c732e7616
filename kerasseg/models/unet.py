"""U-Net: a contracting path and a symmetric expanding path joined by skip connections.

Reference:
    O. Ronneberger, P. Fischer, T. Brox. "U-Net: Convolutional Networks for Biomedical Image Segmentation".
    MICCAI 2015.

``unet`` is the paper's network: unpadded ("valid") 3×3 convolutions with bias and ReLU, 2×2 max-pooling, 2×2
up-convolutions halving the channels, skips centre-cropped to the expanding path's smaller maps, and a final 1×1
convolution, so a 572×572 tile gives a 388×388 map (31,031,810 trainable parameters for 3 input channels and 2
classes). ``unet_padded`` is the common "same"-padded variant: 3×3 convolutions without bias followed by batch norm
and ReLU, output size equal to the input size (31,037,698 trainable parameters for 3 in / 2 classes).
"""

from __future__ import annotations

from kerasseg.layers.blocks import check_input_shape, check_positive_int, check_rate, conv_bn_act, resolve_keras
from kerasseg.registry import register_model

__all__ = ["unet", "unet_padded", "UNET_LEVELS", "unet_valid_output_size"]

# Channels of each contracting level as multiples of base_filters; the last level is the bottom of the "U". The
# expanding path mirrors levels 4 .. 1.
UNET_LEVELS = (1, 2, 4, 8, 16)

_PAPER = "Ronneberger et al., MICCAI 2015"
_SEARCH = 16  # valid sizes of the original U-Net repeat every 2 ** (levels - 1) pixels


def unet_valid_output_size(size: int, levels: int = len(UNET_LEVELS)) -> int | None:
    """Output side of the unpadded U-Net for an input side ``size``, or ``None`` if ``size`` is not valid.

    Each level's two valid 3×3 convolutions remove 4 pixels; every 2×2 pooling needs an even size and every level,
    contracting or expanding, a positive one. Valid sizes are ``16·k + 124`` for ``k >= 4`` (188 → 4, 572 → 388).
    """
    for _ in range(levels - 1):
        size -= 4
        if size <= 0 or size % 2:
            return None
        size //= 2
    size -= 4
    for _ in range(levels - 1):
        if size <= 0:
            return None
        size = 2 * size - 4
    return size if size > 0 else None


def _nearest_valid_sizes(size: int) -> list[int]:
    below = next((s for s in range(size - 1, max(size - _SEARCH, 0), -1) if unet_valid_output_size(s)), None)
    above = next(s for s in range(size + 1, max(size, 188) + _SEARCH + 1) if unet_valid_output_size(s))
    return [s for s in (below, above) if s is not None]


def _check_common(num_classes, base_filters, dropout):
    check_positive_int(num_classes, "num_classes")
    check_positive_int(base_filters, "base_filters")
    check_rate(dropout, "dropout")


def _unet(num_classes, input_shape, *, padded, base_filters, dropout, name, keras_module):
    keras = resolve_keras(keras_module)
    layers = keras.layers
    filters = [base_filters * m for m in UNET_LEVELS]
    conv_kwargs = (dict(padding="same", use_bias=False, batch_norm=True) if padded
                   else dict(padding="valid", use_bias=True, batch_norm=False))

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    skips = []
    for level, f in enumerate(filters, start=1):
        if level > 1:
            x = layers.MaxPooling2D(2, strides=2, name=f"down{level - 1}_pool")(x)
        for i in (1, 2):
            x = conv_bn_act(x, f, 3, name=f"down{level}_{i}", keras_module=keras, **conv_kwargs)
        # The paper's dropout "at the end of the contracting path": the two deepest levels.
        if dropout > 0 and level >= len(filters) - 1:
            x = layers.Dropout(dropout, name=f"down{level}_dropout")(x)
        skips.append(x)
    for level in range(len(filters) - 1, 0, -1):
        f = filters[level - 1]
        x = layers.Conv2DTranspose(f, 2, strides=2, kernel_initializer="he_normal", name=f"up{level}_upconv")(x)
        skip = skips[level - 1]
        crop_h, crop_w = (int(skip.shape[d]) - int(x.shape[d]) for d in (1, 2))
        if crop_h or crop_w:
            # Static centre crop; the size difference is always even for the sizes the builder accepts.
            skip = layers.Cropping2D(((crop_h // 2, crop_h // 2), (crop_w // 2, crop_w // 2)),
                                     name=f"up{level}_crop")(skip)
        x = layers.Concatenate(name=f"up{level}_concat")([skip, x])
        for i in (1, 2):
            x = conv_bn_act(x, f, 3, name=f"up{level}_{i}", keras_module=keras, **conv_kwargs)
    x = layers.Conv2D(num_classes, 1, kernel_initializer="he_normal", name="logits")(x)
    return keras.Model(inputs, x, name=name)


@register_model("unet", paper=_PAPER, normalization="imagenet")
def unet(num_classes: int, input_shape=(572, 572, 3), *, base_filters: int = 64, dropout: float = 0.5,
         name: str = "unet", keras_module=None):
    """Builds the original, unpadded U-Net.

    Args:
        num_classes: number of output classes (logits channels).
        input_shape: ``(height, width, channels)``; height and width must each be ``16·k + 124`` with ``k >= 4``
            (188, 204, ..., 572, ...) so that every pooling sees an even size; the output is 184 pixels smaller
            (572 → 388), covering the centre of the input.
        base_filters: channels of the first level, doubled at each of the four poolings (64 in the paper).
        dropout: dropout rate after each of the two deepest contracting levels ("drop-out layers at the end of the
            contracting path"; 0 disables).
        name: model name.
        keras_module: Keras module to build with (``keras`` by default, ``tf_keras`` for quantization-aware
            training).

    Returns:
        A functional model mapping images ``(B, H, W, C)`` to logits ``(B, H - 184, W - 184, num_classes)``.
        Level ``l`` of the contracting path has ``down{l}_{1,2}_conv`` / ``_relu``, the expanding path
        ``up{l}_upconv``, ``up{l}_crop``, ``up{l}_concat``, ``up{l}_{1,2}_conv`` / ``_relu``; the last layer is
        ``logits``.
    """
    _check_common(num_classes, base_filters, dropout)
    input_shape = check_input_shape(input_shape)
    for axis, size in (("height", input_shape[0]), ("width", input_shape[1])):
        if unet_valid_output_size(size) is None:
            nearest = " or ".join(str(s) for s in _nearest_valid_sizes(size))
            raise ValueError(
                f"Expected the {axis} in input_shape to be 16*k + 124 with k >= 4 (188, 204, ..., 572, ...) so that "
                f"the unpadded U-Net halves an even size at every pooling; nearest valid {axis}: {nearest}. "
                f"Received: input_shape={tuple(input_shape)!r}")
    return _unet(num_classes, input_shape, padded=False, base_filters=base_filters, dropout=dropout, name=name,
                 keras_module=keras_module)


@register_model("unet_padded", paper=_PAPER, normalization="imagenet")
def unet_padded(num_classes: int, input_shape=(512, 512, 3), *, base_filters: int = 64, dropout: float = 0.0,
                name: str = "unet_padded", keras_module=None):
    """Builds the "same"-padded U-Net with batch norm, whose output has the input's size.

    Args:
        num_classes: number of output classes (logits channels).
        input_shape: ``(height, width, channels)``; height and width must be multiples of 16 (four poolings).
        base_filters: channels of the first level, doubled at each of the four poolings (64 in the paper).
        dropout: dropout rate after each of the two deepest contracting levels (0 by default: batch norm already
            regularises).
        name: model name.
        keras_module: Keras module to build with (``keras`` by default, ``tf_keras`` for quantization-aware
            training).

    Returns:
        A functional model mapping images ``(B, H, W, C)`` to logits ``(B, H, W, num_classes)``, with the layer
        names of `unet` plus ``_bn`` after each 3×3 convolution and no crops.
    """
    _check_common(num_classes, base_filters, dropout)
    input_shape = check_input_shape(input_shape, multiple_of=16)
    return _unet(num_classes, input_shape, padded=True, base_filters=base_filters, dropout=dropout, name=name,
                 keras_module=keras_module)
