"""Architectures, one module each; importing this package registers them all.

`kerasseg.models.factory` builds them by name (``build_model``, ``list_models``, ``get_model_info``).
"""

from kerasseg.models import deeplab, erfnet, fcn, lraspp, pspnet, segnet, unet  # noqa: F401
from kerasseg.models.factory import build_model, get_model_info, list_models

__all__ = ["build_model", "get_model_info", "list_models"]
