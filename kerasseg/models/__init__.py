"""Architectures, one module each; importing this package registers them all."""

from kerasseg.models import erfnet  # noqa: F401
from kerasseg.models import fcn  # noqa: F401
from kerasseg.models import segnet  # noqa: F401
from kerasseg.models import unet  # noqa: F401
from kerasseg.models import deeplab  # noqa: F401
from kerasseg.models import pspnet  # noqa: F401
from kerasseg.models import lraspp  # noqa: F401
