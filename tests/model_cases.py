"""Per-model test cases for the matrix in test_models.py.

Each entry: registry name -> dict with
    kwargs:   builder keyword arguments for a *small* build used for shape / round-trip / fit / TFLite checks
              (must include input_shape and num_classes);
    params:   list of (kwargs, exact trainable-parameter count) checked by building (not running) the model,
              with the reference numbers of the paper / authors' implementation;
    out_hw:   expected output (height, width) for the small build (defaults to the input's).
"""

CASES = {
    "erfnet": {
        "kwargs": {"num_classes": 5, "input_shape": (64, 96, 3)},
        "params": [({"num_classes": 19, "input_shape": (512, 1024, 3)}, 2_064_191)],
    },
    # --- VGG family: fcn32s, fcn16s, fcn8s, segnet, unet, unet_padded ---

    # --- ResNet / MobileNetV2 family: pspnet, deeplabv3, deeplabv3plus ---

}
