"""Makes kerasseg's custom layers and initializers available to ``tf_keras`` as well as Keras 3.

The builders construct the same graph with Keras 3 (training, export) and ``tf_keras`` (quantization-aware
training). A Keras 3 layer cannot be called on ``tf_keras`` tensors, so each custom class keeps its behaviour in a
mixin and `twin_class` derives, once per Keras module, the same class on that module's base class, registered in that
module's serialisation registry under the same ``kerasseg>Name``.
"""

from __future__ import annotations

import functools

import keras


@functools.lru_cache(maxsize=None)
def twin_class(keras3_class: type, keras_module, base_path: str) -> type:
    """The class to use with ``keras_module``: ``keras3_class`` itself for Keras 3, otherwise its twin.

    Args:
        keras3_class: a registered Keras 3 class whose first base is the mixin holding its behaviour.
        keras_module: the Keras module the model is built with (``keras`` or ``tf_keras``).
        base_path: dotted attribute path of the base class in that module, e.g. ``"layers.Layer"``.
    """
    if keras_module is None or keras_module is keras:
        return keras3_class
    base = functools.reduce(getattr, base_path.split("."), keras_module)
    mixin = keras3_class.__mro__[1]
    twin = type(keras3_class.__name__, (mixin, base), {"__module__": keras3_class.__module__,
                                                         "__doc__": keras3_class.__doc__})
    return keras_module.saving.register_keras_serializable(package="kerasseg")(twin)
