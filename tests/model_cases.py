"""Per-model test cases for the matrix in test_models.py.

Each entry: registry name -> dict with
    kwargs:   builder keyword arguments for a *small* build used for shape / round-trip / fit / TFLite checks
              (must include input_shape and num_classes);
    params:   list of (kwargs, exact trainable-parameter count) checked by building (not running) the model,
              with the reference numbers of the paper / authors' implementation;
    out_hw:   expected output (height, width) for the small build (defaults to the input's).
"""

import gc

import pytest


CASES = {
    "erfnet": {
        "kwargs": {"num_classes": 5, "input_shape": (64, 96, 3)},
        "params": [({"num_classes": 19, "input_shape": (512, 1024, 3)}, 2_064_191)],
    },
    # --- VGG family: fcn32s, fcn16s, fcn8s, segnet, unet, unet_padded ---
    # FCN's small builds narrow fc6 / fc7 (fc_filters) to keep the 134M-parameter classifier out of the matrix; the
    # reference counts use the paper's 4096.
    "fcn32s": {
        "kwargs": {"num_classes": 3, "input_shape": (64, 64, 3), "fc_filters": 64},
        "params": [({"num_classes": 21, "input_shape": (64, 64, 3)}, 134_346_581)],
    },
    "fcn16s": {
        "kwargs": {"num_classes": 3, "input_shape": (64, 64, 3), "fc_filters": 64},
        "params": [({"num_classes": 21, "input_shape": (64, 64, 3)}, 134_357_354)],
    },
    "fcn8s": {
        "kwargs": {"num_classes": 3, "input_shape": (64, 96, 3), "fc_filters": 64},
        "params": [({"num_classes": 21, "input_shape": (64, 64, 3)}, 134_362_751)],
    },
    "segnet": {
        "kwargs": {"num_classes": 5, "input_shape": (64, 96, 3)},
        "params": [({"num_classes": 11, "input_shape": (352, 480, 3)}, 29_449_355),
                   ({"num_classes": 21, "input_shape": (352, 480, 3)}, 29_455_125)],
    },
    "unet": {
        "kwargs": {"num_classes": 3, "input_shape": (188, 204, 3), "base_filters": 8},
        "out_hw": (4, 20),
        "params": [({"num_classes": 2, "input_shape": (572, 572, 3)}, 31_031_810)],
    },
    "unet_padded": {
        "kwargs": {"num_classes": 3, "input_shape": (64, 80, 3), "base_filters": 8},
        "params": [({"num_classes": 2, "input_shape": (512, 512, 3)}, 31_037_698)],
    },

    # --- ResNet / MobileNetV2 family: pspnet, deeplabv3, deeplabv3plus ---
    # Counts do not depend on the input size, so the reference builds use small inputs. PSPNet inputs must be
    # multiples of 48 (stride-8 features split into 1, 2, 3 and 6 bins).
    "pspnet": {
        "kwargs": {"num_classes": 3, "input_shape": (48, 96, 3)},
        "params": [({"num_classes": 19, "input_shape": (48, 48, 3)}, 46_715_347),
                   ({"num_classes": 19, "input_shape": (48, 48, 3), "aux": True}, 49_080_038),
                   ({"num_classes": 19, "input_shape": (48, 48, 3), "backbone": "resnet101"}, 65_707_475),
                   ({"num_classes": 19, "input_shape": (48, 48, 3), "backbone": "resnet101", "aux": True},
                    68_072_166)],
    },
    "deeplabv3": {
        "kwargs": {"num_classes": 3, "input_shape": (64, 96, 3), "backbone": "resnet50"},
        "params": [({"num_classes": 21, "input_shape": (64, 64, 3), "backbone": "resnet50"}, 39_048_533),
                   ({"num_classes": 21, "input_shape": (64, 64, 3), "backbone": "resnet50", "output_stride": 8},
                    39_048_533),
                   ({"num_classes": 21, "input_shape": (64, 64, 3), "backbone": "resnet101"}, 58_040_661)],
    },
    # No published count for the MobileNetV2 variant: this one is derived by arithmetic in test_resnet_family.py.
    "deeplabv3plus": {
        "kwargs": {"num_classes": 3, "input_shape": (64, 96, 3)},
        "params": [({"num_classes": 19, "input_shape": (64, 64, 3)}, 2_719_299)],
    },
    # EfficientNet-Lite0 backbone: 2,958,848 = the 4,652,008 parameters of the reference's ImageNet checkpoint
    # without its head (_conv_head 409,600, _bn1 2,560, _fc 1,281,000); LR-ASPP head with 19 classes: 41,216
    # (projection + BN) + 41,088 (gate) + 2,451 + 779 (the two classifiers).
    "lraspp": {
        "kwargs": {"num_classes": 3, "input_shape": (64, 96, 3)},
        "params": [({"num_classes": 19, "input_shape": (64, 64, 3)}, 3_044_382)],
    },

}


def tiny_net(num_classes: int, input_shape, *, name: str, dropout: float = 0.0):
    """A two-convolution network with the layer names the training tests look for (BN, encoder and decoder parts).

    The training, resume and distribution tests register it under a name of their own (tracing a real architecture
    takes most of a minute on a loaded 2-core machine).
    """
    import keras

    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="layer01_conv")(inputs)
    x = keras.layers.BatchNormalization(name="layer01_bn")(x)
    x = keras.layers.ReLU(name="layer01_relu")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="layer01_dropout")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="decoder_conv")(x)
    x = keras.layers.UpSampling2D(2, interpolation="bilinear", name="decoder_up")(x)
    return keras.Model(inputs, keras.layers.Conv2D(num_classes, 1, name="logits")(x), name=name)


# Ops that edge delegates reject (dynamic shapes, batch-to-space dilation, gathers from adaptive pooling).
EDGE_UNFRIENDLY = {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND", "SHAPE", "GATHER", "GATHER_ND"}


@pytest.fixture(autouse=True)
def free_keras_memory():
    """Clears the Keras session after each test of a module that imports it (autouse): builds must not pile up."""
    yield
    import keras

    keras.backend.clear_session()
    gc.collect()


# fp32 TFLite files of the small builds (CASES), by registry name: the export matrix converts them anyway, and the
# model tests that only inspect their operators reuse them instead of converting the same graph again.
_FP32_EXPORTS = {}


def remember_fp32_export(name: str, path) -> None:
    """Records the fp32 export of ``CASES[name]``'s build for `fp32_export`."""
    _FP32_EXPORTS[name] = path


def fp32_export(name: str, folder):
    """The fp32 TFLite file of ``CASES[name]``'s build: the one recorded this session, else a new one in ``folder``."""
    import os

    import kerasseg
    from kerasseg.export import to_tflite

    path = _FP32_EXPORTS.get(name)
    if path is None or not os.path.isfile(path):
        model = kerasseg.build_model(name, **CASES[name]["kwargs"])
        path = to_tflite(model, os.path.join(folder, f"{name}.tflite"), mode="fp32")
        remember_fp32_export(name, path)
    return path
