"""kerasseg: semantic segmentation for Keras 3, from research architectures to int8 edge models."""

from kerasseg.zoo import list_pretrained, pretrained, pretrained_files
from kerasseg.registry import register_model
from kerasseg.saving import load_model, save_model

__version__ = "0.1.0"

__all__ = ["build_model", "list_models", "register_model", "get_model_info", "save_model", "load_model",
           "pretrained", "pretrained_files", "list_pretrained", "load_pytorch_weights", "__version__"]

# Imported on first use: they pull in the model definitions (and TensorFlow), which `import kerasseg` does not.
_LAZY = {"build_model": "kerasseg.models.factory", "list_models": "kerasseg.models.factory",
         "get_model_info": "kerasseg.models.factory", "load_pytorch_weights": "kerasseg.pytorch_weights"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kerasseg' has no attribute {name!r}")
