"""The few custom layers kerasseg needs, all serializable (``package="kerasseg"``) and free of ``Lambda``."""

from kerasseg.layers.argmax import ArgMax  # noqa: F401
from kerasseg.layers.bilinear import BilinearUpsamplingInitializer  # noqa: F401
from kerasseg.layers.unpooling import MaxUnpooling2D  # noqa: F401
