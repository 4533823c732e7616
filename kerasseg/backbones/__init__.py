"""Feature extractors shared by the segmentation heads.

A backbone is a function ``backbone(inputs, ...) -> {"stride2": ..., ..., "stride32": ...}`` building its layers
into the caller's graph under the layer names of its ``keras.applications`` counterpart, so ImageNet weights load by
name with `load_backbone_weights`. Endpoint names are nominal strides (see `kerasseg.backbones.common`).
"""

from kerasseg.backbones.common import ENDPOINTS, OUTPUT_STRIDES, check_output_stride, stride_schedule
# The builders keep to their modules (kerasseg.backbones.resnet.resnet, ...): a package attribute named like a
# submodule would mean one thing after `import kerasseg.backbones` and another after `import kerasseg.backbones.resnet`.
from kerasseg.backbones import efficientnet_lite, mobilenet_v2, resnet
from kerasseg.backbones.efficientnet_lite import mbconv_block
from kerasseg.backbones.mobilenet_v2 import inverted_residual_block
from kerasseg.backbones.resnet import bottleneck_block
from kerasseg.backbones.weights import (WEIGHT_SOURCES, WeightLoadReport, check_backbone_weights,
                                        load_backbone_weights)

__all__ = [
    "ENDPOINTS", "OUTPUT_STRIDES", "check_output_stride", "stride_schedule",
    "bottleneck_block", "inverted_residual_block",
    "load_backbone_weights", "check_backbone_weights", "WeightLoadReport", "WEIGHT_SOURCES",
    "build_backbone", "IMAGENET_BACKBONES", "mbconv_block",
]

# Backbones with ImageNet weights (keras.applications, or an installed package for EfficientNet-Lite0), by the name
# the model builders accept.
IMAGENET_BACKBONES = ("resnet50", "resnet101", "mobilenetv2", "efficientnet_lite0")


def build_backbone(name: str, inputs, *, output_stride: int = 32, multi_grid=None, stem: str = "standard",
                   keras_module=None) -> dict:
    """Builds backbone ``name`` (one of `IMAGENET_BACKBONES`) on ``inputs`` and returns its endpoints.

    ``multi_grid`` and ``stem`` apply to the ResNets only; passing a non-default value for another backbone is an
    error rather than silently ignored.
    """
    if name in ("resnet50", "resnet101"):
        return resnet.resnet(inputs, int(name[len("resnet"):]), output_stride=output_stride, multi_grid=multi_grid,
                      stem=stem, keras_module=keras_module)
    if name in IMAGENET_BACKBONES:
        if multi_grid is not None:
            raise ValueError(f"Expected multi_grid=None for backbone {name!r} (multi-grid rates apply to "
                             f"ResNet's conv5 blocks). Received: multi_grid={multi_grid!r}")
        if stem != "standard":
            raise ValueError(f"Expected stem='standard' for backbone {name!r}. Received: stem={stem!r}")
        if name == "mobilenetv2":
            return mobilenet_v2.mobilenet_v2(inputs, output_stride=output_stride, keras_module=keras_module)
        return efficientnet_lite.efficientnet_lite(inputs, name, output_stride=output_stride, keras_module=keras_module)
    raise ValueError(f"Expected backbone to be one of {IMAGENET_BACKBONES}. Received: backbone={name!r}")
