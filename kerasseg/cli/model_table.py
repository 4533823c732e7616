"""Prints the README model table: registry name, paper, trainable parameters and GMACs at a stated size.

    python tools/model_table.py            # every registered model at its reference configuration
"""

from __future__ import annotations

import argparse
import gc

from kerasseg.cli.common import tool_parser


# (registry name, classes, input shape, builder kwargs, label) — the configurations the papers report.
REFERENCE = [
    ("erfnet", 19, (512, 1024, 3), {}, "ERFNet"),
    ("fcn32s", 21, (512, 512, 3), {}, "FCN-32s"),
    ("fcn16s", 21, (512, 512, 3), {}, "FCN-16s"),
    ("fcn8s", 21, (512, 512, 3), {}, "FCN-8s"),
    ("segnet", 11, (352, 480, 3), {}, "SegNet"),
    ("unet", 2, (572, 572, 3), {}, "U-Net (valid convs)"),
    ("unet_padded", 2, (512, 512, 3), {}, "U-Net (padded, BN)"),
    ("pspnet", 19, (720, 720, 3), {"backbone": "resnet50"}, "PSPNet ResNet-50"),
    ("pspnet", 19, (720, 720, 3), {"backbone": "resnet101"}, "PSPNet ResNet-101"),
    ("deeplabv3", 21, (512, 512, 3), {"backbone": "resnet50", "output_stride": 16}, "DeepLab v3 ResNet-50 OS16"),
    ("deeplabv3", 21, (512, 512, 3), {"backbone": "resnet101", "output_stride": 16}, "DeepLab v3 ResNet-101 OS16"),
    ("deeplabv3plus", 19, (512, 1024, 3), {"backbone": "mobilenetv2"}, "DeepLab v3+ MobileNetV2 OS16"),
    ("deeplabv3plus", 19, (512, 1024, 3), {"backbone": "efficientnet_lite0"}, "DeepLab v3+ EfficientNet-Lite0 OS16"),
    ("lraspp", 19, (512, 1024, 3), {"backbone": "efficientnet_lite0"}, "LR-ASPP EfficientNet-Lite0 OS16"),
]


def build_parser() -> argparse.ArgumentParser:
    return tool_parser(__doc__)


def main(argv=None) -> int:
    build_parser().parse_args(argv)
    import keras

    import kerasseg
    from kerasseg.analysis import count_macs, count_params

    known = set(kerasseg.list_models())
    print("| model | registry name | paper | classes | input (H×W) | trainable params | GMACs |")
    print("|---|---|---|---|---|---|---|")
    for name, classes, shape, kwargs, label in REFERENCE:
        if name not in known:
            continue
        model = kerasseg.build_model(name, num_classes=classes, input_shape=shape, **kwargs)
        paper = kerasseg.get_model_info(name).paper
        print(f"| {label} | `{name}` | {paper} | {classes} | {shape[0]}×{shape[1]} | {count_params(model):,} | "
              f"{count_macs(model) / 1e9:.1f} |", flush=True)
        del model
        keras.backend.clear_session()
        gc.collect()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
