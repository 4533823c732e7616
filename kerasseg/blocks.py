"""Old path of `kerasseg.layers.blocks`, kept importable."""
from kerasseg.layers.blocks import *  # noqa: F401,F403
