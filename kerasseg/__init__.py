"""kerasseg: semantic segmentation for Keras 3, from research architectures to int8 edge models."""

from kerasseg.pretrained import list_pretrained, pretrained, pretrained_files
from kerasseg.registry import build_model, get_model_info, list_models, register_model
from kerasseg.saving import load_model, save_model

__version__ = "0.1.0"

__all__ = ["build_model", "list_models", "register_model", "get_model_info", "save_model", "load_model",
           "pretrained", "pretrained_files", "list_pretrained", "load_pytorch_weights", "__version__"]


def __getattr__(name):
    # Imported on first use: it pulls in the model definitions (and TensorFlow), which `import kerasseg` does not.
    if name == "load_pytorch_weights":
        from kerasseg.pytorch_weights import load_pytorch_weights

        return load_pytorch_weights
    raise AttributeError(f"module 'kerasseg' has no attribute {name!r}")
