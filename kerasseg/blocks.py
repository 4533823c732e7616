"""Old path of `kerasseg.layers.blocks`, kept importable."""
from kerasseg.layers.blocks import *  # noqa: F401,F403
from kerasseg.layers.blocks import __all__  # noqa: F401
